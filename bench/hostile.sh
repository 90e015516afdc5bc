#!/usr/bin/env bash
# Runs the hostile-client attacks of issue 18 (cmd/ssehostile) against two
# builds of Caddy, "before" and "after", each built from a git worktree of
# its commit (uncommitted edits of the checkout never leak in), every
# measurement in a fresh Caddy pinned to CADDY_CPU with the tool on
# TOOL_CPU. Prints one JSON line per measurement on stdout and appends it
# to $OUT; progress goes to stderr. See bench/README.md, "Hostile clients".
#
#   bench/hostile.sh                 every attack, before then after
#   bench/hostile.sh replay stop-h2  only these attacks (at their scales below)
#
# Attacks and scales: idem-stream (2,000,000 events), idem-arrays (2,000
# arrays of 1,000), replay (500 clients), stop-h2 and reload-h2 (1 and 20
# clients), stop-sub-body, stop-pub-body (1 client), pub-buffers (300 streams).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

BEFORE=${BEFORE:-99e8afb}          # the commit before the fixes
AFTER=${AFTER:-HEAD}               # the commit after them
CADDY_CPU=${CADDY_CPU:-0}          # taskset CPU list of Caddy
TOOL_CPU=${TOOL_CPU:-1}            # taskset CPU list of ssehostile
ADMIN_PORT=${HOSTILE_ADMIN_PORT:-2769}
HTTP_PORT=${HOSTILE_HTTP_PORT:-8769}
HTTPS_PORT=${HOSTILE_HTTPS_PORT:-8770} # TCP, and UDP for HTTP/3
CAP=${CAP:-60s}                    # longest wait for a stop or a reload
MIN_DURATION=${MIN_DURATION:-10s}  # the honest subscriber's shortest window
HOSTILE_FLAGS=${HOSTILE_FLAGS:-}   # more ssehostile flags, for every run
OUT=${OUT:-hostile.jsonl}          # the JSON lines are appended here

name=hostile.sh
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

command -v taskset >/dev/null || die "taskset is missing (util-linux)"
raise_open_files

work=$(mktemp -d "${TMPDIR:-/tmp}/ssehostile.XXXXXX")
trees=()

cleanup() {
	local t
	for t in "${trees[@]}"; do
		git -C "$root" worktree remove --force "$t" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# build_caddy LABEL COMMIT builds cmd/caddy of COMMIT, in a worktree of
# its own, as $work/caddy-LABEL.
build_caddy() {
	local label=$1 commit=$2 tree="$work/tree-$1"
	git -C "$root" worktree add --detach "$tree" "$commit" >/dev/null 2>&1 || die "no worktree of $commit"
	trees+=("$tree")
	log "building caddy $label from $(git -C "$tree" rev-parse --short HEAD)"
	(cd "$tree" && go build -o "$work/caddy-$label" ./cmd/caddy) || die "building $label failed"
}

# measure ATTACK SCALE LABEL runs one measurement; a failure is logged and
# the next one runs.
measure() {
	local attack=$1 scale=$2 label=$3 line
	# shellcheck disable=SC2086 # HOSTILE_FLAGS is a list of flags
	if line=$(taskset -c "$TOOL_CPU" "$work/ssehostile" "$attack" --caddy "$work/caddy-$label" --label "$label" \
		--scale "$scale" --caddy-cpu "$CADDY_CPU" --admin-port "$ADMIN_PORT" --http-port "$HTTP_PORT" \
		--https-port "$HTTPS_PORT" --cap "$CAP" --min-duration "$MIN_DURATION" $HOSTILE_FLAGS); then
		echo "$line"
		echo "$line" >>"$OUT"
	else
		log "$attack $label at $scale failed"
	fi
}

# scales prints the scales an attack is measured at.
scales() {
	case $1 in
	idem-stream) echo 2000000 ;;
	idem-arrays) echo 2000 ;;
	replay) echo 500 ;;
	stop-h2 | reload-h2) echo 1 20 ;;
	stop-sub-body | stop-pub-body) echo 1 ;;
	pub-buffers) echo 300 ;;
	*) die "unknown attack $1" ;;
	esac
}

attacks=("$@")
if [ ${#attacks[@]} -eq 0 ]; then
	attacks=(idem-stream idem-arrays replay stop-h2 reload-h2 stop-sub-body stop-pub-body pub-buffers)
fi
for attack in "${attacks[@]}"; do scales "$attack" >/dev/null; done

build_caddy before "$BEFORE"
build_caddy after "$AFTER"
log "building ssehostile from the checkout"
(cd "$root" && go build -o "$work/ssehostile" ./cmd/ssehostile) || die "building ssehostile failed"
log "$(go version | cut -d' ' -f3), $(nproc) CPUs, kernel $(uname -r); load before: $(uptime)"

for attack in "${attacks[@]}"; do
	for scale in $(scales "$attack"); do
		measure "$attack" "$scale" before
		measure "$attack" "$scale" after
	done
done
log "load after: $(uptime)"
