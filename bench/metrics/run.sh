#!/usr/bin/env bash
# What watching costs the write path: put throughput and latency of a
# 3-member nines cluster on loopback without and with a scraper that reads
# `/metrics` of every member and `/v1/dashboard` of one (what an open
# dashboard page asks) once a second. Rounds alternate (off, on, off, on, ...)
# so that other work on the shared machine hits both alike; every figure is
# the median over the rounds. Writes the "Cost on the write path" part of
# the "## Metrics and dashboard" section of bench/RESULTS.md.
#
# Environment: ROUNDS (3), DURATION (10s per benchmark), THREADS (client
# runtime threads, 2), NINES_BIN, BENCH_BIN (the `nines` binary used as the
# client), RESULTS, KEEP_WORK=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nines-bench-metrics.XXXXXX")
# shellcheck source=bench/kv/cluster.sh
source "$ROOT/bench/kv/cluster.sh"
BENCH_BIN=${BENCH_BIN:-$NINES_BIN}
SCRAPER_PID=""

scraper_stop() {
  if [ -n "$SCRAPER_PID" ]; then
    kill "$SCRAPER_PID" 2>/dev/null || true
    wait "$SCRAPER_PID" 2>/dev/null || true
    forget_pid "$SCRAPER_PID"
    SCRAPER_PID=""
  fi
}

finish() {
  local status=$?
  scraper_stop
  cleanup_processes
  if [ "${KEEP_WORK:-0}" = 1 ] || [ "$status" != 0 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap finish EXIT

# Scrapes every member's /metrics and one member's /v1/dashboard each second
# with one curl per pass (the scraper's own process starts are otherwise what
# a 2-core machine measures); appends one line per pass to $1: the bytes of
# each answer, then the microseconds the pass took.
scraper_start() {
  local out=$1 urls=() outs=() i
  for ((i = 0; i < MEMBERS; i++)); do urls+=("http://$(member_field nines HTTP "$i")/metrics"); done
  urls+=("http://$(member_field nines HTTP 0)/v1/dashboard")
  for _ in "${urls[@]}"; do outs+=(-o /dev/null); done
  (
    while true; do
      started=${EPOCHREALTIME/./}
      sizes=$(curl -sS --max-time 1 "${outs[@]}" -w '%{size_download} ' "${urls[@]}") || sizes=""
      took=$((${EPOCHREALTIME/./} - started))
      echo "$sizes$took" >>"$out"
      left=$((1000000 - took))
      if [ "$left" -gt 0 ]; then sleep "0.$(printf '%06d' "$left")"; fi
    done
  ) &
  SCRAPER_PID=$!
  STARTED_PIDS+=("$SCRAPER_PID")
}

[ -x "$BENCH_BIN" ] || (cd "$ROOT" && cargo build --release -p nines)
snapshot_binaries
[ -x "$NINES_BIN" ] || die "nines not found at $NINES_BIN"
command -v curl >/dev/null || die "curl not found"
command -v jq >/dev/null || die "jq not found"

# name|label|flags
BENCHES=(
  "put-1|put, 1 client|--op put --clients 1 --conns 1"
  "put-64|put, 64 clients|--op put --clients 64 --conns 8"
)
COMMON="--key-size 16 --val-size 256 --keyspace 10000 --duration $DURATION --threads $THREADS"
MODES="off on"

load_average() { awk '{print $1 "/" $2 "/" $3}' /proc/loadavg; }
LOAD_BEFORE=$(load_average)
cluster_start nines
mkdir -p "$WORK/results/off" "$WORK/results/on"

for ((round = 1; round <= ROUNDS; round++)); do
  for mode in $MODES; do
    [ "$mode" = on ] && scraper_start "$WORK/scrapes.txt"
    for bench in "${BENCHES[@]}"; do
      IFS='|' read -r name _ flags <<<"$bench"
      # shellcheck disable=SC2086 # flags are words on purpose
      "$BENCH_BIN" bench kv --endpoints "$(cluster_endpoints nines)" $flags $COMMON -w json \
        >"$WORK/results/$mode/$name.$round.json" 2>"$WORK/results/$mode/$name.$round.err" ||
        die "$mode $name round $round failed: $(tail -n 5 "$WORK/results/$mode/$name.$round.err")"
      log "round $round scraper $mode $name: $(jq -r '"\(.throughput_ops_s | floor) ops/s, p99 \(.latency_ms.p99) ms, \(.errors) errors"' \
        "$WORK/results/$mode/$name.$round.json")"
    done
    scraper_stop
  done
done

# CPU time (clock ticks) the three members have used so far.
members_cpu_ticks() {
  local total=0 i fields
  for ((i = 0; i < MEMBERS; i++)); do
    read -r -a fields <"/proc/$(member_field nines PID "$i")/stat"
    total=$((total + fields[13] + fields[14]))
  done
  echo "$total"
}

# What one scrape pass costs the members, apart from the load: their CPU
# over BURST_SECONDS of back-to-back passes, less their CPU over as long idle
# (heartbeats), divided by the passes.
BURST_SECONDS=${BURST_SECONDS:-10}
TICK_MS=$((1000 / $(getconf CLK_TCK)))
idle_start=$(members_cpu_ticks)
sleep "$BURST_SECONDS"
idle_ticks=$(($(members_cpu_ticks) - idle_start))
burst_urls=()
burst_outs=()
for ((i = 0; i < MEMBERS; i++)); do burst_urls+=("http://$(member_field nines HTTP "$i")/metrics"); done
burst_urls+=("http://$(member_field nines HTTP 0)/v1/dashboard")
for _ in "${burst_urls[@]}"; do burst_outs+=(-o /dev/null); done
burst_start=$(members_cpu_ticks)
burst_passes=0
burst_end=$((SECONDS + BURST_SECONDS))
while [ "$SECONDS" -lt "$burst_end" ]; do
  curl -sS --max-time 1 "${burst_outs[@]}" "${burst_urls[@]}" || die "scrape failed"
  burst_passes=$((burst_passes + 1))
done
burst_ticks=$(($(members_cpu_ticks) - burst_start))
pass_cpu_ms=$(awk -v b="$burst_ticks" -v i="$idle_ticks" -v n="$burst_passes" -v t="$TICK_MS" \
  'BEGIN { v = (b - i) * t / n; print (v > 0 ? v : 0) }')
log "idle: $idle_ticks ticks; $burst_passes passes: $burst_ticks ticks; $pass_cpu_ms ms of member CPU per pass"

median() {
  local mode=$1 name=$2 field=$3
  jq -s "map($field) | sort | if length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end" "$WORK/results/$mode/$name".*.json
}
total() { jq -s "map($1) | add" "$WORK/results/$2/$3".*.json; }
fmt() { awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'; }

passes=$(wc -l <"$WORK/scrapes.txt")
scrape_bytes=$(awk '{ s += $1 + $2 + $3 } END { print (NR ? s / NR / 3 : 0) }' "$WORK/scrapes.txt")
pass_ms=$(awk '{ print $NF / 1000 }' "$WORK/scrapes.txt" | sort -n | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : 0) }')
section="$WORK/section.md"
{
  echo "### Cost on the write path"
  echo
  echo "Written by \`bench/metrics/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(commit_summary)."
  echo "Machine: $(machine_summary). A 3-member nines cluster on loopback (\`nines server\`, default"
  echo "settings); \`nines bench kv\` with $THREADS runtime threads on the same machine. \"Scraper on\": a loop"
  echo "reads \`/metrics\` of all three members and \`/v1/dashboard\` of one (what an open dashboard asks for)"
  echo "once a second, as Prometheus and a browser would. $ROUNDS alternating rounds (off, on) of $DURATION per"
  echo "benchmark; every figure is the median over the rounds. Values 256 bytes, keys 16 bytes."
  echo
  echo "| benchmark | ops/s, scraper off | ops/s, scraper on | on/off | p50 ms off | p50 ms on | p99 ms off | p99 ms on | errors off | errors on |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for bench in "${BENCHES[@]}"; do
    IFS='|' read -r name label _ <<<"$bench"
    off=$(median off "$name" .throughput_ops_s)
    on=$(median on "$name" .throughput_ops_s)
    ratio=$(awk -v a="$on" -v b="$off" 'BEGIN { print (b > 0 ? a / b : 0) }')
    echo "| $label | $(fmt "$off" 0) | $(fmt "$on" 0) | $(fmt "$ratio" 3) | $(fmt "$(median off "$name" .latency_ms.p50)" 2) | $(fmt "$(median on "$name" .latency_ms.p50)" 2) | $(fmt "$(median off "$name" .latency_ms.p99)" 2) | $(fmt "$(median on "$name" .latency_ms.p99)" 2) | $(total .errors off "$name") | $(total .errors on "$name") |"
  done
  echo
  for bench in "${BENCHES[@]}"; do
    IFS='|' read -r name label _ <<<"$bench"
    echo "- $label, ops/s of each round: off $(jq -s -r 'map(.throughput_ops_s | floor) | join(", ")' "$WORK/results/off/$name".*.json);" \
      "on $(jq -s -r 'map(.throughput_ops_s | floor) | join(", ")' "$WORK/results/on/$name".*.json) (the spread between rounds of"
    echo "  the same mode is the noise of this shared machine; read on/off against it)."
  done
  echo "- Scrape passes made: $passes; one member's \`/metrics\` is $(fmt "$scrape_bytes" 0) bytes; a pass over three"
  echo "  members plus one dashboard view took $(fmt "$pass_ms" 1) ms (median, one curl process for the pass)."
  echo "- Member CPU per scrape pass, apart from the load: $(fmt "$pass_cpu_ms" 2) ms summed over the three members"
  echo "  ($burst_passes back-to-back passes in ${BURST_SECONDS} s: $burst_ticks clock ticks of member CPU, against $idle_ticks idle"
  echo "  for as long). At one pass a second that is $(fmt "$(awk -v v="$pass_cpu_ms" 'BEGIN { print v / 10 }')" 3)% of one core."
  echo "- Load average of the machine (1/5/15 min) before the first round: $LOAD_BEFORE; after the last: $(load_average)."
  echo
  echo "Commands (\$ENDPOINTS: the three client endpoints):"
  echo
  for bench in "${BENCHES[@]}"; do
    IFS='|' read -r _ _ flags <<<"$bench"
    echo "    nines bench kv --endpoints \$ENDPOINTS $flags $COMMON -w json"
  done
  echo "    # scraper on: every second, one curl for http://MEMBER/metrics of each member and http://MEMBER/v1/dashboard"
  echo
} >"$section"
replace_section "$RESULTS" "## Metrics and dashboard" "### Cost on the write path" "$section"
cat "$section"
