#!/usr/bin/env bash
# Runs the scenarios of issues 6 and 12 against a Caddy built from this
# checkout: Caddy pinned to one CPU, the load tool (cmd/ssebench) to
# another, a fresh Caddy process for every measurement. Prints one JSON
# line per measurement on stdout (and appends it to $OUT if set); progress
# goes to stderr. See bench/README.md.
#
#   bench/run.sh [--proto P] idle [N...]      ours and the floor, default 1000 10000 19500
#   bench/run.sh [--proto P] fanout [RATE...] SUBS subscribers, default rates 50 300
#   bench/run.sh [--proto P] search [N...]    highest rate without loss, default 1000 10000
#   bench/run.sh publish [ours|floor...]      PUBLISHERS publishers, no subscribers
#   bench/run.sh stream                       streaming publishes against per-request ones
#   bench/run.sh [--proto P] burst [EVENTS...] SUBS subscribers, bursts in arrays, default 1000 10000,
#                                             then STREAM_EVENTS through one streaming publish
#   bench/run.sh [--proto P] all              idle, fanout, search and publish with their defaults
#
# P is the subscribers' protocol: h1 (plain HTTP/1.1, the default), h1tls
# (HTTPS with HTTP/1.1), h2 (HTTPS with HTTP/2) or h3 (HTTP/3); each
# subscriber has a connection of its own. Over HTTPS, Caddy serves the
# Caddyfile.<target>-tls configs (its internal CA) and events are still
# published over plain HTTP.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

# Settings, all overridable from the environment.
ADMIN_PORT=${BENCH_ADMIN_PORT:-2719}
HTTP_PORT=${BENCH_HTTP_PORT:-8719}
HTTPS_PORT=${BENCH_HTTPS_PORT:-8743} # TCP, and UDP for HTTP/3
PROTO=${PROTO:-h1}               # subscribers' protocol (or --proto)
CADDY_CPU=${CADDY_CPU:-0}        # taskset CPU list of Caddy
TOOL_CPU=${TOOL_CPU:-1}          # taskset CPU list of ssebench
HOLD=${HOLD:-10s}                # idle: how long the streams are held
SUBS=${SUBS:-1000}               # fanout, burst: subscribers
TOPICS=${TOPICS:-1}              # fanout, search: topics
DURATION=${DURATION:-10s}        # fanout, publish: measured phase
STEP_DURATION=${STEP_DURATION:-5s} # search: each step
START=${START:-}                 # search: first rate (default 50000/N events/s)
STEP=${STEP:-}                   # search: rate step (default 50000/N events/s)
MAX_RATE=${MAX_RATE:-100000}     # search: highest rate tried
MAX_P99=${MAX_P99:-100ms}        # search: highest acceptable p99
PUBLISHERS=${PUBLISHERS:-8}      # publish, burst: concurrent publishers
BATCH=${BATCH:-1000}             # burst: events per array
STREAM_EVENTS=${STREAM_EVENTS:-10000} # burst: events of the streaming burst (0: none)
SSEBENCH_FLAGS=${SSEBENCH_FLAGS:-} # more ssebench flags, for every run
OUT=${OUT:-}                     # also append the JSON lines to this file
PROFILE=${PROFILE:-}             # a directory: Caddy's CPU profile of each fanout (and of a
                                 # search's first step), its heap at the end of each idle hold
                                 # (<label>.cpu.pb.gz, <label>.heap.pb.gz)

name=run.sh
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

usage() {
	sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

if [ "${1:-}" = "--proto" ]; then
	[ $# -ge 2 ] || usage
	PROTO=$2
	shift 2
fi
case $PROTO in h1 | h1tls | h2 | h3) ;; *) die "unknown protocol $PROTO (h1, h1tls, h2 or h3)" ;; esac
[ $# -ge 1 ] || usage
command -v taskset >/dev/null || die "taskset is missing (util-linux)"
command -v curl >/dev/null || die "curl is missing"

raise_open_files
log "open files limit: $(ulimit -n)"

work=$(mktemp -d "${TMPDIR:-/tmp}/ssebench.XXXXXX")
caddy_pid=""

# idle_subscribers N TOPIC opens N idle streams on TOPIC with a second
# ssebench in the background and waits until the hub counts them; stop
# them with stop_idle_subscribers.
idle_pid=""
idle_subscribers() {
	local n=$1 topic=$2
	check_files "$n"
	taskset -c "$TOOL_CPU" "$work/ssebench" idle --quiet -n "$n" --duration 1h \
		--sub-url "http://127.0.0.1:$HTTP_PORT/events?topic=$topic" >/dev/null 2>"$work/idle.log" &
	idle_pid=$!
	for _ in $(seq 300); do
		if curl -sf "http://127.0.0.1:$ADMIN_PORT/sse/hubs/default" | grep -q "\"subscribers\":$n,"; then
			log "$n idle subscribers on $topic"
			return 0
		fi
		sleep 0.1
	done
	die "the $n idle subscribers did not connect in 30s: $(cat "$work/idle.log")"
}
stop_idle_subscribers() {
	interrupt_pid "$idle_pid"
	idle_pid=""
}

cleanup() {
	stop_idle_subscribers
	stop_caddy
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build() {
	log "building caddy (-tags ssebench) and ssebench in $work"
	(cd "$root" && go build -tags ssebench -o "$work/caddy" ./cmd/caddy && go build -o "$work/ssebench" ./cmd/ssebench) ||
		die "build failed"
	log "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo '+changes'), $(go version | cut -d' ' -f3), $(nproc) CPUs, kernel $(uname -r)"
}

# check_caddy_ports fails if a port of Caddy is in use (TCP, and UDP
# for HTTP/3).
check_caddy_ports() {
	check_ports "$ADMIN_PORT" "$HTTP_PORT" "$HTTPS_PORT"
	if command -v ss >/dev/null && ss -Hlun "sport = :$HTTPS_PORT" | grep -q .; then
		die "UDP port $HTTPS_PORT is in use (BENCH_HTTPS_PORT moves it)"
	fi
}

# ready tells whether the Caddy just started answers on its admin API,
# its site, and over HTTPS its TLS site.
ready() {
	curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/config/" &&
		answers "http://127.0.0.1:$HTTP_PORT/" &&
		{ ! secure || { [ -f "$ca_root" ] && curl -s -o /dev/null --cacert "$ca_root" "https://127.0.0.1:$HTTPS_PORT/"; }; }
}

# secure says whether the subscribers use HTTPS.
secure() { [ "$PROTO" != h1 ]; }

# The root of Caddy's internal CA, once a Caddy over HTTPS has run (every
# Caddy of a run shares its data directory, so its CA and certificate).
ca_root="$work/home/caddy/pki/authorities/local/root.crt"

# start_caddy ours|floor|hijack starts a fresh Caddy on that config (its
# -tls variant over HTTPS), pinned to CADDY_CPU, and waits for its admin
# API and site.
start_caddy() {
	local cfg="$here/Caddyfile.$1"
	if secure; then cfg="$here/Caddyfile.$1-tls"; fi
	[ -f "$cfg" ] || die "no config $cfg"
	check_caddy_ports
	mkdir -p "$work/home"
	BENCH_ADMIN_PORT=$ADMIN_PORT BENCH_HTTP_PORT=$HTTP_PORT BENCH_HTTPS_PORT=$HTTPS_PORT HOME="$work/home" \
		XDG_CONFIG_HOME="$work/home" XDG_DATA_HOME="$work/home" \
		taskset -c "$CADDY_CPU" "$work/caddy" run --config "$cfg" --adapter caddyfile \
		>"$work/caddy.log" 2>&1 &
	caddy_pid=$!
	await_caddy "$caddy_pid" "$work/caddy.log" ready
	sleep 1 # let its memory settle before it is measured
	log "caddy ($(basename "$cfg")) is running, pid $caddy_pid, CPU $CADDY_CPU"
}

# sub_flags sets the array sub to the ssebench flags of the subscribers:
# where and how.
sub_flags() {
	if secure; then
		sub=(--proto "$PROTO" --ca "$ca_root" --sub-url "https://127.0.0.1:$HTTPS_PORT/events?topic={topic}")
	else
		sub=(--sub-url "http://127.0.0.1:$HTTP_PORT/events?topic={topic}")
	fi
}

# bench MODE LABEL FLAGS... runs ssebench against the running Caddy and
# prints its JSON line.
bench() {
	local mode=$1 label=$2
	shift 2
	local line sub
	sub_flags
	local prof=()
	if [ -n "$PROFILE" ]; then
		mkdir -p "$PROFILE"
		prof=(--pprof "http://127.0.0.1:$ADMIN_PORT/debug/pprof" --profile-out "$PROFILE/$label")
	fi
	# shellcheck disable=SC2086 # SSEBENCH_FLAGS is a list of flags
	line=$(taskset -c "$TOOL_CPU" "$work/ssebench" "$mode" --label "$label" --pid "$caddy_pid" \
		"${sub[@]}" --pub-url "http://127.0.0.1:$HTTP_PORT/publish" "${prof[@]}" "$@" $SSEBENCH_FLAGS) ||
		die "ssebench $mode ($label) failed"
	echo "$line"
	if [ -n "$OUT" ]; then echo "$line" >>"$OUT"; fi
}

# once TARGET MODE LABEL FLAGS... runs one measurement in a fresh Caddy.
once() {
	local target=$1
	shift
	start_caddy "$target"
	bench "$@"
	stop_caddy
}

# tag is the protocol in the labels: empty for h1, as before issue 12.
tag() { if secure; then echo "$PROTO-"; fi; }

check_files() {
	local n=$1
	if [ "$((n + 200))" -gt "$(ulimit -n)" ]; then
		log "warning: $n streams need about $((n + 200)) open files per process; the limit is $(ulimit -n)"
	fi
}

scenario_idle() {
	local sizes=("$@")
	[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000 19500)
	for n in "${sizes[@]}"; do
		check_files "$n"
		for target in ${IDLE_TARGETS:-floor ours hijack}; do
			log "idle: $n streams on $target, held $HOLD"
			once "$target" idle "idle-$(tag)$target-$n" -n "$n" --duration "$HOLD"
		done
	done
}

scenario_fanout() {
	local rates=("$@")
	[ ${#rates[@]} -gt 0 ] || rates=(50 300)
	check_files "$SUBS"
	for rate in "${rates[@]}"; do
		for target in ${TARGETS:-ours hijack}; do
			log "fanout: $SUBS subscribers on $target, $TOPICS topic(s), $rate events/s for $DURATION"
			once "$target" fanout "fanout-$(tag)$target-$SUBS-$rate" -n "$SUBS" --topics "$TOPICS" --rate "$rate" --duration "$DURATION"
		done
	done
}

scenario_search() {
	local sizes=("$@")
	[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)
	for n in "${sizes[@]}"; do
		check_files "$n"
		local default=$((50000 / n))
		[ "$default" -ge 1 ] || default=1
		local start=${START:-$default} step=${STEP:-$default}
		for target in ${TARGETS:-ours hijack}; do
			log "search: $n subscribers on $target, from $start events/s by $step, $STEP_DURATION per step, p99 up to $MAX_P99"
			once "$target" search "search-$(tag)$target-$n" -n "$n" --topics "$TOPICS" --rate "$start" --rate-step "$step" \
				--rate-max "$MAX_RATE" --duration "$STEP_DURATION" --max-p99 "$MAX_P99"
		done
	done
}

scenario_publish() {
	secure && log "publish: publishers use plain HTTP whatever the protocol; running it over HTTP/1.1"
	PROTO=h1
	local targets=("$@")
	[ ${#targets[@]} -gt 0 ] || targets=(floor ours)
	for target in "${targets[@]}"; do
		case $target in ours | floor) ;; *) die "publish: unknown target $target (ours or floor)" ;; esac
		log "publish: $PUBLISHERS publishers on $target for $DURATION"
		once "$target" publish "publish-$target" --publishers "$PUBLISHERS" --duration "$DURATION"
	done
}

# scenario_stream measures streaming publishes (issue 13) against
# per-request ones: events/s through 1 and PUBLISHERS of each, without
# subscribers and with SUBS idle subscribers (of another topic); an ndjson
# stream; then the publish-to-receipt latency at 1,000 events/s to 100
# subscribers, and the highest rate without loss to SUBS subscribers of
# the topic.
scenario_stream() {
	secure && log "stream: publishers use plain HTTP/1.1; running it all over HTTP/1.1"
	PROTO=h1
	for n in 1 "$PUBLISHERS"; do
		log "stream: $n per-request publishers, then $n streams, for $DURATION"
		once ours publish "publish-requests-$n" --publishers "$n" --duration "$DURATION"
		once ours publish "publish-streams-$n" --pub-stream --publishers "$n" --duration "$DURATION"
	done
	log "stream: one ndjson stream for $DURATION"
	once ours publish "publish-streams-ndjson-1" --pub-stream --pub-type application/x-ndjson --publishers 1 --duration "$DURATION"
	start_caddy ours
	idle_subscribers "$SUBS" idle
	for n in 1 "$PUBLISHERS"; do
		log "stream: $n per-request publishers, then $n streams, with $SUBS idle subscribers"
		bench publish "publish-requests-$n-idle-$SUBS" --publishers "$n" --duration "$DURATION"
		bench publish "publish-streams-$n-idle-$SUBS" --pub-stream --publishers "$n" --duration "$DURATION"
	done
	stop_idle_subscribers
	stop_caddy
	log "stream: latency at 1000 events/s to 100 subscribers, through one stream, then per request"
	once ours fanout "latency-stream-100-1000" -n 100 --rate 1000 --duration "$DURATION" --pub-stream --publishers 1
	once ours fanout "latency-requests-100-1000" -n 100 --rate 1000 --duration "$DURATION"
	check_files "$SUBS"
	# steps of 250,000 deliveries/s; a late start up to 100 ms is the
	# tool's own scheduling on its saturated CPU, not the server's
	local step=$((250000 / SUBS))
	[ "$step" -ge 1 ] || step=1
	log "stream: highest rate without loss to $SUBS subscribers, through one stream, then per request"
	once ours search "search-stream-$SUBS" -n "$SUBS" --pub-stream --publishers 1 --rate "$step" --rate-step "$step" \
		--rate-max "$MAX_RATE" --duration "$STEP_DURATION" --max-p99 "$MAX_P99" --late 100ms
	once ours search "search-requests-$SUBS" -n "$SUBS" --rate "$step" --rate-step "$step" \
		--rate-max "$MAX_RATE" --duration "$STEP_DURATION" --max-p99 "$MAX_P99" --late 100ms
}

# scenario_burst measures bursts (a burst is not slowness): SUBS
# subscribers of one topic, then each burst of EVENTS events at once, in
# JSON arrays of BATCH events over PUBLISHERS publishers (a burst of 1,000
# is one array), then STREAM_EVENTS events through one streaming publish;
# every burst in a fresh Caddy. Each line says how many subscribers got
# every event on their first connection, those disconnected, and the time
# to deliver the burst.
scenario_burst() {
	local sizes=("$@")
	[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)
	check_files "$SUBS"
	for events in "${sizes[@]}"; do
		log "burst: $events events in arrays of $BATCH over $PUBLISHERS publishers to $SUBS subscribers"
		once ours burst "burst-$(tag)ours-$SUBS-$events" -n "$SUBS" --events "$events" --batch "$BATCH" \
			--publishers "$PUBLISHERS"
	done
	if [ "$STREAM_EVENTS" -gt 0 ]; then
		log "burst: $STREAM_EVENTS events through one streaming publish to $SUBS subscribers"
		once ours burst "burst-stream-$(tag)ours-$SUBS-$STREAM_EVENTS" -n "$SUBS" --events "$STREAM_EVENTS" \
			--pub-stream --publishers 1
	fi
}

scenario=$1
shift
case $scenario in
idle | fanout | search | publish | stream | burst)
	build
	"scenario_$scenario" "$@"
	;;
all)
	[ $# -eq 0 ] || usage
	build
	scenario_idle
	scenario_fanout
	scenario_search
	scenario_publish
	;;
*) usage ;;
esac
