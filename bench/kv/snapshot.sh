#!/usr/bin/env bash
# Writes while snapshots are taken, A/B: one 3-member nines cluster per binary
# in BINS, each with a store preloaded to PRELOAD values of PRELOAD_VAL bytes
# (so a snapshot has something to encode) and a small --snapshot-count (so
# several snapshots fall in every run). Each round runs the same steady write
# load against every side in turn (open loop, RATE puts/s) and prints
# throughput, the latency tail (p99, p99.9, max), the pauses between
# acknowledged writes longer than 50 ms, and the snapshots the members saved
# during the run (from their "snapshot saved" log lines) with their encoding time.
#
# Environment: BINS ("A=path B=path ..."), ROUNDS (3), DURATION (20s), RATE (2000),
# CLIENTS (16), CONNS (4), SNAPSHOT_COUNT (2000), PRELOAD (100000), PRELOAD_VAL (1024).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
RATE=${RATE:-2000}
CLIENTS=${CLIENTS:-16}
CONNS=${CONNS:-4}
SNAPSHOT_COUNT=${SNAPSHOT_COUNT:-2000}
PRELOAD=${PRELOAD:-100000}
PRELOAD_VAL=${PRELOAD_VAL:-1024}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nines-bench-snap.XXXXXX")
# shellcheck source=bench/kv/cluster.sh
source "$ROOT/bench/kv/cluster.sh"
[ -n "${BINS:-}" ] || die "set BINS, e.g. BINS=\"old=/tmp/nines-old new=target/release/nines\""
command -v jq >/dev/null || die "jq is needed"

finish() {
  cleanup_processes
  rm -rf "$WORK"
}
trap finish EXIT

NINES_FLAGS="--snapshot-count $SNAPSHOT_COUNT"
keep_sides
names=("${SIDES[@]}")
BENCH_BIN=$WORK/bin-${names[0]}

for name in "${names[@]}"; do
  NINES_BIN=$WORK/bin-$name
  cluster_start "$name"
  log "$name: preloading $PRELOAD puts of $PRELOAD_VAL bytes"
  "$BENCH_BIN" bench kv --endpoints "$(cluster_endpoints "$name")" --op put --clients 64 --conns 8 \
    --key-size 16 --val-size "$PRELOAD_VAL" --keyspace "$PRELOAD" --total "$PRELOAD" --threads 2 \
    -w json >/dev/null
done

# snapshot_lines SIDE: the members' "snapshot saved" log lines so far.
snapshot_lines() { cat "$WORK/$1"/*.log | grep -a 'snapshot saved' || true; }

printf '%-6s %5s %8s %8s %8s %8s %9s %11s %10s %22s\n' \
  side round ops/s p99_ms p999_ms max_ms "gaps>50ms" max_gap_ms snapshots "encode_ms(min/max)"
for ((round = 1; round <= ROUNDS; round++)); do
  for name in "${names[@]}"; do
    before=$(snapshot_lines "$name" | wc -l)
    out=$("$BENCH_BIN" bench kv --endpoints "$(cluster_endpoints "$name")" --op put \
      --clients "$CLIENTS" --conns "$CONNS" --rate "$RATE" --key-size 16 --val-size 256 \
      --keyspace 10000 --duration "$DURATION" --threads 2 --gaps --gap-threshold 50ms -w json 2>/dev/null)
    taken=$(snapshot_lines "$name" | tail -n +$((before + 1)))
    count=$(printf '%s' "$taken" | grep -c 'snapshot saved' || true)
    encode=$({ printf '%s\n' "$taken" | grep -o 'encode_ms=[0-9]*' || true; } | cut -d= -f2 | sort -n |
      awk 'NR == 1 {min = $1} {max = $1} END {if (NR) printf "%d/%d", min, max; else printf "-"}')
    printf '%-6s %5s %8s %8.2f %8.2f %8.2f %9s %11s %10s %22s\n' "$name" "$round" \
      "$(echo "$out" | jq -r '.throughput_ops_s | floor')" \
      "$(echo "$out" | jq -r .latency_ms.p99)" "$(echo "$out" | jq -r .latency_ms.p999)" \
      "$(echo "$out" | jq -r .latency_ms.max)" "$(echo "$out" | jq -r '.gaps | length')" \
      "$(echo "$out" | jq -r '.longest_gap_ms | floor')" "$count" "$encode"
  done
done
