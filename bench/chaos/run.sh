#!/usr/bin/env bash
# The long chaos run: `nines chaos` on NODES members for DURATION with every
# fault kind (kill, restart, leader-kill, pause, partition, kill-all,
# disk-fail), then the same schedule shape against etcd (whose members have
# no fault layer, so no partition or disk-fail) for comparison. Each side's
# report is kept next to this script (report-SIDE.json and .txt), and the
# "## Chaos" section of bench/RESULTS.md is rewritten with the command, the
# commit, the machine and each side's summary.
#
# Environment: NODES (5), DURATION (10m), SEED (20261125), SIDES ("nines etcd"),
# NINES_BIN (target/release/nines, built if missing), ETCD_BIN (/usr/bin/etcd),
# RESULTS (bench/RESULTS.md).
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
  echo "$(cd "$ROOT" && git rev-parse --short HEAD) on $(date -u +%Y-%m-%d), machine: $(nproc) cores,"
  echo "$(uname -sr), shared with other work (figures are availability under contention, not a tuned lab)."
  echo "Full reports: \`bench/chaos/report-nines.json\`, \`bench/chaos/report-etcd.json\` (and .txt)."
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
  echo "== $side: $shown"
  set +e
  "$WORK/nines" "${args[@]}" --report "$HERE/report-$side.json" --work-dir "$WORK" |
    tee "$HERE/report-$side.txt"
  status=${PIPESTATUS[0]}
  set -e
  {
    echo "### $side (exit status $status)"
    echo
    echo '```'
    echo "\$ $shown"
    # The summary without the per-operation lines of an offending history.
    sed -n '/^target /,$p' "$HERE/report-$side.txt" | grep -v '^    c[0-9]'
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
