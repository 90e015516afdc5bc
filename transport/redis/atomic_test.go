package redis

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// hubKeys returns the keys of hub h of prefix p whose names contain part.
func hubKeys(t testing.TB, c *goredis.Client, prefix, hub, part string) []string {
	t.Helper()
	keys, err := c.Keys(context.Background(), "{"+prefix+":"+hub+"}:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		if strings.Contains(k, part) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// TestPublishRefusedByACLStoresNothing (issue 19, item 2): a Redis user
// that may not publish on the hub's channels makes the publish script
// fail; it must fail before it stored anything, so that the publisher's
// 503 means "not published" and no id is given twice.
func TestPublishRefusedByACLStoresNothing(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	admin := srv.client()
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", "pub", "on", ">pw", "~*", "allchannels", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	a := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout), func(tr *Transport) {
		tr.Username, tr.Password = "pub", "pw"
	})
	// the user loses its channels after the start checks (an ACL edited
	// while the hub runs)
	if err := admin.Do(ctx, "ACL", "SETUSER", "pub", "resetchannels").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := a.Publish(ctx, transport.PublishRequest{Messages: []transport.Message{
		{Topics: []string{"t"}, Data: "refused", Retry: -1},
		{Topics: []string{"u", "t"}, Data: "refused too", Retry: -1},
	}})
	if err == nil {
		t.Fatal("a publish the ACL refuses succeeded")
	}
	if !errors.Is(err, transport.ErrUnavailable) {
		t.Errorf("error %v, want ErrUnavailable (a 503)", err)
	}
	if keys := hubKeys(t, admin, "p", "h", ":t:"); len(keys) != 0 {
		t.Fatalf("the refused publish stored entries: %v", keys)
	}
	if v, _ := admin.HGet(ctx, "{p:h}:meta", "seq").Result(); v != "" && v != "0" {
		t.Fatalf("the refused publish moved the seq to %s with nothing published", v)
	}
	// once the user may publish, the hub goes on from the first id
	if err := admin.Do(ctx, "ACL", "SETUSER", "pub", "allchannels").Err(); err != nil {
		t.Fatal(err)
	}
	// Redis closed the reader's connection when the user lost its channels;
	// the node may still look up until it notices, and a watch on the dying
	// connection fails: a subscriber would be told to retry, as here
	eventually(t, "the node is up and watches t", func() bool {
		return a.Stats().State.Up && a.Watch(ctx, []string{"t"}) == nil
	})
	r := a.publish(t, "ok", "t")
	a.sink.awaitSeq(t, seqOf(t, r.ID))
	a.sink.checkSeqs(t, []uint64{seqOf(t, r.ID)})
	if st := a.Stats(); st.Events != 1 {
		t.Fatalf("stats after: %+v", st)
	}
}

// TestPublishToleratesEvictedKeys (issue 19, item 2): with a topic's list
// and the last zset gone (evicted under allkeys-lru), a publish that trims
// the history used to fail midway (ZADD idle <nil>) after storing and
// publishing its event, answer an error, and give the same id again to the
// next publish. It must succeed, and ids must stay distinct.
func TestPublishToleratesEvictedKeys(t *testing.T) {
	t.Parallel()
	ssetest.RequireRedis(t, sharedRedis)
	prefix := uniquePrefix(t, sharedRedis)
	c := goredis.NewClient(&goredis.Options{Addr: sharedRedis})
	defer c.Close()
	ctx := context.Background()
	// room for about two events: each publish trims
	a := openNode(t, sharedRedis, prefix, "h", transport.Limits{Events: 1000, MaxBytes: 600})
	a.watch(t, "t2")
	a.publish(t, "a", "t1")
	a.publish(t, "b", "t2")
	epoch := a.Stats().Epoch
	base := "{" + prefix + ":h}:" + epoch
	if err := c.Del(ctx, base+":t:t1", base+":last").Err(); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for range 5 {
		rs, err := a.Publish(ctx, transport.PublishRequest{Messages: []transport.Message{{Topics: []string{"t2"}, Data: "c", Retry: -1}}})
		if err != nil {
			t.Fatalf("publish after the eviction: %v", err)
		}
		seqs = append(seqs, seqOf(t, rs[0].ID))
	}
	if !slices.Equal(seqs, seqRange(3, 7)) {
		t.Fatalf("ids after the eviction: %v, want 3..7", seqs)
	}
	a.sink.awaitSeq(t, 7)
	got := a.sink.seqs()
	if !slices.Equal(got, slices.Compact(slices.Clone(got))) {
		t.Fatalf("an id delivered twice: %v", got)
	}
}

// TestUnansweredPublishSaysMaybePublished (issue 19): a publish whose
// answer was lost may have been stored: its error must not invite a plain
// retry, but one with the same Idempotency-Key. A publish refused before
// it was sent says no such thing.
func TestUnansweredPublishSaysMaybePublished(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	proxy := startDropProxy(t, srv.Addr, "$2\r\nok\r\n")
	a := openNode(t, proxy.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
	proxy.armed.Store(true)
	_, err := a.Publish(context.Background(), transport.PublishRequest{
		Messages: []transport.Message{{Topics: []string{"t"}, Data: "once", Retry: -1}},
	})
	if !errors.Is(err, transport.ErrUnavailable) || !strings.Contains(err.Error(), "may have been published; retry with the same Idempotency-Key") {
		t.Fatalf("publish whose reply was lost: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = a.Publish(ctx, transport.PublishRequest{
		Messages: []transport.Message{{Topics: []string{"t"}, Data: "never sent", Retry: -1}},
	})
	if err == nil || strings.Contains(err.Error(), "may have been published") {
		t.Fatalf("publish never sent: %v", err)
	}
}

// TestPublishWithoutRedisNotMaybePublished: a publish that could not even
// connect says it was not published, without inviting a keyed retry.
func TestPublishWithoutRedisNotMaybePublished(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	a := openNode(t, srv.Addr, "p", "h", defaultLimits, withTimeout(faultTimeout))
	a.publish(t, "x", "t")
	srv.kill()
	_, err := a.Publish(context.Background(), transport.PublishRequest{
		Messages: []transport.Message{{Topics: []string{"t"}, Data: "down", Retry: -1}},
	})
	if !errors.Is(err, transport.ErrUnavailable) || strings.Contains(err.Error(), "may have been published") {
		t.Fatalf("publish without redis: %v", err)
	}
}
