//go:build linux && (amd64 || arm64 || riscv64 || ppc64le || loong64)

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// pollerBatch is the most ready sockets taken from epoll at once, and
// pollerBufSize the poller's read buffer, shared by all its streams.
const (
	pollerBatch   = 512
	pollerBufSize = 256 << 10
)

// poller reads the streams of many subscribers from one goroutine. Their
// sockets are registered, level-triggered, in an epoll instance of the
// poller's own, and that instance is waited on through Go's own poller:
// the goroutine takes every ready socket, reads each once into one shared
// buffer and parses what came, then waits again. A stream costs one read
// system call per arrival, no goroutine and no buffer of its own.
type poller struct {
	epfd   int
	file   *os.File // epfd, registered with Go's poller
	buf    []byte
	oob    []byte // control messages: the receive timestamp
	msg    syscall.Msghdr
	iov    syscall.Iovec
	events []syscall.EpollEvent
	done   chan struct{}

	mu   sync.Mutex // held while a batch is handled and while registering
	subs map[int32]*subscriber
}

// pollerSupported says whether this system has the poller.
const pollerSupported = true

// newPoller opens an epoll instance and starts its goroutine.
func newPoller(bufSize int) (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating an epoll instance: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("making the epoll instance non-blocking: %w", err)
	}
	pl := &poller{
		epfd:   epfd,
		file:   os.NewFile(uintptr(epfd), "epoll"),
		buf:    make([]byte, bufSize),
		oob:    make([]byte, 64),
		events: make([]syscall.EpollEvent, pollerBatch),
		done:   make(chan struct{}),
		subs:   make(map[int32]*subscriber),
	}
	rc, err := pl.file.SyscallConn()
	if err != nil {
		pl.file.Close()
		return nil, fmt.Errorf("polling the epoll instance: %w", err)
	}
	go pl.run(rc)
	return pl, nil
}

// adopt takes a connected stream's socket over from its net.Conn, which
// it closes, and reads it from now on.
func (pl *poller) adopt(s *subscriber) error {
	sc, ok := s.conn.(syscall.Conn)
	if !ok {
		return errors.New("the connection has no file descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	var dupErr error
	err = rc.Control(func(orig uintptr) { fd, dupErr = syscall.Dup(int(orig)) })
	if err = errors.Join(err, dupErr); err != nil {
		return fmt.Errorf("duplicating the socket: %w", err)
	}
	// the duplicate shares the socket and its non-blocking mode; closing
	// the net.Conn takes the original out of Go's poller
	s.closeConn()
	// the kernel notes when each segment arrived; recvmsg returns it
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("asking for receive timestamps: %w", err)
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	s.fd = fd
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
	if err := syscall.EpollCtl(pl.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		syscall.Close(fd)
		s.fd = -1
		return fmt.Errorf("registering the socket with epoll: %w", err)
	}
	pl.subs[int32(fd)] = s
	return nil
}

// run handles ready sockets until the poller is closed. Inside
// RawConn.Read, a readiness of the epoll instance that comes while a
// batch is handled is kept, so no arrival is missed.
func (pl *poller) run(rc syscall.RawConn) {
	defer close(pl.done)
	_ = rc.Read(func(uintptr) bool {
		const maxBatches = 1 << 20 // then let Go's poller look again
		for range maxBatches {
			n, err := syscall.EpollWait(pl.epfd, pl.events, 0)
			switch {
			case err == syscall.EINTR:
				continue
			case err != nil:
				return true
			case n == 0:
				return false
			}
			pl.handle(pl.events[:n])
			// let the publishers and timers of a busy tool run: this
			// loop may otherwise keep the processor for a long time
			runtime.Gosched()
		}
		return false
	})
}

// handle reads each ready socket once; a socket with more to read stays
// ready and comes back in the next batch.
func (pl *poller) handle(events []syscall.EpollEvent) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, ev := range events {
		s := pl.subs[ev.Fd]
		if s == nil {
			continue
		}
		n, arrivedWall, err := pl.recv(s.fd)
		switch {
		case err == syscall.EAGAIN || err == syscall.EINTR:
			continue
		case err != nil || n == 0:
			pl.drop(s)
			continue
		}
		s.pool.reads.Add(1)
		s.pool.bytes.Add(uint64(n))
		s.now = since()
		s.arrival = s.now
		if arrivedWall > 0 {
			s.arrival = min(time.Duration(arrivedWall-epochWall), s.now)
		}
		if s.p.feed(pl.buf[:n]) != nil || s.p.done() {
			pl.drop(s)
		}
	}
}

// recv reads a socket into the shared buffer with recvmsg, and returns
// the kernel's receive time (wall clock, in nanoseconds) of the latest
// segment read, or 0.
func (pl *poller) recv(fd int) (n int, arrivedWall int64, err error) {
	pl.iov.Base = &pl.buf[0]
	pl.iov.SetLen(len(pl.buf))
	pl.msg.Iov = &pl.iov
	pl.msg.Iovlen = 1
	pl.msg.Control = &pl.oob[0]
	pl.msg.SetControllen(len(pl.oob))
	r, _, errno := syscall.Syscall(syscall.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&pl.msg)), syscall.MSG_DONTWAIT)
	if errno != 0 {
		return 0, 0, errno
	}
	return int(r), receiveTimestamp(pl.oob[:pl.msg.Controllen]), nil
}

// receiveTimestamp finds SCM_TIMESTAMPNS in control messages.
func receiveTimestamp(oob []byte) int64 {
	const align = 8 // CMSG_ALIGN on the 64-bit systems this runs on
	for len(oob) >= syscall.SizeofCmsghdr {
		length := int(binary.NativeEndian.Uint64(oob))
		level := int32(binary.NativeEndian.Uint32(oob[8:]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:]))
		if length < syscall.SizeofCmsghdr || length > len(oob) {
			return 0
		}
		if level == syscall.SOL_SOCKET && typ == syscall.SCM_TIMESTAMPNS && length >= syscall.SizeofCmsghdr+16 {
			data := oob[syscall.SizeofCmsghdr:]
			sec := int64(binary.NativeEndian.Uint64(data))
			nsec := int64(binary.NativeEndian.Uint64(data[8:]))
			return sec*1e9 + nsec
		}
		oob = oob[min((length+align-1)&^(align-1), len(oob)):]
	}
	return 0
}

// drop closes a stream that ended.
func (pl *poller) drop(s *subscriber) {
	pl.forget(s)
	s.end()
}

// forget unregisters and closes a subscriber's socket; pl.mu is held.
func (pl *poller) forget(s *subscriber) {
	_ = syscall.EpollCtl(pl.epfd, syscall.EPOLL_CTL_DEL, s.fd, nil)
	syscall.Close(s.fd)
	delete(pl.subs, int32(s.fd))
	s.fd = -1
}

// close stops the goroutine and closes every socket.
func (pl *poller) close() {
	pl.file.Close() // wakes run, which returns
	<-pl.done
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, s := range pl.subs {
		pl.forget(s)
	}
}
