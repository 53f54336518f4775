#!/usr/bin/env bash
# A/B of gateway builds against each other and HAProxy on one set of
# backends: every SIDE in turn per round, the same wrk load, and per side
# the latency tail (p50 .. p99.99 from percentiles.lua), the proxy's CPU per
# request, its context switches, and those of the nginx backends and of wrk
# per request (a proxy that answers in bursts wakes wrk less often). Medians
# over the rounds at the end. For choosing between builds; run.sh makes the
# published figures.
#
# Usage: bench/gateway/ab.sh SIDE...   SIDE: a gateway binary, VAR=V,VAR2=W@BINARY (binary run
#        with those environment variables), or "haproxy". (THREADS=1 ROUNDS=3 DURATION=5 CONNS=64)
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
[ "$DURATION" -ge 2 ] || { echo "DURATION must be at least 2" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
WORK=$(mktemp -d /tmp/nines-gw-ab.XXXXXX)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# shellcheck source=bench/gateway/configs.sh
source bench/gateway/configs.sh
BACKEND_PORTS=()
BACKEND_PIDS=()
for i in 0 1 2; do
  BACKEND_PORTS[$i]=$(free_port); dir="$WORK/b$i"
  write_backend_conf "$dir" "${BACKEND_PORTS[$i]}"
  "$NGINX" -c "$dir/nginx.conf" -p "$dir" 2>/dev/null & PIDS+=("$!"); BACKEND_PIDS+=("$!")
  wait_port "${BACKEND_PORTS[$i]}"
done
PORT=$(free_port)
write_configs "$THREADS" "$PORT"
CONF_DIR="$WORK/proxy$THREADS"
HZ=$(getconf CLK_TCK)
# switches FILE...: voluntary and involuntary context switches summed over status files.
switches() { cat "$@" | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v + 0, n + 0}'; }
backend_status() { for pid in "${BACKEND_PIDS[@]}"; do echo "/proc/$pid/status"; done; }
RAW="$WORK/rows"
for round in $(seq 1 "$ROUNDS"); do
  for side in "$@"; do
    if [ "$side" = haproxy ]; then
      "$HAPROXY" -f "$CONF_DIR/haproxy.cfg" -db 2>/dev/null & GW=$!
    else
      envs=(); binary=$side
      if [[ "$side" == *@* ]]; then IFS=, read -ra envs <<<"${side%@*}"; binary=${side#*@}; fi
      env "${envs[@]}" "$binary" --config "$CONF_DIR/nines.toml" 2>/dev/null & GW=$!
    fi
    PIDS+=("$GW")
    wait_port "$PORT"
    curl -s -o /dev/null "http://127.0.0.1:$PORT/"
    ticks_before=$(awk '{print $14 + $15}' "/proc/$GW/stat")
    mapfile -t files < <(backend_status)
    gw_before=$(switches /proc/"$GW"/task/*/status)
    backends_before=$(switches "${files[@]}")
    wrk -t2 -c"$CONNS" -d"${DURATION}s" -s bench/gateway/percentiles.lua "http://127.0.0.1:$PORT/" >"$WORK/wrk.out" &
    WRK=$!
    # wrk's own switches, read before it exits (over DURATION - 1 seconds).
    sleep $((DURATION - 1))
    wrk_switches=$(switches /proc/"$WRK"/task/*/status)
    wait "$WRK"
    ticks_after=$(awk '{print $14 + $15}' "/proc/$GW/stat")
    gw_after=$(switches /proc/"$GW"/task/*/status)
    backends_after=$(switches "${files[@]}")
    kill -TERM "$GW"; wait "$GW" 2>/dev/null || true
    line=$(tail -1 "$WORK/wrk.out")
    python3 - "$side" "$round" "$line" "$HZ" "$DURATION" "$ticks_before $ticks_after" \
      "$gw_before $gw_after" "$backends_before $backends_after" "$wrk_switches" <<'PY' | tee -a "$RAW"
import re, sys
side, rnd, line, hz, duration = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
t0, t1 = map(int, sys.argv[6].split())
g = list(map(int, sys.argv[7].split())); b = list(map(int, sys.argv[8].split())); w = list(map(int, sys.argv[9].split()))
rps = float(re.search(r"rps=([\d.]+)", line).group(1))
n = rps * duration
wn = rps * (duration - 1)
print(f"{side.replace('/work/bins/', '')}\tr{rnd}\tcpu_us={(t1 - t0) / hz * 1e6 / n:.2f} "
      f"vol={(g[2] - g[0]) / n:.3f} invol={(g[3] - g[1]) / n:.3f} "
      f"backend_vol={(b[2] - b[0]) / n:.3f} wrk_vol={w[0] / wn:.3f} wrk_invol={w[1] / wn:.3f} {line}")
PY
  done
done
echo "medians over $ROUNDS rounds ($THREADS thread(s), wrk -t2 -c$CONNS -d${DURATION}s):"
python3 - "$RAW" <<'PY'
import collections, re, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side = line.split("\t")[0]
    rows[side].append(dict((k, float(v)) for k, v in re.findall(r"(\S+)=([\d.]+)", line)))
keys = ["rps", "cpu_us", "p50", "p90", "p99", "p99.9", "invol", "backend_vol", "wrk_vol"]
for side, values in rows.items():
    print(f"{side:32s} " + " ".join(f"{k}={statistics.median(v[k] for v in values):.2f}" for k in keys))
PY
