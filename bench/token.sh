#!/usr/bin/env bash
# Measures what access control costs at stream set-up (issue 20) in a Caddy
# built from this checkout: N idle subscribers connecting to a route
# without access control (plain), with `allow` (allow), with an HS256
# token (hs256) and with an EdDSA token (eddsa), the token in the query
# (?token=), each measurement in a fresh Caddy pinned to CPU 0, the load
# tool (cmd/ssebench idle) pinned to CPU 1. Config: bench/Caddyfile.token.
#
#   bench/token.sh [N [REPS]]     default 5000 subscribers, 3 repetitions
#
# For every target and repetition it prints one JSON line on stdout (and
# appends it to $OUT if set); at the end, one line of medians per target:
#   conn_per_s        subscribers connected / the tool's time to connect them
#                     (--connect-concurrency 200 at a time)
#   cpu_us_per_conn   Caddy's CPU time from before the first connection to
#                     the last one's headers, per connection (/proc, 10 ms ticks)
#   kib_per_stream    Caddy's RSS per idle stream (the tool's kib_per_sub)
#   heap_b_per_stream Caddy's Go heap per idle stream, after a forced GC, in
#                     a second fresh Caddy (HEAP=0 skips it): exact where RSS
#                     moves by pages
# Settings from the environment: HOLD (5s), TARGETS, HEAP (1), OUT,
# BENCH_ADMIN_PORT and BENCH_HTTP_PORT (2719, 8719), CADDY_CPU and TOOL_CPU
# (0, 1), and CADDY and SSEBENCH: binaries to use instead of building them.
# Progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

N=${1:-5000}
REPS=${2:-3}
ADMIN_PORT=${BENCH_ADMIN_PORT:-2719}
HTTP_PORT=${BENCH_HTTP_PORT:-8719}
CADDY_CPU=${CADDY_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
HOLD=${HOLD:-5s}                     # how long the streams are held (RSS is read at the end)
TARGETS=${TARGETS:-plain allow hs256 eddsa}
HEAP=${HEAP:-1}                      # also measure the Go heap per stream, in separate runs
CADDY=${CADDY:-}                     # a Caddy binary (with this plugin) to use instead of building one
SSEBENCH=${SSEBENCH:-}               # the same for ssebench
OUT=${OUT:-}

name=token.sh
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

for cmd in taskset curl jq openssl; do
	command -v "$cmd" >/dev/null || die "$cmd is missing"
done

raise_open_files
[ "$((N + 200))" -le "$(ulimit -n)" ] || log "warning: $N streams need about $((N + 200)) open files; the limit is $(ulimit -n)"

work=$(mktemp -d "${TMPDIR:-/tmp}/ssebench-token.XXXXXX")
caddy_pid=""
tool_pid=""

stop_tool() {
	interrupt_pid "$tool_pid"
	tool_pid=""
}
cleanup() {
	stop_tool
	stop_caddy
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "$CADDY" ] && [ -n "$SSEBENCH" ]; then
	cp "$CADDY" "$work/caddy" && cp "$SSEBENCH" "$work/ssebench" || die "cannot copy $CADDY and $SSEBENCH"
	log "using $CADDY and $SSEBENCH"
else
	log "building caddy and ssebench in $work"
	(cd "$root" && go build -o "$work/caddy" ./cmd/caddy && go build -o "$work/ssebench" ./cmd/ssebench) || die "build failed"
fi
log "commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo '+changes'), $(go version | cut -d' ' -f3), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# The keys: a 48-byte HS256 secret, an Ed25519 pair; the tokens, valid
# for an hour, grant every topic (sse.subscribe ["**"]).
keys="$work/keys"
mkdir -p "$keys"
openssl rand -hex 24 | tr -d '\n' >"$keys/hs256.key"
openssl genpkey -algorithm ed25519 -out "$keys/ed25519.key" 2>/dev/null
openssl pkey -in "$keys/ed25519.key" -pubout -out "$keys/ed25519.pub"
declare -A query
query[plain]=""
query[allow]=""
query[hs256]="&token=$("$work/caddy" sse-token --key-file "$keys/hs256.key" --alg HS256 --sub bench --subscribe '**' --ttl 1h)"
query[eddsa]="&token=$("$work/caddy" sse-token --key-file "$keys/ed25519.key" --alg EdDSA --sub bench --subscribe '**' --ttl 1h)"

# ready tells whether the Caddy just started answers on its admin API
# and its site.
ready() {
	curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/config/" && answers "http://127.0.0.1:$HTTP_PORT/"
}

start_caddy() {
	check_ports "$ADMIN_PORT" "$HTTP_PORT"
	mkdir -p "$work/home"
	BENCH_ADMIN_PORT=$ADMIN_PORT BENCH_HTTP_PORT=$HTTP_PORT BENCH_TOKEN_DIR=$keys HOME="$work/home" \
		XDG_CONFIG_HOME="$work/home" XDG_DATA_HOME="$work/home" \
		taskset -c "$CADDY_CPU" "$work/caddy" run --config "$here/Caddyfile.token" --adapter caddyfile \
		>"$work/caddy.log" 2>&1 &
	caddy_pid=$!
	await_caddy "$caddy_pid" "$work/caddy.log" ready
	sleep 1 # let its memory settle before it is measured
}

# cpu_ticks is Caddy's user and system CPU time, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$caddy_pid/stat"; }

# heap_alloc forces a GC in Caddy and prints its live heap, in bytes.
heap_alloc() {
	curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/debug/pprof/heap?gc=1"
	curl -sf "http://127.0.0.1:$ADMIN_PORT/debug/vars" | jq '.memstats.HeapAlloc'
}

# measure TARGET REP [heap] connects N subscribers to TARGET's route in a
# fresh Caddy and prints a JSON line.
measure() {
	local target=$1 rep=$2 kind=${3:-rss}
	local url="http://127.0.0.1:$HTTP_PORT/$target?topic={topic}${query[$target]}"
	start_caddy
	local heap0="" heap1="" hold=$HOLD
	if [ "$kind" = heap ]; then
		heap0=$(heap_alloc)
		hold=3s
	fi
	local t0 t1
	t0=$(cpu_ticks)
	: >"$work/tool.log"
	taskset -c "$TOOL_CPU" "$work/ssebench" idle -n "$N" --duration "$hold" --pid "$caddy_pid" \
		--label "token-$target-$N" --sub-url "$url" >"$work/tool.json" 2>"$work/tool.log" &
	tool_pid=$!
	for _ in $(seq 600); do
		grep -q "connected [0-9]*/" "$work/tool.log" && break
		kill -0 "$tool_pid" 2>/dev/null || break
		sleep 0.05
	done
	t1=$(cpu_ticks)
	if [ "$kind" = heap ]; then
		sleep 1
		heap1=$(heap_alloc)
	fi
	wait "$tool_pid" || die "ssebench failed: $(tail -n 5 "$work/tool.log")"
	tool_pid=""
	stop_caddy
	local hz line
	hz=$(getconf CLK_TCK)
	line=$(jq -c --arg target "$target" --arg kind "$kind" --argjson rep "$rep" --argjson ticks "$((t1 - t0))" \
		--argjson hz "$hz" --arg heap0 "$heap0" --arg heap1 "$heap1" '
		{target: $target, kind: $kind, rep: $rep, n: .subscribers, connected, failed, connect_s,
		 conn_per_s: ((.connected / .connect_s) | round),
		 cpu_us_per_conn: (($ticks * 1e6 / $hz / .connected) * 10 | round / 10)}
		+ if $kind == "heap" then
			{heap_b_per_stream: ((($heap1 | tonumber) - ($heap0 | tonumber)) / .connected | round)}
		  else {kib_per_stream: .server.kib_per_sub, rss_before_kib: .server.rss_before_kib, rss_after_kib: .server.rss_after_kib} end
		' "$work/tool.json")
	echo "$line" | tee -a "$work/all.jsonl"
	if [ -n "$OUT" ]; then echo "$line" >>"$OUT"; fi
	[ "$(echo "$line" | jq '.connected')" = "$N" ] || log "warning: only $(echo "$line" | jq '.connected') of $N connected ($target)"
}

for rep in $(seq "$REPS"); do
	for target in $TARGETS; do
		log "rep $rep/$REPS: $N subscribers on /$target"
		measure "$target" "$rep"
		if [ "$HEAP" = 1 ]; then
			measure "$target" "$rep" heap
		fi
	done
done

# medians per target
log "medians of $REPS runs (load average now $(cut -d' ' -f1-3 /proc/loadavg))"
for target in $TARGETS; do
	jq -s -c --arg target "$target" '
		def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
			else (.[length / 2 - 1] + .[length / 2]) / 2 end;
		[.[] | select(.target == $target)] as $runs
		| {target: $target, median_of: ($runs | map(select(.kind == "rss")) | length),
		   conn_per_s: ($runs | map(select(.kind == "rss") | .conn_per_s) | median),
		   cpu_us_per_conn: ($runs | map(.cpu_us_per_conn) | median),
		   kib_per_stream: ($runs | map(select(.kind == "rss") | .kib_per_stream) | median),
		   heap_b_per_stream: ($runs | map(select(.kind == "heap") | .heap_b_per_stream) | median)}
		' "$work/all.jsonl"
done
