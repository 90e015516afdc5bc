//go:build linux

// Command ssehostile measures what hostile clients can make a Caddy with
// the caddy-sse plugin do: the memory they make it hold, how long they
// delay its stop or a reload, and what an honest subscriber sees
// meanwhile. Each run starts a Caddy process of its own (the binary given
// with --caddy), runs one attack against it next to an honest subscriber,
// measures, stops Caddy, and prints one JSON line on stdout; progress
// goes to stderr.
//
//	ssehostile idem-stream   --caddy ./caddy --scale 2000000  # one keyed streaming publish of N events
//	ssehostile idem-arrays   --caddy ./caddy --scale 2000     # N keyed JSON arrays of --batch events
//	ssehostile replay        --caddy ./caddy --scale 500      # N non-readers resuming 64 full topics
//	ssehostile stop-h2       --caddy ./caddy --scale 20       # N HTTP/2 clients with full sockets, SIGTERM
//	ssehostile reload-h2     --caddy ./caddy --scale 20       # the same, then a reload
//	ssehostile stop-sub-body --caddy ./caddy                  # a subscription whose body trickles, SIGTERM
//	ssehostile stop-pub-body --caddy ./caddy                  # a publish whose body trickles, SIGTERM
//	ssehostile pub-buffers   --caddy ./caddy --scale 300      # N streaming publishes holding a long line
//
// See bench/README.md, "Hostile clients".
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
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ssehostile:", err)
		stop()
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	attack string
	caddy  string // the Caddy binary
	label  string // the build's label in the JSON line
	scale  int    // the attack's size; 0: its default

	adminPort, httpPort, httpsPort int
	caddyCPU                       string // taskset CPU list of Caddy; "": not pinned

	minDuration time.Duration // the honest subscriber's shortest window
	capDuration time.Duration // longest wait for a stop or a reload
	honestRate  int           // honest events per second

	batch     int // idem-arrays: events per array
	topics    int // replay: topics
	perTopic  int // replay: events per topic
	dataSize  int // replay: bytes of data per event
	events    int // stop-h2, reload-h2: events published to the stuck clients
	eventSize int // stop-h2, reload-h2: bytes of data per event
	line      int // pub-buffers: bytes of the incomplete line after "data: "

	quiet  bool
	stderr io.Writer
}

// attack is one of the attacks: its default scale, what the scale counts,
// the hub options its Caddy needs, how it is set up and how it ends.
type attack struct {
	scale  int
	unit   string
	hub    string // the default hub's options in the global sse block
	tls    bool   // an HTTPS site too
	setup  func(ctx context.Context, r *runner) error
	finish func(ctx context.Context, r *runner) error // nil: SIGTERM, measured
}

// attacks are the attacks by name.
var attacks = map[string]attack{
	"idem-stream":   {scale: 2_000_000, unit: "events", hub: "history_max_bytes 1MiB", setup: idemStream},
	"idem-arrays":   {scale: 2_000, unit: "requests", hub: "history_max_bytes 1MiB", setup: idemArrays},
	"replay":        {scale: 500, unit: "clients", setup: replayFlood},
	"stop-h2":       {scale: 1, unit: "clients", tls: true, setup: stuckH2},
	"reload-h2":     {scale: 1, unit: "clients", tls: true, setup: stuckH2, finish: measureReload},
	"stop-sub-body": {scale: 1, unit: "clients", setup: trickleSubscribe},
	"stop-pub-body": {scale: 1, unit: "clients", setup: tricklePublish},
	"pub-buffers":   {scale: 300, unit: "streams", setup: pubBuffers},
}

// run parses args, runs the attack and prints its JSON line.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	res, err := measure(ctx, cfg, attacks[cfg.attack])
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.attack, err)
	}
	line, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encoding the result: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "%s\n", line)
	return err
}

// parseArgs reads the attack's name and the flags.
func parseArgs(args []string, stderr io.Writer) (*config, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return nil, fmt.Errorf("usage: ssehostile <attack> --caddy <binary> [flags]; attacks: %s", attackNames())
	}
	cfg := &config{attack: args[0], stderr: stderr}
	if _, ok := attacks[cfg.attack]; !ok {
		return nil, fmt.Errorf("unknown attack %q (%s)", cfg.attack, attackNames())
	}
	fs := flag.NewFlagSet("ssehostile "+cfg.attack, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.caddy, "caddy", "", "the Caddy binary (built from cmd/caddy)")
	fs.StringVar(&cfg.label, "label", "", "the build's label in the JSON line")
	fs.IntVar(&cfg.scale, "scale", 0, "the attack's size (events, requests, clients or streams; 0: its default)")
	fs.IntVar(&cfg.adminPort, "admin-port", 2769, "Caddy's admin API port, on 127.0.0.1")
	fs.IntVar(&cfg.httpPort, "http-port", 8769, "Caddy's plain HTTP site port")
	fs.IntVar(&cfg.httpsPort, "https-port", 8770, "Caddy's HTTPS site port (TCP and UDP)")
	fs.StringVar(&cfg.caddyCPU, "caddy-cpu", "", "taskset CPU list of Caddy (empty: not pinned)")
	fs.DurationVar(&cfg.minDuration, "min-duration", 10*time.Second, "the honest subscriber's shortest window")
	fs.DurationVar(&cfg.capDuration, "cap", 60*time.Second, "longest wait for a stop or a reload")
	fs.IntVar(&cfg.honestRate, "honest-rate", 20, "events per second to the honest subscriber")
	fs.IntVar(&cfg.batch, "batch", 1000, "idem-arrays: events per JSON array")
	fs.IntVar(&cfg.topics, "topics", 64, "replay: topics, each full")
	fs.IntVar(&cfg.perTopic, "per-topic", 1000, "replay: events per topic")
	fs.IntVar(&cfg.dataSize, "data-size", 64, "replay: bytes of data per event")
	fs.IntVar(&cfg.events, "events", 300, "stop-h2, reload-h2: events published to the stuck clients' topic")
	fs.IntVar(&cfg.eventSize, "event-size", 60_000, "stop-h2, reload-h2: bytes of data per event")
	fs.IntVar(&cfg.line, "line", 1<<20-100, "pub-buffers: bytes of x after \"data: \", no newline")
	fs.BoolVar(&cfg.quiet, "quiet", false, "no progress on stderr")
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.caddy == "" {
		return nil, errors.New("--caddy is required")
	}
	if cfg.scale <= 0 {
		cfg.scale = attacks[cfg.attack].scale
	}
	if cfg.honestRate <= 0 || cfg.batch <= 0 || cfg.topics <= 0 || cfg.perTopic <= 0 || cfg.events <= 0 {
		return nil, errors.New("rates, batches, topics and events must be positive")
	}
	return cfg, nil
}

// attackNames lists the attacks, sorted.
func attackNames() string {
	names := make([]string, 0, len(attacks))
	for name := range attacks {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// logf prints progress unless --quiet.
func (cfg *config) logf(format string, args ...any) {
	if !cfg.quiet {
		fmt.Fprintf(cfg.stderr, "ssehostile: "+format+"\n", args...)
	}
}
