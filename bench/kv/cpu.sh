#!/usr/bin/env bash
# CPU per put, A/B: starts one 3-member nines cluster per binary listed in
# BINS on loopback and runs the same benchmark (puts by default) against each
# in alternating rounds. For every run it reads utime + stime of
# the three member processes from /proc/PID/stat before and after, and prints
# puts/s, p99 and the members' CPU time per acknowledged put. On a shared
# machine requests/s move with whatever else runs; CPU per put moves much
# less, so it is the figure to compare binaries by. Optionally ETCD=1 adds
# an etcd cluster as a side.
#
# Environment: BINS ("A=path B=path ..."), ROUNDS (3), DURATION (8s),
# CLIENTS (64), CONNS (8), THREADS (2), OP (put; or get, get-serializable),
# BENCH_BIN (the client binary; default the first of BINS), ETCD (0).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CLIENTS=${CLIENTS:-64}
CONNS=${CONNS:-8}
THREADS=${THREADS:-2}
OP=${OP:-put}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nines-bench-cpu.XXXXXX")
# shellcheck source=bench/kv/cluster.sh
source "$ROOT/bench/kv/cluster.sh"
[ -n "${BINS:-}" ] || die "set BINS, e.g. BINS=\"old=/tmp/nines-old new=target/release/nines\""

finish() {
  cleanup_processes
  rm -rf "$WORK"
}
trap finish EXIT

# Prints utime + stime, in clock ticks, summed over the PIDs given.
cpu_ticks() {
  local pid total=0 fields
  for pid in "$@"; do
    # Fields after the ")" that ends the command name: utime and stime are 12th and 13th.
    fields=$(sed 's/.*) //' "/proc/$pid/stat")
    total=$((total + $(echo "$fields" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

TICKS=$(getconf CLK_TCK)
keep_sides
names=("${SIDES[@]}")
[ "${ETCD:-0}" = 1 ] && names+=(etcd)
BENCH_BIN=${BENCH_BIN:-$WORK/bin-${names[0]}}

for name in "${names[@]}"; do
  if [ "$name" = etcd ]; then
    cluster_start etcd
    continue
  fi
  # member_start starts NINES_BIN for any side that is not etcd.
  NINES_BIN=$WORK/bin-$name
  cluster_start "$name"
done

printf '%-8s %5s %10s %8s %12s %8s\n' side round ops/s p99_ms us_cpu/op load1
for ((round = 1; round <= ROUNDS; round++)); do
  for name in "${names[@]}"; do
    pids=()
    for ((i = 0; i < MEMBERS; i++)); do pids+=("$(member_field "$name" PID "$i")"); done
    before=$(cpu_ticks "${pids[@]}")
    out=$("$BENCH_BIN" bench kv --endpoints "$(cluster_endpoints "$name")" --op "$OP" \
      --clients "$CLIENTS" --conns "$CONNS" --key-size 16 --val-size 256 --keyspace 10000 \
      --duration "$DURATION" --threads "$THREADS" -w json 2>/dev/null)
    after=$(cpu_ticks "${pids[@]}")
    ops=$(echo "$out" | jq -r .ops)
    tput=$(echo "$out" | jq -r '.throughput_ops_s | floor')
    p99=$(echo "$out" | jq -r .latency_ms.p99)
    us=$(awk -v t=$((after - before)) -v hz="$TICKS" -v n="$ops" 'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }')
    printf '%-8s %5s %10s %8.2f %12s %8s\n' "$name" "$round" "$tput" "$p99" "$us" "$(cut -d' ' -f1 /proc/loadavg)"
  done
done
