# shellcheck shell=bash
# The helpers that the bench scripts share. Source it after setting
# `name` (the script's name, for messages):
#
#   name=run.sh
#   . "$(dirname "$0")/lib.sh"

log() { echo "${name:-bench}: $*" >&2; }
die() {
	log "$*"
	exit 1
}

# raise_open_files lifts the limit of open files: every stream is one
# file in Caddy and one in the load tool.
raise_open_files() {
	ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

# stop_pid PID ends a process this script started, by its PID only: TERM,
# then KILL if it is still there after 10 s.
stop_pid() {
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "process $pid did not stop in 10s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

# interrupt_pid PID ends a load tool this script started, by its PID
# only, with INT (it then prints what it measured), and waits for it.
interrupt_pid() {
	[ -n "$1" ] || return 0
	kill -INT "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# stop_caddy ends the Caddy whose PID is in caddy_pid, if any.
stop_caddy() {
	stop_pid "${caddy_pid:-}"
	caddy_pid=""
}

# check_ports PORT... fails if a TCP port is in use: Caddy listens with
# SO_REUSEPORT, so it would start anyway and share the connections with
# whatever else listens there (another Caddy), which spoils every count.
check_ports() {
	local port
	for port in "$@"; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			die "port $port is in use (see the script's settings to move it)"
		fi
	done
}

# await_caddy PID LOG CHECK... waits up to 10 s for a Caddy started in the
# background to be ready, which the command CHECK (with its arguments)
# tells; it fails with the end of LOG if the process exits first.
await_caddy() {
	local pid=$1 logfile=$2
	shift 2
	for _ in $(seq 100); do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$logfile" >&2
			die "caddy exited at start (is one of its ports taken?)"
		fi
		if "$@"; then
			return 0
		fi
		sleep 0.1
	done
	die "caddy did not answer within 10s"
}

# answers URL... tells whether every URL answers (any status).
answers() {
	local url
	for url in "$@"; do
		curl -s -o /dev/null "$url" || return 1
	done
}
