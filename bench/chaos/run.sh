#!/usr/bin/env bash
# The long chaos run: `nines chaos` on NODES members for DURATION with every
# fault kind (kill, restart, leader-kill, pause, partition, kill-all,
# disk-fail), then the same schedule shape against etcd (whose members have
# no fault layer, so no partition or disk-fail) for comparison. Each side's
# report is kept next to this script (report-SIDE.json, and report-SIDE.txt
# with the full output), and the "## Chaos" section of bench/RESULTS.md is
# rewritten with the command, the commit, the machine and each side's
# summary (rendered from the JSON with `nines chaos --show-report`).
#
# Environment: NODES (5), DURATION (10m), SEED (20261125), SIDES ("nines etcd"),
# NINES_BIN (target/release/nines, built if missing), ETCD_BIN (/usr/bin/etcd),
# RESULTS (bench/RESULTS.md), SKIP_RUN=1 (only rewrite the section from the
# reports already there), COMMIT (the commit the reports were made at; default HEAD).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/chaos"
NODES=${NODES:-5}
DURATION=${DURATION:-10m}
SEED=${SEED:-20261125}
SIDES=${SIDES:-"nines etcd"}
NINES_BIN=${NINES_BIN:-$ROOT/target/release/nines}
ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nines-chaos-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

[ -x "$NINES_BIN" ] || (cd "$ROOT" && cargo build --release -p nines)
# A private copy: members are restarted from the chaos binary's own path, so
# a rebuild during the run must not swap the binary under it.
cp "$NINES_BIN" "$WORK/nines"

summary="$WORK/summary.md"
{
  echo "## Chaos"
  echo
  echo "Made by \`bench/chaos/run.sh\` (NODES=$NODES DURATION=$DURATION SEED=$SEED) at commit"
  echo "${COMMIT:-$(cd "$ROOT" && git rev-parse --short HEAD)} on $(date -u +%Y-%m-%d), release build, machine: $(nproc) cores,"
  echo "$(uname -sr), shared with other builds and tests while it ran (the gaps include that contention)."
  echo "Full reports: \`bench/chaos/report-nines.json\`, \`bench/chaos/report-etcd.json\` (every fault with its"
  echo "times and write gap; \`nines chaos --show-report FILE\` prints one). A write gap is the longest time"
  echo "without an acknowledged write overlapping the fault, from injection until every member is healthy;"
  echo "kill-all takes every member down on purpose, so its gap is the downtime it causes. The last kill-all"
  echo "of each run comes after the workload stops: every acknowledged write must survive it."
  echo
} >"$summary"

for side in $SIDES; do
  case $side in
    nines) faults=kill,restart,leader-kill,pause,partition,kill-all,disk-fail; extra=() ;;
    etcd) faults=kill,restart,leader-kill,pause,kill-all; extra=(--target etcd --etcd-binary "$ETCD_BIN") ;;
    *) echo "unknown side $side" >&2; exit 2 ;;
  esac
  args=(chaos --nodes "$NODES" --duration "$DURATION" --faults "$faults" --seed "$SEED"
    --check-timeout 300s "${extra[@]}")
  shown="nines ${args[*]} --report bench/chaos/report-$side.json"
  if [ "${SKIP_RUN:-0}" != 1 ]; then
    echo "== $side: $shown"
    set +e
    "$WORK/nines" "${args[@]}" --report "$HERE/report-$side.json" --work-dir "$WORK" |
      tee "$HERE/report-$side.txt"
    set -e
  fi
  set +e
  "$WORK/nines" chaos --show-report "$HERE/report-$side.json" >"$WORK/text-$side.txt"
  status=$?
  set -e
  {
    echo "### $side (exit status $status)"
    echo
    echo '```'
    echo "\$ $shown"
    # Without the per-fault and per-operation lines (they are in the JSON).
    grep -v -E '^ +[0-9]+ms-|^    c[0-9]' "$WORK/text-$side.txt"
    echo '```'
    echo
  } >>"$summary"
done

# Replace the "## Chaos" section (up to the next "## " heading), or append it.
touch "$RESULTS"
awk -v file="$summary" '
  BEGIN { while ((getline line < file) > 0) text = text line "\n" }
  /^## Chaos$/ { printf "%s", text; skipping = 1; done = 1; next }
  skipping && /^## / { skipping = 0 }
  !skipping { print }
  END { if (!done) printf "\n%s", text }
' "$RESULTS" >"$WORK/results.md"
cp "$WORK/results.md" "$RESULTS"
echo "wrote the Chaos section of $RESULTS"
