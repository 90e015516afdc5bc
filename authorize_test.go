package caddysse

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// testTokenKey is the HS256 secret of the tests' token routes.
const testTokenKey = "0123456789abcdef0123456789abcdef-test-key"

// mint signs claims with testTokenKey (HS256).
func mint(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testTokenKey))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// grant is the sse claim of a token.
func grant(subscribe, publish []string) map[string]any {
	g := map[string]any{}
	if subscribe != nil {
		g["subscribe"] = subscribe
	}
	if publish != nil {
		g["publish"] = publish
	}
	return g
}

// get sends a GET with headers and returns the status, headers and body
// (a stream's body, when the answer is one, until it ends).
func get(t *testing.T, path string, header http.Header) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, testBase+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	status, h, b := ssetest.DoT(t, req)
	return status, h, string(b)
}

// hubRefusals returns the default hub's refusal counts.
func hubRefusals(t *testing.T) map[string]uint64 {
	return findHub(t, DefaultHubName).Stats().Refusals
}

const allowSite = `
	sse /events {
		allow news/* user/{http.request.header.X-User}/**
	}
	sse /open
	sse_publish /publish {
		allow news/*
	}
	sse_publish /publish-any
`

func TestAllow(t *testing.T) {
	startCaddy(t, "", allowSite)
	hub := findHub(t, DefaultHubName)
	alice := http.Header{"X-User": {"alice"}}
	cases := []struct {
		name   string
		path   string
		header http.Header
		status int
		topic  string // named in the refusal
	}{
		{"one segment under news", "/events?topic=news/sports", nil, 200, ""},
		{"two segments under news", "/events?topic=news/sports/live", nil, 403, "news/sports/live"},
		{"news itself", "/events?topic=news", nil, 403, "news"},
		{"one topic of two not allowed", "/events?topic=news/a&topic=secret", nil, 403, "secret"},
		{"the default topic", "/events", nil, 403, "default"},
		{"own topics", "/events?topic=user/alice/inbox&topic=user/alice/a/b", alice, 200, ""},
		{"someone else's", "/events?topic=user/bob/inbox", alice, 403, "user/bob/inbox"},
		{"user prefix alone", "/events?topic=user/alice", alice, 403, "user/alice"},
		{"no user: the pattern is dropped", "/events?topic=user/bob/inbox", nil, 403, "user/bob/inbox"},
		{"a user called *", "/events?topic=user/bob/inbox", http.Header{"X-User": {"*"}}, 403, "user/bob/inbox"},
		{"a user called **", "/events?topic=user/bob/inbox", http.Header{"X-User": {"**"}}, 403, "user/bob/inbox"},
		{"a user with a slash", "/events?topic=user/bob/inbox", http.Header{"X-User": {"bob/inbox"}}, 403, "user/bob/inbox"},
		// without patterns, a "*" in a requested topic is a character:
		// it is no wildcard, and nothing but its literal topic matches it
		{"a wildcard requested", "/events?topic=user/alice/*", http.Header{"X-User": {"bob"}}, 403, "user/alice/*"},
		{"no allow", "/open?topic=secret", nil, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, forbidden := hub.Stats().Subscribers, hubRefusals(t)["forbidden"]
			if c.status == 200 {
				s := openStream(t, ssetest.NewClient(), c.path, c.header)
				s.Close()
				eventually(t, "the stream is gone", func() bool { return hub.Stats().Subscribers == before })
				return
			}
			status, h, body := get(t, c.path, c.header)
			var eb errorBody
			mustUnmarshal(t, body, &eb)
			if status != c.status || !strings.Contains(eb.Error, fmt.Sprintf("%q", c.topic)) || h.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %s, want %d naming %q", status, body, c.status, c.topic)
			}
			if n := hub.Stats().Subscribers; n != before {
				t.Fatalf("a refused subscription changed the subscribers: %d, want %d", n, before)
			}
			if n := hubRefusals(t)["forbidden"]; n != forbidden+1 {
				t.Fatalf("forbidden refusals %d, want %d", n, forbidden+1)
			}
		})
	}
}

func TestAllowWildcardRequestIsLiteral(t *testing.T) {
	startCaddy(t, "", allowSite)
	s := openStream(t, ssetest.NewClient(), "/events?topic=news/*", nil)
	publishForm(t, "/publish-any", url.Values{"topic": {"news/sports"}, "data": {"not for the literal topic"}})
	publishForm(t, "/publish-any", url.Values{"topic": {"news/*"}, "data": {"literal"}})
	if f := nextEvent(t, s); f.Data != "literal" {
		t.Fatalf("a stream on the topic news/* got %q: without patterns, * is no wildcard", f.Data)
	}
}

func TestAllowPublish(t *testing.T) {
	startCaddy(t, "", allowSite)
	hub := findHub(t, DefaultHubName)
	published := func() uint64 { return hub.Stats().Published }
	s := openStream(t, ssetest.NewClient(), "/open?topic=news/a&topic=secret", nil)

	refusals := []struct{ name, ctype, body string }{
		{"form", "application/x-www-form-urlencoded", "topic=secret&data=x"},
		{"form, one topic of two", "application/x-www-form-urlencoded", "topic=news/a&topic=secret&data=x"},
		{"json", "application/json", `{"topic":"secret","data":"x"}`},
		{"json array, the last one", "application/json", `[{"topic":"news/a","data":"1"},{"topic":"secret","data":"2"}]`},
		{"no topic: default", "text/plain", "x"},
	}
	for _, c := range refusals {
		t.Run(c.name, func(t *testing.T) {
			before := published()
			r := post(t, "/publish", c.ctype, c.body)
			if r.Status != http.StatusForbidden || !strings.Contains(r.Error, "is not allowed") {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			if n := published(); n != before {
				t.Fatalf("a refused publish published %d events", n-before)
			}
		})
	}

	t.Run("stream, refused at the second event", func(t *testing.T) {
		body := `{"topic":"news/a","data":"one"}` + "\n" + `{"topic":"secret","data":"two"}` + "\n" + `{"topic":"news/a","data":"three"}` + "\n"
		r := post(t, "/publish", "application/x-ndjson", body)
		var ans struct {
			Error string `json:"error"`
			Count int    `json:"count"`
		}
		mustUnmarshal(t, r.Body, &ans)
		if r.Status != http.StatusForbidden || ans.Count != 1 || !strings.Contains(ans.Error, `"secret"`) {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		if f := nextEvent(t, s); f.Data != "one" {
			t.Fatalf("got %q", f.Data)
		}
	})

	publishForm(t, "/publish", url.Values{"topic": {"news/a"}, "data": {"allowed"}})
	if f := nextEvent(t, s); f.Data != "allowed" {
		t.Fatalf("got %q, want the allowed event (and nothing of the refused ones)", f.Data)
	}
}

const tokenSite = `
	sse /events {
		token {
			key ` + testTokenKey + `
			alg HS256
			issuer https://issuer.example
			audience sse
			cookie sse_token
		}
		topic user/{http.sse.token.sub}/inbox {http.sse.token.claims.tenant}/news
		max_streams_per {http.sse.token.sub} 2
	}
	sse /ask {
		token {
			key ` + testTokenKey + `
			alg HS256
		}
	}
	sse /ask-allow {
		token {
			key ` + testTokenKey + `
			alg HS256
		}
		allow public/*
	}
	sse_publish /publish {
		token {
			key ` + testTokenKey + `
			alg HS256
		}
	}
	sse_publish /publish-any
`

// claims returns valid claims for the tokenSite's /events.
func claims(sub string, ttl time.Duration) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "iss": "https://issuer.example", "aud": "sse", "tenant": "acme",
		"exp": time.Now().Add(ttl).Unix(), "sse": grant([]string{"user/" + sub + "/*", "acme/**"}, nil)}
}

func TestTokenRefusals(t *testing.T) {
	startCaddy(t, "", tokenSite)
	hub := findHub(t, DefaultHubName)
	now := time.Now()
	with := func(mod func(jwt.MapClaims)) string {
		c := claims("alice", time.Hour)
		mod(c)
		return mint(t, c)
	}
	valid := mint(t, claims("alice", time.Hour))
	parts := strings.Split(valid, ".")
	none := strings.Join([]string{b64(`{"alg":"none","typ":"JWT"}`), parts[1], ""}, ".")
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, claims("alice", time.Hour)).SignedString([]byte(testTokenKey))
	otherKey, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims("alice", time.Hour)).SignedString([]byte(strings.Repeat("x", 40)))
	cases := []struct {
		name, path string
		header     http.Header
		status     int
		says       string
	}{
		{"no token", "/events", nil, 401, "needs a token"},
		{"garbage", "/events?token=garbage", nil, 401, "invalid token"},
		{"bad signature", "/events?token=" + parts[0] + "." + parts[1] + "." + b64("forged"), nil, 401, "signature"},
		{"another key", "/events?token=" + otherKey, nil, 401, "signature"},
		{"alg none", "/events?token=" + none, nil, 401, "none"},
		{"another alg", "/events?token=" + hs512, nil, 401, "HS512"},
		{"wrong issuer", "/events?token=" + with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), nil, 401, "issuer"},
		{"wrong audience", "/events?token=" + with(func(c jwt.MapClaims) { c["aud"] = "other" }), nil, 401, "audience"},
		{"not valid yet", "/events?token=" + with(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() }), nil, 401, "not valid before"},
		{"7 KB token", "/events?token=" + strings.Repeat("a", 7<<10), nil, 401, "malformed"},
		{"9 KB token", "/events?token=" + strings.Repeat("a", 9<<10), nil, 401, "larger"},
		{"9 KB header", "/events", http.Header{"Authorization": {"Bearer " + strings.Repeat("a", 9<<10)}}, 401, "larger"},
		{"bearer judged first", "/events?token=" + valid, http.Header{"Authorization": {"Bearer garbage"}}, 401, "invalid token"},
		{"cookie before query", "/events?token=" + valid, http.Header{"Cookie": {"sse_token=garbage"}}, 401, "invalid token"},
		{"a topic outside the claim", "/ask?topic=user/bob/inbox&token=" + valid, nil, 403, `"user/bob/inbox"`},
		{"no sse claim, no allow", "/ask?topic=x&token=" + mint(t, jwt.MapClaims{"sub": "a"}), nil, 403, "grants no topic"},
		{"no sse claim, outside allow", "/ask-allow?topic=x&token=" + mint(t, jwt.MapClaims{"sub": "a"}), nil, 403, "allow"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := hub.Stats()
			status, h, body := get(t, c.path, c.header)
			var eb errorBody
			mustUnmarshal(t, body, &eb)
			if status != c.status || !strings.Contains(eb.Error, c.says) {
				t.Fatalf("%d %s, want %d saying %q", status, body, c.status, c.says)
			}
			if strings.Contains(body, valid) || len(c.path) > 100 && strings.Contains(body, c.path[len(c.path)-60:]) {
				t.Fatalf("the refusal repeats the token: %s", body)
			}
			reason := "forbidden"
			if c.status == 401 {
				reason = "unauthorized"
				if ch := h.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer") {
					t.Fatalf("WWW-Authenticate %q", ch)
				}
			}
			after := hub.Stats()
			if after.Subscribers != before.Subscribers || after.Connections != before.Connections {
				t.Fatal("a refused subscription was subscribed")
			}
			if n := after.Refusals[reason]; n != before.Refusals[reason]+1 {
				t.Fatalf("%s refusals %d, want %d", reason, n, before.Refusals[reason]+1)
			}
		})
	}
}

func TestTokenHuge(t *testing.T) {
	startCaddy(t, "", tokenSite)
	for _, h := range []http.Header{nil, {"Authorization": {"Bearer " + strings.Repeat("a", 100<<10)}}} {
		path := "/events"
		if h == nil {
			path += "?token=" + strings.Repeat("a", 100<<10)
		}
		status, _, body := get(t, path, h)
		if status != 401 && status != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("a 100 KB token: %d %s", status, body)
		}
	}
	// the server is still there
	openStream(t, ssetest.NewClient(), "/events?token="+mint(t, claims("alice", time.Hour)), nil)
}

// b64 encodes s as a JWT segment.
func b64(s string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

func TestTokenGrantsAndPlaceholders(t *testing.T) {
	startCaddy(t, "", tokenSite)
	tok := mint(t, claims("alice", time.Hour))
	for name, open := range map[string]func() *ssetest.Stream{
		"query": func() *ssetest.Stream { return openStream(t, ssetest.NewClient(), "/events?token="+tok, nil) },
		"header": func() *ssetest.Stream {
			return openStream(t, ssetest.NewClient(), "/events", http.Header{"Authorization": {"Bearer " + tok}})
		},
		"cookie": func() *ssetest.Stream {
			return openStream(t, ssetest.NewClient(), "/events", http.Header{"Cookie": {"sse_token=" + tok}})
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := open()
			defer s.Close()
			publishForm(t, "/publish-any", url.Values{"topic": {"user/alice/inbox"}, "data": {"mine " + name}})
			publishForm(t, "/publish-any", url.Values{"topic": {"user/bob/inbox"}, "data": {"bob's"}})
			publishForm(t, "/publish-any", url.Values{"topic": {"acme/news"}, "data": {"tenant " + name}})
			for _, want := range []string{"mine " + name, "tenant " + name} {
				if f := nextEvent(t, s); f.Data != want {
					t.Fatalf("got %q, want %q", f.Data, want)
				}
			}
		})
	}
}

func TestTokenPublish(t *testing.T) {
	startCaddy(t, "", tokenSite)
	s := openStream(t, ssetest.NewClient(), "/events?token="+mint(t, claims("alice", time.Hour)), nil)
	pub := func(tok, topic string) publishResp {
		req, _ := http.NewRequest(http.MethodPost, testBase+"/publish?topic="+url.QueryEscape(topic), strings.NewReader("hello "+topic))
		req.Header.Set("Content-Type", "text/plain")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		return do(t, req)
	}
	publisher := mint(t, jwt.MapClaims{"sub": "backend", "exp": time.Now().Add(time.Hour).Unix(),
		"sse": grant(nil, []string{"user/*/inbox"})})
	subscriberOnly := mint(t, jwt.MapClaims{"sse": grant([]string{"**"}, nil)})
	expired := mint(t, jwt.MapClaims{"exp": time.Now().Add(-time.Second).Unix(), "sse": grant(nil, []string{"**"})})
	for _, c := range []struct {
		name, tok, topic string
		status           int
	}{
		{"no token", "", "user/alice/inbox", 401},
		{"expired", expired, "user/alice/inbox", 401},
		{"subscribe grants only", subscriberOnly, "user/alice/inbox", 403},
		{"outside the grant", publisher, "acme/news", 403},
	} {
		if r := pub(c.tok, c.topic); r.Status != c.status {
			t.Fatalf("%s: %d %s, want %d", c.name, r.Status, r.Body, c.status)
		}
	}
	expiredBefore := hubRefusals(t)["expired"]
	if r := pub(expired, "user/alice/inbox"); r.Status != 401 || !strings.Contains(r.Error, "expired") {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if n := hubRefusals(t)["expired"]; n != expiredBefore+1 {
		t.Fatalf("expired refusals %d, want %d", n, expiredBefore+1)
	}
	if r := pub(publisher, "user/alice/inbox"); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if f := nextEvent(t, s); f.Data != "hello user/alice/inbox" {
		t.Fatalf("got %q", f.Data)
	}
}

func TestTokenExpiredOnConnect(t *testing.T) {
	startCaddy(t, "", tokenSite)
	tok := mint(t, claims("alice", -time.Second))
	before := findHub(t, DefaultHubName).Stats()
	s := openStream(t, ssetest.NewClient(), "/events?token="+tok, http.Header{"Last-Event-ID": {"E1-41"}})
	frames, err := s.ReadAll(wait)
	if err != nil {
		t.Fatal(err)
	}
	checkExpired(t, frames, "E1-41")
	after := findHub(t, DefaultHubName).Stats()
	if n := after.Refusals["expired"] - before.Refusals["expired"]; n != 1 {
		t.Fatalf("expired refusals %d, want 1", n)
	}
	if n := after.Connections - before.Connections; n != 0 {
		t.Fatalf("%d streams opened", n)
	}
}

// lastEvent returns the last event of a stream's frames, and the last
// reconnection delay they set, in milliseconds.
func lastEvent(frames []ssetest.Frame) (last ssetest.Frame, retry int) {
	for _, f := range frames {
		switch f.Kind {
		case ssetest.KindRetry:
			retry = f.Retry
		case ssetest.KindEvent:
			last = f
		}
	}
	return last, retry
}

// checkExpired checks the frames of a stream ended by its token's
// expiry: a retry of at least 30 s and the expired event, last.
func checkExpired(t *testing.T, frames []ssetest.Frame, lastID string) {
	t.Helper()
	last, retry := lastEvent(frames)
	var data expiredData
	mustUnmarshal(t, last.Data, &data)
	if last.Type != "expired" || data.LastEventID != lastID || retry < 30000 {
		t.Fatalf("ended with %+v (retry %d), want the expired event of %q and a retry of at least 30 s", last, retry, lastID)
	}
}

func TestTokenExpiresOpenStream(t *testing.T) {
	startCaddy(t, "", tokenSite)
	hub := findHub(t, DefaultHubName)
	exp := time.Now().Add(1500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	c := claims("alice", 0)
	c["exp"] = exp.Unix()
	expiredBefore := hub.Stats().Disconnects["expired"]
	s := openStream(t, ssetest.NewClient(), "/events?token="+mint(t, c), nil)
	sent := publishForm(t, "/publish-any", url.Values{"topic": {"user/alice/inbox"}, "data": {"before"}})
	if f := nextEvent(t, s); f.Data != "before" {
		t.Fatalf("got %q", f.Data)
	}
	publishForm(t, "/publish-any", url.Values{"topic": {"other"}, "data": {"not hers"}})
	frames, err := s.ReadAll(wait)
	if err != nil {
		t.Fatal(err)
	}
	if late := time.Since(exp); late < 0 || late > time.Second {
		t.Fatalf("the stream ended %v after its token's expiry", late)
	}
	last, _ := lastEvent(frames)
	var data expiredData
	mustUnmarshal(t, last.Data, &data)
	// the position may be past events of other topics: resuming from it
	// loses nothing
	checkExpired(t, frames, data.LastEventID)
	_, at, _ := transport.ParseID(data.LastEventID)
	if _, sentSeq, _ := transport.ParseID(sent.ID); at < sentSeq {
		t.Fatalf("last_event_id %q is before the last event sent, %q", data.LastEventID, sent.ID)
	}
	eventually(t, "one expired disconnect is counted", func() bool {
		return hub.Stats().Disconnects["expired"]-expiredBefore == 1
	})

	// the page comes back with a fresh token, from last_event_id
	publishForm(t, "/publish-any", url.Values{"topic": {"user/alice/inbox"}, "data": {"while away"}})
	s2 := openStream(t, ssetest.NewClient(), "/events?token="+mint(t, claims("alice", time.Hour)),
		http.Header{"Last-Event-ID": {data.LastEventID}})
	if f := nextEvent(t, s2); f.Data != "while away" {
		t.Fatalf("resumed with %q, want the event published while away", f.Data)
	}
}

func TestMaxStreamsPer(t *testing.T) {
	// subjects of its own: the streams of other tests may still be open on
	// a route of the same config (Caddy keeps a config that is loaded again)
	startCaddy(t, "", tokenSite)
	hub := findHub(t, DefaultHubName)
	open := func(sub string) *ssetest.Stream {
		return openStream(t, ssetest.NewClient(), "/events?token="+mint(t, claims(sub, time.Hour)), nil)
	}
	before := hub.Stats().Disconnects["per_subject"]
	first, second, bob := open("carol"), open("carol"), open("dave")
	third := open("carol")
	frames, err := first.ReadAll(wait)
	if err != nil {
		t.Fatal(err)
	}
	checkDisconnect(t, frames, "max_streams_per")
	publishForm(t, "/publish-any", url.Values{"topic": {"user/carol/inbox", "user/dave/inbox"}, "data": {"still here"}})
	for _, s := range []*ssetest.Stream{second, third, bob} {
		if f := nextEvent(t, s); f.Data != "still here" {
			t.Fatalf("got %q", f.Data)
		}
	}
	// counted when the stream has ended on the server's side, which may
	// be after its client read the end (a connection taken over is closed
	// first)
	eventually(t, "one per_subject disconnect is counted", func() bool {
		return hub.Stats().Disconnects["per_subject"]-before == 1
	})
}

// checkDisconnect checks the frames of a stream ended by the server with
// a disconnect event: a retry of at least 30 s and the event, last.
func checkDisconnect(t *testing.T, frames []ssetest.Frame, reason string) {
	t.Helper()
	last, retry := lastEvent(frames)
	var data disconnectData
	mustUnmarshal(t, last.Data, &data)
	if last.Type != "disconnect" || data.Reason != reason || retry < 30000 {
		t.Fatalf("ended with %+v (retry %d), want a disconnect event for %q and a retry of at least 30 s", last, retry, reason)
	}
}

func TestAdminDisconnect(t *testing.T) {
	startCaddy(t, "", tokenSite+"\tsse /plain\n")
	hub := findHub(t, DefaultHubName)
	admin := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, fmt.Sprintf("http://localhost:%d%s", testAdmin, path), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		status, _, b := ssetest.DoT(t, req)
		return status, string(b)
	}
	revokedBefore := hub.Stats().Disconnects["revoked"]
	a1 := openStream(t, ssetest.NewClient(), "/plain?topic=rv/1", nil)
	a2 := openStream(t, ssetest.NewClient(), "/plain?topic=rv/2&topic=rvb", nil)
	b := openStream(t, ssetest.NewClient(), "/plain?topic=rvb", nil)
	erin := openStream(t, ssetest.NewClient(), "/events?token="+mint(t, claims("erin", time.Hour)), nil)
	frank := openStream(t, ssetest.NewClient(), "/events?token="+mint(t, claims("frank", time.Hour)), nil)

	for _, c := range []struct{ method, path, body, says string }{
		{"POST", "/sse/hubs/default/disconnect", `{}`, "topic"},
		{"POST", "/sse/hubs/default/disconnect", `{"topic":"rv/*","subject":"erin"}`, "not both"},
		{"POST", "/sse/hubs/default/disconnect", `{"subject":""}`, "empty"},
		{"POST", "/sse/hubs/default/disconnect", `{"topic":""}`, "empty"},
		{"POST", "/sse/hubs/default/disconnect", `not json`, "JSON"},
		{"POST", "/sse/hubs/default/disconnect", `{"topic":3}`, "JSON"},
		{"GET", "/sse/hubs/default/disconnect", ``, "POST"},
		{"POST", "/sse/hubs/nope/disconnect", `{"topic":"rv/*"}`, "no hub"},
	} {
		status, body := admin(c.method, c.path, c.body)
		if status < 400 || !strings.Contains(body, c.says) {
			t.Fatalf("%s %s %s: %d %s", c.method, c.path, c.body, status, body)
		}
	}
	// a refused request ended nothing: every stream still gets events
	publishForm(t, "/publish-any", url.Values{"topic": {"rv/1", "rv/2", "user/erin/inbox", "user/frank/inbox"}, "data": {"before"}})
	for _, s := range []*ssetest.Stream{a1, a2, erin, frank} {
		if f := nextEvent(t, s); f.Data != "before" {
			t.Fatalf("got %q", f.Data)
		}
	}

	status, body := admin("POST", "/sse/hubs/default/disconnect", `{"topic":"rv/*"}`)
	if status != 200 || strings.TrimSpace(body) != `{"disconnected":2}` {
		t.Fatalf("%d %s", status, body)
	}
	for _, s := range []*ssetest.Stream{a1, a2} {
		frames, err := s.ReadAll(wait)
		if err != nil {
			t.Fatal(err)
		}
		checkDisconnect(t, frames, "revoked")
	}
	status, body = admin("POST", "/sse/hubs/default/disconnect", `{"subject":"erin"}`)
	if status != 200 || strings.TrimSpace(body) != `{"disconnected":1}` {
		t.Fatalf("%d %s", status, body)
	}
	frames, err := erin.ReadAll(wait)
	if err != nil {
		t.Fatal(err)
	}
	checkDisconnect(t, frames, "revoked")
	publishForm(t, "/publish-any", url.Values{"topic": {"rvb", "user/frank/inbox"}, "data": {"left alone"}})
	for _, s := range []*ssetest.Stream{b, frank} {
		if f := nextEvent(t, s); f.Data != "left alone" {
			t.Fatalf("got %q", f.Data)
		}
	}
	eventually(t, "three revoked disconnects are counted", func() bool {
		return hub.Stats().Disconnects["revoked"]-revokedBefore == 3
	})
}

// TestTokenJWKSDownAtStart: a route whose JWKS cannot be fetched when the
// config loads still loads; its refusals say why, and once the key set is
// served, tokens signed with its key are accepted, without a reload.
func TestTokenJWKSDownAtStart(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // down: nothing listens there yet
	startCaddy(t, "", `
	sse /events {
		token {
			jwks http://`+addr+`/jwks.json
			alg EdDSA
		}
	}`)
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": "alice",
		"exp": time.Now().Add(time.Hour).Unix(), "sse": grant([]string{"**"}, nil)})
	tok.Header["kid"] = "k1"
	raw, err := tok.SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	status, _, body := get(t, "/events?token="+raw, nil)
	if status != 401 || !strings.Contains(body, "could not be fetched yet") {
		t.Fatalf("%d %s, want a 401 that says the key set could not be fetched", status, body)
	}

	jwks := fmt.Sprintf(`{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"k1","x":%q}]}`,
		base64.RawURLEncoding.EncodeToString(pub))
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(jwks))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	// the key set is fetched again after 1 s, 2 s, 4 s... while it fails
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := ssetest.Open(ssetest.NewClient(), testBase+"/events?token="+raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		status := s.Resp.StatusCode
		s.Close()
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d after the key set came back", status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
