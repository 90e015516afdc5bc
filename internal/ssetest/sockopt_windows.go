//go:build windows

package ssetest

import "syscall"

// setReceiveBuffer sets a socket's receive buffer size.
func setReceiveBuffer(fd uintptr, size int) error {
	return syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
}
