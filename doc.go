// Package caddysse makes Caddy a Server-Sent Events hub: browsers subscribe
// with EventSource to routes handled by the sse handler, back ends publish
// with a POST to routes handled by sse_publish, and the sse app declares
// the hubs that keep topics, history and ids between them.
//
// A hub is a named set of topics with its own history and event ids; its
// transport (package transport) stores the events and carries them between
// nodes: in memory for one Caddy process, or through Redis for several
// instances that share the hub. Who may read and publish which topics is
// decided by package access (topic patterns and signed tokens). The README
// and docs/ describe the configuration and the behaviour; this comment is a
// map of the code.
//
// # The life of an event
//
// A publish (publish.go, or the admin API) decodes
// the request into messages and hands them to the hub's transport
// (Hub.Publish), which assigns ids, stores the events in the history and
// hands each, in id order, to the hub of every node (Hub.Deliver). The
// hub puts the event, serialised once, in its delivery window (backlog.go)
// for the topics that have local subscribers, and wakes their writers
// through its wake gate, without waiting for any socket. Each stream
// (stream.go) runs its own writer, in the request's goroutine or, with
// hijack, in one of its own: from its position in the hub's sequence, it
// takes the events of its topics from the window (or, when it is behind
// the window, a page of the history) and writes them in pieces of at
// most batchSize bytes and one flush (stream.pump), to the response or
// the connection it took over (output.go, hijack.go). A stream whose next
// event has left both the window and the history is dropped as slow. The
// route's sweeper (streams.go) looks at every stream once a tick
// (stream.check): it sends heartbeats to silent streams and ends those
// whose writes stall.
//
// # Map of the package
//
//	module.go            the sse app: hub declarations, the pool of open hubs (they survive reloads)
//	caddyfile.go         the Caddyfile: the sse global option, the sse and sse_publish directives
//	subscribe.go         the sse handler: request checks, subscription, refusals, logs
//	stream.go streams.go subscriber.go
//	                     a stream's life; a route's streams (sweeper, shutdown); a stream's place in its hub
//	hub.go backlog.go wakegate.go
//	                     a hub's fan-out (to topics and patterns) and counters; its delivery window;
//	                     its writers woken in turn
//	publish.go decode.go ingest.go ingest_parse.go
//	                     the sse_publish handler; its bodies; streaming publishes and their parsers
//	authorize.go streams_per.go expiries.go disconnect.go
//	                     allow and token guards; max_streams_per; token expiries; the admin's disconnect
//	admin.go metrics.go command.go command_token.go
//	                     the admin API; the Prometheus metrics; caddy sse-publish and caddy sse-token
//	output.go hijack.go conn.go
//	                     where a stream's bytes go: the response, a connection taken over, the TCP
//	                     connection under an HTTP/2 stream
//	topics.go query.go cors.go idempotency.go respond.go registry.go
//	                     topic rules and templates, the stream's query, CORS, Idempotency-Key, JSON answers,
//	                     the requests in progress that a stop ends
//	access/              who may read and publish which topics: patterns, signed tokens (JWT, JWKS)
//	transport/           the contract between a hub and where its events live; transport/memory (the
//	                     default), transport/redis (several instances), transport/transporttest (the
//	                     contract suite every transport runs)
//	cmd/caddy            Caddy with its standard modules and this plugin, built without xcaddy
//	cmd/ssebench         the load generator of the benchmarks (bench/, BENCHMARKS.md)
//	cmd/ssehostile       hostile clients: what they make a Caddy spend, and an honest subscriber's latency
//	internal/            ssetest (a WHATWG event stream parser, test clients), caddyproc (Caddy as a
//	                     process), seqmerge (k-way merge by sequence), shrink (maps that give memory
//	                     back), benchfloor (Caddy's floor for an idle stream), caddyargs (Caddyfile
//	                     arguments read alike by the handlers and the Redis transport), patternset
//	                     (pattern subscriptions in a segment trie, and topics queried by pattern)
//	e2e/ browser/        tests against Caddy processes, and in headless Chromium
package caddysse
