//go:build linux && !(amd64 || arm64 || riscv64 || ppc64le || loong64)

package main

import "errors"

// poller is the epoll reader, on 64-bit Linux only.
type poller struct{}

const (
	pollerSupported = false
	pollerBufSize   = 0
)

func newPoller(int) (*poller, error) { return nil, errors.New("the epoll reader needs 64-bit Linux") }

func (*poller) adopt(*subscriber) error { return errors.New("the epoll reader needs 64-bit Linux") }

func (*poller) close() {}
