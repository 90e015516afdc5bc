package memory

import (
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// maxKeys bounds the idempotency keys a hub remembers; beyond, the oldest
// are forgotten before their time.
const maxKeys = 100_000

// keyRecord is what a hub remembers of one idempotency key: the request
// it was used for and the receipts of the events published under it, by
// position.
type keyRecord struct {
	key         string
	fingerprint string
	receipts    []transport.Receipt
	expires     time.Time
}

// keyRecords are a hub's idempotency keys, in the order they were first
// used (which is also the order they expire in).
type keyRecords struct {
	byKey map[string]*keyRecord
	order []*keyRecord // FIFO from head
	head  int
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
	if len(k.byKey) >= maxKeys {
		k.drop()
	}
	rec := &keyRecord{key: key, fingerprint: fingerprint, expires: now.Add(transport.IdempotencyTTL)}
	k.byKey[key] = rec
	k.order = append(k.order, rec)
	return rec, nil
}

// expire forgets the keys whose time is up.
func (k *keyRecords) expire(now time.Time) {
	for k.head < len(k.order) && !now.Before(k.order[k.head].expires) {
		k.drop()
	}
}

// drop forgets the oldest key.
func (k *keyRecords) drop() {
	rec := k.order[k.head]
	k.order[k.head] = nil
	k.head++
	delete(k.byKey, rec.key)
	if k.head == len(k.order) {
		k.order, k.head = k.order[:0], 0
	} else if k.head >= 1024 && k.head*2 >= len(k.order) {
		n := copy(k.order, k.order[k.head:])
		clear(k.order[n:])
		k.order, k.head = k.order[:n], 0
	}
}
