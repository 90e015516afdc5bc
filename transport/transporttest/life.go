package transporttest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// testWatchCounting: Watch calls are counted per topic, each undone by one
// Unwatch, and State.WatchedTopics counts the topics watched; a topic
// still watched once gets its events.
func testWatchCounting(t *testing.T, f Factory) {
	e := open(t, f, big)
	want := func(what string, n int) {
		t.Helper()
		if got := e.tr.Stats().State.WatchedTopics; got != n {
			t.Errorf("%s: %d watched topics, want %d", what, got, n)
		}
	}
	want("fresh", 0)
	e.watch("a", "b")
	e.watch("a", "b")
	want("a and b watched twice", 2)
	e.tr.Unwatch([]string{"a", "b"})
	want("a and b watched twice, unwatched once", 2)
	r := e.publish("a")
	e.rec.AwaitSeq(t, seqOf(t, r))
	e.tr.Unwatch([]string{"a", "b"})
	want("a and b unwatched as often as watched", 0)
	e.watch("a")
	e.watch("a", "c")
	want("a, and a and c", 2)
	e.tr.Unwatch([]string{"a"})
	want("a and c, after a once", 2)
	e.tr.Unwatch([]string{"a", "c"})
	want("all unwatched", 0)
}

// testReentrantSink: a sink whose Deliver starts goroutines that call the
// transport (Publish, Watch, Unwatch, Replay, Stats) without waiting for
// them does not deadlock it, and what they publish is delivered in order.
func testReentrantSink(t *testing.T, f Factory) {
	e := open(t, f, big, "trigger", "echo")
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	e.rec.OnDeliver(func(ev *transport.Event) {
		if !slices.Contains(ev.Topics, "trigger") {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(context.Background(), Patience)
			defer cancel()
			echo := transport.Message{Topics: []string{"echo"}, Data: ev.ID, Retry: -1}
			if _, err := e.tr.Publish(c, transport.PublishRequest{Messages: []transport.Message{echo}}); err != nil {
				errs <- fmt.Errorf("Publish: %w", err)
			}
			if err := e.tr.Watch(c, []string{"x"}); err != nil {
				errs <- fmt.Errorf("Watch: %w", err)
			} else {
				e.tr.Unwatch([]string{"x"})
			}
			if _, err := e.tr.Replay(c, transport.ReplayQuery{Topics: []string{"trigger"}, Latest: 1}); err != nil {
				errs <- fmt.Errorf("Replay: %w", err)
			}
			_ = e.tr.Stats()
		}()
	})
	for range n {
		e.publish("trigger")
	}
	got := e.rec.Await(t, 2*n)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	awaitDone(t, done, "the sink's goroutines")
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.rec.OnDeliver(nil)

	wantSeqs(t, "delivered", seqs(got), span(1, 2*n))
	var echoes strings.Builder
	for _, ev := range got {
		if slices.Contains(ev.Topics, "echo") {
			echoes.Write(ev.Wire)
		}
	}
	for _, ev := range got {
		if slices.Contains(ev.Topics, "trigger") && !strings.Contains(echoes.String(), "data: "+ev.ID+"\n") {
			t.Errorf("trigger %s was not echoed", ev.ID)
		}
	}
}

// testClose: Close stops the sink before it returns, even with publishers
// at work; later calls are refused with ErrClosed, and a disconnect request
// does not reach the sink; a second Close is fine.
func testClose(t *testing.T, f Factory) {
	e := open(t, f, big, "a")
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			c, cancel := context.WithTimeout(context.Background(), Patience)
			defer cancel()
			for range 1_000_000 {
				if _, err := e.tr.Publish(c, transport.PublishRequest{Messages: []transport.Message{msg("a")}}); err != nil {
					return
				}
			}
		})
	}
	e.rec.Await(t, 30)
	if err := e.tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	e.rec.Closed()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	awaitDone(t, done, "the publishers to be refused")

	c := ctx(t)
	if _, err := e.tr.Publish(c, transport.PublishRequest{Messages: []transport.Message{msg("a")}}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := e.tr.Replay(c, transport.ReplayQuery{Topics: []string{"a"}, Latest: 1}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Replay after Close: %v, want ErrClosed", err)
	}
	if err := e.tr.Watch(c, []string{"a"}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Watch after Close: %v, want ErrClosed", err)
	}
	if _, err := e.tr.Disconnect(c, transport.Disconnect{Topic: "a"}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Disconnect after Close: %v, want ErrClosed", err)
	}
	e.tr.Unwatch([]string{"a"})
	e.tr.SetLimits(big)
	if st := e.tr.Stats(); st.State.Up {
		t.Errorf("Stats after Close: up")
	}
	if err := e.tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
