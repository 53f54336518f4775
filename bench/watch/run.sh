#!/usr/bin/env bash
# Watch fan-out, etcd and nines side by side: a 3-member cluster of each on
# loopback; writers put under one prefix for DURATION with no watchers, then
# with WATCHERS watch streams on that prefix (the same `nines bench watch`
# client for both sides, alternating etcd and nines each round). Reports the
# write rate with and without watchers, the drop, and whether every watcher
# received every acknowledged write, in the "Watch fan-out" part of the
# "## KV store" section of bench/RESULTS.md.
#
# Environment: ROUNDS (2), DURATION (8s), WATCHERS (1000), CLIENTS (64),
# SIDES ("etcd nines"), NINES_BIN, BENCH_BIN, RESULTS, KEEP_WORK=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8s}
WATCHERS=${WATCHERS:-1000}
CLIENTS=${CLIENTS:-64}
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
  for side in $SIDES; do
    for w in 0 "$WATCHERS"; do
      out="$WORK/$side.w$w.$round.json"
      "$BENCH_BIN" bench watch --endpoints "$(cluster_endpoints "$side")" --watchers "$w" \
        --clients "$CLIENTS" --duration "$DURATION" --prefix "/fanout/$round/$w/" -w json >"$out" \
        2>"$out.err" || die "$side watchers=$w round $round failed: $(tail -n 5 "$out.err")"
      log "round $round $side watchers=$w: $(jq -r '"\(.write_throughput_ops_s | floor) writes/s, \(.watchers_complete)/\(.watchers) watchers complete"' "$out")"
    done
  done
done

median() { # SIDE WATCHERS FIELD
  jq -s "map($3) | sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end" \
    "$WORK/$1.w$2".*.json
}
complete() { jq -s 'map(.watchers_complete == .watchers) | all' "$WORK/$1.w$2".*.json; }

section="$WORK/section.md"
{
  echo "### Watch fan-out"
  echo
  echo "Written by \`bench/watch/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(commit_summary)."
  echo "Machine: $(machine_summary); load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Each side: 3 members on loopback, default settings. $CLIENTS writers put 256-byte values under one"
  echo "prefix for $DURATION, first with no watcher, then with $WATCHERS watch streams on the prefix (spread over"
  echo "16 connections); $ROUNDS alternating rounds, medians. \"All delivered\" means every watcher received"
  echo "every acknowledged write in every round."
  echo
  echo "| side | writes/s, no watchers | writes/s, $WATCHERS watchers | drop | all delivered |"
  echo "|---|---|---|---|---|"
  for side in $SIDES; do
    a=$(median "$side" 0 .write_throughput_ops_s)
    b=$(median "$side" "$WATCHERS" .write_throughput_ops_s)
    drop=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.0f%%", (a > 0 ? (1 - b / a) * 100 : 0) }')
    printf '| %s | %.0f | %.0f | %s | %s |\n' "$side" "$a" "$b" "$drop" "$(complete "$side" "$WATCHERS")"
  done
  echo
  echo "Command (per side, per round):"
  echo
  echo "    nines bench watch --endpoints \$ENDPOINTS --watchers {0,$WATCHERS} --clients $CLIENTS --duration $DURATION -w json"
  echo
} >"$section"
replace_section "$RESULTS" "## KV store" "### Watch fan-out" "$section"
log "results written to $RESULTS"
