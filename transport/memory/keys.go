package memory

import (
	"sort"
	"strings"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// keyRecord is what a hub remembers of one idempotency key: the request it
// was used for, and what a repeat needs of the events published under it,
// by position (see "# Idempotency" at transport.Transport). The events of
// one Publish call have consecutive Seqs, so their ids are a few runs; the
// subscriber counts of the first positions are mostly equal, so they are
// runs too. Nothing of the events' topics is kept: a repeat's receipts
// take them from its own messages.
type keyRecord struct {
	key         string
	fingerprint string
	runs        []seqRun   // by position
	counts      []countRun // subscriber counts, by position
	positions   int        // events recorded: positions 0 to positions-1
	counted     int        // positions whose counts are in counts
	expires     time.Time
	size        int64 // what the record counts for in the budget

	prev, next *keyRecord // in first-use order, oldest first
}

// seqRun is a run of events with consecutive Seqs from position pos on,
// up to the next run's position or the record's positions.
type seqRun struct {
	pos int
	seq uint64
}

// countRun is n positions whose events were queued for count subscribers.
type countRun struct {
	n, count uint32
}

// recordOverhead approximates what a record costs besides its key,
// fingerprint and runs: the keyRecord (rounded to its allocation class)
// and its entry in the map of keys, whose table has spare slots.
const recordOverhead = 144 + 64

// allocated rounds a string's or slice's bytes up as the allocator does,
// roughly.
func allocated(n int) int64 {
	switch {
	case n == 0:
		return 0
	case n <= 16:
		return 16
	default:
		return int64((n + 15) &^ 15)
	}
}

// cost returns what the record counts for in the budget.
func (r *keyRecord) cost() int64 {
	return recordOverhead + allocated(len(r.key)) + allocated(len(r.fingerprint)) +
		allocated(cap(r.runs)*16) + allocated(cap(r.counts)*8)
}

// receipt returns the receipt of the event recorded at pos, a repeat of
// msg.
func (r *keyRecord) receipt(epoch string, pos int, msg transport.Message) transport.Receipt {
	i := sort.Search(len(r.runs), func(i int) bool { return r.runs[i].pos > pos }) - 1
	run := r.runs[i]
	rc := transport.Receipt{
		ID:       transport.FormatID(epoch, run.seq+uint64(pos-run.pos)),
		Topics:   msg.Topics,
		Repeated: true,
	}
	if pos < r.counted {
		for _, c := range r.counts {
			if pos < int(c.n) {
				rc.Subscribers = int(c.count)
				break
			}
			pos -= int(c.n)
		}
	}
	return rc
}

// add records the event at the record's next position: its seq and the
// number of subscribers it was queued for.
func (r *keyRecord) add(seq uint64, subscribers int) {
	if n := len(r.runs); n == 0 || r.runs[n-1].seq+uint64(r.positions-r.runs[n-1].pos) != seq {
		r.runs = append(r.runs, seqRun{pos: r.positions, seq: seq})
	}
	if r.positions < transport.IdempotencyCountedPositions {
		count := uint32(min(subscribers, 1<<32-1))
		if n := len(r.counts); n > 0 && r.counts[n-1].count == count {
			r.counts[n-1].n++
		} else {
			r.counts = append(r.counts, countRun{n: 1, count: count})
		}
		r.counted++
	}
	r.positions++
}

// keyRecords are a hub's idempotency keys, in the order they were first
// used (which is also the order they expire in), and what they cost.
type keyRecords struct {
	byKey          map[string]*keyRecord
	oldest, newest *keyRecord
	bytes          int64
}

func (k *keyRecords) init() {
	k.byKey = make(map[string]*keyRecord)
}

// claim returns the record of key, new if the key is unknown or expired,
// or ErrKeyMismatch if it was used for another request.
func (k *keyRecords) claim(key, fingerprint string, now time.Time) (*keyRecord, error) {
	k.expire(now)
	if rec := k.byKey[key]; rec != nil {
		if rec.fingerprint != fingerprint {
			return nil, transport.ErrKeyMismatch
		}
		return rec, nil
	}
	rec := &keyRecord{
		key:         strings.Clone(key),
		fingerprint: strings.Clone(fingerprint),
		expires:     now.Add(transport.IdempotencyTTL),
		prev:        k.newest,
	}
	if k.newest != nil {
		k.newest.next = rec
	} else {
		k.oldest = rec
	}
	k.newest = rec
	k.byKey[rec.key] = rec
	k.resize(rec)
	return rec, nil
}

// resize counts what rec costs now.
func (k *keyRecords) resize(rec *keyRecord) {
	size := rec.cost()
	k.bytes += size - rec.size
	rec.size = size
}

// expire forgets the keys whose time is up.
func (k *keyRecords) expire(now time.Time) {
	for k.oldest != nil && !now.Before(k.oldest.expires) {
		k.drop(k.oldest)
	}
}

// trim forgets the oldest keys until the records fit in budget, all but
// keep (the key of the request being published), which stays whatever
// it costs.
func (k *keyRecords) trim(budget int64, keep *keyRecord) {
	for rec := k.oldest; rec != nil && k.bytes > budget; {
		next := rec.next
		if rec != keep {
			k.drop(rec)
		}
		rec = next
	}
}

// drop forgets rec.
func (k *keyRecords) drop(rec *keyRecord) {
	if rec.prev != nil {
		rec.prev.next = rec.next
	} else {
		k.oldest = rec.next
	}
	if rec.next != nil {
		rec.next.prev = rec.prev
	} else {
		k.newest = rec.prev
	}
	rec.prev, rec.next = nil, nil
	delete(k.byKey, rec.key)
	k.bytes -= rec.size
	if len(k.byKey) == 0 {
		k.byKey = make(map[string]*keyRecord) // a map never shrinks: let its table go
	}
}

// stats returns the records' figures.
func (k *keyRecords) stats() transport.IdempotencyStats {
	return transport.IdempotencyStats{Keys: len(k.byKey), Bytes: k.bytes}
}
