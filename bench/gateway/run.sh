#!/usr/bin/env bash
# Gateway benchmark: the same wrk command straight to one backend (the
# ceiling), through nines gateway, through HAProxy and through nginx, all on
# loopback, in alternating rounds; then the same kill-a-backend-under-load
# run through each proxy. Writes medians and ratios to bench/RESULTS.md under
# "## Gateway". Every side gets the same thread count (WORKERS).
#
# Usage: bench/gateway/run.sh            (ROUNDS=4 DURATION=10 CONNS=64 WRK_THREADS=2 WORKERS="1 2")
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-2}
WORKERS=${WORKERS:-"1 2"}
KILL_AFTER=${KILL_AFTER:-3}

# Bench-only tools (not test dependencies).
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p nines-gateway --bin nines-gateway
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md}
GATEWAY="$ROOT/target/release/nines-gateway"
COMMIT=$(git rev-parse --short HEAD)

WORK=$(mktemp -d /tmp/nines-gw-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/gateway/configs.sh
source bench/gateway/configs.sh

# --- backends: three single-process nginx instances answering 200 "ok".
BACKEND_PORTS=()
BACKEND_PIDS=()
start_backend() { # start_backend INDEX
  local i=$1 port=${BACKEND_PORTS[$1]} dir="$WORK/backend$1"
  write_backend_conf "$dir" "$port"
  "$NGINX" -c "$dir/nginx.conf" -p "$dir" 2>/dev/null &
  BACKEND_PIDS[$i]=$!
  PIDS+=("$!")
  wait_port "$port"
}
start_backends() {
  for i in 0 1 2; do start_backend "$i"; done
}
stop_backends() {
  for i in 0 1 2; do kill -9 "${BACKEND_PIDS[$i]}" 2>/dev/null || true; wait "${BACKEND_PIDS[$i]}" 2>/dev/null || true; done
}
for i in 0 1 2; do BACKEND_PORTS[$i]=$(free_port); done

# --- proxy configs, one per side and thread count.

PROXY_PID=""
start_proxy() { # start_proxy SIDE THREADS PORT
  local side=$1 n=$2 port=$3 dir="$WORK/proxy$2"
  case $side in
    nines) "$GATEWAY" --config "$dir/nines.toml" 2>"$dir/nines.log" & ;;
    haproxy) "$HAPROXY" -f "$dir/haproxy.cfg" -db 2>"$dir/haproxy.log" & ;;
    nginx) "$NGINX" -c "$dir/nginx.conf" -p "$dir" 2>"$dir/nginx.log" & ;;
  esac
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "$port"
  # One request so every side starts warm.
  curl -s -o /dev/null "http://127.0.0.1:$port/" || true
}
stop_proxy() {
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.05; done
  kill -9 "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
}

WRK_CMD="wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency"
RAW="$WORK/raw.tsv"
: >"$RAW"
HZ=$(getconf CLK_TCK)
# ticks PID...: CPU time (utime + stime, clock ticks) of the processes, summed.
ticks() { local t=0 pid; for pid in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
# tree PID: the process and its children (nginx's workers are its master's children).
tree() { echo "$1"; pgrep -P "$1" || true; }
# busy: non-idle and idle ticks of the whole machine.
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }
run_wrk() { # run_wrk LABEL URL KIND [PROXY_PID] -> appends a row to $RAW
  local label=$1 url=$2 kind=$3 proxy=${4:-} out="$WORK/wrk.out"
  # Where the CPU goes per request: wrk (its own rusage, from `times` in the
  # subshell that ran it), the backends and the proxy's processes (/proc/PID/stat), and
  # how busy the whole machine was.
  local backends_before proxy_before=0 machine_before
  backends_before=$(ticks "${BACKEND_PIDS[@]}")
  local proxy_pids=()
  [ -z "$proxy" ] || mapfile -t proxy_pids < <(tree "$proxy")
  [ -z "$proxy" ] || proxy_before=$(ticks "${proxy_pids[@]}")
  machine_before=$(busy)
  ( $WRK_CMD "$url" >"$out" 2>&1 || true; times >"$WORK/times" )
  local backends_cpu=$(( $(ticks "${BACKEND_PIDS[@]}") - backends_before )) proxy_cpu=0
  [ -z "$proxy" ] || proxy_cpu=$(( $(ticks "${proxy_pids[@]}") - proxy_before ))
  # A backend killed during the run takes its CPU time with it.
  [ "$kind" != kill ] || backends_cpu=-1
  python3 - "$out" "$label" "$kind" "$WORK/times" "$HZ" "$backends_cpu" "$proxy_cpu" "$machine_before" "$(busy)" >>"$RAW" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
hz = int(sys.argv[5])
def seconds(v):
    m = re.match(r"(\d+)m([\d.]+)s", v)
    return int(m.group(1)) * 60 + float(m.group(2))
# `times`: the subshell's own user and system time, then its children's (wrk).
wrk_cpu = sum(seconds(v) for v in open(sys.argv[4]).read().split("\n")[1].split())
b0, i0 = map(int, sys.argv[8].split()); b1, i1 = map(int, sys.argv[9].split())
idle = (i1 - i0) / max(1, (b1 - b0) + (i1 - i0))
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    if not m: return float("nan")
    x = float(m.group(1)); return {"us": x / 1000, "ms": x, "s": x * 1000}[m.group(2)]
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
total = re.search(r"(\d+) requests in", text)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
errors = sum(int(x) for x in sock.groups()) if sock else 0
n = int(total.group(1)) if total else 0
def per_request(cpu_seconds): return f"{cpu_seconds * 1e6 / n:.1f}" if n and cpu_seconds >= 0 else "nan"
print("\t".join([sys.argv[3], sys.argv[2], rps.group(1) if rps else "nan", str(ms(p50.group(1)) if p50 else "nan"),
                 str(ms(p99.group(1)) if p99 else "nan"), str(n),
                 non2xx.group(1) if non2xx else "0", str(errors),
                 per_request(wrk_cpu), per_request(int(sys.argv[6]) / hz), per_request(int(sys.argv[7]) / hz),
                 f"{idle:.0%}"]))
PY
  tail -n1 "$RAW"
}

PROXY_PORT=$(free_port)
for n in $WORKERS; do write_configs "$n" "$PROXY_PORT"; done

# --- throughput rounds: every side once per round, order reversed every other round.
start_backends
SIDES=("direct 1")
for n in $WORKERS; do SIDES+=("nines $n" "haproxy $n" "nginx $n"); done
for round in $(seq 1 "$ROUNDS"); do
  order=("${SIDES[@]}")
  if (( round % 2 == 0 )); then
    order=(); for (( i=${#SIDES[@]}-1; i>=0; i-- )); do order+=("${SIDES[$i]}"); done
  fi
  for entry in "${order[@]}"; do
    read -r side n <<<"$entry"
    if [ "$side" = direct ]; then
      run_wrk "direct" "http://127.0.0.1:${BACKEND_PORTS[0]}/" tput
    else
      start_proxy "$side" "$n" "$PROXY_PORT"
      run_wrk "$side-$n" "http://127.0.0.1:$PROXY_PORT/" tput "$PROXY_PID"
      stop_proxy
    fi
  done
done

# --- kill one of three backends under load, for each proxy at the smallest thread count.
KILL_N=$(echo "$WORKERS" | awk '{print $1}')
for side in nines haproxy nginx; do
  stop_backends
  start_backends
  start_proxy "$side" "$KILL_N" "$PROXY_PORT"
  ( sleep "$KILL_AFTER"; kill -9 "${BACKEND_PIDS[1]}" 2>/dev/null ) &
  killer=$!
  run_wrk "$side-$KILL_N" "http://127.0.0.1:$PROXY_PORT/" kill "$PROXY_PID"
  wait "$killer" 2>/dev/null || true
  stop_proxy
done
stop_backends

# --- summary into bench/RESULTS.md.
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
python3 - "$RAW" "$RESULTS" <<PY
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
tput = {}
cpu = {}
for kind, label, rps, p50, p99, total, non2xx, errors, *spent in rows:
    if kind == "tput":
        tput.setdefault(label, []).append((float(rps), float(p50), float(p99)))
        cpu.setdefault(label, []).append(tuple(float(v) for v in spent[:3]) + (float(spent[3].rstrip("%")),))
def med(label, i): return statistics.median(v[i] for v in tput[label])
direct = med("direct", 0)
lines = []
lines.append("## Gateway\n")
lines.append("Commit \`$COMMIT\`; machine: $(nproc) cores ($CPU), load average at the end $LOAD (the machine is shared; rounds alternate to spread the noise).")
lines.append("Backends: three single-process nginx instances on loopback answering 200 \`ok\`. Every proxy side runs with the same thread count N")
lines.append("(nines \`worker_threads = N\`, HAProxy \`nbthread N\`, nginx \`worker_processes N\`), all with keep-alive upstream connections,")
lines.append("round robin over the three backends, health checks and retries configured. Load: \`$WRK_CMD URL\`, $ROUNDS rounds, medians shown.")
lines.append("nines is the \`nines-gateway\` binary of this crate (release build; the same library as \`nines gateway\`). Command: \`bench/gateway/run.sh\`.\n")
lines.append("| side | threads | requests/s (median) | p50 ms | p99 ms | vs direct | vs HAProxy (same threads) |")
lines.append("|---|---|---|---|---|---|---|")
labels = ["direct"] + sorted([l for l in tput if l != "direct"], key=lambda l: (int(l.split("-")[1]), ["nines", "haproxy", "nginx"].index(l.split("-")[0])))
for label in labels:
    side, n = (label.split("-") + ["-"])[:2]
    rps = med(label, 0)
    hap = "haproxy-" + n
    vs_hap = f"{rps / med(hap, 0):.2f}" if hap in tput and side != "haproxy" and side != "direct" else ""
    lines.append(f"| {side} | {n} | {rps:,.0f} | {med(label, 1):.2f} | {med(label, 2):.2f} | {rps / direct:.0%} | {vs_hap} |")
lines.append("")
for n in sorted({l.split("-")[1] for l in tput if l.startswith("nines-")}):
    nines, hap = "nines-" + n, "haproxy-" + n
    if hap in tput:
        speed = med(nines, 0) / med(hap, 0)
        p99 = "lower" if med(nines, 2) < med(hap, 2) else "higher"
        verdict = "at or above" if speed >= 1 else "below"
        lines.append(f"Where it stands, {n} thread(s): nines is {verdict} HAProxy ({speed:.2f}x its requests/s) with a {p99} p99, "
                     f"at {med(nines, 0) / direct:.0%} of the direct ceiling (goal: >= 1.00x with a lower p99, >= 70% of direct).")
lines.append("Per-round figures vary a lot on this shared machine (see the raw rows); the medians are the figures to quote.")
lines.append("")
cores = $(nproc)
def cmed(label, i): return statistics.median(v[i] for v in cpu[label])
lines.append("Where the CPU goes, per request (us of CPU time, medians): wrk from its own rusage, the three backends and the proxy")
lines.append("from \`/proc/PID/stat\`; idle is the share of the machine's CPU left unused during the run.\n")
lines.append("| side | threads | wrk | backends | proxy | all | machine idle |")
lines.append("|---|---|---|---|---|---|---|")
for label in labels:
    side, n = (label.split("-") + ["-"])[:2]
    w, b, x = cmed(label, 0), cmed(label, 1), cmed(label, 2)
    lines.append(f"| {side} | {n} | {w:.1f} | {b:.1f} | {x:.1f} | {w + b + x:.1f} | {cmed(label, 3):.0f}% |")
lines.append("")
target = 0.7 * direct
lines.append(f"What 70% of direct asks of a proxy: {target:,.0f} requests/s on {cores} cores leave {cores * 1e6 / target:.1f} us of CPU per request")
lines.append("for everything; less what wrk and the backends spend behind that proxy, the proxy itself may spend at most:")
within = []
for label in labels:
    if label == "direct":
        continue
    side, n = label.split("-")
    allowed = cores * 1e6 / target - cmed(label, 0) - cmed(label, 1)
    lines.append(f"{side} with {n} thread(s) may spend {allowed:.1f} us and spends {cmed(label, 2):.1f} us;")
    if cmed(label, 2) <= allowed:
        within.append(label)
lines.append(f"within its allowance: {', '.join(within) if within else 'none'}. A proxy's CPU per request is mostly the kernel's loopback")
lines.append("TCP work for its two \`recv\` and two \`send\` calls per request.")
lines.append("")
lines.append("Kill one of three backends (\`kill -9\`) ${KILL_AFTER}s into the same wrk run (threads = $(echo "$WORKERS" | awk '{print $1}')):")
lines.append("nines: retries on connect-failure/reset/timeout, passive ejection, health checks; HAProxy: \`retries 3\`, \`option redispatch 1\`,")
lines.append("\`retry-on conn-failure empty-response response-timeout\`, checks; nginx: \`proxy_next_upstream error timeout http_502 http_503 non_idempotent\`, \`max_fails=1\`.\n")
lines.append("| side | requests | non-2xx | socket errors | requests/s |")
lines.append("|---|---|---|---|---|")
for kind, label, rps, p50, p99, total, non2xx, errors, *spent in rows:
    if kind == "kill":
        lines.append(f"| {label.split('-')[0]} | {total} | {non2xx} | {errors} | {float(rps):,.0f} |")
lines.append("")
lines.append("Raw rows (kind, side, requests/s, p50 ms, p99 ms, requests, non-2xx, socket errors, CPU us per request of wrk,")
lines.append("of the backends (not measured in the kill rows) and of the proxy, machine idle):\n")
lines.append("\`\`\`")
lines.extend("\t".join(r) for r in rows)
lines.append("\`\`\`\n")
section = "\n".join(lines) + "\n"
path = sys.argv[2]
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmark results\n\n"
start = text.find("## Gateway\n")
if start < 0:
    text = text.rstrip("\n") + "\n\n" + section
else:
    end = text.find("\n## ", start + 1)
    text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
open(path, "w").write(text)
print(section)
PY
