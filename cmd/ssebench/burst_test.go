//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAppendBatch checks that an array's body is JSON that holds each
// event once, with its topic and payload, in order.
func TestAppendBatch(t *testing.T) {
	p, err := newPublisher(pubOptions{url: "http://127.0.0.1:1/publish", batch: defaultBatchTemplate,
		contentType: defaultBurstType, escape: "auto", client: "raw", size: 80, timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var sc pubScratch
	topics := topicNames(3)
	for _, n := range []int{1, 7} {
		body := p.appendBatch(&sc, 4, 10, n, topics, 123*time.Microsecond)
		var events []struct {
			Topic string `json:"topic"`
			Data  string `json:"data"`
		}
		if err := json.Unmarshal(body, &events); err != nil {
			t.Fatalf("%d events: the body is not a JSON array: %v\n%s", n, err, body)
		}
		if len(events) != n {
			t.Fatalf("%d events in the body, want %d", len(events), n)
		}
		for i, e := range events {
			seq := uint64(10 + i)
			run, gotSeq, sent, ok := parsePayload([]byte(e.Data))
			if !ok || run != 4 || gotSeq != seq || sent != 123000 || len(e.Data) != 80 {
				t.Errorf("event %d: data %q", i, e.Data)
			}
			if want := topicName(int(seq % 3)); e.Topic != want {
				t.Errorf("event %d: topic %q, want %q", i, e.Topic, want)
			}
		}
		if want := string(appendPayload(nil, 4, 10, 123000, 80)); string(sc.data) != want {
			t.Errorf("the first event's data is %q, want %q", sc.data, want)
		}
	}
}

// TestBatchTemplate checks a template of another hub's array: its
// placeholders, and JSON escaping of what it holds.
func TestBatchTemplate(t *testing.T) {
	p, err := newPublisher(pubOptions{url: "http://127.0.0.1:1/publish", batch: `{"channel":"{topic}","id":{seq},"payload":"{data}"}`,
		contentType: "application/json", escape: "auto", client: "raw", size: 0, timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var sc pubScratch
	body := p.appendBatch(&sc, 1, 0, 2, []string{`a"b`}, 0)
	want := `[{"channel":"a\"b","id":0,"payload":"ssb:1:0:0:"},{"channel":"a\"b","id":1,"payload":"ssb:1:1:0:"}]`
	if string(body) != want {
		t.Errorf("body\n%s\nwant\n%s", body, want)
	}
}

// BenchmarkAppendBatch measures building a 1,000-event array, so that
// the tool is not what limits a burst.
func BenchmarkAppendBatch(b *testing.B) {
	p, err := newPublisher(pubOptions{url: "http://127.0.0.1:1/publish", batch: defaultBatchTemplate,
		contentType: defaultBurstType, escape: "auto", client: "raw", size: 64, timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	var sc pubScratch
	topics := topicNames(1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		sc.body = p.appendBatch(&sc, 1, uint64(i*1000), 1000, topics, since())
	}
	b.SetBytes(int64(len(sc.body)))
}

func TestSummarizeCounts(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want countSummary
	}{
		{nil, countSummary{}},
		{[]int{5}, countSummary{5, 5, 5, 5}},
		{[]int{9, 1, 4, 7}, countSummary{1, 4, 9, 21}},
		{[]int{3, 3, 1, 2, 100}, countSummary{1, 3, 100, 109}},
	} {
		if got := summarizeCounts(c.in); got != c.want {
			t.Errorf("summarizeCounts(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

// TestBurstDisconnects runs a burst against a hub that ends half of the
// streams after a number of events, and checks that the tool counts
// those subscribers as disconnected with what they had, and does not
// wait the grace period for them.
func TestBurstDisconnects(t *testing.T) {
	hub := newArrayHub()
	srv := httptest.NewServer(hub)
	defer srv.Close()
	defer hub.close()
	const subs, events, cut = 6, 300, 120
	sub := srv.URL + "/events?topic={topic}"
	begin := time.Now()
	m := runTool(t, "burst", "--sub-url="+sub+","+sub+"&cut="+strconv.Itoa(cut), "--pub-url="+srv.URL+"/publish",
		"-n", strconv.Itoa(subs), "--events", strconv.Itoa(events), "--batch", "100", "--publishers", "2",
		"--warmup", "100ms", "--grace", "20s", "--sources", "0")
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("the run took %v: it waited for the disconnected subscribers", d)
	}
	// subscribers 1, 3 and 5 took the second URL
	expectEqual(t, m, map[string]float64{
		"subscribed":                  subs,
		"published":                   events,
		"publish_requests":            3,
		"publish_errors":              0,
		"complete":                    subs / 2,
		"disconnected":                subs / 2,
		"disconnected_received.min":   cut,
		"disconnected_received.max":   cut,
		"disconnected_received.total": subs / 2 * cut,
		"received_per_sub.min":        cut,
		"received_per_sub.median":     cut,
		"received_per_sub.max":        events,
		"expected":                    subs * events,
		"distinct":                    subs/2*events + subs/2*cut,
		"lost":                        subs / 2 * (events - cut),
		"duplicated":                  0,
		"subscribers_with_loss":       subs / 2,
	})
	if m["ok"] != false || !strings.Contains(fmt.Sprint(m["why"]), "dropped") || m["timed_out"] != false {
		t.Errorf("ok = %v, why = %v, timed_out = %v", m["ok"], m["why"], m["timed_out"])
	}
}

// newArrayHub returns a hub that publishes JSON arrays of events.
func newArrayHub() *fakeHub {
	return newFakeHub("data: %s\n\n", publishArray)
}

func publishArray(h *fakeHub, w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Type") != defaultBurstType {
		http.Error(w, "want JSON", http.StatusUnsupportedMediaType)
		return
	}
	var events []struct {
		Topic string `json:"topic"`
		Data  string `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&events); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	type receipt struct {
		ID          string   `json:"id"`
		Topics      []string `json:"topics"`
		Subscribers int      `json:"subscribers"`
	}
	receipts := make([]receipt, len(events))
	for i, e := range events {
		n := h.broadcast(e.Data, 1)
		receipts[i] = receipt{ID: strconv.Itoa(i), Topics: []string{e.Topic}, Subscribers: n}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(receipts)
}
