package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/internal/caddyproc"
	"github.com/ssehub/caddy-sse/internal/ssetest"
	"github.com/ssehub/caddy-sse/transport"
)

// streamAnswer is the answer to a streaming publish.
type streamAnswer struct {
	Error    string `json:"error"`
	Count    int    `json:"count"`
	FirstID  string `json:"first_id"`
	LastID   string `json:"last_id"`
	Repeated int    `json:"repeated"`
}

// expectEvent fails the test unless the stream's next event has type typ
// and data; it returns the event's id.
func expectEvent(t *testing.T, s *ssetest.Stream, typ, data string) string {
	t.Helper()
	f := s.EventT(t, opsWait)
	if f.Type != typ || f.Data != data {
		t.Fatalf("got %s %q %q, want %q %q", f.LastID, f.Type, f.Data, typ, data)
	}
	return f.LastID
}

// TestSSEPublishStreamCommand runs `caddy sse-publish --stream`: standard
// input is published event by event as it is written, even after a pause
// longer than the admin server's read timeout, and the answer is printed
// when it ends; --ndjson reads JSON lines; a refused event ends the
// command with status 1, saying what was published before.
func TestSSEPublishStreamCommand(t *testing.T) {
	t.Parallel()
	srv := opsStart(t, 2407, 8407, "", "sse /events")
	address := fmt.Sprintf("localhost:%d", srv.adminPort)
	s := ssetest.OpenT(t, ssetest.NewClient(), srv.base+"/events?topic=cli", nil)

	t.Run("event by event", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*opsWait)
		defer cancel()
		cmd := exec.CommandContext(ctx, caddyproc.Binary(t), "sse-publish", "--address", address,
			"--stream", "--topic", "cli", "--event", "token")
		cmd.Dir = t.TempDir()
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for i, tok := range []string{"Hello", ", ", "world"} {
			if i == 2 {
				// a pause longer than the admin server's read timeout (10s),
				// which a stream's own idle timeout replaces
				time.Sleep(11 * time.Second)
			}
			if _, err := fmt.Fprintf(stdin, "data: %s\n\n", tok); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, expectEvent(t, s, "token", tok))
		}
		if _, err := io.WriteString(stdin, "event: done\ndata: [DONE]\n\ndata: incomplete"); err != nil {
			t.Fatal(err)
		}
		last := expectEvent(t, s, "done", "[DONE]")
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: %s", err, stderr.String())
		}
		var a streamAnswer
		if err := json.Unmarshal([]byte(stdout.String()), &a); err != nil || a.Count != 4 || a.FirstID != ids[0] || a.LastID != last {
			t.Fatalf("printed %q (%v); want count 4 from %s to %s", stdout.String(), err, ids[0], last)
		}
	})

	t.Run("ndjson", func(t *testing.T) {
		res := runCaddyCommand(t, `{"data":"x"}`+"\n"+`{"event":"e","data":{"n":1}}`+"\n",
			"sse-publish", "--address", address, "--stream", "--ndjson", "--topic", "cli")
		if res.code != 0 {
			t.Fatalf("exit status %d: %s", res.code, res.stderr)
		}
		expectEvent(t, s, "message", "x")
		last := expectEvent(t, s, "e", `{"n":1}`)
		if !strings.Contains(res.stdout, `"count":2`) || !strings.Contains(res.stdout, last) {
			t.Fatalf("printed %q", res.stdout)
		}
	})

	t.Run("refused", func(t *testing.T) {
		res := runCaddyCommand(t, "data: ok\n\nretry: 1\ndata: no\n\ndata: never\n\n",
			"sse-publish", "--address", address, "--stream", "--topic", "cli")
		id := expectEvent(t, s, "message", "ok")
		want := fmt.Sprintf("HTTP 400: event 2 (line 3): retry 1 is not allowed: give the reconnection delay in whole "+
			"milliseconds, from 100 to 86400000 (24 hours) (1 event of the stream was published, %s)", id)
		if res.code != 1 || res.stdout != "" || !strings.Contains(res.stderr, want) {
			t.Fatalf("exit status %d, stdout %q, stderr %q; want 1 and %q", res.code, res.stdout, res.stderr, want)
		}
	})

	for _, c := range []struct {
		name string
		args []string
		msg  string
	}{
		{"data argument", []string{"--stream", "x"}, "give no data argument"},
		{"json", []string{"--stream", "--json"}, "--json and --stream do not go together"},
		{"ndjson without stream", []string{"--ndjson", "x"}, "--ndjson is a format of --stream"},
		{"invalid topic", []string{"--stream", "--topic", "a\tb"}, "HTTP 400: topic"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := runCaddyCommand(t, "data: x\n\n", append([]string{"sse-publish", "--address", address}, c.args...)...)
			if res.code != 1 || !strings.Contains(res.stderr, c.msg) {
				t.Fatalf("exit status %d, stderr %q; want 1 and %q", res.code, res.stderr, c.msg)
			}
		})
	}

	// nothing else reached the subscriber
	opsPublish(t, srv.AdminURL("/sse/hubs/default/publish"), "topic=cli&data=last")
	expectEvent(t, s, "message", "last")
}

// TestSIGTERMWithStreamingPublishes: streaming publishes open on a route
// and through the admin API do not hold Caddy's exit (its grace period is
// unlimited by default): the route's publisher gets a 503 with what was
// published.
func TestSIGTERMWithStreamingPublishes(t *testing.T) {
	t.Parallel()
	srv := opsStart(t, 2412, 8412, "", "sse /events\n\tsse_publish /publish")
	s := ssetest.OpenT(t, ssetest.NewClient(), srv.base+"/events?topic=term", nil)
	type result struct {
		status int
		answer streamAnswer
		err    error
	}
	open := func(url string) (io.WriteCloser, <-chan result) {
		pr, pw := io.Pipe()
		req, err := http.NewRequest(http.MethodPost, url, pr)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/event-stream")
		done := make(chan result, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- result{err: err}
				return
			}
			defer resp.Body.Close()
			r := result{status: resp.StatusCode}
			r.err = json.NewDecoder(bufio.NewReader(resp.Body)).Decode(&r.answer)
			done <- r
		}()
		t.Cleanup(func() { pw.Close() })
		return pw, done
	}
	route, routeDone := open(srv.base + "/publish?topic=term")
	admin, adminDone := open(srv.AdminURL("/sse/hubs/default/publish?topic=term"))
	if _, err := io.WriteString(route, "data: route\n\n"); err != nil {
		t.Fatal(err)
	}
	id := expectEvent(t, s, "message", "route")
	if _, err := io.WriteString(admin, "data: admin\n\n"); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, s, "message", "admin")

	took, err := srv.Terminate(2 * time.Second)
	if err != nil {
		t.Fatalf("caddy did not exit within 2s of SIGTERM: %v", err)
	}
	t.Logf("caddy exited %v after SIGTERM with two open streaming publishes", took)
	select {
	case r := <-routeDone:
		if r.err != nil || r.status != 503 || r.answer.Count != 1 || r.answer.LastID != id {
			t.Fatalf("the route's stream: %d %+v %v; want 503 with count 1", r.status, r.answer, r.err)
		}
	case <-time.After(opsWait):
		t.Fatal("the route's stream got no answer")
	}
	select {
	case <-adminDone: // answered or cut: over
	case <-time.After(opsWait):
		t.Fatal("the admin API's stream is still open")
	}
}

// TestRedisStreamRetriedOnAnotherInstance: a streaming publish through
// Redis cut after 300 events on one instance, sent again whole with the
// same Idempotency-Key to another instance, publishes each of its 600
// events once, with continuous ids (its batches of up to 256 events land
// at their positions in the stream on either instance).
func TestRedisStreamRetriedOnAnotherInstance(t *testing.T) {
	t.Parallel()
	a, b, _ := redisPair(t, 2428, 8428)
	s := ssetest.OpenT(t, ssetest.NewClient(), b.base+"/events?topic=relay", nil)
	var body strings.Builder
	for i := range 600 {
		fmt.Fprintf(&body, "data: token %d\n\n", i)
	}
	whole := body.String()
	cut := strings.Index(whole, "data: token 300\n") + len("data: tok")

	conn, err := net.DialTimeout("tcp", fmt.Sprintf("localhost:%d", a.httpPort), opsWait)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	part := whole[:cut]
	if _, err := fmt.Fprintf(conn, "POST /publish?topic=relay HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/event-stream\r\n"+
		"Idempotency-Key: answer-7\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(part), part); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 300 {
		ids = append(ids, expectEvent(t, s, "message", fmt.Sprint("token ", i)))
	}
	conn.Close()

	// the retry on b, once a's request is over (its key released)
	var answer streamAnswer
	opsEventually(t, "the retry is accepted", func() bool {
		req, err := http.NewRequest(http.MethodPost, b.base+"/publish?topic=relay", io.MultiReader(strings.NewReader(whole)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/event-stream")
		req.Header.Set("Idempotency-Key", "answer-7")
		status, _, rb := ssetest.DoT(t, req)
		if status == http.StatusConflict {
			return false
		}
		if err := json.Unmarshal(rb, &answer); err != nil || status != http.StatusOK {
			t.Fatalf("the retry: %d %s", status, rb)
		}
		return true
	})
	for i := 300; i < 600; i++ {
		ids = append(ids, expectEvent(t, s, "message", fmt.Sprint("token ", i)))
	}
	if answer.Count != 600 || answer.Repeated != 300 || answer.FirstID != ids[0] || answer.LastID != ids[599] {
		t.Fatalf("the retry's answer %+v; want 600 events, 300 repeated, from %s to %s", answer, ids[0], ids[599])
	}
	for i := 1; i < len(ids); i++ {
		_, s0, _ := transport.ParseID(ids[i-1])
		_, s1, _ := transport.ParseID(ids[i])
		if s1 != s0+1 {
			t.Fatalf("ids %s then %s are not consecutive", ids[i-1], ids[i])
		}
	}
	next := opsPublish(t, a.base+"/publish", "topic=relay&data=next")
	if ev := s.EventT(t, opsWait); ev.LastID != next.ID {
		t.Fatalf("after the stream the subscriber got %+v, want only the next event", ev)
	}
}
