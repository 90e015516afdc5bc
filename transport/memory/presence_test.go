package memory

import (
	"context"
	"slices"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// presenceSink records the presence changes of a memory transport.
type presenceSink struct {
	transport.Sink
	changes []transport.PresenceChange
}

func (s *presenceSink) PresenceChanged(c transport.PresenceChange) { s.changes = append(s.changes, c) }

// TestPresence: a Join or Leave that changes who is there is a change,
// numbered in one sequence for the hub; one that changes nothing is not;
// a snapshot lists the members in byte order, at most max, counts them
// all and carries the version of the last change; nothing reaches the
// sink after Close.
func TestPresence(t *testing.T) {
	t.Parallel()
	s := &presenceSink{Sink: discard{}}
	tr := new(Transport)
	if err := tr.Open("h", transport.Limits{Events: 10, MaxBytes: 1 << 20}, s); err != nil {
		t.Fatal(err)
	}
	tr.Join("room", "bob")
	tr.Join("room", "alice")
	tr.Join("room", "alice") // no change
	tr.Join("lobby", "alice")
	tr.Leave("room", "carol") // no change
	tr.Leave("room", "bob")
	want := []transport.PresenceChange{
		{Topic: "room", Member: "bob", Join: true, Version: 1},
		{Topic: "room", Member: "alice", Join: true, Version: 2},
		{Topic: "lobby", Member: "alice", Join: true, Version: 3},
		{Topic: "room", Member: "bob", Version: 4},
	}
	if !slices.Equal(s.changes, want) {
		t.Fatalf("changes %+v, want %+v", s.changes, want)
	}
	tr.Join("room", "carol")
	snap, err := tr.Presence(context.Background(), "room", 1)
	if err != nil || snap.Count != 2 || !slices.Equal(snap.Members, []string{"alice"}) || snap.Version != 5 {
		t.Fatalf("snapshot %+v %v, want 2 members, alice listed, version 5", snap, err)
	}
	counts, err := tr.PresenceCounts(context.Background(), []string{"room", "lobby", "none"})
	if err != nil || !slices.Equal(counts, []int{2, 1, 0}) {
		t.Fatalf("counts %v %v", counts, err)
	}
	_ = tr.Close()
	tr.Leave("room", "alice")
	if len(s.changes) != 5 {
		t.Fatalf("a change after Close: %+v", s.changes[5:])
	}
	if _, err := tr.Presence(context.Background(), "room", 1); err == nil {
		t.Fatal("a snapshot after Close")
	}
}
