package redis

import (
	"errors"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// TestInboxOverflow: a reader that falls maxBuffered messages behind
// loses the messages queued (it re-reads them from the history, told by
// a lost notice), keeps the connection's notices in their order, and
// goes on queueing from the next message; the mux never waits for it.
func TestInboxOverflow(t *testing.T) {
	t.Parallel()
	var b inbox
	b.init()
	down := errors.New("connection lost")
	b.push(notice{up: true})
	for i := range maxBuffered {
		b.push(notice{msg: &goredis.Message{Channel: "c", Payload: string(rune('a' + i%26))}})
	}
	b.push(notice{down: down})
	b.push(notice{msg: &goredis.Message{Channel: "c", Payload: "next"}})

	items, kicked := b.take(nil)
	if kicked {
		t.Error("take reports a kick that nobody asked for")
	}
	if len(items) != 4 {
		t.Fatalf("%d notices after an overflow, want 4 (up, down, lost, the next message)", len(items))
	}
	if !items[0].up || items[1].down != down || !items[2].lost || items[3].msg == nil || items[3].msg.Payload != "next" {
		t.Fatalf("notices after an overflow: %+v", items)
	}
	select {
	case <-b.signal:
	default:
		t.Fatal("the reader was not woken")
	}
	if items, _ := b.take(items); len(items) != 0 || b.msgs != 0 {
		t.Fatalf("the inbox still holds %d notices, %d messages", len(items), b.msgs)
	}

	// below the bound, nothing is dropped
	for range 3 {
		b.push(notice{msg: &goredis.Message{Channel: "c"}})
	}
	b.kick()
	items, kicked = b.take(nil)
	if len(items) != 3 || !kicked {
		t.Fatalf("%d notices, kicked %v; want 3 and a kick", len(items), kicked)
	}
}
