package redis

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// BenchmarkPublishConcurrent publishes 64-byte events from 8 and 16
// publishers at once on one node (batched together, see batcher), to
// one topic each or to three topics each, with a subscriber on another
// node; publishes/s is the rate over the run, and redisMeter.report
// tells what Redis spends per publish.
func BenchmarkPublishConcurrent(b *testing.B) {
	for _, topics := range []int{1, 3} {
		for _, pubs := range []int{8, 16} {
			b.Run(fmt.Sprintf("%dtopics-%dpublishers", topics, pubs), func(b *testing.B) {
				srv, pub, names := benchNodes(b, topics)
				msg := transport.PublishRequest{Messages: []transport.Message{{Topics: names, Data: strings.Repeat("x", 64), Retry: -1}}}
				fillHistory(b, pub, msg)
				var left atomic.Int64
				left.Store(int64(b.N))
				var wg sync.WaitGroup
				meter := startRedisMeter(b, srv)
				b.ResetTimer()
				for range pubs {
					wg.Go(func() {
						for left.Add(-1) >= 0 {
							if _, err := pub.Publish(context.Background(), msg); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
				meter.report(b)
			})
		}
	}
}

// BenchmarkPublishBatch sends batches of 1, 8 and 64 publishes of one
// 64-byte event each (to one topic, or three) as one script call each, as
// the batcher does with concurrent publishes, to a hub whose history is
// full; the Redis figures per publish show the script's fixed cost
// against its cost per event.
func BenchmarkPublishBatch(b *testing.B) {
	for _, topics := range []int{1, 3} {
		for _, size := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%dtopics-%dpublishes", topics, size), func(b *testing.B) {
				srv, pub, names := benchNodes(b, topics)
				reqs := make([]transport.PublishRequest, size)
				for i := range reqs {
					reqs[i] = one(strings.Repeat("x", 64), names...)
				}
				for range 1100 / size {
					runBatch(b, pub, reqs...)
				}
				meter := startRedisMeter(b, srv)
				b.ResetTimer()
				for i := 0; i < b.N; i += size {
					for _, c := range runBatch(b, pub, reqs...) {
						if err := publishError(c); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StopTimer()
				meter.report(b)
			})
		}
	}
}
