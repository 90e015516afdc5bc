package access

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// jwk describes a key of a test JWKS.
type jwk struct {
	name, kid, alg string
	use            jwkset.USE
}

// jwksOf returns the JSON of a JWK Set of the public keys described.
func jwksOf(t testing.TB, keys ...jwk) []byte {
	t.Helper()
	ctx := context.Background()
	store := jwkset.NewMemoryStorage()
	for _, k := range keys {
		j, err := jwkset.NewJWKFromKey(key(k.name).Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: jwkset.ALG(k.alg), USE: k.use},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.KeyWrite(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := store.JSONPublic(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// jwksServer serves a JWKS that tests change: its body, its status, or
// requests that hang until released.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int32

	mu     sync.Mutex
	body   []byte
	status int
	hang   chan struct{} // requests wait for it to close, when not nil
}

// newJWKSServer starts a server of body on a free port.
func newJWKSServer(t testing.TB, body []byte) *jwksServer {
	s := &jwksServer{body: body, status: http.StatusOK}
	s.Server = httptest.NewServer(s)
	t.Cleanup(s.stop)
	return s
}

// ServeHTTP serves the JWKS as set.
func (s *jwksServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	body, status, hang := s.body, s.status, s.hang
	s.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.WriteHeader(status)
	w.Write(body)
}

// set changes the response; hang makes requests wait.
func (s *jwksServer) set(body []byte, status int, hang bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hang != nil {
		close(s.hang)
		s.hang = nil
	}
	s.body, s.status = body, status
	if hang {
		s.hang = make(chan struct{})
	}
}

// stop releases the requests that hang and closes the server.
func (s *jwksServer) stop() {
	s.set(nil, http.StatusGone, false)
	s.Close()
}

// eventually polls f every 50 ms for 10 s at most, until it is true.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !f(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not in 10 s: %s", what)
		}
	}
}

func TestJWKSVerifies(t *testing.T) {
	s := newJWKSServer(t, jwksOf(t,
		jwk{name: "rsa", kid: "r1", alg: "RS256"},
		jwk{name: "rsa2", kid: "r2"},
		jwk{name: "p256", kid: "e1", alg: "ES256"},
		jwk{name: "rsa", kid: "r1-384", alg: "RS384"},
		jwk{name: "rsa2", kid: "enc", use: jwkset.UseEnc},
	))
	v := mustVerifier(t, Config{JWKS: s.URL + "/jwks.json", Alg: "RS256"})
	// NewVerifier waited for the first fetch: the keys are there already.
	for _, tc := range []struct {
		name   string
		signer string
		header map[string]any
		err    error
		want   string
	}{
		{"kid r1", "rsa", map[string]any{"kid": "r1"}, nil, ""},
		{"kid r2", "rsa2", map[string]any{"kid": "r2"}, nil, ""},
		{"no kid", "rsa2", nil, nil, ""},
		{"no kid, first key", "rsa", nil, nil, ""},
		{"kid of another key", "rsa2", map[string]any{"kid": "r1"}, ErrInvalid, "the signature does not verify"},
		{"kid of an RS384 key", "rsa", map[string]any{"kid": "r1-384"}, ErrNoKey, `has no RS256 key with kid "r1-384"`},
		{"kid of an encryption key", "rsa2", map[string]any{"kid": "enc"}, ErrNoKey, `has no RS256 key with kid "enc"`},
		{"kid not a string", "rsa", map[string]any{"kid": 1}, ErrInvalid, "the kid header is not a string"},
		{"unknown kid", "rsa", map[string]any{"kid": "r9"}, ErrNoKey, "the JWKS at " + s.URL + "/jwks.json has no RS256 key with kid \"r9\""},
	} {
		_, err := v.Verify(sign(t, "RS256", key(tc.signer), claims(nil), tc.header), now)
		if !errors.Is(err, tc.err) || (tc.err != nil && !hasText(err, tc.want)) {
			t.Errorf("%s: error %v, want %v saying %q", tc.name, err, tc.err, tc.want)
		}
	}
	_, err := v.Verify(sign(t, "ES256", key("p256"), claims(nil), map[string]any{"kid": "e1"}), now)
	if !hasText(err, `signed with alg "ES256", want RS256`) {
		t.Errorf("ES256 token: %v", err)
	}
	if n := s.fetches.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

func TestJWKSDownAtStart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	url := "http://" + addr + "/jwks"
	// A short Refresh makes retries as short.
	v := mustVerifier(t, Config{JWKS: url, Alg: "EdDSA", Refresh: 100 * time.Millisecond})
	raw := sign(t, "EdDSA", key("ed"), claims(nil), nil)
	_, err = v.Verify(raw, now)
	if !errors.Is(err, ErrNoKey) || errors.Is(err, ErrInvalid) || !hasText(err, "the JWKS at "+url+" could not be fetched yet", "connection refused") {
		t.Fatalf("error %v, want ErrNoKey saying the JWKS could not be fetched", err)
	}

	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write(jwksOf(t, jwk{name: "ed"}))
	}))
	s.Listener.Close()
	s.Listener = l
	s.Start()
	defer s.Close()
	eventually(t, "the token verifies once the JWKS is up", func() bool {
		_, err := v.Verify(raw, now)
		return err == nil
	})
}

func TestJWKSAnswersLateAtStart(t *testing.T) {
	t.Parallel()
	s := newJWKSServer(t, jwksOf(t, jwk{name: "ed"}))
	s.set(jwksOf(t, jwk{name: "ed"}), http.StatusOK, true)
	start := time.Now()
	v := mustVerifier(t, Config{JWKS: s.URL, Alg: "EdDSA"})
	if d := time.Since(start); d < firstFetchWait || d > firstFetchWait+time.Second {
		t.Errorf("NewVerifier took %v, want %v", d, firstFetchWait)
	}
	raw := sign(t, "EdDSA", key("ed"), claims(nil), nil)
	if _, err := v.Verify(raw, now); !errors.Is(err, ErrNoKey) || !hasText(err, "has not answered yet") {
		t.Errorf("error %v, want ErrNoKey", err)
	}
	s.set(jwksOf(t, jwk{name: "ed"}), http.StatusOK, false)
	eventually(t, "the token verifies once the JWKS answers", func() bool {
		_, err := v.Verify(raw, now)
		return err == nil
	})
}

func TestJWKSKeptWhileDown(t *testing.T) {
	s := newJWKSServer(t, jwksOf(t, jwk{name: "rsa", kid: "r1"}))
	v := mustVerifier(t, Config{JWKS: s.URL, Alg: "RS256", Refresh: 50 * time.Millisecond})
	raw := sign(t, "RS256", key("rsa"), claims(nil), map[string]any{"kid": "r1"})
	if _, err := v.Verify(raw, now); err != nil {
		t.Fatal(err)
	}

	// The JWKS hangs: Verify neither waits nor fails.
	s.set(nil, http.StatusOK, true)
	hung := s.fetches.Load()
	eventually(t, "a fetch hangs", func() bool { return s.fetches.Load() > hung })
	for range 20 {
		start := time.Now()
		_, err := v.Verify(raw, now)
		if d := time.Since(start); err != nil || d > 50*time.Millisecond {
			t.Fatalf("Verify took %v, %v", d, err)
		}
		_, err = v.Verify(sign(t, "RS256", key("rsa"), claims(nil), map[string]any{"kid": "unknown"}), now)
		if d := time.Since(start); !errors.Is(err, ErrNoKey) || d > 50*time.Millisecond {
			t.Fatalf("Verify of an unknown kid took %v, %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The JWKS fails: the keys are kept.
	s.set(nil, http.StatusServiceUnavailable, false)
	failed := s.fetches.Load()
	eventually(t, "fetches fail", func() bool { return s.fetches.Load() > failed+1 })
	if _, err := v.Verify(raw, now); err != nil {
		t.Fatalf("while the JWKS fails: %v", err)
	}

	// The JWKS drops the key: it is revoked.
	s.set([]byte(`{"keys":[]}`), http.StatusOK, false)
	eventually(t, "the key is revoked", func() bool {
		_, err := v.Verify(raw, now)
		return errors.Is(err, ErrNoKey)
	})
	_, err := v.Verify(sign(t, "RS256", key("rsa"), claims(nil), nil), now)
	if !errors.Is(err, ErrNoKey) || !hasText(err, "has no RS256 key") {
		t.Errorf("without keys: %v", err)
	}
}

// startedJWKS returns a verifier of the JWKS at url with the timing of
// tune, started.
func startedJWKS(t *testing.T, cfg Config, tune func(*jwks)) *Verifier {
	t.Helper()
	v, err := buildVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tune(v.jwks)
	v.jwks.start(firstFetchWait)
	t.Cleanup(v.Close)
	return v
}

func TestJWKSUnknownKid(t *testing.T) {
	s := newJWKSServer(t, jwksOf(t, jwk{name: "p256", kid: "old"}))
	v := startedJWKS(t, Config{JWKS: s.URL, Alg: "ES256"}, func(j *jwks) {
		j.kidEvery = 100 * time.Millisecond
	})
	raw := sign(t, "ES256", key("p256b"), claims(nil), map[string]any{"kid": "new"})
	if _, err := v.Verify(raw, now); !errors.Is(err, ErrNoKey) {
		t.Fatalf("error %v, want ErrNoKey", err)
	}
	// The new key is published: the unknown kid has it fetched, though
	// the refresh is an hour away.
	s.set(jwksOf(t, jwk{name: "p256", kid: "old"}, jwk{name: "p256b", kid: "new"}), http.StatusOK, false)
	eventually(t, "the new key is fetched", func() bool {
		_, err := v.Verify(raw, now)
		return err == nil
	})

	// Unknown kids have it fetched once per kidEvery at most.
	before := s.fetches.Load()
	stranger := sign(t, "ES256", key("p256b"), claims(nil), map[string]any{"kid": "stranger"})
	start := time.Now()
	for time.Since(start) < 500*time.Millisecond {
		if _, err := v.Verify(stranger, now); !errors.Is(err, ErrNoKey) {
			t.Fatalf("error %v, want ErrNoKey", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if n := s.fetches.Load() - before; n < 2 || n > 7 {
		t.Errorf("%d fetches in 500 ms of unknown kids, want 5 or so (one per 100 ms)", n)
	}
}

func TestJWKSRetryBacksOff(t *testing.T) {
	s := newJWKSServer(t, nil)
	s.set(nil, http.StatusServiceUnavailable, false)
	v := startedJWKS(t, Config{JWKS: s.URL, Alg: "RS256"}, func(j *jwks) {
		j.retry, j.retryMax = 10*time.Millisecond, 80*time.Millisecond
	})
	_, err := v.Verify(sign(t, "RS256", key("rsa"), claims(nil), nil), now)
	if !errors.Is(err, ErrNoKey) || !hasText(err, "could not be fetched yet: the server answered 503 Service Unavailable") {
		t.Errorf("error %v", err)
	}
	time.Sleep(600 * time.Millisecond)
	// 10, 20, 40, 80, 80, ... ms: 10 or so in 600 ms; 60 without backing
	// off.
	if n := s.fetches.Load(); n < 4 || n > 20 {
		t.Errorf("%d fetches in 600 ms", n)
	}
}

func TestParseJWKS(t *testing.T) {
	r, err := ruleFor("ES256")
	if err != nil {
		t.Fatal(err)
	}
	var set struct{ Keys []json.RawMessage }
	if err := json.Unmarshal(jwksOf(t,
		jwk{name: "p256", kid: "good"},
		jwk{name: "p384", kid: "p384"},
		jwk{name: "ed", kid: "ed"},
		jwk{name: "rsa", kid: "rsa"},
		jwk{name: "p256b", kid: "enc", use: jwkset.UseEnc},
		jwk{name: "p256b", kid: "other-alg", alg: "ES384"},
	), &set); err != nil {
		t.Fatal(err)
	}
	set.Keys = append(set.Keys,
		json.RawMessage(`{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"oct"}`),
		json.RawMessage(`{"kty":"EC","crv":"P-256","x":"broken","y":"broken","kid":"broken"}`),
		json.RawMessage(`{"kty":"OKP","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo","kid":"x25519"}`),
		json.RawMessage(`{"kty":"XYZ","kid":"unknown"}`),
	)
	body, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := parseJWKS(body, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].kid != "good" {
		t.Errorf("keys %+v, want the one ES256 key", keys)
	}
	if _, err := parseJWKS([]byte(`<html>`), r); err == nil {
		t.Error("no error for HTML")
	}
	keys, err = parseJWKS([]byte(`{}`), r)
	if err != nil || len(keys) != 0 {
		t.Errorf("{}: %v, %v", keys, err)
	}
}

func TestJWKSTooLarge(t *testing.T) {
	s := newJWKSServer(t, make([]byte, maxJWKSSize+1))
	v := mustVerifier(t, Config{JWKS: s.URL, Alg: "RS256"})
	_, err := v.Verify(sign(t, "RS256", key("rsa"), claims(nil), nil), now)
	if !errors.Is(err, ErrNoKey) || !hasText(err, "the key set is larger than 1048576 bytes") {
		t.Errorf("error %v", err)
	}
}

// TestJWKSClose checks that Close ends every goroutine, its idle
// connection's, and while a fetch hangs too.
func TestJWKSClose(t *testing.T) {
	before := runtime.NumGoroutine()
	s := newJWKSServer(t, jwksOf(t, jwk{name: "ed"}))
	withServer := runtime.NumGoroutine()
	raw := sign(t, "EdDSA", key("ed"), claims(nil), nil)
	for _, hang := range []bool{false, true} {
		s.set(jwksOf(t, jwk{name: "ed"}), http.StatusOK, false)
		v, err := NewVerifier(Config{JWKS: s.URL, Alg: "EdDSA", Refresh: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(raw, now); err != nil {
			t.Fatal(err)
		}
		if hang {
			s.set(nil, http.StatusOK, true)
			hung := s.fetches.Load()
			eventually(t, "a fetch hangs", func() bool { return s.fetches.Load() > hung })
		}
		start := time.Now()
		v.Close()
		if d := time.Since(start); d > time.Second {
			t.Errorf("Close took %v (hang %v)", d, hang)
		}
		v.Close() // twice is fine
		// The verifier's connections are closed, and the server's ends.
		eventually(t, "no goroutine of the verifier is left", func() bool { return runtime.NumGoroutine() <= withServer })
	}
	s.stop()
	eventually(t, "no goroutine is left", func() bool { return runtime.NumGoroutine() <= before })
}

func TestJWKSDoesNotFetchOnTheRequestPath(t *testing.T) {
	s := newJWKSServer(t, jwksOf(t, jwk{name: "rsa", kid: "a"}))
	v := mustVerifier(t, Config{JWKS: s.URL, Alg: "RS256"})
	raw := sign(t, "RS256", key("rsa"), claims(jwt.MapClaims{}), map[string]any{"kid": "a"})
	for range 50 {
		if _, err := v.Verify(raw, now); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.fetches.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

func TestJWKSKeysWithoutKid(t *testing.T) {
	s := newJWKSServer(t, jwksOf(t, jwk{name: "ed"}, jwk{name: "ed2", kid: "two"}))
	v := mustVerifier(t, Config{JWKS: s.URL, Alg: "EdDSA"})
	// A kid the JWKS does not have: its keys without a kid are tried.
	for _, tc := range []struct {
		signer, kid string
		ok          bool
	}{
		{"ed", "one", true},
		{"ed", "", true},
		{"ed2", "two", true},
		{"ed2", "", true},
		{"ed2", "one", false},
	} {
		header := map[string]any{"kid": tc.kid}
		if tc.kid == "" {
			header = nil
		}
		_, err := v.Verify(sign(t, "EdDSA", key(tc.signer), claims(nil), header), now)
		if (err == nil) != tc.ok {
			t.Errorf("%s with kid %q: %v", tc.signer, tc.kid, err)
		}
	}
}

func TestJWKSMessageHasNoPassword(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	v := mustVerifier(t, Config{JWKS: "http://user:s3cret@" + addr + "/jwks", Alg: "ES256"})
	_, err = v.Verify(sign(t, "ES256", key("p256"), claims(nil), nil), now)
	if !errors.Is(err, ErrNoKey) || !hasText(err, "http://user:xxxxx@"+addr+"/jwks") || hasText(err, "s3cret") {
		t.Errorf("error %v", err)
	}
}
