#!/usr/bin/env bash
# Watch fan-out, etcd and nines side by side: a 3-member cluster of each on
# loopback; for each writer count in WRITERS, writers put under one prefix for
# DURATION with no watchers, then with WATCHERS watchers on that prefix in
# each layout of PER_STREAM (watchers sharing one watch stream: 1, and 100 as
# etcd's own benchmark and clients that watch many keys on one stream do);
# the same `nines bench watch` client for both sides, alternating etcd and
# nines run by run. Reports the write rate with and without watchers, the
# drop, events per watch response, and whether every watcher received every
# acknowledged write in order, in the "Watch fan-out" part of the
# "## KV store" section of bench/RESULTS.md.
#
# Environment: ROUNDS (3), DURATION (8s), WATCHERS (1000), WRITERS ("1 64"),
# PER_STREAM ("1 100"),
# SIDES ("etcd nines"), NINES_BIN, BENCH_BIN, RESULTS, KEEP_WORK=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
WATCHERS=${WATCHERS:-1000}
WRITERS=${WRITERS:-"1 64"}
PER_STREAM=${PER_STREAM:-"1 100"}
SIDES=${SIDES:-"etcd nines"}
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nines-bench-watch.XXXXXX")
# shellcheck source=bench/kv/cluster.sh
source "$ROOT/bench/kv/cluster.sh"
BENCH_BIN=${BENCH_BIN:-$NINES_BIN}

finish() {
  cleanup_processes
  if [ "${KEEP_WORK:-0}" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap finish EXIT

[ -x "$BENCH_BIN" ] || (cd "$ROOT" && cargo build --release -p nines)
snapshot_binaries
command -v jq >/dev/null || die "jq is needed (apt-get install jq)"
for side in $SIDES; do cluster_start "$side"; done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# One run: SIDE WRITERS WATCHERS PER_STREAM ROUND OUT.
run_one() {
  "$BENCH_BIN" bench watch --endpoints "$(cluster_endpoints "$1")" --watchers "$3" \
    --watchers-per-stream "$4" --clients "$2" --duration "$DURATION" \
    --prefix "/fanout/$5/$2/$3/$4/" -w json >"$6" 2>"$6.err" ||
    die "$1 writers=$2 watchers=$3 per stream=$4 round $5 failed: $(tail -n 5 "$6.err")"
  log "round $5 $1 writers=$2 watchers=$3 per stream=$4: $(jq -r '"\(.write_throughput_ops_s | floor) writes/s, \(.watchers_complete)/\(.watchers) watchers complete"' "$6")"
}
for ((round = 1; round <= ROUNDS; round++)); do
  for c in $WRITERS; do
    for side in $SIDES; do run_one "$side" "$c" 0 1 "$round" "$WORK/$side.c$c.w0.$round.json"; done
    for ps in $PER_STREAM; do
      for side in $SIDES; do
        run_one "$side" "$c" "$WATCHERS" "$ps" "$round" "$WORK/$side.c$c.w$WATCHERS.s$ps.$round.json"
      done
    done
  done
done

median() { # FIELD FILES...
  local field=$1
  shift
  jq -s "map($field) | sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end" "$@"
}
complete() { jq -s 'map(.watchers_complete == .watchers and .watchers_broken == 0) | all' "$@"; }
per_response() { # events delivered per response with events, over all rounds
  jq -s 'map(select(.responses_with_events > 0)) | if length == 0 then 0 else
    (map(.writes_acknowledged * .watchers) | add) / (map(.responses_with_events) | add) end' "$@"
}
section="$WORK/section.md"
{
  echo "### Watch fan-out"
  echo
  echo "Written by \`bench/watch/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(commit_summary)."
  echo "Machine: $(machine_summary); load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Each side: 3 members on loopback, default settings. Writers (${WRITERS// / or }) put 256-byte values under one"
  echo "prefix for $DURATION, first with no watcher, then with $WATCHERS watchers on the prefix, ${PER_STREAM// / or } per watch"
  echo "stream (100 per stream is etcd's benchmark layout, \`benchmark watch --streams 10 --watch-per-stream 100\`, and what a"
  echo "client that opens many watches on one stream does); the streams are spread over 16 connections that go round the members."
  echo "$ROUNDS rounds, etcd and nines alternating run by run, medians. \"All delivered\" means every watcher received every"
  echo "acknowledged write, in revision order, in every round."
  echo
  echo "| side | writers | watchers per stream | writes/s, no watchers | writes/s, $WATCHERS watchers | drop | events per response | all delivered |"
  echo "|---|---|---|---|---|---|---|---|"
  for c in $WRITERS; do
    for ps in $PER_STREAM; do
      for side in $SIDES; do
        a=$(median .write_throughput_ops_s "$WORK/$side.c$c.w0".*.json)
        b=$(median .write_throughput_ops_s "$WORK/$side.c$c.w$WATCHERS.s$ps".*.json)
        drop=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.0f%%", (a > 0 ? (1 - b / a) * 100 : 0) }')
        printf '| %s | %s | %s | %.0f | %.0f | %s | %.1f | %s |\n' "$side" "$c" "$ps" "$a" "$b" "$drop" \
          "$(per_response "$WORK/$side.c$c.w$WATCHERS.s$ps".*.json)" "$(complete "$WORK/$side.c$c.w$WATCHERS.s$ps".*.json)"
      done
    done
  done
  echo
  echo "Raw runs (writes/s per round: no watchers, then $WATCHERS watchers for each layout):"
  echo
  for c in $WRITERS; do
    for side in $SIDES; do
      runs=""
      for ((round = 1; round <= ROUNDS; round++)); do
        runs+="$(jq -r '.write_throughput_ops_s | floor' "$WORK/$side.c$c.w0.$round.json")"
        for ps in $PER_STREAM; do
          runs+="/$(jq -r '.write_throughput_ops_s | floor' "$WORK/$side.c$c.w$WATCHERS.s$ps.$round.json")"
        done
        runs+=" "
      done
      echo "- $side, $c writer(s) (0 / ${PER_STREAM// / / } per stream): $runs"
    done
  done
  echo
  echo "Command (per side, per run):"
  echo
  echo "    nines bench watch --endpoints \$ENDPOINTS --watchers {0,$WATCHERS} --watchers-per-stream {${PER_STREAM// /,}} --clients {${WRITERS// /,}} --duration $DURATION -w json"
  echo
} >"$section"
replace_section "$RESULTS" "## KV store" "### Watch fan-out" "$section"
log "results written to $RESULTS"
