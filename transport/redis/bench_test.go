package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/ssehub/caddy-sse/transport"
)

// redisUsec returns the calls and microseconds Redis spent in a command,
// from INFO commandstats.
func redisUsec(b testing.TB, srv *privateRedis, cmd string) (calls, usec float64) {
	info, err := srv.client().Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":")
		if !ok {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "calls":
				calls, _ = strconv.ParseFloat(v, 64)
			case "usec":
				usec, _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return calls, usec
}

// redisCPU returns the CPU seconds the Redis server used so far (INFO
// cpu: used_cpu_sys and used_cpu_user), its system calls included.
func redisCPU(b testing.TB, srv *privateRedis) float64 {
	info, err := srv.client().Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for line := range strings.Lines(info) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			sum += f
		}
	}
	return sum
}

// redisMeter measures what Redis spends on the publishes of a benchmark.
type redisMeter struct {
	srv *privateRedis
	cpu float64
}

// startRedisMeter resets Redis's command statistics and notes its CPU.
func startRedisMeter(b testing.TB, srv *privateRedis) *redisMeter {
	if err := srv.client().ConfigResetStat(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
	return &redisMeter{srv: srv, cpu: redisCPU(b, srv)}
}

// report reports, per publish of b.N: Redis's CPU (redis-cpu-µs/op, the
// whole server: the reader's Pub/Sub deliveries and system calls too), the
// time in the publish script (redis-µs/op) and the publishes per script
// call (pubs/call).
func (m *redisMeter) report(b *testing.B) {
	cpu := redisCPU(b, m.srv) - m.cpu
	calls, usec := redisUsec(b, m.srv, "evalsha")
	ecalls, eusec := redisUsec(b, m.srv, "eval")
	calls, usec = calls+ecalls, usec+eusec
	n := float64(b.N)
	b.ReportMetric(cpu*1e6/n, "redis-cpu-µs/op")
	b.ReportMetric(usec/n, "redis-µs/op")
	if calls > 0 {
		b.ReportMetric(n/calls, "pubs/call")
	}
}

// benchNodes starts a private Redis and two nodes of one hub on it (the
// hub's history: 1,000 events a topic), the second watching the first
// topics of a, b and c; it returns the server, the first node, to publish
// on, and those topics.
func benchNodes(b *testing.B, topics int) (*privateRedis, *node, []string) {
	b.Helper()
	srv := startPrivateRedis(b)
	limits := transport.Limits{Events: 1000, MaxBytes: 64 << 20}
	pub := openNode(b, srv.Addr, "p", "h", limits)
	sub := openNode(b, srv.Addr, "p", "h", limits)
	names := []string{"a", "b", "c"}[:topics]
	sub.watch(b, names...)
	return srv, pub, names
}

// fillHistory publishes msg 1,100 times: the history of 1,000 events a
// topic is full, and each publish from now on evicts one event.
func fillHistory(b *testing.B, pub *node, msg transport.PublishRequest) {
	b.Helper()
	for range 1100 {
		if _, err := pub.Publish(context.Background(), msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublish publishes 64-byte events to one topic of a hub whose
// history is full (each publish evicts one event), one at a time, with a
// subscriber on another node; see redisMeter.report for what Redis
// spends.
func BenchmarkPublish(b *testing.B) {
	for _, topics := range []int{1, 3} {
		b.Run(fmt.Sprint(topics, "topics"), func(b *testing.B) {
			srv, pub, names := benchNodes(b, topics)
			msg := transport.PublishRequest{Messages: []transport.Message{{Topics: names, Data: strings.Repeat("x", 64), Retry: -1}}}
			fillHistory(b, pub, msg)
			meter := startRedisMeter(b, srv)
			b.ResetTimer()
			for range b.N {
				if _, err := pub.Publish(context.Background(), msg); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			meter.report(b)
		})
	}
}

// BenchmarkResync is a node's resynchronisation after a lost connection:
// one history read over its watched topics, and the delivery of the
// events it missed.
func BenchmarkResync(b *testing.B) {
	for _, c := range []struct{ topics, missed int }{{1, 100}, {1000, 1000}} {
		b.Run(fmt.Sprintf("%dtopics-%dmissed", c.topics, c.missed), func(b *testing.B) {
			srv := startPrivateRedis(b)
			limits := transport.Limits{Events: 1000, MaxBytes: 1 << 30}
			n := openNode(b, srv.Addr, "p", "h", limits)
			names := make([]string, c.topics)
			for i := range names {
				names[i] = fmt.Sprint("topic-", i)
			}
			n.watch(b, names...)
			for i := range c.missed {
				n.publish(b, strings.Repeat("x", 64), names[i%len(names)])
			}
			n.sink.awaitSeq(b, uint64(c.missed))
			if err := srv.client().ConfigResetStat(context.Background()).Err(); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				n.rd.posMu.Lock()
				n.rd.delivered = 0 // as if every event was missed
				n.rd.posMu.Unlock()
				if err := n.rd.resync(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			calls, usec := redisUsec(b, srv, "evalsha")
			b.ReportMetric(usec/float64(b.N), "redis-µs/op")
			_ = calls
		})
	}
}
