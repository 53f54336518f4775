#!/usr/bin/env bash
# Backup and restore throughput, nines and etcd side by side in one run:
# starts an etcd 3.4 cluster (Debian etcd-server) and a nines cluster on
# loopback (MEMBERS members each, 1 by default), writes the same KEYS keys
# (16-byte keys, 256-byte values, written by `nines bench kv`'s
# prepopulation, one value for every key) into both, then times
#   nines: `nines backup create --kind full`, `nines backup verify`,
#          `nines backup restore` (a new member's data dir), and an
#          incremental after 1% of the keys changed;
#   etcd:  `etcdctl snapshot save` and `etcdctl snapshot restore`.
# Keys/s and MB/s count the logical data (keys x (key + value) bytes).
# Writes the figures, the ratio nines/etcd and the command to the "## Backup"
# section of bench/RESULTS.md (other sections stay as they are).
#
# Environment: KEYS (1000000), MEMBERS (1), NINES_BIN (target/release/nines),
# RESULTS, KEEP_WORK=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KEYS=${KEYS:-1000000}
KEY_SIZE=16
VAL_SIZE=256
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nines-bench-backup.XXXXXX")
WANT_MEMBERS=${MEMBERS:-1}
# shellcheck source=bench/kv/cluster.sh
source "$ROOT/bench/kv/cluster.sh"
MEMBERS=$WANT_MEMBERS
BENCH_BIN=${BENCH_BIN:-$NINES_BIN}

finish() {
  local status=$?
  cleanup_processes
  if [ "${KEEP_WORK:-0}" = 1 ] || [ "$status" != 0 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap finish EXIT

[ -x "$NINES_BIN" ] || (cd "$ROOT" && cargo build --release -p nines)
snapshot_binaries
[ -x "$ETCD_BIN" ] || die "etcd not found at $ETCD_BIN (Debian package etcd-server)"

now() { date +%s.%N; }
# elapsed START: seconds since START, 3 decimals.
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.3f", e - s }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
mbps() { awk -v n="$1" -v b="$((KEY_SIZE + VAL_SIZE))" -v s="$2" 'BEGIN { printf "%.1f", n * b / s / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
dir_bytes() { du -sb "$1" | awk '{print $1}'; }

load_keys() {
  local side=$1 t
  t=$(now)
  "$BENCH_BIN" bench kv --endpoints "$(cluster_endpoints "$side")" --op get --total 1 \
    --keyspace "$KEYS" --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --clients 128 --conns 8 \
    --seed 1 >"$WORK/$side-load.txt" 2>&1 || die "loading $side failed: $(tail -3 "$WORK/$side-load.txt")"
  log "$side: $KEYS keys written in $(elapsed "$t") s"
}

LOAD_BEFORE=$(awk '{print $1 "/" $2 "/" $3}' /proc/loadavg)
for side in etcd nines; do cluster_start "$side"; done
for side in etcd nines; do load_keys "$side"; done

# nines: full backup, verify, restore, then an incremental after 1% of changes.
NEP=$(cluster_endpoints nines)
REPO=$WORK/repo
t=$(now)
FULL=$("$NINES_BIN" --endpoints "$NEP" backup create --kind full --repo "$REPO" 2>"$WORK/full.err" | tail -n 1)
N_BACKUP=$(elapsed "$t")
N_KEYS=$("$NINES_BIN" backup list --repo "$REPO" -w json | awk -F': ' '/"key_count"/ {gsub(/,/, "", $2); print $2; exit}')
[ "$N_KEYS" = "$KEYS" ] || die "the full holds $N_KEYS keys, expected $KEYS"
N_SIZE=$(dir_bytes "$REPO/backups/$FULL")
t=$(now)
"$NINES_BIN" backup verify --repo "$REPO" "$FULL" >/dev/null
N_VERIFY=$(elapsed "$t")
free_port
t=$(now)
"$NINES_BIN" backup restore --repo "$REPO" --backup "$FULL" --data-dir "$WORK/nines-restored" \
  --name r1 --initial-cluster "r1=http://127.0.0.1:$FREE_PORT" >/dev/null 2>"$WORK/restore.err"
N_RESTORE=$(elapsed "$t")
CHANGED=$((KEYS / 100))
"$BENCH_BIN" bench kv --endpoints "$NEP" --op put --total "$CHANGED" --keyspace "$KEYS" \
  --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --clients 64 --conns 8 --seed 2 >"$WORK/change.txt" 2>&1
t=$(now)
INCR=$("$NINES_BIN" --endpoints "$NEP" backup create --kind incr --repo "$REPO" 2>"$WORK/incr.err" | tail -n 1)
N_INCR=$(elapsed "$t")
N_INCR_SIZE=$(dir_bytes "$REPO/backups/$INCR")
log "nines: backup $N_BACKUP s ($N_SIZE bytes), verify $N_VERIFY s, restore $N_RESTORE s, incr $N_INCR s ($N_INCR_SIZE bytes)"

# etcd: snapshot save and restore of the same data.
EEP=$(cluster_endpoints etcd | cut -d, -f1)
t=$(now)
ETCDCTL_API=3 "$ETCDCTL" --endpoints="$EEP" --command-timeout=600s snapshot save "$WORK/etcd.db" >/dev/null 2>"$WORK/save.err"
E_BACKUP=$(elapsed "$t")
E_SIZE=$(stat -c %s "$WORK/etcd.db")
E_KEYS=$(ETCDCTL_API=3 "$ETCDCTL" snapshot status "$WORK/etcd.db" -w json | sed -E 's/.*"totalKey":([0-9]+).*/\1/')
free_port
t=$(now)
ETCDCTL_API=3 "$ETCDCTL" snapshot restore "$WORK/etcd.db" --data-dir "$WORK/etcd-restored" --name r1 \
  --initial-cluster "r1=http://127.0.0.1:$FREE_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$FREE_PORT" \
  >/dev/null 2>"$WORK/erestore.err"
E_RESTORE=$(elapsed "$t")
log "etcd: snapshot save $E_BACKUP s ($E_SIZE bytes, $E_KEYS keys incl. history), restore $E_RESTORE s"
LOAD_AFTER=$(awk '{print $1 "/" $2 "/" $3}' /proc/loadavg)

SECTION=$WORK/section.md
{
  echo "### Full backup and restore, $KEYS keys"
  echo
  echo "Commit $(commit_summary), $(machine_summary); $MEMBERS-member clusters on loopback,"
  echo "etcd $("$ETCD_BIN" --version | awk '/etcd Version/ {print $3}'), load average before/after $LOAD_BEFORE, $LOAD_AFTER."
  echo "Data: $KEYS keys of $KEY_SIZE bytes with $VAL_SIZE-byte values (\`nines bench kv\` prepopulation:"
  echo "one value for every key, so compressed sizes flatter zstd). Keys/s and MB/s count keys x (key + value)."
  echo
  echo "| step | nines | etcd | nines/etcd (throughput) |"
  echo "|---|---|---|---|"
  echo "| backup (\`backup create --kind full\` / \`etcdctl snapshot save\`) | $N_BACKUP s, $(rate "$KEYS" "$N_BACKUP") keys/s, $(mbps "$KEYS" "$N_BACKUP") MB/s | $E_BACKUP s, $(rate "$KEYS" "$E_BACKUP") keys/s, $(mbps "$KEYS" "$E_BACKUP") MB/s | $(ratio "$E_BACKUP" "$N_BACKUP") |"
  echo "| restore to a data dir (\`backup restore\` / \`etcdctl snapshot restore\`) | $N_RESTORE s, $(rate "$KEYS" "$N_RESTORE") keys/s, $(mbps "$KEYS" "$N_RESTORE") MB/s | $E_RESTORE s, $(rate "$KEYS" "$E_RESTORE") keys/s, $(mbps "$KEYS" "$E_RESTORE") MB/s | $(ratio "$E_RESTORE" "$N_RESTORE") |"
  echo "| stored size | $N_SIZE bytes | $E_SIZE bytes | |"
  echo "| verify (\`backup verify\`) | $N_VERIFY s | - | |"
  echo "| incremental after $CHANGED puts (1%) | $N_INCR s, $N_INCR_SIZE bytes | - (full snapshots only) | |"
  echo
  echo "Command: \`KEYS=$KEYS bench/backup/run.sh\`"
  echo
} >"$SECTION"
replace_section "$RESULTS" "## Backup" "### Full backup and restore, $KEYS keys" "$SECTION"
log "results written to $RESULTS"
cat "$SECTION"
