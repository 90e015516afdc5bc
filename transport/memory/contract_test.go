package memory

import (
	"sync"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/transport"
	"github.com/ssehub/caddy-sse/transport/transporttest"
)

// clock is a time source the tests drive.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_700_000_000, 0)} }

// Now returns the clock's time.
func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// open opens a memory transport on now (real time when nil), closed when
// the test ends.
func open(t *testing.T, now func() time.Time, limits transport.Limits, sink transport.Sink) *Transport {
	t.Helper()
	tr := &Transport{now: now}
	if err := tr.Open(t.Name(), limits, sink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// TestContract holds the memory transport to the transport contract, on
// a clock the suite drives.
func TestContract(t *testing.T) {
	transporttest.Run(t, func(t *testing.T, limits transport.Limits, sink transport.Sink) transporttest.Hub {
		c := newClock()
		tr := open(t, c.Now, limits, sink)
		return transporttest.Hub{Transport: tr, Advance: c.Advance, Housekeep: tr.housekeep}
	})
}

// TestContractOnRealTime holds the memory transport to the transport
// contract on real time and without hooks, as the suite tests transports
// that offer none.
func TestContractOnRealTime(t *testing.T) {
	transporttest.Run(t, func(t *testing.T, limits transport.Limits, sink transport.Sink) transporttest.Hub {
		return transporttest.Hub{Transport: open(t, nil, limits, sink)}
	})
}
