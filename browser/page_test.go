//go:build unix

package browser

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// entry is one record of the harness page's log (testdata/www/harness.js).
type entry struct {
	Src    int     `json:"src"`   // which EventSource, in the order they were opened
	Kind   string  `json:"kind"`  // open, error, event or closed
	T      float64 `json:"t"`     // when, in ms since the page loaded
	State  int     `json:"state"` // the source's readyState then: 0 connecting, 1 open, 2 closed
	Via    string  `json:"via"`   // for events: onmessage or listener
	Type   string  `json:"type"`
	Data   string  `json:"data"`
	ID     string  `json:"id"` // lastEventId
	Origin string  `json:"origin"`
}

// EventSource ready states.
const (
	connecting = 0
	open       = 1
	closed     = 2
)

func (e entry) String() string {
	if e.Kind == "event" {
		return fmt.Sprintf("%8.1fms src%d event %s via %s id=%q data=%q", e.T, e.Src, e.Type, e.Via, e.ID, e.Data)
	}
	return fmt.Sprintf("%8.1fms src%d %s (readyState %d)", e.T, e.Src, e.Kind, e.State)
}

// page is the harness page loaded in a tab.
type page struct {
	*chromium
	within time.Duration // how long its waits wait (0: wait)
}

// openHarness loads the harness page served at base.
func (c *chromium) openHarness(base string) *page {
	c.t.Helper()
	c.navigate(base + "/")
	var ok bool
	c.mustEval(`typeof window.harness === "object"`, &ok)
	if !ok {
		c.t.Fatalf("%s/ is not the harness page", base)
	}
	return &page{chromium: c}
}

// in returns the page for use by test t, a subtest.
func (p *page) in(t *testing.T) *page {
	return &page{chromium: p.chromium.in(t), within: p.within}
}

// patient returns the page with waits of d.
func (p *page) patient(d time.Duration) *page {
	return &page{chromium: p.chromium, within: d}
}

// sourceOptions are the options of harness.open.
type sourceOptions struct {
	Types           []string `json:"types,omitempty"` // listened to with addEventListener
	WithCredentials bool     `json:"withCredentials,omitempty"`
	Summary         bool     `json:"summary,omitempty"` // record each event's data as "<length>:<first 40 characters>"
}

// open opens an EventSource on url and returns its number.
func (p *page) open(url string, opts sourceOptions) int {
	p.t.Helper()
	var src int
	p.mustEval(js("harness.open(%s, %s)", url, opts), &src)
	return src
}

// close closes EventSource src.
func (p *page) close(src int) {
	p.t.Helper()
	p.mustEval(js("harness.close(%s)", src), nil)
}

// entries returns the page's log.
func (p *page) entries() []entry {
	p.t.Helper()
	var es []entry
	p.mustEval("harness.entries()", &es)
	return es
}

// waitFor polls the page's log until cond holds of it, and returns it.
func (p *page) waitFor(what string, cond func([]entry) bool) []entry {
	p.t.Helper()
	var es []entry
	timeout := wait
	if p.within > 0 {
		timeout = p.within
	}
	waitUntil(p.t, timeout, what, func() bool {
		es = p.entries()
		return cond(es)
	}, func() string { return "page log:\n" + dump(es) + "requests:\n" + p.net.String() })
	return es
}

// waitOpen waits until source src has opened n times in all.
func (p *page) waitOpen(src, n int) []entry {
	p.t.Helper()
	return p.waitSource(src, fmt.Sprintf("source %d opened %d times", src, n), func(es []entry) bool {
		return len(only(es, src, "open")) >= n
	})
}

// waitEvents waits until source src has received n events in all, and
// returns them.
func (p *page) waitEvents(src, n int) []entry {
	p.t.Helper()
	es := p.waitSource(src, fmt.Sprintf("source %d received %d events", src, n), func(es []entry) bool {
		return len(only(es, src, "event")) >= n
	})
	return only(es, src, "event")
}

// waitSource is waitFor for a condition on source src that cannot hold
// any more once the browser gave up on the source: then it fails at once.
func (p *page) waitSource(src int, what string, cond func([]entry) bool) []entry {
	p.t.Helper()
	es := p.waitFor(what, func(es []entry) bool {
		return cond(es) || gaveUp(es, src)
	})
	if !cond(es) {
		p.t.Fatalf("%s: the browser gave up on source %d (an error left it closed)\npage log:\n%srequests:\n%s",
			what, src, dump(es), p.net)
	}
	return es
}

// gaveUp reports whether the browser closed source src after an error.
func gaveUp(es []entry, src int) bool {
	for _, e := range es {
		if e.Src == src && e.Kind == "error" && e.State == closed {
			return true
		}
	}
	return false
}

// only returns the entries of source src (all sources for -1) of kind.
func only(es []entry, src int, kind string) []entry {
	var out []entry
	for _, e := range es {
		if (src < 0 || e.Src == src) && e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// dump formats a page log, one entry a line.
func dump(es []entry) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString("  " + e.String() + "\n")
	}
	return b.String()
}
