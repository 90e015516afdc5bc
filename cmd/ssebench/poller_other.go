//go:build !linux

package main

import "errors"

// poller is the epoll reader, on Linux only.
type poller struct{}

const (
	pollerSupported = false
	pollerBufSize   = 0
)

func newPoller(int) (*poller, error) { return nil, errors.New("the epoll reader needs Linux") }

func (*poller) adopt(*subscriber) error { return errors.New("the epoll reader needs Linux") }

func (*poller) close() {}
