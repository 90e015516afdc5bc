package caddysse

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// streamBody returns a body of n events of 64 bytes of data, each with
// the type "token", in format.
func streamBody(format ingestFormat, n int) []byte {
	var b bytes.Buffer
	for i := range n {
		data := fmt.Sprintf("%06d", i) + payload64[6:]
		if format == eventStream {
			fmt.Fprintf(&b, "event: token\ndata: %s\n\n", data)
		} else {
			fmt.Fprintf(&b, `{"event":"token","data":"%s"}`+"\n", data)
		}
	}
	return b.Bytes()
}

// nopSink is an eventSink that counts.
type nopSink struct{ n int }

func (s *nopSink) event(*ingestEvent) error { s.n++; return nil }

// chunkedReader reads a body in reads of at most size bytes, as a
// connection would bring them.
type chunkedReader struct {
	b    []byte
	size int
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.size)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// BenchmarkStreamParse is the parsers' work per event (64 bytes of data,
// with a type), read 16 KiB at a time.
func BenchmarkStreamParse(b *testing.B) {
	const events = 1000
	for _, format := range []ingestFormat{eventStream, ndjson} {
		b.Run(format.String(), func(b *testing.B) {
			body := streamBody(format, events)
			buf := make([]byte, streamBufferSize)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				sink := new(nopSink)
				sr := newIngestReader(format, buf, sink, DefaultMaxSize)
				r := &chunkedReader{b: body, size: 16 << 10}
				var err error
				for err == nil {
					if perr := sr.parse(false, func() error { return nil }); perr != nil {
						b.Fatal(perr)
					}
					_, err = sr.fill(r)
				}
				if perr := sr.parse(true, func() error { return nil }); perr != nil || sink.n != events {
					b.Fatalf("%d events, %v", sink.n, perr)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/events, "ns/event")
		})
	}
}

// BenchmarkStreamPublish is a whole streaming publish short of the
// network: 1,000 events read 16 KiB at a time, parsed, published in
// batches to a hub (without subscribers, and with one), and the answer.
func BenchmarkStreamPublish(b *testing.B) {
	const events = 1000
	for _, c := range []struct {
		format      ingestFormat
		subscribers int
	}{{eventStream, 0}, {ndjson, 0}, {eventStream, 1}} {
		b.Run(fmt.Sprintf("%s/subscribers=%d", c.format, c.subscribers), func(b *testing.B) {
			h := benchHub(b, transport.Limits{Events: 1000, MaxBytes: 64 << 20})
			subs := benchSubscribers(b, h, c.subscribers, "t")
			body := streamBody(c.format, events)
			w := &discardWriter{h: http.Header{}}
			opts := publishOptions{maxSize: DefaultMaxSize, streamTimeout: DefaultStreamTimeout}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				r, _ := http.NewRequest(http.MethodPost, "/publish?topic=t", &chunkedReader{b: body, size: 16 << 10})
				r.Header.Set("Content-Type", c.format.String())
				clear(w.h)
				if e := servePublish(w, r, h, opts); e != nil {
					b.Fatal(e.msg)
				}
				drain(subs)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/events, "ns/event")
			if want := uint64(events) * uint64(b.N); h.Stats().Published < want {
				b.Fatalf("%d published, want %d", h.Stats().Published, want)
			}
		})
	}
}
