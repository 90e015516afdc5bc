#!/usr/bin/env bash
# Measures the Redis transport against the memory transport, with a
# private redis-server (no persistence) pinned to REDIS_CPU, Caddy to
# CADDY_CPU and the load tool to TOOL_CPU. JSON lines on stdout, progress
# and Redis's own figures on stderr. See BENCHMARKS.md.
#
#   bench/redis.sh publish        PUBLISHERS publishers, no subscribers: memory, then redis
#   bench/redis.sh fanout [RATE]  SUBS subscribers on one topic at RATE events/s (default
#                                 100): memory on one instance, redis on one instance,
#                                 then redis with the subscribers split over two
#                                 instances, publishing to one
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
ADMIN_PORT=${BENCH_ADMIN_PORT:-2719}
HTTP_PORT=${BENCH_HTTP_PORT:-8719}
REDIS_PORT=${BENCH_REDIS_PORT:-6719}
CADDY_CPU=${CADDY_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
REDIS_CPU=${REDIS_CPU:-1}
REDIS_NICE=${REDIS_NICE:-0} # e.g. -15: Redis runs as soon as it has work, as on a CPU of its own
SUBS=${SUBS:-1000}
DURATION=${DURATION:-10s}
PUBLISHERS=${PUBLISHERS:-8}

name=redis.sh
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
[ $# -ge 1 ] || {
	sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}
raise_open_files

work=$(mktemp -d "${TMPDIR:-/tmp}/ssebench-redis.XXXXXX")
pids=()
redis_pid=""
stop_all() {
	local pid
	for pid in "${pids[@]}"; do
		stop_pid "$pid"
	done
	pids=()
}
cleanup() {
	stop_all
	stop_pid "$redis_pid"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building caddy (-tags ssebench) and ssebench in $work"
(cd "$root" && go build -tags ssebench -o "$work/caddy" ./cmd/caddy && go build -o "$work/ssebench" ./cmd/ssebench) || die "build failed"

nice -n "$REDIS_NICE" taskset -c "$REDIS_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
	--dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
for _ in $(seq 50); do
	redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
	sleep 0.1
done
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

# start CONFIG ADMIN HTTP starts a Caddy and prints its PID.
start() {
	mkdir -p "$work/home"
	BENCH_ADMIN_PORT=$2 BENCH_HTTP_PORT=$3 BENCH_REDIS=127.0.0.1:$REDIS_PORT HOME="$work/home" \
		XDG_CONFIG_HOME="$work/home" XDG_DATA_HOME="$work/home" \
		taskset -c "$CADDY_CPU" "$work/caddy" run --config "$here/Caddyfile.$1" --adapter caddyfile \
		>>"$work/caddy-$3.log" 2>&1 &
	local pid=$!
	pids+=("$pid")
	await_caddy "$pid" "$work/caddy-$3.log" answers "http://127.0.0.1:$3/"
	sleep 1
}

# redis_figures prints the scripts' calls, their time, and Redis's CPU seconds.
redis_figures() {
	local calls usec cpu
	calls=$(rcli info commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),usec=\([0-9]*\).*/\1 \2/p')
	cpu=$(rcli info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.3f", s}')
	echo "${calls:-0 0} $cpu"
}

tool() {
	taskset -c "$TOOL_CPU" "$work/ssebench" "$@"
}

publish() {
	log "publish: $PUBLISHERS publishers, memory"
	start ours "$ADMIN_PORT" "$HTTP_PORT"
	tool publish --label publish-memory --pid "${pids[0]}" --publishers "$PUBLISHERS" --duration "$DURATION" \
		--pub-url "http://127.0.0.1:$HTTP_PORT/publish"
	stop_all
	log "publish: $PUBLISHERS publishers, redis"
	start redis "$ADMIN_PORT" "$HTTP_PORT"
	rcli config resetstat >/dev/null
	read -r c0 u0 cpu0 < <(redis_figures)
	tool publish --label publish-redis --pid "${pids[0]}" --publishers "$PUBLISHERS" --duration "$DURATION" \
		--pub-url "http://127.0.0.1:$HTTP_PORT/publish"
	read -r c1 u1 cpu1 < <(redis_figures)
	log "redis: $((c1 - c0)) script calls, $(( (u1 - u0) / (c1 - c0 > 0 ? c1 - c0 : 1) )) us each (commandstats), CPU $(echo "($cpu1 - $cpu0) * 1000000 / ($c1 - $c0)" | bc) us per call (used_cpu)"
	stop_all
}

fanout() {
	local rate=${1:-100}
	log "fanout: $SUBS subscribers, $rate events/s, memory on one instance"
	start ours "$ADMIN_PORT" "$HTTP_PORT"
	tool fanout --label "fanout-memory-$SUBS-$rate" --pid "${pids[0]}" -n "$SUBS" --rate "$rate" --duration "$DURATION" \
		--sub-url "http://127.0.0.1:$HTTP_PORT/events?topic={topic}" --pub-url "http://127.0.0.1:$HTTP_PORT/publish"
	stop_all
	log "fanout: $SUBS subscribers, $rate events/s, redis, one instance"
	start redis "$ADMIN_PORT" "$HTTP_PORT"
	tool fanout --label "fanout-redis-1x$SUBS-$rate" --pid "${pids[0]}" -n "$SUBS" --rate "$rate" --duration "$DURATION" \
		--sub-url "http://127.0.0.1:$HTTP_PORT/events?topic={topic}" --pub-url "http://127.0.0.1:$HTTP_PORT/publish"
	stop_all
	log "fanout: $SUBS subscribers, $rate events/s, redis, two instances"
	start redis "$ADMIN_PORT" "$HTTP_PORT"
	start redis "$((ADMIN_PORT + 1))" "$((HTTP_PORT + 1))"
	rcli config resetstat >/dev/null
	read -r c0 u0 cpu0 < <(redis_figures)
	tool fanout --label "fanout-redis-2x$((SUBS / 2))-$rate" --pid "${pids[0]}" -n "$SUBS" --rate "$rate" --duration "$DURATION" \
		--sub-url "http://127.0.0.1:$HTTP_PORT/events?topic={topic},http://127.0.0.1:$((HTTP_PORT + 1))/events?topic={topic}" \
		--pub-url "http://127.0.0.1:$HTTP_PORT/publish"
	read -r c1 u1 cpu1 < <(redis_figures)
	log "redis: $((c1 - c0)) script calls, $(( (u1 - u0) / (c1 - c0 > 0 ? c1 - c0 : 1) )) us each (commandstats)"
	stop_all
}

case $1 in
publish) publish ;;
fanout)
	shift
	fanout "$@"
	;;
*) die "unknown scenario $1" ;;
esac
