// Package e2e tests caddy-sse in a Caddy process built from cmd/caddy:
// reloads, shutdown, operations.
package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// The ports of the reload tests' Caddy.
var (
	reloadAdmin = caddyproc.Port(2410)
	reloadHTTP  = caddyproc.Port(8410)
	reloadBase  = fmt.Sprintf("http://localhost:%d", reloadHTTP)
)

// waitLimit is the safety net of every wait.
const waitLimit = 15 * time.Second

// reloadConfig is a Caddyfile for the reload tests' Caddy.
func reloadConfig(global, site string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	%s
}
http://localhost:%d {
	%s
}
`, reloadAdmin, reloadHTTP, reloadHTTP+1, global, reloadHTTP, site)
}

// received is one event a follower got.
type received struct {
	id, data string
}

// streamEnd is one stream that the server ended.
type streamEnd struct {
	opened, ended time.Time
	finalRetry    int // the last retry hint before the end; 0 if none
}

// follower subscribes like a browser: it reads every frame, and when the
// server ends the stream it reconnects at once with Last-Event-ID.
type follower struct {
	t      *testing.T
	url    string
	client *http.Client
	stop   chan struct{}
	done   chan struct{}

	mu     sync.Mutex
	got    []received
	resets int
	ends   []streamEnd
	live   bool // the current stream has sent its start
	err    error
}

func follow(t *testing.T, path string) *follower {
	f := &follower{t: t, url: reloadBase + path, client: ssetest.NewClient(),
		stop: make(chan struct{}), done: make(chan struct{})}
	go f.run()
	t.Cleanup(f.close)
	f.await("the first stream is live", func() bool { return f.live })
	return f
}

func (f *follower) run() {
	defer close(f.done)
	lastID := ""
	for failures := 0; ; {
		h := http.Header{}
		if lastID != "" {
			h.Set("Last-Event-ID", lastID)
		}
		s, err := ssetest.Open(f.client, f.url, h)
		if err != nil && failures < 3 {
			// like EventSource after a network error: try again (a new
			// connection can be reset while a reload hands over the port)
			failures++
			f.t.Logf("reconnecting after: %v", err)
			continue
		}
		if err != nil {
			f.fail(err)
			return
		}
		if s.Resp.StatusCode != http.StatusOK {
			f.fail(fmt.Errorf("status %d", s.Resp.StatusCode))
			s.Close()
			return
		}
		end := streamEnd{opened: time.Now()}
		for {
			fr, err := s.Next(50 * time.Millisecond)
			if errors.Is(err, ssetest.ErrTimeout) {
				select {
				case <-f.stop:
					s.Close()
					return
				default:
					continue
				}
			}
			if errors.Is(err, io.EOF) {
				end.ended = time.Now()
				break
			}
			if err != nil {
				f.fail(err)
				s.Close()
				return
			}
			f.frame(fr, &end)
		}
		lastID = s.LastID()
		s.Close()
		f.mu.Lock()
		f.ends = append(f.ends, end)
		f.live = false
		f.mu.Unlock()
	}
}

func (f *follower) frame(fr ssetest.Frame, end *streamEnd) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch fr.Kind {
	case ssetest.KindEvent:
		if fr.Type == "reset" {
			f.resets++
			return
		}
		f.got = append(f.got, received{fr.LastID, fr.Data})
		f.live = true
	case ssetest.KindID:
		f.live = true
	case ssetest.KindRetry:
		end.finalRetry = fr.Retry
	}
}

func (f *follower) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *follower) close() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
}

// await polls cond, under the follower's lock, until it holds.
func (f *follower) await(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		f.mu.Lock()
		ok, err := cond(), f.err
		f.mu.Unlock()
		if err != nil {
			f.t.Fatalf("follower: %v", err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			f.mu.Lock()
			state := fmt.Sprintf("%d events, %d resets, ends %+v, live %v", len(f.got), f.resets, f.ends, f.live)
			f.mu.Unlock()
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			f.t.Fatalf("timed out waiting until %s; follower: %s\ngoroutines of the test:\n%s", what, state, buf)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *follower) snapshot() ([]received, []streamEnd, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got), slices.Clone(f.ends), f.resets
}

// publisher publishes numbered events at a steady pace, each on a new
// connection. A request that fails without an answer (a connection caught
// in the hand-over between two configs) may or may not have been
// published: its data is noted as uncertain and the next event is sent.
type publisher struct {
	t         *testing.T
	stop      chan struct{}
	done      chan struct{}
	mu        sync.Mutex
	ids       []string
	data      []string
	uncertain map[string]bool
	failed    error
}

func publishEvery(t *testing.T, path string, every time.Duration) *publisher {
	p := &publisher{t: t, stop: make(chan struct{}), done: make(chan struct{}), uncertain: map[string]bool{}}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitLimit}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := 0; n < 100000; n++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			data := fmt.Sprint("event ", n)
			id, err := publishWith(client, path, data)
			var status *statusError
			if err != nil && !errors.As(err, &status) && len(p.uncertain) < 5 {
				p.t.Logf("publish of %q without an answer: %v", data, err)
				p.mu.Lock()
				p.uncertain[data] = true
				p.mu.Unlock()
				continue
			}
			if err != nil {
				p.mu.Lock()
				p.failed = err
				p.mu.Unlock()
				return
			}
			p.mu.Lock()
			p.ids = append(p.ids, id)
			p.data = append(p.data, data)
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { p.halt() })
	return p
}

// certain drops from got the events whose publish was not answered.
func (p *publisher) certain(got []received) []received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.DeleteFunc(got, func(r received) bool { return p.uncertain[r.data] })
}

// halt stops the publisher and returns what it published.
func (p *publisher) halt() []received {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed != nil {
		p.t.Fatalf("publisher: %v", p.failed)
	}
	out := make([]received, len(p.ids))
	for i := range p.ids {
		out[i] = received{p.ids[i], p.data[i]}
	}
	return out
}

func (p *publisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ids)
}

// publishWith publishes data and returns its id.
func publishWith(client *http.Client, path, data string) (string, error) {
	resp, err := client.Post(reloadBase+path, "application/x-www-form-urlencoded",
		strings.NewReader(url.Values{"data": {data}}.Encode()))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", &statusError{resp.StatusCode, string(body)}
	}
	i := strings.Index(string(body), `"id":"`)
	if i < 0 {
		return "", fmt.Errorf("publish answer %s", body)
	}
	rest := string(body)[i+6:]
	return rest[:strings.IndexByte(rest, '"')], nil
}

// statusError is a publish answered with an error status.
type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return fmt.Sprintf("publish: %d %s", e.status, e.body) }

func seq(t *testing.T, id string) uint64 {
	t.Helper()
	_, n, ok := transport.ParseID(id)
	if !ok {
		t.Fatalf("bad id %q", id)
	}
	return n
}

// checkExactlyOnce checks that got is published, in order.
func checkExactlyOnce(t *testing.T, got, published []received) {
	t.Helper()
	if len(got) != len(published) {
		t.Fatalf("received %d events, published %d", len(got), len(published))
	}
	for i := range got {
		if got[i] != published[i] {
			t.Fatalf("event %d: received %+v, published %+v", i, got[i], published[i])
		}
		if i > 0 && seq(t, got[i].id) <= seq(t, got[i-1].id) {
			t.Fatalf("ids do not increase: %s then %s", got[i-1].id, got[i].id)
		}
	}
}

const reloadSite = `sse /events {
		heartbeat %s
	}
	sse_publish /publish`

// reloadWhilePublishing reloads from one config to another while events
// are published, and checks that the old stream ends within a second with
// a spread retry hint, and that the subscriber gets every event once.
func reloadWhilePublishing(t *testing.T, before, after string) *caddyproc.Caddy {
	c := caddyproc.Start(t, before, reloadAdmin)
	f := follow(t, "/events")
	p := publishEvery(t, "/publish", 2*time.Millisecond)
	f.await("50 events before the reload", func() bool { return len(f.got) >= 50 })

	reloadAt := time.Now()
	if err := c.Load(after); err != nil {
		t.Fatal(err)
	}
	// (a reconnection over the old server's kept-alive connection may
	// reach the stopping config and be told to retry: a second end)
	f.await("the old stream ends", func() bool { return len(f.ends) >= 1 })
	f.await("50 events after the reconnection", func() bool {
		return f.live && len(f.got) >= p.count()-10 && p.count() > 100
	})
	published := p.halt()
	f.await("every event", func() bool { return len(p.certain(slices.Clone(f.got))) == len(published) })
	got, ends, resets := f.snapshot()
	got = p.certain(got)

	if resets != 0 {
		t.Errorf("%d reset events", resets)
	}
	end := ends[0]
	if d := end.ended.Sub(reloadAt); d > time.Second {
		t.Errorf("the old stream ended %v after the reload", d)
	}
	if end.finalRetry < 1000 || end.finalRetry > 4500 {
		t.Errorf("final retry %d ms, want 1000-4500", end.finalRetry)
	}
	checkExactlyOnce(t, got, published)
	t.Logf("%d events; old stream ended %v after the reload, final retry %d ms",
		len(got), end.ended.Sub(reloadAt), end.finalRetry)
	return c
}

func TestReloadLosesNothing(t *testing.T) {
	reloadWhilePublishing(t,
		reloadConfig("", fmt.Sprintf(reloadSite, "15s")),
		reloadConfig("", fmt.Sprintf(reloadSite, "5s")))
}

// TestReloadLosesNothingHijacked: the same with streams whose connection
// was taken over, which Caddy's server no longer tracks.
func TestReloadLosesNothingHijacked(t *testing.T) {
	reloadWhilePublishing(t,
		reloadConfig("", fmt.Sprintf(reloadSite, "15s\n\t\thijack")),
		reloadConfig("", fmt.Sprintf(reloadSite, "5s\n\t\thijack")))
}

func TestReloadWithHistoryChanged(t *testing.T) {
	hub := func(history int) string {
		return fmt.Sprintf("sse {\n\t\thub default {\n\t\t\thistory %d\n\t\t}\n\t}", history)
	}
	site := fmt.Sprintf(reloadSite, "15s")
	reloadWhilePublishing(t, reloadConfig(hub(100000), site), reloadConfig(hub(300), site))

	// the new limit applies to the hub that survived: of 400 more events,
	// only 300 are retained, so resuming from before them resets, and the
	// reset is followed by the 300 retained, oldest first
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	first, err := publishWith(client, "/publish", "first of 400")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 400; i++ {
		if _, err := publishWith(client, "/publish", "more"); err != nil {
			t.Fatal(err)
		}
	}
	_, n, _ := transport.ParseID(first)
	epoch, _, _ := transport.ParseID(first)
	before := transport.FormatID(epoch, n-1)
	s, err := ssetest.Open(ssetest.NewClient(), reloadBase+"/events", http.Header{"Last-Event-ID": {before}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ev, err := s.NextEvent(waitLimit)
	if err != nil || ev.Type != "reset" {
		t.Fatalf("resuming from before 400 events with history 300: %+v %v", ev, err)
	}
	for count := uint64(0); count < 300; count++ {
		ev, err := s.NextEvent(waitLimit)
		if err != nil {
			t.Fatal(err)
		}
		if seq(t, ev.LastID) != n+100+count {
			t.Fatalf("event %d after the reset is %s, want seq %d", count, ev.LastID, n+100+count)
		}
	}
	// resuming from the oldest retained event is served whole: 299 events
	s.Close()
	oldest := transport.FormatID(epoch, n+100)
	s, err = ssetest.Open(ssetest.NewClient(), reloadBase+"/events", http.Header{"Last-Event-ID": {oldest}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := uint64(101); i < 400; i++ {
		ev, err := s.NextEvent(waitLimit)
		if err != nil || ev.Type == "reset" || seq(t, ev.LastID) != n+i {
			t.Fatalf("resumed event %d: %+v %v", i, ev, err)
		}
	}
}

// TestSIGTERMWithOpenStreams: with 100 open streams and Caddy's default
// (unlimited) grace period, SIGTERM ends the process within 2 s, each
// stream getting a final retry hint, whether the streams run through
// net/http or on connections taken over.
func TestSIGTERMWithOpenStreams(t *testing.T) {
	t.Run("net/http", func(t *testing.T) { sigtermWithOpenStreams(t, "sse /events") })
	t.Run("hijack", func(t *testing.T) { sigtermWithOpenStreams(t, "sse /events {\n\t\thijack\n\t}") })
}

func sigtermWithOpenStreams(t *testing.T, site string) {
	c := caddyproc.Start(t, reloadConfig("", site), reloadAdmin)
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxConnsPerHost: 0}}
	streams := make([]*ssetest.Stream, 100)
	for i := range streams {
		s, err := ssetest.Open(client, fmt.Sprintf("%s/events?topic=t%d", reloadBase, i%7), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Next(waitLimit); err != nil { // the stream's start
			t.Fatal(err)
		}
		streams[i] = s
	}
	took, err := c.Terminate(2 * time.Second)
	if err != nil {
		t.Fatalf("caddy did not exit within 2s of SIGTERM: %v", err)
	}
	t.Logf("caddy exited %v after SIGTERM with 100 open streams", took)
	for i, s := range streams {
		frames, err := s.ReadAll(waitLimit)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		last := frames[len(frames)-1]
		if last.Kind != ssetest.KindRetry || last.Retry < 1000 {
			t.Fatalf("stream %d ended with %+v, want a final retry", i, last)
		}
	}
}

// TestMaxAge: streams end after 80-100 % of max_age, with a final retry,
// and the subscriber that reconnects loses nothing.
func TestMaxAge(t *testing.T) {
	caddyproc.Start(t, reloadConfig("", `sse /events {
		max_age 2s
	}
	sse_publish /publish`), reloadAdmin)
	followers := []*follower{follow(t, "/events")}
	for range 4 {
		followers = append(followers, follow(t, "/events?topic=other"))
	}
	p := publishEvery(t, "/publish", 5*time.Millisecond)
	for _, f := range followers {
		f.await("two streams ended by max_age", func() bool { return len(f.ends) >= 2 })
	}
	published := p.halt()
	f := followers[0]
	f.await("every event", func() bool { return len(p.certain(slices.Clone(f.got))) == len(published) })
	got, _, resets := f.snapshot()
	got = p.certain(got)
	if resets != 0 {
		t.Errorf("%d resets", resets)
	}
	checkExactlyOnce(t, got, published)

	var lifetimes []time.Duration
	for _, f := range followers {
		_, ends, _ := f.snapshot()
		for _, e := range ends[:2] {
			life := e.ended.Sub(e.opened)
			lifetimes = append(lifetimes, life)
			if life < 1550*time.Millisecond || life > 2250*time.Millisecond {
				t.Errorf("a stream lived %v; max_age 2s ends streams after 1.6-2s", life)
			}
			if e.finalRetry < 1000 {
				t.Errorf("final retry %d", e.finalRetry)
			}
		}
	}
	slices.Sort(lifetimes)
	if lifetimes[len(lifetimes)-1]-lifetimes[0] < 20*time.Millisecond {
		t.Errorf("lifetimes %v: no spread", lifetimes)
	}
	t.Logf("%d events across max_age reconnections; lifetimes %v", len(got), lifetimes)
}

// TestFailedReloadChangesNothing loads a config that adapts but fails to
// provision, and that would shrink the hub's history: the running
// subscribers and the history are untouched.
func TestFailedReloadChangesNothing(t *testing.T) {
	good := reloadConfig("", "sse /events\n\tsse_publish /publish")
	c := caddyproc.Start(t, good, reloadAdmin)
	f := follow(t, "/events")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var ids []string
	for i := range 10 {
		id, err := publishWith(client, "/publish", fmt.Sprint("before ", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	f.await("10 events", func() bool { return len(f.got) == 10 })

	bad := reloadConfig("sse {\n\t\thub default {\n\t\t\thistory 1\n\t\t}\n\t}",
		"sse /events\n\tsse /other {\n\t\thub nowhere\n\t}\n\tsse_publish /publish")
	err := c.Load(bad)
	if err == nil || !strings.Contains(err.Error(), "not declared") {
		t.Fatalf("loading the bad config: %v", err)
	}
	id, err := publishWith(client, "/publish", "after")
	if err != nil {
		t.Fatal(err)
	}
	f.await("the event published after the failed reload", func() bool { return len(f.got) == 11 })
	got, ends, _ := f.snapshot()
	if len(ends) != 0 || got[10].id != id {
		t.Fatalf("the stream was disturbed: %d ends, last event %+v", len(ends), got[10])
	}
	// the history still holds all 11 events: resuming from the first loses nothing
	s, err := ssetest.Open(ssetest.NewClient(), reloadBase+"/events", http.Header{"Last-Event-ID": {ids[0]}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 1; i < 11; i++ {
		ev, err := s.NextEvent(waitLimit)
		if err != nil || ev.Type == "reset" || ev.LastID != got[i].id {
			t.Fatalf("replay %d: %+v %v", i, ev, err)
		}
	}
}
