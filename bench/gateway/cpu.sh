#!/usr/bin/env bash
# Per-request CPU of the gateway: CPU time (utime + stime from /proc/PID/stat)
# the gateway process spends per request served under a fixed wrk load. Unlike
# requests/s this hardly moves when other processes share the machine, so it
# is the figure to compare two builds with.
#
# Usage: bench/gateway/cpu.sh [GATEWAY_BINARY]   (THREADS=1 CONNS=64 DURATION=5 REPEAT=3 SIDE=nines|haproxy
#        PERF_OUT=FILE: perf record the first repetition; STRACE_OUT=FILE: count its system calls)
set -euo pipefail
cd "$(dirname "$0")/../.."
GATEWAY=${1:-target/release/nines-gateway}
THREADS=${THREADS:-1}
CONNS=${CONNS:-64}
DURATION=${DURATION:-5}
REPEAT=${REPEAT:-3}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
WORK=$(mktemp -d /tmp/nines-gw-cpu.XXXXXX)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
# shellcheck source=bench/gateway/configs.sh
source bench/gateway/configs.sh
PORTS=()
for i in 0 1 2; do
  PORTS[$i]=$(free_port); dir="$WORK/b$i"
  write_backend_conf "$dir" "${PORTS[$i]}"
  "$NGINX" -c "$dir/nginx.conf" -p "$dir" 2>/dev/null & PIDS+=("$!")
  wait_port "${PORTS[$i]}"
done
PORT=$(free_port)
BACKEND_PORTS=("${PORTS[@]}")
write_configs "$THREADS" "$PORT"
CONF_DIR="$WORK/proxy$THREADS"
# SIDE=haproxy measures HAProxy with the equivalent configuration instead.
if [ -n "${CALLGRIND_OUT:-}" ]; then
  # Instruction counts: the gateway under callgrind, counting only while wrk runs.
  valgrind --tool=callgrind --callgrind-out-file="$CALLGRIND_OUT" \
    "$GATEWAY" --config "$CONF_DIR/nines.toml" 2>"${GATEWAY_LOG:-$WORK/nines.log}" & GW=$!; PIDS+=("$GW")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
  curl -s -o /dev/null "http://127.0.0.1:$PORT/"
  callgrind_control -z "$GW" >/dev/null
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$PORT/")
  callgrind_control -d "$GW" >/dev/null
  reqs=$(echo "$out" | grep -oE '^ *[0-9]+ requests in' | grep -oE '[0-9]+')
  sleep 1
  ir=$(callgrind_annotate "$(ls -t "$CALLGRIND_OUT".* | head -1)" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  python3 -c "print(f'instructions_per_request={$ir/$reqs:.0f} requests=$reqs')"
  exit 0
elif [ "${SIDE:-nines}" = haproxy ]; then
  haproxy -f "$CONF_DIR/haproxy.cfg" -db 2>"$WORK/haproxy.log" & GW=$!; PIDS+=("$GW")
else
  "$GATEWAY" --config "$CONF_DIR/nines.toml" 2>"${GATEWAY_LOG:-$WORK/nines.log}" & GW=$!; PIDS+=("$GW")
fi
wait_port "$PORT"
curl -s -o /dev/null "http://127.0.0.1:$PORT/"
ticks() { awk '{print $14 + $15}' "/proc/$GW/stat"; }
uticks() { awk '{print $14}' "/proc/$GW/stat"; }
# Context switches of all the gateway's threads (sleeps on an empty event loop, preemptions).
switches() { cat /proc/$GW/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; }
HZ=$(getconf CLK_TCK)
for r in $(seq 1 "$REPEAT"); do
  before=$(ticks); ubefore=$(uticks); sbefore=$(switches)
  if [ -n "${PERF_OUT:-}" ] && [ "$r" = 1 ]; then
    perf record -e cpu-clock -F 2000 ${PERF_ARGS:--g} -o "$PERF_OUT" -p "$GW" -- sleep "$DURATION" >/dev/null 2>&1 &
    PERF_PID=$!
  fi
  if [ -n "${STRACE_OUT:-}" ] && [ "$r" = 1 ]; then
    timeout -s INT "$DURATION" strace ${STRACE_ARGS:--c} -f -o "$STRACE_OUT" -p "$GW" >/dev/null 2>&1 &
    PERF_PID=$!
  fi
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$PORT/")
  after=$(ticks); uafter=$(uticks); safter=$(switches)
  if [ -n "${PERF_PID:-}" ]; then wait "$PERF_PID" 2>/dev/null || true; PERF_PID=""; fi
  reqs=$(echo "$out" | grep -oE '^ *[0-9]+ requests in' | grep -oE '[0-9]+')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  python3 -c "print(f'cpu_us_per_request={($after-$before)/$HZ*1e6/$reqs:.2f} user_us={($uafter-$ubefore)/$HZ*1e6/$reqs:.2f} switches_per_request={($safter-$sbefore)/$reqs:.3f} requests=$reqs rps=$rps p99=$p99 non2xx=${non2xx:-0}')"
done
