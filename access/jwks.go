package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

const (
	// defaultRefresh is how often a JWKS is fetched by default.
	defaultRefresh = time.Hour
	// retryFirst and retryMost bound the waits before a failed fetch is
	// tried again: the first, then twice as long each time, up to the
	// most (neither longer than the refresh interval).
	retryFirst = time.Second
	retryMost  = time.Minute
	// kidEvery is how often at most a token with an unknown kid has the
	// JWKS fetched again (not more often than the refresh interval).
	kidEvery = time.Minute
	// fetchTimeout bounds a fetch.
	fetchTimeout = 30 * time.Second
	// firstFetchWait bounds how long NewVerifier waits for the first
	// fetch.
	firstFetchWait = 2 * time.Second
	// maxJWKSSize is the largest key set read.
	maxJWKSSize = 1 << 20
)

// jwks is an identity provider's key set, fetched in the background and
// cached: a request only ever reads the cache.
type jwks struct {
	url    string
	shown  string // url without its password, for messages
	rule   rule
	client *http.Client

	refresh  time.Duration // between fetches that work
	retry    time.Duration // before the first retry of a failed fetch
	retryMax time.Duration // most between retries
	kidEvery time.Duration // least between fetches for unknown kids

	set   atomic.Pointer[keySet] // never nil
	kick  chan struct{}          // an unknown kid was seen; 1 buffered
	first chan struct{}          // closed after the first fetch
	stop  context.CancelFunc
	done  chan struct{} // closed when run returns
}

// keySet is what the fetches of a JWKS left.
type keySet struct {
	fetched bool      // a fetch has worked, and keys are the last one's
	keys    []jwksKey // the keys that suit the alg
	all     any       // keys as a keyfunc returns them; nil for none
	anon    any       // the keys without a kid, likewise
	err     error     // the last fetch's error; nil when it worked
}

// jwksKey is a key of a JWKS.
type jwksKey struct {
	kid string
	key any
}

// newJWKS checks the URL of a JWKS for alg r, and returns its cache,
// not started.
func newJWKS(raw string, r rule, refresh time.Duration) (*jwks, error) {
	if r.kind == hmacKey {
		return nil, fmt.Errorf("a jwks cannot serve %s, which is a shared secret: give it as a key", r.alg)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("jwks %q is not an http or https URL", raw)
	}
	if refresh == 0 {
		refresh = defaultRefresh
	}
	transport := &http.Transport{Proxy: http.ProxyFromEnvironment}
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		transport = t.Clone() // its own, for close to drop its connections
	}
	j := &jwks{
		url:      raw,
		shown:    u.Redacted(),
		rule:     r,
		client:   &http.Client{Transport: transport},
		refresh:  refresh,
		retry:    min(retryFirst, refresh),
		retryMax: min(retryMost, refresh),
		kidEvery: min(kidEvery, refresh),
		kick:     make(chan struct{}, 1),
		first:    make(chan struct{}),
		done:     make(chan struct{}),
	}
	j.set.Store(&keySet{err: errors.New("the first fetch has not answered yet")})
	return j, nil
}

// start starts the fetches, and waits for the first one for wait at most.
func (j *jwks) start(wait time.Duration) {
	ctx, stop := context.WithCancel(context.Background())
	j.stop = stop
	go j.run(ctx)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-j.first:
	case <-t.C:
	}
}

// close stops the fetches, waits for them to end, and closes the
// connections left.
func (j *jwks) close() {
	if j.stop == nil {
		return // not started
	}
	j.stop()
	<-j.done
	j.client.CloseIdleConnections()
}

// key is the keyfunc of a JWKS: the key of the token's kid, or all the
// keys for a token without one. It only reads the cache; for an unknown
// kid, it has the JWKS fetched again in the background, and tries the
// keys without a kid, if any.
func (j *jwks) key(tok *jwt.Token) (any, error) {
	set := j.set.Load()
	if !set.fetched {
		return nil, &keyError{fmt.Errorf("%w: the JWKS at %s could not be fetched yet: %v", ErrNoKey, j.shown, set.err)}
	}
	kid, ok := tok.Header["kid"]
	if !ok {
		if set.all == nil {
			return nil, &keyError{fmt.Errorf("%w: the JWKS at %s has no %s key", ErrNoKey, j.shown, j.rule.alg)}
		}
		return set.all, nil
	}
	s, ok := kid.(string)
	if !ok {
		return nil, &keyError{fmt.Errorf("%w: malformed: the kid header is not a string", ErrInvalid)}
	}
	for _, k := range set.keys {
		if k.kid == s {
			return k.key, nil
		}
	}
	select {
	case j.kick <- struct{}{}:
	default: // a fetch is asked for already
	}
	if set.anon != nil {
		return set.anon, nil
	}
	return nil, &keyError{fmt.Errorf("%w: the JWKS at %s has no %s key with kid %.64q (it is to be fetched again)", ErrNoKey, j.shown, j.rule.alg, s)}
}

// run fetches the JWKS now, then every refresh interval, sooner after a
// fetch that failed (retry, doubling up to retryMax), and sooner when a
// token had an unknown kid (kidEvery after the last fetch at the
// soonest), until ctx is done.
func (j *jwks) run(ctx context.Context) {
	defer close(j.done)
	retry := j.retry
	var last, due time.Time // when the last fetch started, the next is
	timer := time.NewTimer(0)
	defer timer.Stop()
	for first := true; ; first = false {
		if !j.wait(ctx, timer, last, &due) {
			return
		}
		last = time.Now()
		wait := j.refresh
		if err := j.fetch(ctx); err != nil {
			wait, retry = retry, min(2*retry, j.retryMax)
		} else {
			retry = j.retry
		}
		if first {
			close(j.first)
		}
		due = time.Now().Add(wait)
		timer.Reset(wait)
	}
}

// wait waits for the timer, bringing it forward for unknown kids
// (kidEvery after last at the soonest). It returns false when ctx is
// done.
func (j *jwks) wait(ctx context.Context, timer *time.Timer, last time.Time, due *time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-j.kick:
			if soonest := last.Add(j.kidEvery); soonest.Before(*due) {
				*due = soonest
				timer.Reset(time.Until(soonest))
			}
		}
	}
}

// fetch fetches the JWKS and caches its keys; on failure, it keeps the
// keys cached and notes the error.
func (j *jwks) fetch(ctx context.Context) error {
	keys, err := j.get(ctx)
	if err != nil {
		old := j.set.Load()
		kept := *old
		kept.err = err
		j.set.Store(&kept)
		return err
	}
	var all, anon []jwt.VerificationKey
	for _, k := range keys {
		all = append(all, k.key)
		if k.kid == "" {
			anon = append(anon, k.key)
		}
	}
	j.set.Store(&keySet{fetched: true, keys: keys, all: keySetOf(all), anon: keySetOf(anon)})
	return nil
}

// get fetches the JWKS and returns its keys that suit the alg.
func (j *jwks) get(ctx context.Context) ([]jwksKey, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, fmt.Errorf("making the request: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the server answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the key set: %w", err)
	}
	if len(body) > maxJWKSSize {
		return nil, fmt.Errorf("the key set is larger than %d bytes", maxJWKSSize)
	}
	return parseJWKS(body, j.rule)
}

// parseJWKS returns the keys of a JWK Set (RFC 7517) that can verify r's
// alg: of the right type, for signatures ("use" absent or "sig"), for the
// alg ("alg" absent or the same). The others are skipped, unsupported or
// broken ones too: a key set may hold keys for other uses.
func parseJWKS(body []byte, r rule) ([]jwksKey, error) {
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decoding the key set: %w", err)
	}
	var keys []jwksKey
	for _, m := range set.Keys {
		if (m.USE != "" && m.USE != jwkset.UseSig) || (m.ALG != "" && m.ALG.String() != r.alg) {
			continue
		}
		jwk, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil || r.suits(jwk.Key()) != nil {
			continue
		}
		keys = append(keys, jwksKey{kid: m.KID, key: jwk.Key()})
	}
	return keys, nil
}
