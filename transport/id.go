package transport

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
)

// An event id is "<epoch>-<seq>": the epoch names one incarnation of a
// hub's sequence (a new one starts whenever the history is lost), seq is
// the event's position in it. Clients treat ids as opaque strings.

// NewEpoch returns a fresh, random epoch.
func NewEpoch() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// FormatID returns the id of the event at seq in epoch.
func FormatID(epoch string, seq uint64) string {
	return epoch + "-" + strconv.FormatUint(seq, 10)
}

// ParseID splits an id made by FormatID. ok is false for anything else.
func ParseID(id string) (epoch string, seq uint64, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(id[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return id[:i], seq, true
}
