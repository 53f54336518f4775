#!/usr/bin/env bash
# CPU per delivered watch event: a 3-member cluster of one side (etcd or
# nines) on loopback, `nines bench watch` with WATCHERS watchers and CLIENTS
# writers for DURATION; the CPU time (utime + stime from /proc/PID/stat) of
# the members and of the benchmark client is divided by the events delivered
# (acknowledged writes x watchers). A run with no watchers first gives the
# CPU per write, which is subtracted from the members' share. Unlike writes/s
# this hardly moves when other processes share the machine, so it is the
# figure to compare two builds with.
#
# Usage: bench/watch/cpu.sh [NINES_BINARY]
# Environment: SIDE (nines), WATCHERS (1000), CLIENTS (1), DURATION (5s),
# PER_STREAM (watchers sharing one watch stream, 1), REPEAT (2), BENCH_BIN (the benchmark client; default NINES_BINARY),
# PERF_PID=leader|client and PERF_OUT=FILE to `perf record` that process
# during the first run with watchers.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NINES_BIN=${1:-${NINES_BIN:-$ROOT/target/release/nines}}
SIDE=${SIDE:-nines}
WATCHERS=${WATCHERS:-1000}
CLIENTS=${CLIENTS:-1}
DURATION=${DURATION:-5s}
REPEAT=${REPEAT:-2}
PER_STREAM=${PER_STREAM:-1}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nines-bench-watch-cpu.XXXXXX")
# shellcheck source=bench/kv/cluster.sh
source "$ROOT/bench/kv/cluster.sh"
BENCH_BIN=${BENCH_BIN:-$NINES_BIN}
trap 'cleanup_processes; rm -rf "$WORK"' EXIT

# Prints the CPU seconds (utime + stime) of PID.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"; }
members_cpu() {
  local i t=0
  for ((i = 0; i < MEMBERS; i++)); do t=$(awk -v a="$t" -v b="$(cpu_of "$(member_field "$SIDE" PID "$i")")" 'BEGIN { print a + b }'); done
  echo "$t"
}

cluster_start "$SIDE"
leader=$(cluster_leader "$SIDE")
# The members' CPU per second while idle (heartbeats, timers), subtracted from every run.
idle_before=$(members_cpu); sleep 3; idle=$(awk -v a="$idle_before" -v b="$(members_cpu)" 'BEGIN { print (b - a) / 3 }')
for ((r = 1; r <= REPEAT; r++)); do
  for w in 0 "$WATCHERS"; do
    out="$WORK/run.$r.$w.json"
    before=$(members_cpu)
    /usr/bin/time -f '%U %S' -o "$WORK/client.time" "$BENCH_BIN" bench watch \
      --endpoints "$(cluster_endpoints "$SIDE")" --watchers "$w" --clients "$CLIENTS" \
      --watchers-per-stream "$PER_STREAM" \
      --duration "$DURATION" --prefix "/cpu/$r/$w/" -w json >"$out" 2>"$out.err" &
    client=$!
    if [ "$r" = 1 ] && [ "$w" != 0 ] && [ -n "${PERF_OUT:-}" ]; then
      sleep 2
      if [ "${PERF_PID:-leader}" = client ]; then target=$(pgrep -P "$client" | head -n 1); else target=$(member_field "$SIDE" PID "${leader:-0}"); fi
      perf record -g -F 999 -p "$target" -o "$PERF_OUT" -- sleep 3 >/dev/null 2>&1 || log "perf record failed"
    fi
    wait "$client" || die "bench failed: $(tail -n 5 "$out.err")"
    after=$(members_cpu)
    read -r cu cs <"$WORK/client.time"
    jq -c --arg s "$(awk -v a="$before" -v b="$after" 'BEGIN { print b - a }')" --arg c "$(awk -v u="$cu" -v s="$cs" 'BEGIN { print u + s }')" \
      --arg idle "$idle" '{watchers, acked: .writes_acknowledged, ops_s: (.write_throughput_ops_s | floor), complete: .watchers_complete,
        server_cpu_s: (($s | tonumber) - ($idle | tonumber) * .elapsed_s), client_cpu_s: ($c | tonumber)}' "$out" |
      tee -a "$WORK/rows.jsonl"
  done
done
# Per write without watchers; per delivered event with them (server share net of its writes).
# The members' CPU is net of their idle rate over the writers' time.
jq -s --arg side "$SIDE" '
  (map(select(.watchers == 0)) | (map(.server_cpu_s) | add) / (map(.acked) | add)) as $per_write
  | map(select(.watchers > 0))
  | { side: $side,
      server_us_per_write: ($per_write * 1e6),
      server_us_per_event: ((map(.server_cpu_s - $per_write * .acked) | add) / (map(.acked * .watchers) | add) * 1e6),
      client_us_per_event: ((map(.client_cpu_s) | add) / (map(.acked * .watchers) | add) * 1e6),
      ops_s: map(.ops_s), all_complete: (map(.complete == .watchers) | all) }' "$WORK/rows.jsonl"
