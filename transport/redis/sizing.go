package redis

import (
	"github.com/ssehub/caddy-sse/transport"
)

// Sizing: what Redis's maxmemory must be for the hubs it holds never to
// fill it (with noeviction, a full Redis refuses every publish).
//
// The scripts keep two figures of a hub's history: its bytes (the Size of
// its events, which history_max_bytes bounds, exactly as the memory
// transport counts them), and an estimate of what it costs Redis, in the
// meta key's cost (see "Cost" in luaLib), which they keep within twice
// history_max_bytes and costAllowance: the oldest events are evicted, and
// idle topics forgotten first, while either figure is over its bound.
// The estimate is an upper bound of Redis's used_memory for Redis 7.0
// (7.0.15, jemalloc 5.3, the default encodings: lists are quicklists of
// listpacks up to 8 KiB; zsets of over 128 topics and the body hash are
// skiplists and dicts), whose constants come from used_memory deltas over
// 50,000 keys (a topic with a list of one tiny item: 502 bytes with
// 11-byte names) and the structures' sizes, with dict buckets taken at
// their peak (24 bytes an entry while a table grows). With
// TestCostEstimateMeasure (SSE_MEASURE_MEMORY=1), used_memory less the
// clients' buffers grew by 0.56 to 1.00 times the estimate over the
// costliest histories (see worstShapes): 1.00 for items over 4 KiB, where
// the estimate is the allocator's own size class, 0.97 for 1000-byte topic
// names, 0.56 to 0.78 for small events. (Those figures predate the names
// zset of pattern replays, one more zset entry per topic, which the
// estimate counts as it counts the last zset's.)
//
// So a hub needs at most 2 × history_max_bytes + costAllowance for its
// history, and idempotency_max_bytes for its idempotency records (which
// count what they cost: see kcost); sizingSlack covers what no figure
// counts: Redis's own memory when empty (about 0.9 MiB), the meta keys,
// the clients' buffers (a publish's arguments, up to 4 calls of 128 KiB
// per connection), and the scripts. TestMemoryWithinBudget checks the
// rule on the costliest histories, against a Redis whose maxmemory it is.

// costAllowance is what a hub's history may cost Redis beyond twice its
// history_max_bytes (COST_ALLOWANCE in luaLib): room for a few topics of
// a small hub.
const costAllowance = 256 << 10

// sizingSlack is what Redis needs beyond its hubs' budgets (see above).
const sizingSlack = 4 << 20

// hubBudget is the most a hub with limits costs Redis: its history and
// its idempotency records.
func hubBudget(limits transport.Limits) int64 {
	return 2*limits.MaxBytes + costAllowance + limits.IdempotencyBudget()
}

// sizingRule is the least maxmemory for a Redis holding one hub with
// limits.
func sizingRule(limits transport.Limits) int64 {
	return hubBudget(limits) + sizingSlack
}

// hubNeed is what a hub of the node asks of its Redis (see hubBudget).
type hubNeed struct {
	base   string // the hub's keys: two transports of one hub (a reload) count once
	budget int64
}

// setBudget records what t's hub needs of the client's Redis.
func (c *sharedClient) setBudget(t *Transport, limits transport.Limits) {
	clients.Lock()
	defer clients.Unlock()
	if c.needs == nil {
		c.needs = make(map[*Transport]hubNeed)
	}
	c.needs[t] = hubNeed{base: t.base, budget: hubBudget(limits)}
}

// dropBudget forgets t's hub (see setBudget).
func (c *sharedClient) dropBudget(t *Transport) {
	clients.Lock()
	defer clients.Unlock()
	delete(c.needs, t)
}

// budget returns what the node's hubs on the client need of its Redis
// together, and how many they are.
func (c *sharedClient) budget() (need int64, hubs int) {
	clients.Lock()
	defer clients.Unlock()
	by := make(map[string]int64, len(c.needs))
	for _, n := range c.needs {
		by[n.base] = max(by[n.base], n.budget)
	}
	for _, b := range by {
		need += b
	}
	return need, len(by)
}
