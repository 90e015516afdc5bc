//go:build linux

// Command ssebench is a load generator for Server-Sent Events hubs. It
// drives any hub whose subscribe and publish endpoints can be written as
// URL templates, and prints one JSON summary line on stdout (progress
// goes to stderr).
//
//	ssebench idle    -n 10000 --duration 10s --pid $(pidof caddy)
//	ssebench fanout  -n 1000 --rate 300 --duration 10s --pid ...
//	ssebench search  -n 1000 --rate 50 --rate-step 50 --duration 5s
//	ssebench publish --publishers 8 --duration 10s --pid ...
//	ssebench burst   -n 1000 --events 10000 --batch 1000 --pid ...
//
// Subscribers speak HTTP/1.1 (raw, read with epoll), HTTPS with HTTP/1.1,
// HTTP/2 or HTTP/3 (--proto), one connection each, spread over several
// loopback source addresses; events carry their run, sequence number and
// send time, so that every receipt gives a latency and losses and
// duplicates are counted exactly.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"
)

// epoch is the origin of the tool's monotonic times, and epochWall the
// same instant on the wall clock, which the kernel's receive timestamps
// use.
var (
	epoch     = time.Now()
	epochWall = epoch.UnixNano()
)

// since returns the monotonic time elapsed since epoch.
func since() time.Duration { return time.Since(epoch) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ssebench:", err)
		stop()
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	mode  string
	label string

	subURL     string
	subHeaders stringList
	proto      string
	caFile     string
	insecure   bool
	pubURL     string
	pubBody    string
	pubType    string
	pubEscape  string
	pubHeaders stringList
	pubTimeout time.Duration
	pubClient  string
	pubStream  bool
	pubBatch   string

	subscribers   int
	topics        int
	rate          float64
	duration      time.Duration
	size          int
	publishers    int
	maxPublishers int
	warmup        time.Duration
	grace         time.Duration
	events        int
	batch         int

	rateStep float64
	rateMax  float64
	maxP99   time.Duration
	late     time.Duration
	pause    time.Duration

	sources     int
	concurrency int
	dialTimeout time.Duration
	bufSize     int
	reader      string
	pollers     int

	pid        int
	quiet      bool
	cpuProfile string
	pprofURL   string
	profileOut string
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ", ") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

const usage = `usage: ssebench <mode> [flags]

modes:
  idle     open -n subscribers, hold them for --duration, report connected,
           failed and dropped streams, and the server's memory per subscriber
  fanout   open -n subscribers over --topics topics, publish --rate events/s
           for --duration (open loop), report deliveries/s, lost and
           duplicated deliveries, publish-to-receipt latency
  search   like fanout, stepping the rate up from --rate by --rate-step until
           a step loses or duplicates an event, falls behind its schedule,
           drops a stream, or has a p99 latency above --max-p99
  publish  --publishers concurrent keep-alive publishers for --duration, no
           subscribers: publishes/s and latency
  burst    open -n subscribers over --topics topics, publish --events events
           at once, as JSON arrays of --batch events over --publishers
           publishers (or one streaming publish: --pub-stream), and report
           how many subscribers got every event on their first connection,
           those disconnected, and the time to deliver the burst

Templates: {topic} is t0..t(K-1); {data} the event's data, escaped as
--pub-escape says; {seq} its number in the run. A burst's body is
--pub-batch-template for each event, joined with commas inside brackets;
its URL's placeholders are those of the array's first event.

flags:
`

// parseConfig reads the mode and flags.
func parseConfig(args []string, stderr io.Writer) (*config, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, usage)
		return nil, errors.New("no mode given")
	}
	c := &config{mode: args[0]}
	fs := flag.NewFlagSet("ssebench "+c.mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.label, "label", "", "a name for this run, copied into the JSON")
	fs.StringVar(&c.subURL, "sub-url", "http://127.0.0.1:8719/events?topic={topic}", "subscribe URL template: http:// for --proto h1, https:// for the others; several, separated by commas, take the subscribers in turn (e.g. instances sharing a hub)")
	fs.Var(&c.subHeaders, "sub-header", "extra subscribe request header 'Name: value' (repeatable)")
	fs.StringVar(&c.proto, "proto", "h1", "subscribers' protocol, one connection each: h1 (HTTP/1.1), h1tls (HTTPS, HTTP/1.1), h2 (HTTPS, HTTP/2), h3 (HTTP/3 over QUIC)")
	fs.StringVar(&c.caFile, "ca", "", "PEM file of the CA that signed the server's certificate (https://), e.g. Caddy's local CA root; default: the system's roots")
	fs.BoolVar(&c.insecure, "insecure", false, "https://: do not verify the server's certificate")
	fs.StringVar(&c.pubURL, "pub-url", "http://127.0.0.1:8719/publish", "publish URL template")
	fs.StringVar(&c.pubBody, "pub-body", "topic={topic}&data={data}", "publish body template")
	fs.StringVar(&c.pubType, "pub-type", "application/x-www-form-urlencoded", "publish Content-Type")
	fs.StringVar(&c.pubEscape, "pub-escape", "auto", "escaping of {topic} and {data} in the body: auto (from --pub-type), form, json, none")
	fs.Var(&c.pubHeaders, "pub-header", "extra publish request header 'Name: value' (repeatable)")
	fs.DurationVar(&c.pubTimeout, "pub-timeout", 10*time.Second, "timeout of one publish request")
	fs.StringVar(&c.pubClient, "pub-client", "raw", "publishing client: raw (the tool's own keep-alive HTTP/1.1 client, http:// only) or http (net/http's)")
	fs.BoolVar(&c.pubStream, "pub-stream", false, "publish through streaming requests: each publisher is one chunked POST carrying its events "+
		"(--pub-type text/event-stream and --pub-body 'data: {data}' by default, the topic in the URL's query; or application/x-ndjson)")
	fs.IntVar(&c.subscribers, "n", 1000, "subscribers")
	fs.IntVar(&c.topics, "topics", 1, "topics K: subscriber i follows t(i mod K), event s goes to t(s mod K)")
	fs.Float64Var(&c.rate, "rate", 50, "events published per second (search: the first rate)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "length of the measured phase (idle: the hold; search: each step; burst: the server's CPU profile with --profile-out)")
	fs.IntVar(&c.size, "size", 64, "bytes of data per event (at least the ~30 of its header)")
	fs.IntVar(&c.publishers, "publishers", 8, "publish, burst: concurrent publishers (burst --pub-stream: streams, 1 by default); fanout, search: publishers started at once")
	fs.IntVar(&c.maxPublishers, "max-publishers", 256, "fanout, search: most publishers, each with its own connection, started when every one is busy as an event falls due")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "wait between the last subscriber connecting and the first publish")
	fs.DurationVar(&c.grace, "grace", 5*time.Second, "longest wait for deliveries after the last publish (burst: 30s by default)")
	fs.IntVar(&c.events, "events", 1000, "burst: events of the burst")
	fs.IntVar(&c.batch, "batch", 1000, "burst: events per publish request, one JSON array (our hub takes at most 1,000)")
	fs.StringVar(&c.pubBatch, "pub-batch-template", defaultBatchTemplate, "burst: one event of a publish request's array (--pub-type application/json by default); the body is these joined with commas inside brackets")
	fs.Float64Var(&c.rateStep, "rate-step", 50, "search: rate added at each step")
	fs.Float64Var(&c.rateMax, "rate-max", 100000, "search: highest rate tried")
	fs.DurationVar(&c.maxP99, "max-p99", 100*time.Millisecond, "highest acceptable p99 latency of a run that is ok (search: of a step)")
	fs.DurationVar(&c.late, "late", 10*time.Millisecond, "a publish that starts later than this after it was due is late; a run with more than 1% late publishes fell behind")
	fs.DurationVar(&c.pause, "pause", time.Second, "search: pause between steps")
	fs.IntVar(&c.sources, "sources", 4, "loopback source addresses 127.0.0.1..N to spread subscribers over (0: the kernel's choice)")
	fs.IntVar(&c.concurrency, "connect-concurrency", 200, "connections being opened at once")
	fs.DurationVar(&c.dialTimeout, "connect-timeout", 15*time.Second, "timeout to connect and get the response headers")
	fs.IntVar(&c.bufSize, "buf", 4096, "read buffer of each stream's goroutine (--reader goroutine) and for the response headers, bytes")
	fs.StringVar(&c.reader, "reader", "auto", "how streams are read: epoll (one goroutine reads them all, kernel receive timestamps; --proto h1 on 64-bit Linux), goroutine (one per stream, timestamps taken at the read), or auto (epoll where it applies)")
	fs.IntVar(&c.pollers, "pollers", 1, "epoll reader: goroutines reading the streams (one per core the tool may use)")
	fs.IntVar(&c.pid, "pid", 0, "the server's process id: report its memory and CPU time")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress on stderr")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the tool's own CPU profile to this file")
	fs.StringVar(&c.pprofURL, "pprof", "", "the server's net/http/pprof base URL (Caddy's admin API: http://127.0.0.1:2019/debug/pprof): with --profile-out, fetch its profiles")
	fs.StringVar(&c.profileOut, "profile-out", "", "with --pprof: write the server's CPU profile of the measured phase (fanout; search: its first step; burst: --duration from the first publish) to PREFIX.cpu.pb.gz, and its heap at the end of the hold (idle) to PREFIX.heap.pb.gz")
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.mode == "burst" {
		c.burstDefaults(set)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.pubStream {
		if err := c.streamDefaults(set); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// validate checks the flags of the mode.
func (c *config) validate() error {
	switch c.mode {
	case "idle", "fanout", "search", "publish", "burst":
	default:
		return fmt.Errorf("unknown mode %q: want idle, fanout, search, publish or burst", c.mode)
	}
	switch {
	case c.subscribers < 0 || (c.subscribers == 0 && c.mode != "publish"):
		return errors.New("-n must be positive")
	case c.topics < 1:
		return errors.New("--topics must be at least 1")
	case c.rate <= 0 || c.rateStep < 0:
		return errors.New("--rate must be positive and --rate-step not negative")
	case c.duration <= 0:
		return errors.New("--duration must be positive")
	case c.publishers < 1:
		return errors.New("--publishers must be at least 1")
	case c.bufSize < 512:
		return errors.New("--buf must be at least 512")
	case c.reader != "epoll" && c.reader != "goroutine" && c.reader != "auto":
		return errors.New("--reader must be epoll, goroutine or auto")
	case c.reader == "epoll" && !pollerSupported:
		return errors.New("--reader epoll needs Linux; use --reader goroutine")
	case c.reader == "epoll" && c.proto != protoH1:
		return fmt.Errorf("--reader epoll reads plain TCP only: --proto %s needs --reader goroutine", c.proto)
	case c.proto != protoH1 && c.proto != protoH1TLS && c.proto != protoH2 && c.proto != protoH3:
		return fmt.Errorf("unknown --proto %q: want h1, h1tls, h2 or h3", c.proto)
	case c.pollers < 1 || c.pollers > 64:
		return errors.New("--pollers must be between 1 and 64")
	case c.sources > 254:
		return errors.New("--sources must be at most 254")
	case c.size < 0 || c.size > 1<<20:
		return errors.New("--size must be between 0 and 1MiB")
	case (c.pprofURL == "") != (c.profileOut == ""):
		return errors.New("--pprof and --profile-out go together")
	case c.events < 1 || c.batch < 1:
		return errors.New("--events and --batch must be at least 1")
	case c.grace < 0:
		return errors.New("--grace must not be negative")
	}
	if c.reader == "auto" {
		c.reader = "goroutine"
		if pollerSupported && c.proto == protoH1 {
			c.reader = "epoll"
		}
	}
	if c.mode != "publish" {
		if limit := fileLimit(); limit > 0 && uint64(c.subscribers)+uint64(c.publishers)+64 > limit {
			return fmt.Errorf("-n %d needs about %d open files; the limit is %d (ulimit -n)",
				c.subscribers, c.subscribers+c.publishers+64, limit)
		}
	}
	return nil
}

// run parses args, runs the mode and prints its JSON summary.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	pr := &progress{w: stderr, quiet: c.quiet}
	if c.cpuProfile != "" {
		stop, err := startProfile(c.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	var result any
	switch c.mode {
	case "idle":
		result, err = runIdle(ctx, c, pr)
	case "fanout":
		result, err = runFanout(ctx, c, pr)
	case "search":
		result, err = runSearch(ctx, c, pr)
	case "publish":
		result, err = runPublish(ctx, c, pr)
	case "burst":
		result, err = runBurst(ctx, c, pr)
	}
	if err != nil {
		return err
	}
	line, err := json.Marshal(result)
	if err != nil {
		return fmt.Errorf("encoding the summary: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "%s\n", line)
	return err
}

// startProfile starts writing the tool's CPU profile to path.
func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating the CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting the CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// progress prints human-readable progress to stderr.
type progress struct {
	w     io.Writer
	quiet bool
	mu    sync.Mutex
}

// printf prints one line of progress.
func (p *progress) printf(format string, args ...any) {
	if p == nil || p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "ssebench: "+format+"\n", args...)
}

// every prints status() every second until the returned stop is called.
func (p *progress) every(status func() string) (stop func()) {
	if p == nil || p.quiet {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				p.printf("%s", status())
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// sleep waits for d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
