package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ssehub/caddy-sse/transport"
)

// runBatch sends reqs as one publish script call (one batch), as the
// batcher does with concurrent publishes, and returns their calls,
// answered.
func runBatch(t testing.TB, n *node, reqs ...transport.PublishRequest) []*pubCall {
	t.Helper()
	ctx := context.Background()
	cmd, err := n.publishCommand(ctx)
	if err != nil {
		t.Fatal(err)
	}
	calls := make([]*pubCall, len(reqs))
	for i, r := range reqs {
		calls[i] = newPubCall(ctx, cmd, r)
	}
	n.runBatches([][]*pubCall{calls})
	for _, c := range calls {
		<-c.done
	}
	return calls
}

// one is a request of one message.
func one(data string, topics ...string) transport.PublishRequest {
	return transport.PublishRequest{Messages: []transport.Message{{Topics: topics, Data: data, Retry: -1}}}
}

// keyed is req under an idempotency key.
func keyed(req transport.PublishRequest, key, fp string) transport.PublishRequest {
	req.Key, req.Fingerprint = key, fp
	return req
}

// answerSeqs returns the seqs of a call's receipts.
func answerSeqs(t testing.TB, c *pubCall) []uint64 {
	t.Helper()
	if err := publishError(c); err != nil {
		t.Fatalf("call failed: %v", err)
	}
	var out []uint64
	for _, a := range c.answers {
		id, _, _ := strings.Cut(a[1:], " ")
		out = append(out, seqOf(t, id))
	}
	return out
}

// TestBatchMismatchSparesNeighbours: in one script call, a publish whose
// idempotency key is recorded with another fingerprint is refused alone:
// it stores nothing and takes no seq, and the publishes around it get
// consecutive ids.
func TestBatchMismatchSparesNeighbours(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	a := openNode(t, srv.Addr, "p", "h", defaultLimits)
	first := runBatch(t, a, keyed(one("x", "t"), "k", "f1"))
	if got := answerSeqs(t, first[0]); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("first publish: %v", got)
	}
	calls := runBatch(t, a,
		one("a", "t"),
		keyed(one("refused", "t"), "k", "f2"), // another request under k
		one("b", "u", "t"),
		keyed(one("x", "t"), "k", "f1"), // a retry of the first
	)
	if got := answerSeqs(t, calls[0]); !slices.Equal(got, []uint64{2}) {
		t.Errorf("before the refused one: %v, want [2]", got)
	}
	if err := publishError(calls[1]); !errors.Is(err, transport.ErrKeyMismatch) {
		t.Errorf("mismatched key: %v, want ErrKeyMismatch", err)
	}
	if got := answerSeqs(t, calls[2]); !slices.Equal(got, []uint64{3}) {
		t.Errorf("after the refused one: %v, want [3]", got)
	}
	if got := calls[3].answers; len(got) != 1 || got[0][0] != 'r' || seqOf(t, got[0][1:]) != 1 {
		t.Errorf("retry of the first: %q, want a repeat of seq 1", got)
	}
	st := a.Stats()
	if st.Head != 3 || st.Events != 3 {
		t.Fatalf("after the batch: head %d, %d events; want 3, 3", st.Head, st.Events)
	}
	r := a.replay(t, transport.ReplayQuery{Topics: []string{"t"}, Latest: 10})
	if got := eventSeqs(r.Events); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("history of t: %v", got)
	}
}

// TestBatchSameKeyTwice: a retry sent while the first publish under its
// key is in the same batch is answered as a retry sent after it: the
// same ids, repeated, and the positions beyond published once.
func TestBatchSameKeyTwice(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	a := openNode(t, srv.Addr, "p", "h", defaultLimits)
	req := transport.PublishRequest{Key: "k", Fingerprint: "f", Messages: []transport.Message{
		{Topics: []string{"t"}, Data: "0", Retry: -1},
		{Topics: []string{"t"}, Data: "1", Retry: -1},
	}}
	more := req
	more.Offset = 1
	more.Messages = append(slices.Clone(req.Messages[1:]), transport.Message{Topics: []string{"t"}, Data: "2", Retry: -1})
	calls := runBatch(t, a, req, one("other", "t"), req, more)
	if got := answerSeqs(t, calls[0]); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("first: %v", got)
	}
	if got := answerSeqs(t, calls[2]); !slices.Equal(got, []uint64{1, 2}) || calls[2].answers[0][0] != 'r' || calls[2].answers[1][0] != 'r' {
		t.Fatalf("its retry: %q", calls[2].answers)
	}
	if got := answerSeqs(t, calls[3]); !slices.Equal(got, []uint64{2, 4}) || calls[3].answers[0][0] != 'r' || calls[3].answers[1][0] != 'k' {
		t.Fatalf("its continuation: %q", calls[3].answers)
	}
	rs, err := a.Publish(context.Background(), transport.PublishRequest{Key: "k", Fingerprint: "f", Offset: 2,
		Messages: []transport.Message{{Topics: []string{"t"}, Data: "2", Retry: -1}}})
	if err != nil || !rs[0].Repeated || seqOf(t, rs[0].ID) != 4 {
		t.Fatalf("a later retry of position 2: %+v, %v", rs, err)
	}
	if st := a.Stats(); st.Head != 4 || st.Events != 4 || st.Idempotency.Keys != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestBatchRefusedByACLSparesNeighbours: a publish to a channel the user
// may no longer publish on is refused alone, before anything of it is
// stored; the publishes around it go on.
func TestBatchRefusedByACLSparesNeighbours(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	admin := srv.client()
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", "pub", "on", ">pw", "~*", "allchannels", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	a := openNode(t, srv.Addr, "p", "h", defaultLimits, func(tr *Transport) {
		tr.Username, tr.Password = "pub", "pw"
	})
	// the hub's channel of every event of one topic (B:a) is needed too
	if err := admin.Do(ctx, "ACL", "SETUSER", "pub", "resetchannels", "&{p:h}:c:ok", "&{p:h}:a").Err(); err != nil {
		t.Fatal(err)
	}
	calls := runBatch(t, a, one("a", "ok"), one("refused", "no"), one("refused too", "ok", "no"), one("b", "ok"))
	if got := answerSeqs(t, calls[0]); !slices.Equal(got, []uint64{1}) {
		t.Errorf("before: %v", got)
	}
	for _, c := range calls[1:3] {
		if err := publishError(c); !errors.Is(err, transport.ErrUnavailable) || !strings.Contains(err.Error(), "nothing was published") {
			t.Errorf("refused publish: %v", err)
		}
	}
	if got := answerSeqs(t, calls[3]); !slices.Equal(got, []uint64{2}) {
		t.Errorf("after: %v", got)
	}
	if keys := hubKeys(t, admin, "p", "h", ":t:no"); len(keys) != 0 {
		t.Fatalf("the refused publishes stored entries: %v", keys)
	}
	if st := a.Stats(); st.Head != 2 || st.Events != 2 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestBatchScriptRefused: when Redis refuses the script itself (here: out
// of memory, at its first write), every publish of the batch gets the
// error, and none stored anything or took a seq.
func TestBatchScriptRefused(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	admin := srv.client()
	ctx := context.Background()
	a := openNode(t, srv.Addr, "p", "h", defaultLimits)
	a.publish(t, "first", "t")
	if err := admin.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	calls := runBatch(t, a, one("a", "t"), keyed(one("b", "u"), "k", "f"), one("c", "t", "u"))
	for i, c := range calls {
		err := publishError(c)
		if !errors.Is(err, transport.ErrUnavailable) || !strings.Contains(err.Error(), "OOM") {
			t.Errorf("publish %d while Redis refuses writes: %v", i, err)
		}
		if strings.Contains(fmt.Sprint(err), "may have been published") {
			t.Errorf("publish %d: a refused script says it may have run: %v", i, err)
		}
	}
	if err := admin.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if v, _ := admin.HGet(ctx, "{p:h}:meta", "seq").Result(); v != "1" {
		t.Fatalf("seq %q after the refused batch, want 1", v)
	}
	if keys := hubKeys(t, admin, "p", "h", ":i:"); len(keys) != 0 {
		t.Fatalf("the refused batch recorded its key: %v", keys)
	}
	calls = runBatch(t, a, one("a", "t"), keyed(one("b", "u"), "k", "f"))
	if got := answerSeqs(t, calls[1]); !slices.Equal(got, []uint64{3}) || calls[1].answers[0][0] != 'k' {
		t.Fatalf("after: %q", calls[1].answers)
	}
	if st := a.Stats(); st.Head != 3 || st.Events != 3 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestBatchEqualsSequential: a batch leaves the history as the same
// publishes sent one script call each do, and as they did before
// publishes were batched: the same entries in every
// topic's list (a history of 3 events per topic, so that the batch evicts
// some of its own), the same figures and the same indexes.
func TestBatchEqualsSequential(t *testing.T) {
	t.Parallel()
	srv := startPrivateRedis(t)
	c := srv.client()
	limits := transport.Limits{Events: 3, MaxBytes: 64 << 20}
	seqNode := openNode(t, srv.Addr, "p", "one", limits)
	batchNode := openNode(t, srv.Addr, "p", "all", limits)
	var reqs []transport.PublishRequest
	for i := range 12 {
		topics := [][]string{{"a"}, {"b"}, {"a", "b"}, {"c", "a", "b"}}[i%4]
		reqs = append(reqs, one(fmt.Sprint("event ", i), topics...))
	}
	reqs = append(reqs, keyed(transport.PublishRequest{Messages: []transport.Message{
		{Topics: []string{"a"}, Data: "k0", Retry: -1}, {Topics: []string{"c", "d"}, Data: "k1", Retry: -1},
	}}, "k", "f"))
	for _, r := range reqs {
		runBatch(t, seqNode, r)
	}
	runBatch(t, batchNode, reqs...)
	one, all := hubDump(t, c, seqNode), hubDump(t, c, batchNode)
	if one != sequentialDump {
		t.Errorf("one call per publish:\n%s\nwant (as the script before batches left it):\n%s", one, sequentialDump)
	}
	if all != sequentialDump {
		t.Fatalf("one batch:\n%s\nwant (as the script before batches left it):\n%s", all, sequentialDump)
	}
}

// sequentialDump is the hub TestBatchEqualsSequential's publishes left,
// sent one at a time, before publishes were batched (commit 028496c).
const sequentialDump = `meta [14 1502 6 0]
last [{12 b} {13 a} {14 c} {14 d}]
first [{1 a} {2 b} {4 c} {14 d}]
idle []
refs 11: "2"
refs 12: "3"
refs 14: "2"
refs 8: "1"
body 11: "E 11 T 253 2\n9 a\n10 b\ndata: event 10\n\n"
body 12: "E 12 T 278 3\n8 c\n11 a\n11 b\ndata: event 11\n\n"
body 14: "E 14 T 247 2\n12 c\n0 d\ndata: k1\n\n"
body 8: "E 8 T 275 3\n4 c\n7 a\n7 b\ndata: event 7\n\n"
a: "E 11 T 253 2\n@"
a: "E 12 T 278 3\n@"
a: "E 13 T 222 1\n12 a\ndata: k0\n\n"
b: "E 10 T 227 1\n8 b\ndata: event 9\n\n"
b: "E 11 T 253 2\n@"
b: "E 12 T 278 3\n@"
c: "E 8 T 275 3\n@"
c: "E 12 T 278 3\n@"
c: "E 14 T 247 2\n@"
d: "E 14 T 247 2\n@"
record: "E 13+2\n\nf"
`

// hubDump describes a hub's keys and figures, with its epoch, base and the
// times of its entries left out, so that two hubs can be compared.
func hubDump(t testing.TB, c *goredis.Client, n *node) string {
	t.Helper()
	ctx := context.Background()
	epoch := n.Stats().Epoch
	base := "{p:" + n.hub + "}"
	var b strings.Builder
	norm := func(s string) string {
		s = strings.ReplaceAll(s, base, "B")
		s = strings.ReplaceAll(s, epoch, "E")
		var out []string
		for line := range strings.Lines(s) {
			if f := strings.Fields(line); len(f) == 5 && f[0] == "E" { // an entry's first line: its time
				f[2] = "T"
				line = strings.Join(f, " ") + "\n"
			}
			out = append(out, line)
		}
		return strings.Join(out, "")
	}
	meta, _ := c.HMGet(ctx, base+":meta", "seq", "bytes", "events", "forgotten").Result()
	fmt.Fprintln(&b, "meta", meta)
	for _, name := range []string{"last", "first", "idle"} {
		z, _ := c.ZRangeWithScores(ctx, base+":"+epoch+":"+name, 0, -1).Result()
		fmt.Fprintln(&b, name, z)
	}
	for _, name := range []string{"refs", "body"} {
		h, _ := c.HGetAll(ctx, base+":"+epoch+":"+name).Result()
		keys := make([]string, 0, len(h))
		for k := range h {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %s: %q\n", name, k, norm(h[k]))
		}
	}
	for _, topic := range []string{"a", "b", "c", "d"} {
		es, _ := c.LRange(ctx, base+":"+epoch+":t:"+topic, 0, -1).Result()
		for _, e := range es {
			fmt.Fprintf(&b, "%s: %q\n", topic, norm(e))
		}
	}
	rec, _ := c.Get(ctx, base+":i:k").Result()
	if _, rest, ok := strings.Cut(rec, "\n"); ok {
		fmt.Fprintf(&b, "record: %q\n", norm(rest))
	}
	return b.String()
}

// TestSplitBatch: the waiting publishes are split into script calls
// within a batch's bounds, a publish beyond them alone, at most
// pipelineScripts calls per round trip; the order is kept.
func TestSplitBatch(t *testing.T) {
	t.Parallel()
	call := func(nmsg, ntopics, bytes int) *pubCall {
		return &pubCall{cmd: "SPUBLISH", nmsg: nmsg, ntopics: ntopics, bytes: bytes}
	}
	var queue []*pubCall
	for range 70 {
		queue = append(queue, call(1, 1, 100))
	}
	queue = append(queue, call(500, 500, 1<<20), call(1, 3, 10))
	for range 100 {
		queue = append(queue, call(1, 3, 10))
	}
	groups, n := splitBatch(queue)
	var sizes []int
	for _, g := range groups {
		sizes = append(sizes, len(g))
	}
	// 64 messages; the 6 left; the large one alone; 64 topic slots of 3
	if want := []int{64, 6, 1, 64}; !slices.Equal(sizes, want) || n != 135 {
		t.Fatalf("groups %v taking %d calls, want %v taking 135", sizes, n, want)
	}
	var flat []*pubCall
	for _, g := range groups {
		flat = append(flat, g...)
	}
	if !slices.Equal(flat, queue[:n]) {
		t.Fatal("the calls are out of order")
	}
}
