#!/usr/bin/env bash
# Failover under write load, etcd and nines side by side: for each side a
# 3-member cluster on loopback takes a steady stream of puts from
# `nines bench kv --gaps --check-acked`; the leader (found with
# `etcdctl endpoint status`) is killed with kill -9, then restarted from its
# data dir, and once it is healthy and the load has settled the next leader is
# killed, KILLS times. The downtime of a kill is the time from the kill to
# the next acknowledged write. Afterwards every acknowledged write is read
# back through each member (linearizable reads) to count lost writes, which
# must be 0. Writes the median and max downtime per side to the "Failover"
# part of the "## KV store" section of bench/RESULTS.md.
#
# Environment: KILLS (10), SIDES ("etcd nines"), CLIENTS (16), RATE (1000
# writes/s), THREADS (1 client thread), GAP_MS (50), SETTLE (3 s), TIMEOUT
# (300ms request deadline),
# NINES_BIN, BENCH_BIN (the `nines` binary used as the client), RESULTS, KEEP_WORK=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KILLS=${KILLS:-10}
SIDES=${SIDES:-"etcd nines"}
CLIENTS=${CLIENTS:-16}
RATE=${RATE:-1000}
THREADS=${THREADS:-1}
GAP_MS=${GAP_MS:-50}
SETTLE=${SETTLE:-3}
# A request forwarded to a leader that dies can hang until the client gives up
# (etcd drops such proposals silently); a short deadline keeps the measured
# downtime about the cluster rather than about the client's patience.
TIMEOUT=${TIMEOUT:-300ms}
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nines-failover.XXXXXX")
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

load_flags=(--op put --gaps --gap-threshold "${GAP_MS}ms" --clients "$CLIENTS" --conns 4
  --rate "$RATE" --val-size 64 --timeout "$TIMEOUT" --duration 1h --threads "$THREADS")

# Waits until FILE has more than LINES lines (the load is acknowledged writes).
wait_for_lines() {
  local file=$1 lines=$2 deadline=$((SECONDS + 60))
  while [ "$({ wc -l <"$file"; } 2>/dev/null || echo 0)" -le "$lines" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "no acknowledged writes in $file"
    sleep 0.2
  done
}

# Waits until SIDE has a leader other than member EXCLUDED; prints its index.
wait_new_leader() {
  local side=$1 excluded=$2 deadline=$((SECONDS + 60)) leader
  while :; do
    leader=$(cluster_leader "$side")
    if [ -n "$leader" ] && [ "$leader" != "$excluded" ]; then echo "$leader"; return 0; fi
    [ "$SECONDS" -lt "$deadline" ] || die "$side elected no new leader in 60 s"
    sleep 0.1
  done
}

run_side() {
  local side=$1 endpoints load_pid acked="$WORK/$side-acked.txt" kills="$WORK/$side-kills.txt"
  local k leader killed_at i
  cluster_start "$side"
  endpoints=$(cluster_endpoints "$side")
  "$BENCH_BIN" bench kv --endpoints "$endpoints" "${load_flags[@]}" --check-acked "$acked" -w json \
    >"$WORK/$side-load.json" 2>"$WORK/$side-load.err" &
  load_pid=$!
  STARTED_PIDS+=("$load_pid")
  wait_for_lines "$acked" 200
  sleep "$SETTLE"
  : >"$kills"
  for ((k = 1; k <= KILLS; k++)); do
    kill -0 "$load_pid" 2>/dev/null || die "the load generator exited: $(cat "$WORK/$side-load.err")"
    leader=$(wait_new_leader "$side" none)
    killed_at=$(date +%s%3N)
    member_kill "$side" "$leader"
    echo "$k $killed_at $(member_field "$side" NAME "$leader")" >>"$kills"
    wait_new_leader "$side" "$leader" >/dev/null
    member_start "$side" "$leader"
    if ! member_try_wait_healthy "$side" "$leader" 120; then
      # A member that cannot come back is a finding, not a reason to lose the figures
      # measured so far: record it and end this side's kills here.
      echo "after kill $k: $MEMBER_FAILURE" >"$WORK/$side-failure.txt"
      log "$side kill $k of $KILLS: $MEMBER_FAILURE"
      cp -r "$WORK/$side/$(member_field "$side" NAME "$leader")" "$WORK/$side-failed-member-data" 2>/dev/null || true
      break
    fi
    log "$side kill $k of $KILLS: $(member_field "$side" NAME "$leader") killed and back"
    sleep "$SETTLE"
  done
  kill -TERM "$load_pid"
  wait "$load_pid" || die "the load generator failed: $(cat "$WORK/$side-load.err")"
  forget_pid "$load_pid"
  for ((i = 0; i < MEMBERS; i++)); do
    kill -0 "$(member_field "$side" PID "$i")" 2>/dev/null || continue
    member_wait_healthy "$side" "$i" 60
    "$BENCH_BIN" bench kv --endpoints "$(member_field "$side" CLIENT "$i")" --verify "$acked" \
      --threads "$THREADS" -w json >"$WORK/$side-verify-$i.json" ||
      log "$side: acknowledged writes missing through member $(member_field "$side" NAME "$i")"
  done
  cluster_stop "$side"
}

# Prints one JSON object summarising SIDE: per-kill downtime and gap, lost writes.
summarise_side() {
  local side=$1
  jq -n --slurpfile load "$WORK/$side-load.json" --rawfile kills "$WORK/$side-kills.txt" \
    --slurpfile verify <(cat "$WORK/$side"-verify-*.json) --argjson threshold "$GAP_MS" \
    --arg failure "$(cat "$WORK/$side-failure.txt" 2>/dev/null || true)" '
    def median: sort | if length == 0 then null
      elif length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    ($kills | split("\n") | map(select(length > 0) | split(" ")
      | {kill: (.[0] | tonumber), at: (.[1] | tonumber), member: .[2]})) as $ks
    | $load[0] as $l
    | [ $ks[] | . as $k
        # The kill time is read just before `kill`, so the last write acknowledged before
        # the pause may land a few ms after it: take the first pause that ends after the
        # kill and starts at most 200 ms after it.
        | ([ $l.gaps[] | select(.start_unix_ms <= $k.at + 200 and .end_unix_ms > $k.at) ] | first) as $g
        | { kill: $k.kill, member: $k.member,
            downtime_ms: (if $g then $g.end_unix_ms - $k.at else null end),
            gap_ms: (if $g then $g.gap_ms else null end) } ] as $per_kill
    | ($per_kill | map(.downtime_ms // $threshold)) as $down
    | ($per_kill | map(.gap_ms // $threshold)) as $gap
    | { kills: ($per_kill | length), per_kill: $per_kill,
        below_threshold: ($per_kill | map(select(.downtime_ms == null)) | length),
        median_downtime_ms: ($down | median), max_downtime_ms: ($down | max),
        median_gap_ms: ($gap | median), max_gap_ms: ($gap | max),
        acknowledged: $l.ops, failed: $l.errors, errors_by_kind: $l.errors_by_kind,
        open_gap: ([ $l.gaps[] | select(.open) ] | length),
        verified_members: ($verify | length),
        lost: ($verify | map(.missing + .wrong_value) | max),
        failure: $failure }'
}

LOAD_BEFORE=$(awk '{print $1 "/" $2 "/" $3}' /proc/loadavg)
for side in $SIDES; do
  log "== $side"
  run_side "$side"
  summarise_side "$side" >"$WORK/$side-summary.json"
done

etcd_version=$("$ETCD_BIN" --version 2>/dev/null | awk '/etcd Version/ {print $3}')
section="$WORK/section.md"
{
  echo "### Failover: kill -9 of the leader under write load"
  echo
  echo "Written by \`bench/kv/failover.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(commit_summary)."
  echo "Machine: $(machine_summary). Each side: 3 members on loopback with default settings"
  echo "(etcd ${etcd_version:-3.4} from Debian; nines \`nines server\`), the client on the same machine."
  echo "Load on all three members, $CLIENTS clients at $RATE writes/s, a fresh key per write, a $TIMEOUT"
  echo "deadline per request (a request forwarded to a dying leader may otherwise hang until the"
  echo "client gives up, which would measure the client rather than the cluster):"
  echo
  echo "    nines bench kv --endpoints \$ENDPOINTS ${load_flags[*]} --check-acked FILE -w json"
  echo
  echo "Per side $KILLS kills: find the leader with \`etcdctl endpoint status\`, \`kill -9\` it, wait for a"
  echo "new leader, restart the killed member from its data dir, wait until it is healthy, then $SETTLE s"
  echo "of steady load. *Downtime* is the time from the kill to the next acknowledged write; *gap* is"
  echo "from the last acknowledged write before the kill to the first after it (a kill with no pause"
  echo "over ${GAP_MS} ms counts as ${GAP_MS} ms). Lost writes: every acknowledged write read back"
  echo "through each member (\`nines bench kv --verify FILE\`, linearizable reads) after the run."
  echo
  echo "| side | kills | median downtime ms | max downtime ms | median gap ms | max gap ms | acknowledged writes | failed requests | acknowledged writes lost |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for side in $SIDES; do
    jq -r --arg side "$side" '"| \($side) | \(.kills) | \(.median_downtime_ms | floor) | \(.max_downtime_ms | floor) | \(.median_gap_ms | floor) | \(.max_gap_ms | floor) | \(.acknowledged) | \(.failed) | \(.lost) (checked on \(.verified_members) members) |"' \
      "$WORK/$side-summary.json"
  done
  echo
  for side in $SIDES; do
    echo "- $side downtime per kill (ms): $(jq -r --arg threshold "$GAP_MS" '[.per_kill[] | if .downtime_ms then (.downtime_ms | floor | tostring) else "<\($threshold)" end] | join(", ")' "$WORK/$side-summary.json")."
    failure=$(jq -r '.failure' "$WORK/$side-summary.json")
    [ -z "$failure" ] || echo "  **$side stopped early, $failure.**"
    echo "  Failed requests by kind: $(jq -r '.errors_by_kind | to_entries | map("\(.value) \(.key)") | join("; ") | if . == "" then "none" else . end' "$WORK/$side-summary.json")."
  done
  echo "- Load average of the machine (1/5/15 min) before the run: $LOAD_BEFORE; after it: $(awk '{print $1 "/" $2 "/" $3}' /proc/loadavg)."
  echo
} >"$section"
replace_section "$RESULTS" "## KV store" "### Failover: kill -9 of the leader under write load" "$section"
cat "$section"
for side in $SIDES; do
  [ "$(jq '.lost' "$WORK/$side-summary.json")" = 0 ] || die "$side lost acknowledged writes"
done
for side in $SIDES; do
  [ ! -s "$WORK/$side-failure.txt" ] || die "$side: $(cat "$WORK/$side-failure.txt")"
done
