#!/usr/bin/env bash
# Registry benchmark: a 3-member cluster on loopback holding SERVICES x
# PER_SERVICE instances (default 1,000 x 10 = 10,000); then
#   - DNS queries/s with dnsperf (A and SRV of random services, member 1),
#   - HTTP discovery queries/s with wrk (GET /v1/services/svc-N/instances?healthy=true),
#   - the time for a health change to reach DNS (a real HTTP check on a demo
#     backend that is killed and restarted TRIALS times).
# Writes its figures to bench/RESULTS.md under "## Registry" (replacing an
# earlier run's).
#
# Usage: bench/registry/run.sh   (SERVICES=1000 PER_SERVICE=10 DURATION=10 TRIALS=5)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SERVICES=${SERVICES:-1000}
PER_SERVICE=${PER_SERVICE:-10}
DURATION=${DURATION:-10}
TRIALS=${TRIALS:-5}

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v dnsperf >/dev/null 2>&1 || need+=(dnsperf)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p nines
NINES=${NINES:-$ROOT/target/release/nines}
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md}
COMMIT=$(git rev-parse --short HEAD)

WORK=$(mktemp -d /tmp/nines-registry-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# --- three members, each with its own DNS port.
declare -a CLIENT PEER HTTP DNS
for i in 1 2 3; do
  CLIENT[$i]=$(free_port); PEER[$i]=$(free_port); HTTP[$i]=$(free_port); DNS[$i]=$(free_port)
done
INITIAL="n1=http://127.0.0.1:${PEER[1]},n2=http://127.0.0.1:${PEER[2]},n3=http://127.0.0.1:${PEER[3]}"
for i in 1 2 3; do
  "$NINES" server --name "n$i" --data-dir "$WORK/n$i" \
    --listen-client-urls "http://127.0.0.1:${CLIENT[$i]}" --listen-peer-urls "http://127.0.0.1:${PEER[$i]}" \
    --initial-cluster "$INITIAL" --http-addr "127.0.0.1:${HTTP[$i]}" \
    --dns-addr "127.0.0.1:${DNS[$i]}" --dns-ttl 0 >"$WORK/n$i.log" 2>&1 &
  PIDS+=("$!")
done
H="127.0.0.1:${HTTP[1]}"
for _ in $(seq 1 300); do
  if curl -sf "http://$H/ready" >/dev/null 2>&1 && curl -s "http://$H/v1/registry" | grep -q '"loaded":true'; then break; fi
  sleep 0.1
done
curl -sf "http://$H/ready" >/dev/null || { echo "cluster not ready" >&2; tail "$WORK"/n*.log >&2; exit 1; }

REGISTER=$(python3 bench/registry/load.py register "$H" "$SERVICES" "$PER_SERVICE" 32)
echo "$REGISTER"
TOTAL=$(curl -s "http://$H/v1/services" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(s["instances"] for s in d["services"]), len(d["services"]))')
echo "catalog: $TOTAL (instances, services)"

# --- DNS queries/s (dnsperf, 8 clients, A and SRV of random services).
python3 - "$SERVICES" >"$WORK/queries" <<'PY'
import random, sys
n = int(sys.argv[1])
random.seed(7)
for _ in range(20000):
    print(f"svc-{random.randrange(n)}.service.nines {random.choice(['A', 'SRV'])}")
PY
DNSPERF=$(dnsperf -s 127.0.0.1 -p "${DNS[1]}" -d "$WORK/queries" -l "$DURATION" -c 8 -T 1 -q 64 2>&1)
DNS_QPS=$(echo "$DNSPERF" | awk '/Queries per second/ {print $4}')
DNS_LOST=$(echo "$DNSPERF" | awk '/Queries lost/ {print $3}')
DNS_LAT=$(echo "$DNSPERF" | awk '/Average Latency/ {print $4}')
echo "dns: $DNS_QPS q/s, lost $DNS_LOST, avg latency $DNS_LAT s"
DIG_SRV=$(dig @127.0.0.1 -p "${DNS[1]}" svc-7.service.nines SRV +short | wc -l)

# --- HTTP discovery queries/s (wrk, random services, healthy instances).
cat >"$WORK/discover.lua" <<LUA
math.randomseed(7)
request = function()
  return wrk.format("GET", "/v1/services/svc-" .. math.random(0, $SERVICES - 1) .. "/instances?healthy=true")
end
LUA

WRK=$(wrk -t2 -c32 -d"${DURATION}s" --latency -s "$WORK/discover.lua" "http://$H/")
HTTP_QPS=$(echo "$WRK" | awk '/Requests\/sec/ {print $2}')
HTTP_P50=$(echo "$WRK" | awk '$1=="50%" {print $2}')
HTTP_P99=$(echo "$WRK" | awk '$1=="99%" {print $2}')
HTTP_NON2XX=$(echo "$WRK" | awk '/Non-2xx/ {print $5}')
echo "http: $HTTP_QPS req/s, p50 $HTTP_P50, p99 $HTTP_P99, non-2xx ${HTTP_NON2XX:-0}"

# --- health change -> DNS.
TIMING=$(python3 bench/registry/load.py health-timing "$H" "127.0.0.1:${DNS[1]}" \
  "$NINES" demo-backend --port 0 --name probe --trials "$TRIALS")
echo "$TIMING"

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "## Registry"
  echo
  echo "Written by \`bench/registry/run.sh\` (SERVICES=$SERVICES PER_SERVICE=$PER_SERVICE DURATION=$DURATION TRIALS=$TRIALS)"
  echo "on $(date -u '+%Y-%m-%d %H:%M') UTC, commit $COMMIT, release build. Machine: $(nproc) cores, $(uname -sr), load average at the end $LOAD"
  echo "(shared with other builds and tests). A 3-member cluster on loopback; every query goes to member n1, which answers"
  echo "from its local mirror of the registry. Instances are registered over the HTTP API without checks (32 client threads)."
  echo
  echo "| what | figure |"
  echo "|---|---|"
  echo "| catalog | $(echo "$TOTAL" | awk '{print $1}') instances over $(echo "$TOTAL" | awk '{print $2}') services |"
  echo "| registration | ${REGISTER#registered } |"
  echo "| DNS queries/s (dnsperf -c 8 -q 64, A and SRV of random services) | $DNS_QPS (lost $DNS_LOST, average latency ${DNS_LAT}s; \`dig svc-7.service.nines SRV\` lists $DIG_SRV) |"
  echo "| HTTP discovery queries/s (wrk -t2 -c32, \`/v1/services/svc-N/instances?healthy=true\`) | $HTTP_QPS (p50 $HTTP_P50, p99 $HTTP_P99, non-2xx ${HTTP_NON2XX:-0}) |"
  echo
  echo "Health change to DNS ($TRIALS kills and restarts of a demo backend with an HTTP check, interval 200 ms, fall 1, rise 1;"
  echo "DNS polled every 2 ms; \"health write\" is the checker's timestamp of the new state):"
  echo
  echo '```'
  echo "$TIMING"
  echo '```'
} >"$WORK/section.md"
# Replace an earlier "## Registry" section, or append one.
python3 - "$RESULTS" "$WORK/section.md" <<'PY'
import sys
path, section = sys.argv[1], open(sys.argv[2]).read()
try:
    text = open(path).read()
except FileNotFoundError:
    text = ""
start = text.find("## Registry\n")
if start < 0:
    text = text.rstrip("\n") + "\n\n" + section
else:
    end = text.find("\n## ", start + 1)
    text = text[:start] + section + (text[end:] if end >= 0 else "")
open(path, "w").write(text)
PY
echo "written to $RESULTS"
