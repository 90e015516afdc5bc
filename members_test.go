package caddysse

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// presenceHarness is a harness whose route makes each stream the member
// named by its token's sub ({http.sse.token.sub}; a token without sub is
// no member), with patterns, on a hub with the given presence grace and
// cap.
func presenceHarness(t *testing.T, grace time.Duration, max int) *harness {
	t.Helper()
	hs := newHarness(t, transport.Limits{}, &Subscribe{Presence: "{http.sse.token.sub}", Patterns: true,
		Token: &TokenConfig{Keys: []string{testTokenKey}, Alg: "HS256"}})
	hs.route.tokenPlaceholders = true // as Provision sets it (the harness does not)
	hs.hub.setPresence(PresenceSettings{Grace: grace, Max: max})
	return hs
}

// as opens a stream of topics as member ("" for a token without sub).
func (hs *harness) as(member string, topics ...string) *ssetest.Stream {
	hs.t.Helper()
	c := jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "sse": grant([]string{"**"}, nil)}
	if member != "" {
		c["sub"] = member
	}
	q := url.Values{"topic": topics, "token": {mint(hs.t, c)}}
	return hs.open("/events?"+q.Encode(), nil)
}

// presenceFrame is a presence, join or leave event as a watcher reads it.
type presenceFrame struct {
	Type    string
	Topic   string   `json:"topic"`
	Count   int      `json:"count"`
	Members []string `json:"members"`
	Member  string   `json:"member"`
	LastID  string
}

// nextPresence returns the next event of s, which must be a presence
// event (presence, join or leave).
func nextPresence(t *testing.T, s *ssetest.Stream) presenceFrame {
	t.Helper()
	f := nextEvent(t, s)
	var p presenceFrame
	if f.Type != presenceEvent && f.Type != joinEvent && f.Type != leaveEvent {
		t.Fatalf("got a %q event %q, want a presence event", f.Type, f.Data)
	}
	mustUnmarshal(t, f.Data, &p)
	p.Type, p.LastID = f.Type, f.LastID
	return p
}

// wantPresence fails unless the next event of s is of typ, for topic and
// member (for a presence event: count and members).
func wantPresence(t *testing.T, s *ssetest.Stream, want presenceFrame) presenceFrame {
	t.Helper()
	got := nextPresence(t, s)
	if got.Type != want.Type || got.Topic != want.Topic || got.Member != want.Member || got.Count != want.Count ||
		!slices.Equal(got.Members, want.Members) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	return got
}

// quiet fails if s has an event within d.
func quiet(t *testing.T, s *ssetest.Stream, d time.Duration) {
	t.Helper()
	if f, err := s.NextEvent(d); err == nil {
		t.Fatalf("unexpected event %q %q", f.Type, f.Data)
	}
}

func snapshotOf(topic string, members ...string) presenceFrame {
	if members == nil {
		members = []string{}
	}
	return presenceFrame{Type: presenceEvent, Topic: topic, Count: len(members), Members: members}
}

func joinOf(topic, member string) presenceFrame {
	return presenceFrame{Type: joinEvent, Topic: topic, Member: member}
}

func leaveOf(topic, member string) presenceFrame {
	return presenceFrame{Type: leaveEvent, Topic: topic, Member: member}
}

// TestPresenceJoinLeave: a watcher of $presence/room gets the snapshot,
// then a join when a member arrives and a leave once it has been gone
// for the grace; presence events carry no id, so that the stream's last
// event id keeps tracking the real events of its topics.
func TestPresenceJoinLeave(t *testing.T) {
	t.Parallel()
	const grace = 150 * time.Millisecond
	hs := presenceHarness(t, grace, 0)
	bob := hs.as("bob", "room")
	w := hs.as("", "room", "$presence/room")
	wantPresence(t, w, snapshotOf("room", "bob"))
	rc := hs.publish("hello", "room")
	if f := nextEvent(t, w); f.LastID != rc.ID {
		t.Fatalf("got %+v, want the event %s", f, rc.ID)
	}
	alice := hs.as("alice", "room", "other")
	if got := wantPresence(t, w, joinOf("room", "alice")); got.LastID != rc.ID {
		t.Fatalf("the join moved the last event id to %q, want %q", got.LastID, rc.ID)
	}
	alice.Close()
	closed := time.Now()
	wantPresence(t, w, leaveOf("room", "alice"))
	if d := time.Since(closed); d < grace-20*time.Millisecond {
		t.Fatalf("the leave came %v after the stream ended, within the grace of %v", d, grace)
	}
	bob.Close()
	wantPresence(t, w, leaveOf("room", "bob"))

	// a reconnection gets a fresh snapshot
	w.Close()
	hs.as("carol", "room")
	w2 := hs.as("", "$presence/room")
	wantPresence(t, w2, snapshotOf("room", "carol"))
}

// TestPresenceGrace: a member whose stream ends and comes back within the
// grace (another stream, or a second one it had) causes no leave and no
// join; gone for longer, it leaves.
func TestPresenceGrace(t *testing.T) {
	t.Parallel()
	const grace = 300 * time.Millisecond
	hs := presenceHarness(t, grace, 0)
	w := hs.as("", "$presence/room")
	wantPresence(t, w, snapshotOf("room"))
	a1 := hs.as("alice", "room")
	wantPresence(t, w, joinOf("room", "alice"))

	// a reconnection within the grace: nothing
	a1.Close()
	hs.subscribers(1)
	a2 := hs.as("alice", "room")
	// two streams of one member count once
	a3 := hs.as("alice", "room")
	a2.Close()
	hs.subscribers(2)
	time.Sleep(grace + 100*time.Millisecond) // past the grace of the first stream, and of the second
	hs.as("zed", "room")                     // a marker: the next event must be its join
	wantPresence(t, w, joinOf("room", "zed"))

	// gone for good: a leave, after the grace
	a3.Close()
	wantPresence(t, w, leaveOf("room", "alice"))
	if n := hs.hub.pres.localMembers("room"); n != 1 {
		t.Fatalf("%d local members of room, want 1 (zed)", n)
	}
}

// TestPresenceMax: a snapshot lists at most presence_max members, the
// first in byte order, and counts them all.
func TestPresenceMax(t *testing.T) {
	t.Parallel()
	hs := presenceHarness(t, time.Second, 3)
	for _, m := range []string{"e", "c", "a", "d", "b"} {
		hs.as(m, "room")
	}
	w := hs.as("", "$presence/room")
	got := nextPresence(t, w)
	if got.Type != presenceEvent || got.Count != 5 || !slices.Equal(got.Members, []string{"a", "b", "c"}) {
		t.Fatalf("got %+v, want 5 members, a, b and c listed", got)
	}
}

// TestPresenceNoMember: a stream whose placeholder is empty is no member,
// though it counts among the topic's streams; a route without presence
// makes none.
func TestPresenceNoMember(t *testing.T) {
	t.Parallel()
	hs := presenceHarness(t, time.Second, 0)
	plain := harnessRoute(t, hs.hub, &Subscribe{})
	hs.as("", "room")
	ssetest.OpenT(t, routeClient(plain, 4096), "http://harness/events?topic=room", nil)
	hs.subscribers(2)
	w := hs.as("", "$presence/room")
	wantPresence(t, w, snapshotOf("room"))
	page := hs.hub.TopicStreams("", "", 10)
	hs.hub.addMembers(t.Context(), &page)
	if len(page.Topics) != 1 || page.Topics[0] != (TopicStreams{Topic: "room", Streams: 2}) {
		t.Fatalf("topics %+v, want room with 2 streams and no member", page.Topics)
	}
}

// TestPresencePatterns: a pattern stream is a member under its pattern,
// as it is counted; the topics it matches do not list it.
func TestPresencePatterns(t *testing.T) {
	t.Parallel()
	hs := presenceHarness(t, time.Second, 0)
	wp := hs.as("", "$presence/room/*")
	wt := hs.as("", "$presence/room/1")
	wantPresence(t, wp, snapshotOf("room/*"))
	wantPresence(t, wt, snapshotOf("room/1"))
	hs.as("alice", "room/*")
	wantPresence(t, wp, joinOf("room/*", "alice"))
	hs.as("bob", "room/1")
	wantPresence(t, wt, joinOf("room/1", "bob"))
	quiet(t, wp, 100*time.Millisecond)

	page := hs.hub.TopicStreams("room/", "", 10)
	hs.hub.addMembers(t.Context(), &page)
	want := []TopicStreams{{Topic: "room/*", Streams: 1, Members: 1}, {Topic: "room/1", Streams: 1, Members: 1}}
	if !slices.Equal(page.Topics, want) {
		t.Fatalf("topics %+v, want %+v", page.Topics, want)
	}
}

// TestPresenceSeam: watchers that connect while members come and go
// (a grace of 1 ms: every stream's end is a leave) each see, from their
// snapshot on, every change once: a join of a member they have not, a
// leave of one they have, and end with the hub's final state, no one.
func TestPresenceSeam(t *testing.T) {
	t.Parallel()
	hs := presenceHarness(t, time.Millisecond, 0)
	const members, rounds, watchers = 8, 15, 6
	var wg sync.WaitGroup
	for i := range members {
		wg.Go(func() {
			for range rounds {
				s := hs.as(fmt.Sprintf("m%d", i), "room")
				time.Sleep(time.Duration(rand.N(3)) * time.Millisecond)
				s.Close()
			}
		})
	}
	var ws []*ssetest.Stream
	for range watchers {
		ws = append(ws, hs.as("", "$presence/room"))
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	eventually(t, "every member has left", func() bool { return hs.hub.pres.localMembers("room") == 0 })
	var checks sync.WaitGroup
	for i, w := range ws {
		checks.Go(func() { checkWatcher(t, i, w) })
	}
	checks.Wait()
	quietAll := hs.as("", "$presence/room")
	wantPresence(t, quietAll, snapshotOf("room"))
}

// checkWatcher reads what watcher i was sent, until it has been quiet for
// a while: its snapshot, then changes, each of which must change its view
// of the members; in the end it must see no one.
func checkWatcher(t *testing.T, i int, w *ssetest.Stream) {
	snap, err := w.NextEvent(wait)
	if err != nil || snap.Type != presenceEvent {
		t.Errorf("watcher %d: first event %+v, %v", i, snap, err)
		return
	}
	var p presenceFrame
	_ = json.Unmarshal([]byte(snap.Data), &p)
	present := make(map[string]bool)
	for _, m := range p.Members {
		present[m] = true
	}
	changes := 0
	for {
		f, err := w.NextEvent(150 * time.Millisecond)
		if err != nil {
			break
		}
		changes++
		var c presenceFrame
		_ = json.Unmarshal([]byte(f.Data), &c)
		switch {
		case f.Type == joinEvent && present[c.Member]:
			t.Errorf("watcher %d: a join of %s, already present", i, c.Member)
		case f.Type == leaveEvent && !present[c.Member]:
			t.Errorf("watcher %d: a leave of %s, not present", i, c.Member)
		case f.Type != joinEvent && f.Type != leaveEvent:
			t.Errorf("watcher %d: a %q event", i, f.Type)
		}
		present[c.Member] = f.Type == joinEvent
		if !present[c.Member] {
			delete(present, c.Member)
		}
	}
	if len(present) > 0 {
		t.Errorf("watcher %d: still sees %v after everyone left", i, present)
	}
	t.Logf("watcher %d: %d in its snapshot, %d changes after", i, p.Count, changes)
}

// TestPresenceRefusals: a meta-topic other than $presence/<topic> is
// refused with 400; following a topic's members takes what subscribing
// to the topic takes (allow, the token), else 403; publishing to a "$"
// topic is refused with 400.
func TestPresenceRefusals(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, transport.Limits{}, &Subscribe{Allow: []string{"room/*"}})
	tokRoute := harnessRoute(t, hs.hub, &Subscribe{Token: &TokenConfig{Keys: []string{testTokenKey}, Alg: "HS256"}})
	tok := mint(t, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "sse": grant([]string{"room/1"}, nil)})
	for _, c := range []struct {
		route  *Subscribe
		query  string
		status int
	}{
		{hs.route, "topic=$presence/room/1", http.StatusOK},
		{hs.route, "topic=$presence/lobby", http.StatusForbidden},
		{hs.route, "topic=room/1&topic=$presence/room/*", http.StatusOK}, // no patterns: "room/*" is a topic, which allow grants
		{hs.route, "topic=$presence/", http.StatusBadRequest},
		{hs.route, "topic=$other", http.StatusBadRequest},
		{tokRoute, "topic=$presence/room/1&token=" + tok, http.StatusOK},
		{tokRoute, "topic=$presence/room/2&token=" + tok, http.StatusForbidden},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://harness/events?"+c.query, nil)
		ctx, cancel := context.WithCancel(t.Context())
		resp, err := routeClient(c.route, 4096).Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d, want %d", c.query, resp.StatusCode, c.status)
		}
		cancel()
		resp.Body.Close()
	}
	for _, topics := range [][]string{{"$presence/room/1"}, {"a", "$x"}} {
		if _, err := publishTopics(topics); err == nil {
			t.Errorf("publishing to %q was not refused", topics)
		}
	}
}

// TestPresenceSnapshotJSON: the presence event's data is
// {"topic", "count", "members"}, members an empty list when none.
func TestPresenceSnapshotJSON(t *testing.T) {
	t.Parallel()
	b := appendSnapshot(nil, "room", transport.PresenceSnapshot{})
	want := "event: presence\ndata: {\"topic\":\"room\",\"count\":0,\"members\":[]}\n\n"
	if string(b) != want {
		t.Fatalf("got %q, want %q", b, want)
	}
	b = appendChange(nil, transport.PresenceChange{Topic: "room", Member: "a\"b", Join: true, Version: 3})
	var d memberData
	if err := json.Unmarshal(b[len("event: join\ndata: "):len(b)-2], &d); err != nil || d.Member != "a\"b" {
		t.Fatalf("join %q: %+v %v", b, d, err)
	}
}

// TestPresenceSlowWatcher: a watcher of $presence/room whose client reads
// nothing while members keep arriving is ended as slow once its queued
// presence events pass presenceFeedMax, rather than hold them all; a new
// watcher gets a snapshot with the exact count.
func TestPresenceSlowWatcher(t *testing.T) {
	t.Parallel()
	hs := presenceHarness(t, time.Hour, 0)
	c := jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "sse": grant([]string{"**"}, nil)}
	q := url.Values{"topic": {"$presence/room"}, "token": {mint(t, c)}}
	slow := hs.openWith(hs.client(4096), "/events?"+q.Encode(), nil)
	hp := hs.hub.pres
	hp.wmu.Lock()
	sub := hp.watchers["room"][0]
	hp.wmu.Unlock()
	pt := hs.hub.transport.(transport.PresenceTransport)
	joined := 0
	for joined < 100000 && hs.disconnects(endSlow) == 0 {
		pt.Join("room", fmt.Sprintf("member-%06d", joined))
		joined++
	}
	if hs.disconnects(endSlow) != 1 || sub.endReason() != endSlow {
		t.Fatalf("after %d joins: %d slow disconnects, the watcher's stream %q; want the watcher ended as slow",
			joined, hs.disconnects(endSlow), sub.endReason())
	}
	if held := len(sub.feed.take()); held > presenceFeedMax+1024 {
		t.Errorf("the watcher's feed held %d bytes, over its bound of %d", held, presenceFeedMax)
	}
	drainDropped(t, slow)
	w := hs.as("", "$presence/room")
	if got := nextPresence(t, w); got.Type != presenceEvent || got.Count != joined {
		t.Fatalf("a new watcher got %+v, want a snapshot of %d members", got, joined)
	}
	t.Logf("ended as slow after %d joins", joined)
}
