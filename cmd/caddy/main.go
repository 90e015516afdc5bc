// Command caddy is Caddy with its standard modules and the caddy-sse plugin,
// built without xcaddy: go run ./cmd/caddy run --config Caddyfile.example
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/ssehub/caddy-sse"
)

func main() {
	caddycmd.Main()
}
