//go:build unix

package browser

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// streamPorts is the testPorts number of TestStreamingAnswerResumes: one
// that no other test uses, whose HTTP port is no other test's HTTPS port
// (8643 + n) and the other way round.
const streamPorts = 36

// TestStreamingAnswerResumes is the relay of a model's streaming answer:
// one streaming publish (text/event-stream, chunked) feeds the topic
// chat/42 token by token, while a page follows the topic with an
// EventSource. The page opens mid-answer and gets the tokens so far from
// replay; its stream is then ended twice mid-answer (max_age), and tokens
// are published while the browser is away. The browser reconnects with
// Last-Event-ID and resumes: the page ends with every token exactly once,
// in order, with the consecutive ids of the one stream.
func TestStreamingAnswerResumes(t *testing.T) {
	t.Parallel()
	p := testPorts(streamPorts)
	base := origin(p.http)
	startCaddy(t, p, caddyfile(p, "", site(t, base, `
	sse /events {
		replay 100
		retry 500ms
		max_age 2s
	}
	sse_publish /publish`)))
	relay := startRelay(t, base+"/publish?topic=chat/42")
	var tokens []string
	send := func(what string, n int) {
		for i := range n {
			tok := fmt.Sprintf("%s %d", what, i)
			relay.token(tok)
			tokens = append(tokens, tok)
		}
	}

	// the answer has begun when the page opens
	send("before the page", 3)
	pg := startChromium(t).openHarness(base)
	src := pg.open("/events?topic=chat/42", sourceOptions{Types: []string{"token"}})
	pg.waitOpen(src, 1)
	pg.waitEvents(src, len(tokens)) // from replay

	const cycles = 2
	for cycle := range cycles {
		send(fmt.Sprintf("cycle %d live", cycle), 2)
		pg.waitEvents(src, len(tokens))
		pg.waitFor(fmt.Sprintf("the stream ended mid-answer (%d)", cycle+1), func(es []entry) bool {
			return len(only(es, src, "error")) > cycle
		})
		send(fmt.Sprintf("cycle %d while away", cycle), 3)
		if es := pg.entries(); len(only(es, src, "open")) != cycle+1 {
			t.Fatalf("the browser reconnected before the tokens were published; the test proves nothing:\n%s", dump(es))
		}
		pg.waitOpen(src, cycle+2)
	}
	send("after", 2)
	answer := relay.end()
	got := pg.waitEvents(src, len(tokens))

	var data, ids []string
	for _, e := range got {
		if e.Type != "token" {
			t.Fatalf("an event of type %q: %v", e.Type, e)
		}
		data = append(data, e.Data)
		ids = append(ids, e.ID)
	}
	if !slices.Equal(data, tokens) {
		t.Fatalf("the page got the tokens\n%q\nwant\n%q\n%s", data, tokens, dump(pg.entries()))
	}
	if answer.Count != len(tokens) || ids[0] != answer.FirstID || ids[len(ids)-1] != answer.LastID {
		t.Fatalf("the relay's answer %+v; the page got ids %s to %s", answer, ids[0], ids[len(ids)-1])
	}
	for i := 1; i < len(ids); i++ {
		if idSeq(t, ids[i]) != idSeq(t, ids[i-1])+1 {
			t.Fatalf("ids %v are not consecutive", ids)
		}
	}
	// each reconnection sent the id of the last token received
	reqs := pg.net.requests("/events")
	if len(reqs) < cycles+1 || reqs[0].Headers["last-event-id"] != "" {
		t.Fatalf("requests:\n%s", pg.net)
	}
	for _, r := range reqs[1 : cycles+1] {
		if id := r.Headers["last-event-id"]; !slices.Contains(ids, id) || r.Status != 200 {
			t.Fatalf("a reconnection with Last-Event-ID %q, status %d:\n%s", id, r.Status, pg.net)
		}
	}
}

// idSeq is the sequence number of an event id, <epoch>-<seq>.
func idSeq(t *testing.T, id string) int {
	t.Helper()
	_, s, _ := strings.Cut(id, "-")
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("malformed id %q", id)
	}
	return n
}

// relay is a streaming publish in progress, as a back end relaying a
// model's answer makes it: one POST whose body is written token by token.
type relay struct {
	t    *testing.T
	body *io.PipeWriter
	done chan relayAnswer
}

// relayAnswer is the answer to the streaming publish.
type relayAnswer struct {
	Status  int    `json:"-"`
	Error   string `json:"error"`
	Count   int    `json:"count"`
	FirstID string `json:"first_id"`
	LastID  string `json:"last_id"`
}

// startRelay starts a streaming publish to url.
func startRelay(t *testing.T, url string) *relay {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, url, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/event-stream")
	r := &relay{t: t, body: pw, done: make(chan relayAnswer, 1)}
	go func() {
		client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Do(req)
		if err != nil {
			r.done <- relayAnswer{Error: err.Error()}
			return
		}
		defer resp.Body.Close()
		a := relayAnswer{Status: resp.StatusCode}
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			a.Error = err.Error()
		}
		r.done <- a
	}()
	t.Cleanup(func() { pw.CloseWithError(errors.New("the test is over")) })
	return r
}

// token publishes one token, as the model's stream has it.
func (r *relay) token(tok string) {
	r.t.Helper()
	if _, err := fmt.Fprintf(r.body, "event: token\ndata: %s\n\n", tok); err != nil {
		r.t.Fatalf("relaying %q: %v", tok, err)
	}
}

// end ends the answer and returns the publish's answer.
func (r *relay) end() relayAnswer {
	r.t.Helper()
	r.body.Close()
	select {
	case a := <-r.done:
		if a.Status != http.StatusOK {
			r.t.Fatalf("the streaming publish: %d %s", a.Status, a.Error)
		}
		return a
	case <-time.After(wait):
		r.t.Fatal("no answer to the streaming publish")
	}
	return relayAnswer{}
}
