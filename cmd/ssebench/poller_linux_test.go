//go:build linux && (amd64 || arm64 || riscv64 || ppc64le || loong64)

package main

import (
	"encoding/binary"
	"syscall"
	"testing"
)

// cmsg builds one control message with an 8-byte aligned length.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, syscall.SizeofCmsghdr, syscall.SizeofCmsghdr+len(data)+8)
	binary.NativeEndian.PutUint64(b, uint64(syscall.SizeofCmsghdr+len(data)))
	binary.NativeEndian.PutUint32(b[8:], uint32(level))
	binary.NativeEndian.PutUint32(b[12:], uint32(typ))
	b = append(b, data...)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestReceiveTimestamp(t *testing.T) {
	ts := make([]byte, 16)
	binary.NativeEndian.PutUint64(ts, 1700000000)
	binary.NativeEndian.PutUint64(ts[8:], 123456789)
	const want = 1700000000*1e9 + 123456789
	other := cmsg(syscall.SOL_SOCKET, 99, []byte{1, 2, 3})
	stamp := cmsg(syscall.SOL_SOCKET, syscall.SCM_TIMESTAMPNS, ts)
	for name, tc := range map[string]struct {
		oob  []byte
		want int64
	}{
		"alone":         {stamp, want},
		"after another": {append(other, stamp...), want},
		"none":          {other, 0},
		"empty":         {nil, 0},
		"truncated":     {stamp[:20], 0},
	} {
		if got := receiveTimestamp(tc.oob); got != tc.want {
			t.Errorf("%s: %d, want %d", name, got, tc.want)
		}
	}
}
