//go:build unix

package ssetest

import "syscall"

// setReceiveBuffer sets a socket's receive buffer size.
func setReceiveBuffer(fd uintptr, size int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
}
