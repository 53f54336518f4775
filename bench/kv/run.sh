#!/usr/bin/env bash
# KV throughput and latency, etcd and nines side by side: starts a 3-member
# etcd 3.4 cluster (Debian etcd-server, default settings) and a 3-member nines
# cluster on loopback, then runs the same `nines bench kv` commands against
# each in alternating rounds (etcd, nines, etcd, nines, ...): puts at 1, 64
# and 256 clients, linearizable and serializable gets at 64 clients, 256-byte
# values. Writes the median over rounds of every figure for both sides and
# the ratio nines/etcd to the "Throughput and latency" part of the
# "## KV store" section of bench/RESULTS.md.
#
# Environment: ROUNDS (2), DURATION (10s per benchmark), THREADS (client
# runtime threads, 2), SIDES ("etcd nines"), NINES_BIN, BENCH_BIN (the
# `nines` binary used as the client), RESULTS, KEEP_WORK=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
SIDES=${SIDES:-"etcd nines"}
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nines-bench-kv.XXXXXX")
# shellcheck source=bench/kv/cluster.sh
source "$ROOT/bench/kv/cluster.sh"
BENCH_BIN=${BENCH_BIN:-$NINES_BIN}

finish() {
  local status=$?
  cleanup_processes
  # A failed run keeps its logs.
  if [ "${KEEP_WORK:-0}" = 1 ] || [ "$status" != 0 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap finish EXIT

[ -x "$BENCH_BIN" ] || (cd "$ROOT" && cargo build --release -p nines)
# Copies of the binaries, so a rebuild during the run changes nothing measured.
snapshot_binaries
for side in $SIDES; do
  case $side in
    etcd) [ -x "$ETCD_BIN" ] || die "etcd not found at $ETCD_BIN (Debian package etcd-server)" ;;
    nines) [ -x "$NINES_BIN" ] || die "nines not found at $NINES_BIN" ;;
    *) die "unknown side $side" ;;
  esac
done

# name|label|flags: the benchmarks, the same for both sides.
BENCHES=(
  "put-1|put, 1 client|--op put --clients 1 --conns 1"
  "put-64|put, 64 clients|--op put --clients 64 --conns 8"
  "put-256|put, 256 clients|--op put --clients 256 --conns 32"
  "get-64|linearizable get, 64 clients|--op get --clients 64 --conns 8"
  "get-serializable-64|serializable get, 64 clients|--op get-serializable --clients 64 --conns 8"
)
COMMON="--key-size 16 --val-size 256 --keyspace 10000 --duration $DURATION --threads $THREADS"

load_average() { awk '{print $1 "/" $2 "/" $3}' /proc/loadavg; }
LOAD_BEFORE=$(load_average)
for side in $SIDES; do cluster_start "$side"; done

for ((round = 1; round <= ROUNDS; round++)); do
  for side in $SIDES; do
    for bench in "${BENCHES[@]}"; do
      IFS='|' read -r name _ flags <<<"$bench"
      mkdir -p "$WORK/results/$side"
      # shellcheck disable=SC2086 # flags are words on purpose
      "$BENCH_BIN" bench kv --endpoints "$(cluster_endpoints "$side")" $flags $COMMON -w json \
        >"$WORK/results/$side/$name.$round.json" 2>"$WORK/results/$side/$name.$round.err" ||
        die "$side $name round $round failed: $(tail -n 5 "$WORK/results/$side/$name.$round.err")"
      log "round $round $side $name: $(jq -r '"\(.throughput_ops_s | floor) ops/s, p99 \(.latency_ms.p99) ms, \(.errors) errors"' \
        "$WORK/results/$side/$name.$round.json")"
    done
  done
done

# Prints the median over rounds of the jq expression FIELD for SIDE and benchmark NAME.
median() {
  local side=$1 name=$2 field=$3
  jq -s "map($field) | sort | if length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end" "$WORK/results/$side/$name".*.json
}

# Prints the total of the jq expression FIELD over all rounds for SIDE and NAME.
total() { jq -s "map($1) | add" "$WORK/results/$2/$3".*.json; }

fmt() { awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'; }

has_side() { case " $SIDES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

etcd_version=$("$ETCD_BIN" --version 2>/dev/null | awk '/etcd Version/ {print $3}')
section="$WORK/section.md"
{
  echo "### Throughput and latency"
  echo
  echo "Written by \`bench/kv/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(commit_summary)."
  echo "Machine: $(machine_summary). Each side: 3 members on loopback with their data dirs under"
  echo "one temp dir, default settings (etcd ${etcd_version:-3.4} from Debian; nines \`nines server\`). The client,"
  echo "\`nines bench kv\` with $THREADS runtime threads, runs on the same machine and talks to all three"
  echo "members of a side (each connection balances over them). Sides: $SIDES; $ROUNDS alternating"
  echo "rounds of $DURATION per benchmark; every figure is the median over the rounds. Values 256 bytes,"
  echo "keys 16 bytes from a keyspace of 10000 (gets write every key first). The machine is shared: other"
  echo "work running at the same time slows both sides, which is why the sides alternate."
  echo
  echo "| benchmark | etcd ops/s | nines ops/s | nines/etcd | etcd p50 ms | nines p50 ms | etcd p99 ms | nines p99 ms | etcd errors | nines errors |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for bench in "${BENCHES[@]}"; do
    IFS='|' read -r name label _ <<<"$bench"
    row="| $label"
    for field in .throughput_ops_s; do
      e="-"; n="-"; ratio="-"
      has_side etcd && e=$(median etcd "$name" "$field")
      has_side nines && n=$(median nines "$name" "$field")
      if has_side etcd && has_side nines; then ratio="$(fmt "$(awk -v a="$n" -v b="$e" 'BEGIN { print (b > 0 ? a / b : 0) }')" 2)x"; fi
      row+=" | $([ "$e" = - ] && echo - || fmt "$e" 0) | $([ "$n" = - ] && echo - || fmt "$n" 0) | $ratio"
    done
    for field in .latency_ms.p50 .latency_ms.p99; do
      for side in etcd nines; do
        if has_side "$side"; then row+=" | $(fmt "$(median "$side" "$name" "$field")" 2)"; else row+=" | -"; fi
      done
    done
    for side in etcd nines; do
      if has_side "$side"; then row+=" | $(total .errors "$side" "$name")"; else row+=" | -"; fi
    done
    echo "$row |"
  done
  echo
  for side in $SIDES; do
    for bench in "${BENCHES[@]}"; do
      IFS='|' read -r name label _ <<<"$bench"
      kinds=$(jq -rs 'map(.errors_by_kind) | reduce .[] as $m ({}; reduce ($m | to_entries[]) as $e (.; .[$e.key] += $e.value))
        | to_entries | map("\(.value) \(.key)") | join("; ")' "$WORK/results/$side/$name".*.json)
      [ -z "$kinds" ] || echo "- $side, $label, errors over all rounds: $kinds."
    done
  done
  echo "- Load average of the machine (1/5/15 min) before the first round: $LOAD_BEFORE; after the last: $(load_average)."
  echo
  if has_side etcd && has_side nines; then
    ratio=$(awk -v a="$(median nines put-64 .throughput_ops_s)" -v b="$(median etcd put-64 .throughput_ops_s)" 'BEGIN { print a / b }')
    p99_e=$(median etcd put-64 .latency_ms.p99)
    p99_n=$(median nines put-64 .latency_ms.p99)
    verdict="not met"
    if awk -v r="$ratio" -v e="$p99_e" -v n="$p99_n" 'BEGIN { exit !(r >= 1.5 && n < e) }'; then verdict="met"; fi
    echo "Goal (at least 1.5x etcd's put throughput at 64 clients with a lower p99): **$verdict** —"
    echo "nines/etcd put throughput at 64 clients $(fmt "$ratio" 2)x, p99 $(fmt "$p99_n" 2) ms against $(fmt "$p99_e" 2) ms."
    echo
  fi
  echo "Commands (\$ENDPOINTS: the three client endpoints of the side):"
  echo
  for bench in "${BENCHES[@]}"; do
    IFS='|' read -r _ _ flags <<<"$bench"
    echo "    nines bench kv --endpoints \$ENDPOINTS $flags $COMMON -w json"
  done
  echo
} >"$section"
replace_section "$RESULTS" "## KV store" "### Throughput and latency" "$section"
cat "$section"
