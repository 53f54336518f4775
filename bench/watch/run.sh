#!/usr/bin/env bash
# Watch fan-out, etcd and nines side by side: a 3-member cluster of each on
# loopback; for each writer count in WRITERS, writers put under one prefix for
# DURATION with no watchers, then with WATCHERS watch streams on that prefix
# (the same `nines bench watch` client for both sides, alternating etcd and
# nines run by run). Reports the write rate with and without watchers, the
# drop, events per watch response, and whether every watcher received every
# acknowledged write in order, in the "Watch fan-out" part of the
# "## KV store" section of bench/RESULTS.md.
#
# Environment: ROUNDS (3), DURATION (8s), WATCHERS (1000), WRITERS ("1 64"),
# PER_STREAM (watchers sharing one watch stream, 1),
# SIDES ("etcd nines"), NINES_BIN, BENCH_BIN, RESULTS, KEEP_WORK=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
WATCHERS=${WATCHERS:-1000}
WRITERS=${WRITERS:-"1 64"}
PER_STREAM=${PER_STREAM:-1}
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

for ((round = 1; round <= ROUNDS; round++)); do
  for c in $WRITERS; do
    for w in 0 "$WATCHERS"; do
      for side in $SIDES; do
        out="$WORK/$side.c$c.w$w.$round.json"
        "$BENCH_BIN" bench watch --endpoints "$(cluster_endpoints "$side")" --watchers "$w" \
          --watchers-per-stream "$PER_STREAM" \
          --clients "$c" --duration "$DURATION" --prefix "/fanout/$round/$c/$w/" -w json >"$out" \
          2>"$out.err" || die "$side writers=$c watchers=$w round $round failed: $(tail -n 5 "$out.err")"
        log "round $round $side writers=$c watchers=$w: $(jq -r '"\(.write_throughput_ops_s | floor) writes/s, \(.watchers_complete)/\(.watchers) watchers complete"' "$out")"
      done
    done
  done
done

median() { # SIDE WRITERS WATCHERS FIELD
  jq -s "map($4) | sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end" \
    "$WORK/$1.c$2.w$3".*.json
}
complete() { jq -s 'map(.watchers_complete == .watchers and .watchers_broken == 0) | all' "$WORK/$1.c$2.w$3".*.json; }
per_response() { # events delivered per response with events, over all rounds
  jq -s 'map(select(.responses_with_events > 0)) | if length == 0 then 0 else
    (map(.writes_acknowledged * .watchers) | add) / (map(.responses_with_events) | add) end' "$WORK/$1.c$2.w$3".*.json
}
section="$WORK/section.md"
{
  echo "### Watch fan-out"
  echo
  echo "Written by \`bench/watch/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(commit_summary)."
  echo "Machine: $(machine_summary); load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Each side: 3 members on loopback, default settings. Writers (${WRITERS// / or }) put 256-byte values under one"
  echo "prefix for $DURATION, first with no watcher, then with $WATCHERS watch streams on the prefix (spread over"
  echo "16 connections that go round the members); $ROUNDS rounds, etcd and nines alternating run by run, medians."
  echo "\"All delivered\" means every watcher received every acknowledged write, in revision order, in every round."
  echo
  echo "| side | writers | writes/s, no watchers | writes/s, $WATCHERS watchers | drop | events per response | all delivered |"
  echo "|---|---|---|---|---|---|---|"
  for c in $WRITERS; do
    for side in $SIDES; do
      a=$(median "$side" "$c" 0 .write_throughput_ops_s)
      b=$(median "$side" "$c" "$WATCHERS" .write_throughput_ops_s)
      drop=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.0f%%", (a > 0 ? (1 - b / a) * 100 : 0) }')
      printf '| %s | %s | %.0f | %.0f | %s | %.1f | %s |\n' "$side" "$c" "$a" "$b" "$drop" \
        "$(per_response "$side" "$c" "$WATCHERS")" "$(complete "$side" "$c" "$WATCHERS")"
    done
  done
  echo
  echo "Raw runs (writes/s with no watchers / with $WATCHERS, per round):"
  echo
  for c in $WRITERS; do
    for side in $SIDES; do
      runs=""
      for ((round = 1; round <= ROUNDS; round++)); do
        runs+="$(jq -r '.write_throughput_ops_s | floor' "$WORK/$side.c$c.w0.$round.json")/$(jq -r '.write_throughput_ops_s | floor' "$WORK/$side.c$c.w$WATCHERS.$round.json") "
      done
      echo "- $side, $c writer(s): $runs"
    done
  done
  echo
  echo "Command (per side, per run):"
  echo
  echo "    nines bench watch --endpoints \$ENDPOINTS --watchers {0,$WATCHERS} --clients {${WRITERS// /,}} --duration $DURATION -w json"
  echo
} >"$section"
replace_section "$RESULTS" "## KV store" "### Watch fan-out" "$section"
log "results written to $RESULTS"
