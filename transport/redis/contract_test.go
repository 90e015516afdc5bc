package redis

import (
	"context"
	"testing"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
	"github.com/ssehub/caddy-sse/transport/transporttest"
)

// TestContract runs the transport contract suite against hubs in the
// shared Redis, each under a prefix of its own, with further nodes of a
// hub as other transports on the same prefix.
func TestContract(t *testing.T) {
	ssetest.RequireRedis(t, sharedRedis)
	transporttest.Run(t, func(t *testing.T, limits transport.Limits, sink transport.Sink) transporttest.Hub {
		prefix := uniquePrefix(t, sharedRedis)
		open := func(t *testing.T, sink transport.Sink) *Transport {
			tr := &Transport{Addresses: []string{sharedRedis}, Prefix: prefix}
			if err := tr.Open("h", limits, sink); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tr.Close() })
			return tr
		}
		tr := open(t, sink)
		return transporttest.Hub{
			Transport: tr,
			Housekeep: func() {
				if err := tr.trim(context.Background(), false); err != nil {
					t.Error(err)
				}
			},
			Join: func(t *testing.T, sink transport.Sink) transport.Transport { return open(t, sink) },
		}
	})
}
