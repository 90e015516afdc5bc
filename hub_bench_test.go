package caddysse

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/ssehub/caddy-sse/transport"
	"github.com/ssehub/caddy-sse/transport/memory"
)

// benchHub opens a hub on the memory transport.
func benchHub(b *testing.B, limits transport.Limits) *Hub {
	b.Helper()
	h, err := newHub("bench", new(memory.Transport), limits, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Destruct() })
	return h
}

// benchSubscribers subscribes n subscribers to topic.
func benchSubscribers(b *testing.B, h *Hub, n int, topic string) []*subscriber {
	b.Helper()
	subs := make([]*subscriber, n)
	for i := range subs {
		s, rep, err := h.Subscribe(context.Background(), subscribeRequest{topics: []string{topic}})
		if err != nil {
			b.Fatal(err)
		}
		s.seam = rep.Head // its stream has started: its writer waits for work
		s.pos.Store(rep.Head)
		s.idle()
		subs[i] = s
	}
	return subs
}

// drain does what each stream's writer does on waking, short of writing:
// take its events from the hub's window.
// publishDraining publishes msgs b.N times, the subscribers taking their
// events every 32 publishes, off the clock.
func publishDraining(b *testing.B, h *Hub, msgs []transport.Message, subs []*subscriber) {
	b.Helper()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := h.Publish(ctx, transport.PublishRequest{Messages: msgs}); err != nil {
			b.Fatal(err)
		}
		if i%32 == 31 {
			b.StopTimer()
			drain(subs)
			b.StartTimer()
		}
	}
}

func drain(subs []*subscriber) {
	var parts [][]byte
	for _, s := range subs {
		select {
		case <-s.wake:
		default:
		}
		s.take()
		parts, _, _ = s.hub.backlog.take(s, parts[:0], roundBytes)
		s.idle()
	}
}

var payload64 = strings.Repeat("x", 64)

// BenchmarkPublish publishes one 64-byte event to a topic with n
// subscribers: id, history, serialisation once, one append to the hub's
// window and a wake-up per subscriber. The writers' side (taking their
// events from the window) runs every 32 events, off the clock. allocs/op
// does not grow with the subscribers: a delivery allocates nothing.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
			subs := benchSubscribers(b, h, n, "t")
			msgs := []transport.Message{{Topics: []string{"t"}, Data: payload64, Retry: -1}}
			publishDraining(b, h, msgs, subs)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
		})
	}
}

// BenchmarkPublishNoSubscribers is the hub's share of a publish request.
func BenchmarkPublishNoSubscribers(b *testing.B) {
	h := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
	msgs := []transport.Message{{Topics: []string{"t"}, Data: payload64, Retry: -1}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Publish(ctx, transport.PublishRequest{Messages: msgs}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReplay reads what a resuming subscriber is sent: the events
// after an id 100 events back, from one topic and merged from three.
func BenchmarkReplay(b *testing.B) {
	for _, topics := range [][]string{{"a"}, {"a", "b", "c"}} {
		b.Run(fmt.Sprintf("topics=%d", len(topics)), func(b *testing.B) {
			h := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
			ctx := context.Background()
			var ids []string
			for i := range 1000 {
				r, err := h.Publish(ctx, transport.PublishRequest{Messages: []transport.Message{{Topics: []string{topics[i%len(topics)]}, Data: payload64, Retry: -1}}})
				if err != nil {
					b.Fatal(err)
				}
				ids = append(ids, r[0].ID)
			}
			q := transport.ReplayQuery{Topics: topics, Resume: true, LastEventID: ids[899]}
			b.ReportAllocs()
			for b.Loop() {
				rep, err := h.transport.Replay(ctx, q)
				if err != nil || len(rep.Events) != 100 {
					b.Fatalf("%d events, %v", len(rep.Events), err)
				}
			}
		})
	}
}

// BenchmarkReplayPage reads one page (64 KiB) of the history, as a stream
// behind the delivery window does, from 1 and 64 full topics of 64-byte
// events: the time the memory transport's lock is held per page.
func BenchmarkReplayPage(b *testing.B) {
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("topics=%d", n), func(b *testing.B) {
			h := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
			topics := make([]string, n)
			msgs := make([]transport.Message, n)
			for i := range topics {
				topics[i] = fmt.Sprintf("t%d", i)
				msgs[i] = transport.Message{Topics: []string{topics[i]}, Data: payload64, Retry: -1}
			}
			ctx := context.Background()
			var first string
			for range 1000 {
				r, err := h.Publish(ctx, transport.PublishRequest{Messages: msgs})
				if err != nil {
					b.Fatal(err)
				}
				if first == "" {
					first = r[0].ID
				}
			}
			q := transport.ReplayQuery{Topics: topics, Resume: true, LastEventID: first, MaxBytes: pageBytes}
			b.ReportAllocs()
			for b.Loop() {
				rep, err := h.transport.Replay(ctx, q)
				if err != nil || !rep.More {
					b.Fatalf("%d events, more %v, %v", len(rep.Events), rep.More, err)
				}
			}
		})
	}
}

// BenchmarkSubscribeChurn subscribes and unsubscribes on a hub that has
// 10,000 subscribers on the same topic.
func BenchmarkSubscribeChurn(b *testing.B) {
	h := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
	benchSubscribers(b, h, 10000, "t")
	ctx := context.Background()
	req := subscribeRequest{topics: []string{"t"}}
	b.ReportAllocs()
	for b.Loop() {
		s, _, err := h.Subscribe(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		h.Unsubscribe(s, endClient)
	}
}

// discardWriter is a ResponseWriter and Flusher that throws bytes away.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

// BenchmarkStreamWrite is a stream writer's work per wake-up with 1 and
// 16 events waiting, short of the socket: take them from the hub's
// window, write (one write for several events), flush. The events are
// published once; each iteration takes them again from the same position.
func BenchmarkStreamWrite(b *testing.B) {
	for _, waiting := range []int{1, 16} {
		b.Run(fmt.Sprintf("waiting=%d", waiting), func(b *testing.B) {
			h := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
			sub := benchSubscribers(b, h, 1, "t")[0]
			st := &stream{route: &Subscribe{}, out: newResponseOutput(&discardWriter{h: http.Header{}}), sub: sub, ctx: context.Background()}
			msgs := make([]transport.Message, waiting)
			for i := range msgs {
				msgs[i] = transport.Message{Topics: []string{"t"}, Data: payload64, Retry: -1}
			}
			from := sub.pos.Load()
			if _, err := h.Publish(context.Background(), transport.PublishRequest{Messages: msgs}); err != nil {
				b.Fatal(err)
			}
			delivered := h.counters.delivered.Load()
			b.ReportAllocs()
			for b.Loop() {
				sub.pos.Store(from)
				if err := st.pump(); err != nil {
					b.Fatal(err)
				}
			}
			if n := h.counters.delivered.Load() - delivered; n != uint64(b.N*waiting) {
				b.Fatalf("%d events written, want %d", n, b.N*waiting)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(waiting), "ns/delivery")
		})
	}
}

// BenchmarkPublishRequest is a whole sse_publish request short of the
// network: decoding a form, publishing to a hub without subscribers, and
// the JSON answer.
func BenchmarkPublishRequest(b *testing.B) {
	for _, c := range []struct{ name, ctype, body string }{
		{"form", "application/x-www-form-urlencoded", "topic=t&data=" + payload64},
		{"json", "application/json", `{"topic":"t","data":"` + payload64 + `"}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			h := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				r, _ := http.NewRequest(http.MethodPost, "/publish", strings.NewReader(c.body))
				r.Header.Set("Content-Type", c.ctype)
				clear(w.h)
				servePublish(w, r, h, publishOptions{maxSize: DefaultMaxSize})
			}
		})
	}
}

// BenchmarkStreamSetup opens and ends one stream through the sse handler,
// short of the network: what a connection costs before its first event.
// The request carries a replacer in its context, as Caddy's server gives
// every request (the token's placeholders go into it). Sub-benchmarks:
//
//	none   no access control (the route's default)
//	allow  allow a b, no token: the topics matched against static patterns
//	HS256  token { key <secret> alg HS256 }, the token in ?token=
//	EdDSA  token { key <PEM public key> alg EdDSA }, the same
//
// The tokens have sub, exp an hour ahead and sse.subscribe ["a","b"];
// the difference from none is what verifying one costs a connection, the
// stream's expiry timer (started and stopped) included.
func BenchmarkStreamSetup(b *testing.B) {
	hsSecret := "a secret of at least thirty-two bytes, for HS256"
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(edPub)
	if err != nil {
		b.Fatal(err)
	}
	edPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	claims := jwt.MapClaims{
		"sub": "alice",
		"exp": time.Now().Add(time.Hour).Unix(),
		"sse": map[string]any{"subscribe": []string{"a", "b"}},
	}
	mint := func(method jwt.SigningMethod, key any) string {
		raw, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			b.Fatal(err)
		}
		return raw
	}
	for _, c := range []struct {
		name  string
		allow []string
		token *TokenConfig
		raw   string
	}{
		{name: "none"},
		{name: "allow", allow: []string{"a", "b"}},
		{name: "HS256", token: &TokenConfig{Keys: []string{hsSecret}, Alg: "HS256"}, raw: mint(jwt.SigningMethodHS256, []byte(hsSecret))},
		{name: "EdDSA", token: &TokenConfig{Keys: []string{edPEM}, Alg: "EdDSA"}, raw: mint(jwt.SigningMethodEdDSA, edPriv)},
	} {
		b.Run(c.name, func(b *testing.B) {
			hub := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
			h := &Subscribe{hub: hub, logger: zap.NewNop(), Allow: c.allow, Token: c.token}
			h.setDefaults()
			g, err := newGuard(h.Allow, h.Token, false)
			if err != nil {
				b.Fatal(err)
			}
			h.guard = g
			b.Cleanup(h.guard.close)
			target := "/events?topic=a&topic=b"
			if c.raw != "" {
				target += "&token=" + c.raw
			}
			base, cancel := context.WithCancel(context.Background())
			cancel() // the client is gone as soon as the stream has started
			w := &discardWriter{h: http.Header{}}
			opened := hub.counters.connections.Load()
			b.ReportAllocs()
			for b.Loop() {
				ctx := context.WithValue(base, caddy.ReplacerCtxKey, caddy.NewReplacer())
				r, _ := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
				clear(w.h)
				if err := h.ServeHTTP(w, r, nil); err != nil {
					b.Fatal(err)
				}
			}
			if n := hub.counters.connections.Load() - opened; n != uint64(b.N) {
				b.Fatalf("%d streams opened, want %d (refused?)", n, b.N)
			}
		})
	}
}

// benchPatternSubscribers subscribes n subscribers, each to one pattern
// made by pattern(i).
func benchPatternSubscribers(b *testing.B, h *Hub, n int, pattern func(int) string) []*subscriber {
	b.Helper()
	subs := make([]*subscriber, n)
	for i := range subs {
		s, rep, err := h.Subscribe(context.Background(), subscribeRequest{patterns: []string{pattern(i)}, byPatterns: true, maxTopics: DefaultMaxTopics})
		if err != nil {
			b.Fatal(err)
		}
		s.seam = rep.Head
		s.pos.Store(rep.Head)
		s.idle()
		subs[i] = s
	}
	return subs
}

// BenchmarkPublishPatterns is BenchmarkPublish with one subscriber of
// the topic, on a hub that also has n pattern subscriptions on other
// prefixes (other/<i>/**): what a publish costs the hub's pattern
// matching (issue 22: O(topics of the event + matching patterns), not
// O(patterns)). patterns=0 is a hub without any.
func BenchmarkPublishPatterns(b *testing.B) {
	for _, n := range []int{0, 1000, 100000} {
		b.Run(fmt.Sprintf("patterns=%d", n), func(b *testing.B) {
			h := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
			subs := benchSubscribers(b, h, 1, "news/sport/42")
			benchPatternSubscribers(b, h, n, func(i int) string { return fmt.Sprintf("other/%d/**", i) })
			msgs := []transport.Message{{Topics: []string{"news/sport/42"}, Data: payload64, Retry: -1}}
			publishDraining(b, h, msgs, subs)
		})
	}
}

// BenchmarkFanOutPattern publishes to orders/1 for 1,000 subscribers of
// the plain topic orders/1, or of the pattern orders/*: a pattern
// stream's fan-out costs what a topic's does (one part of the window,
// one wake-up per subscriber).
func BenchmarkFanOutPattern(b *testing.B) {
	for _, kind := range []string{"topic", "pattern"} {
		b.Run(kind, func(b *testing.B) {
			h := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
			var subs []*subscriber
			if kind == "topic" {
				subs = benchSubscribers(b, h, 1000, "orders/1")
			} else {
				subs = benchPatternSubscribers(b, h, 1000, func(int) string { return "orders/*" })
			}
			msgs := []transport.Message{{Topics: []string{"orders/1"}, Data: payload64, Retry: -1}}
			publishDraining(b, h, msgs, subs)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/delivery")
		})
	}
}
