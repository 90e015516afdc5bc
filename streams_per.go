package caddysse

import (
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

// StreamsPer limits the open streams of a route per value of a
// placeholder (max_streams_per): a user who opens a page again and again,
// or whose closed pages went without telling, does not pile streams up.
type StreamsPer struct {
	// The placeholder whose value counts streams, such as
	// {http.sse.token.sub} or {http.auth.user.id}. A request for which it
	// is empty or unknown is not counted.
	Key string `json:"key,omitempty"`

	// The most open streams of the route per value, on this node; a new
	// stream beyond ends the oldest of its value with a disconnect event
	// (reason "max_streams_per").
	Max int `json:"max,omitempty"`
}

func (sp *StreamsPer) validate() error {
	switch {
	case sp == nil:
		return nil
	case !strings.Contains(sp.Key, "{"):
		return fmt.Errorf("max_streams_per: %q is not a placeholder, such as {http.sse.token.sub}", sp.Key)
	case sp.Max < 1:
		return fmt.Errorf("max_streams_per: the most streams per value must be at least 1, not %d", sp.Max)
	}
	return nil
}

// streamsPer holds a route's open streams per value of its
// max_streams_per placeholder, oldest first. A nil one counts nothing.
type streamsPer struct {
	key string
	max int

	mu   sync.Mutex
	open map[string][]*stream
}

func newStreamsPer(sp *StreamsPer) *streamsPer {
	if sp == nil {
		return nil
	}
	return &streamsPer{key: sp.Key, max: sp.Max, open: make(map[string][]*stream)}
}

// value returns the placeholder's value for r, "" when it has none (or
// when the route has no max_streams_per).
func (p *streamsPer) value(r *http.Request) string {
	if p == nil {
		return ""
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return ""
	}
	v, err := repl.ReplaceOrErr(p.key, true, true)
	if err != nil {
		return ""
	}
	return v
}

// add counts st under its subject and ends the oldest streams of that
// subject beyond the limit.
func (p *streamsPer) add(st *stream) {
	if p == nil || st.sub.subject == "" {
		return
	}
	v := st.sub.subject
	p.mu.Lock()
	list := append(p.open[v], st)
	var over []*stream
	if n := len(list) - p.max; n > 0 {
		over = append(over, list[:n]...)
		list = append(list[:0:0], list[n:]...)
	}
	p.open[v] = list
	p.mu.Unlock()
	for _, old := range over {
		old.sub.finish(endPerSubject)
	}
}

// remove forgets st, once it has ended.
func (p *streamsPer) remove(st *stream) {
	if p == nil || st.sub.subject == "" {
		return
	}
	v := st.sub.subject
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.open[v]
	for i, s := range list {
		if s == st {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(p.open, v)
		return
	}
	p.open[v] = list
}
