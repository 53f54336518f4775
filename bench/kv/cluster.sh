# Sourced by run.sh and failover.sh: starts, kills, restarts and stops
# 3-member clusters of etcd or nines on loopback, each member a process whose
# PID is tracked so that cleanup stops exactly what was started.
#
# A cluster is named by a side (etcd or nines); its members live in the
# arrays <side>_NAME, <side>_CLIENT (host:port), <side>_PEER, <side>_HTTP and
# <side>_PID, indexed 0..2, and its data under $WORK/<side>/.

ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
ETCDCTL=${ETCDCTL:-/usr/bin/etcdctl}
NINES_BIN=${NINES_BIN:-$ROOT/target/release/nines}
MEMBERS=3
ALLOCATED_PORTS=" "
STARTED_PIDS=()

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Prints the local TCP ports of every socket now, in any state (from /proc: no extra tools).
used_ports() {
  local table
  for table in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$table" ] || continue
    awk 'NR > 1 { n = split($2, a, ":"); print a[n] }' "$table" | while read -r hex; do echo $((16#$hex)); done
  done
}

# Sets FREE_PORT to a loopback port that no socket uses and this script has not handed
# out (not printed: a command substitution would lose the record of handed-out ports). It
# is taken below the kernel's ephemeral range, so no outgoing connection can hold it later.
free_port() {
  local used port low span
  low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  span=$((low - 10000))
  [ "$span" -gt 1000 ] || die "ephemeral port range starts too low ($low)"
  used=" $(used_ports | sort -u | tr '\n' ' ') "
  for _ in $(seq 1 200); do
    port=$((10000 + (RANDOM * 32768 + RANDOM) % span))
    case "$used$ALLOCATED_PORTS" in *" $port "*) continue ;; esac
    ALLOCATED_PORTS+="$port "
    FREE_PORT=$port
    return 0
  done
  die "no free port found"
}

# Chooses names, ports and data dirs for a side's members (started by cluster_start).
cluster_plan() {
  local side=$1 i initial=""
  declare -g -a "${side}_NAME=()" "${side}_CLIENT=()" "${side}_PEER=()" "${side}_HTTP=()" "${side}_PID=()"
  for ((i = 0; i < MEMBERS; i++)); do
    eval "${side}_NAME[$i]=${side:0:1}$((i + 1))"
    free_port; eval "${side}_CLIENT[$i]=127.0.0.1:$FREE_PORT"
    free_port; eval "${side}_PEER[$i]=127.0.0.1:$FREE_PORT"
    free_port; eval "${side}_HTTP[$i]=127.0.0.1:$FREE_PORT"
    initial+="$(member_field "$side" NAME "$i")=http://$(member_field "$side" PEER "$i"),"
  done
  declare -g "${side}_INITIAL=${initial%,}"
  mkdir -p "$WORK/$side"
}

# member_field SIDE FIELD INDEX: prints one field of one member.
member_field() { local ref="${1}_${2}[$3]"; echo "${!ref}"; }

# Prints the comma-separated client endpoints of a side.
cluster_endpoints() {
  local side=$1 i out=""
  for ((i = 0; i < MEMBERS; i++)); do out+="$(member_field "$side" CLIENT "$i"),"; done
  echo "${out%,}"
}

# Starts (or restarts, from its data dir) member INDEX of SIDE in the background.
member_start() {
  local side=$1 i=$2 name client peer initial_ref pid
  name=$(member_field "$side" NAME "$i")
  client=$(member_field "$side" CLIENT "$i")
  peer=$(member_field "$side" PEER "$i")
  initial_ref="${side}_INITIAL"
  local flags=(--name "$name" --data-dir "$WORK/$side/$name"
    --listen-client-urls "http://$client" --advertise-client-urls "http://$client"
    --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer"
    --initial-cluster "${!initial_ref}" --initial-cluster-state new)
  if [ "$side" = etcd ]; then
    "$ETCD_BIN" "${flags[@]}" --initial-cluster-token "bench-$$" >>"$WORK/$side/$name.log" 2>&1 &
  else
    # NINES_FLAGS: extra `nines server` flags for every nines member (word-split).
    local extra=()
    read -ra extra <<<"${NINES_FLAGS:-}"
    "$NINES_BIN" server "${flags[@]}" --http-addr "$(member_field "$side" HTTP "$i")" "${extra[@]}" \
      >>"$WORK/$side/$name.log" 2>&1 &
  fi
  pid=$!
  eval "${side}_PID[$i]=$pid"
  STARTED_PIDS+=("$pid")
}

# True when member INDEX of SIDE answers as healthy (it has a leader and serves).
member_healthy() {
  local side=$1 i=$2
  if [ "$side" = etcd ]; then
    "$ETCDCTL" --endpoints="$(member_field "$side" CLIENT "$i")" --dial-timeout=1s \
      --command-timeout=2s endpoint health >/dev/null 2>&1
  else
    curl -fsS --max-time 2 "http://$(member_field "$side" HTTP "$i")/health" >/dev/null 2>&1
  fi
}

# Waits (at most DEADLINE seconds, default 60) until member INDEX of SIDE is healthy.
# Returns 1, with the reason in MEMBER_FAILURE, if the member exits or stays unhealthy.
member_try_wait_healthy() {
  local side=$1 i=$2 deadline=$((SECONDS + ${3:-60})) pid name log_file
  pid=$(member_field "$side" PID "$i")
  name=$(member_field "$side" NAME "$i")
  log_file="$WORK/$side/$name.log"
  MEMBER_FAILURE=""
  until member_healthy "$side" "$i"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      # The error line, not the backtrace under it, says why.
      MEMBER_FAILURE="$side member $name exited: $(grep -m 1 -E 'panicked|^Error:' "$log_file" | cut -c1-400)"
      wait "$pid" 2>/dev/null || true
      forget_pid "$pid"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      MEMBER_FAILURE="$side member $name not healthy within ${3:-60} s"
      return 1
    fi
    sleep 0.1
  done
}

# As member_try_wait_healthy, but a failure ends the script.
member_wait_healthy() {
  member_try_wait_healthy "$@" || die "$MEMBER_FAILURE (log: $WORK/$1/$(member_field "$1" NAME "$2").log)"
}

# Starts every member of SIDE and waits until all are healthy.
cluster_start() {
  local side=$1 i
  cluster_plan "$side"
  for ((i = 0; i < MEMBERS; i++)); do member_start "$side" "$i"; done
  for ((i = 0; i < MEMBERS; i++)); do member_wait_healthy "$side" "$i" 60; done
  log "$side cluster up: $(cluster_endpoints "$side")"
}

# Prints the index of SIDE's leader as `etcdctl endpoint status` reports it
# (IS LEADER column; works against both sides), or nothing if none answers as leader.
cluster_leader() {
  local side=$1 endpoint i
  endpoint=$("$ETCDCTL" --endpoints="$(cluster_endpoints "$side")" --dial-timeout=1s \
    --command-timeout=2s endpoint status -w simple 2>/dev/null |
    awk -F', ' '$5 == "true" {print $1; exit}' || true)
  [ -n "$endpoint" ] || return 0
  for ((i = 0; i < MEMBERS; i++)); do
    [ "$(member_field "$side" CLIENT "$i")" = "$endpoint" ] && echo "$i" && return 0
  done
}

# Drops PID from the cleanup list once it has been reaped, so a reused PID is never signalled.
forget_pid() {
  local pid=$1 kept=() p
  for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  STARTED_PIDS=("${kept[@]}")
}

# kill -9 of member INDEX of SIDE; waits until the process is gone.
member_kill() {
  local side=$1 i=$2 pid
  pid=$(member_field "$side" PID "$i")
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

# Stops every member of SIDE (TERM, then KILL after 5 s).
cluster_stop() {
  local side=$1 i pid deadline=$((SECONDS + 5))
  for ((i = 0; i < MEMBERS; i++)); do kill "$(member_field "$side" PID "$i")" 2>/dev/null || true; done
  for ((i = 0; i < MEMBERS; i++)); do
    pid=$(member_field "$side" PID "$i")
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
  done
}

# Stops every process this script started (by PID: TERM, then KILL after 5 s).
cleanup_processes() {
  local pid deadline=$((SECONDS + 5))
  for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
}

# keep_binary SRC DST: a hard link where the file system allows it (a rebuild
# writes a new file, so the link keeps the old contents, and it takes no
# space: a release binary is over 100 MB), else a copy.
keep_binary() { ln -f "$1" "$2" 2>/dev/null || cp "$1" "$2"; }

# Keeps the nines binaries in $WORK and points NINES_BIN and BENCH_BIN at them.
snapshot_binaries() {
  if [ -x "$NINES_BIN" ]; then
    keep_binary "$NINES_BIN" "$WORK/nines-server-bin"
    NINES_BIN=$WORK/nines-server-bin
  fi
  keep_binary "$BENCH_BIN" "$WORK/nines-bench-bin"
  BENCH_BIN=$WORK/nines-bench-bin
}

# Prints "N cores, MODEL" for RESULTS.md.
machine_summary() {
  local model
  model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  echo "$(nproc) cores, ${model:-unknown CPU}, $(awk '{printf "%.1f GiB RAM", $2/1048576; exit}' /proc/meminfo), Linux $(uname -r)"
}

# Prints the commit being measured, marked when the tree has changes.
commit_summary() {
  local id
  id=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  if ! git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null; then id+=" (with uncommitted changes)"; fi
  echo "$id"
}

# replace_section FILE PARENT HEADING CONTENT_FILE: inside the section that starts
# at the line PARENT ("## ..."), replaces the subsection that starts at the line
# HEADING ("### ...", up to the next "##" or "###" line) with CONTENT_FILE, or
# appends it to PARENT (created at the end if absent). Other sections stay as they are.
replace_section() {
  local file=$1 parent=$2 heading=$3 content=$4 tmp
  [ -f "$file" ] || printf '# Benchmark results\n\nEach section is written by its script under bench/.\n' >"$file"
  tmp=$(mktemp)
  awk -v parent="$parent" -v heading="$heading" -v content="$content" '
    function emit() { while ((getline line < content) > 0) print line; close(content); done = 1 }
    in_parent && /^## / { in_parent = 0; skipping = 0; if (!done) emit() }
    $0 == parent { in_parent = 1; seen = 1; print; next }
    in_parent && $0 == heading { skipping = 1; emit(); next }
    skipping && /^##/ { skipping = 0 }
    !skipping { print }
    END {
      if (!done) { if (!seen) { print ""; print parent; print "" } emit() }
    }
  ' "$file" >"$tmp"
  mv "$tmp" "$file"
}

# keep_sides: reads BINS ("name=path name=path ...") into the array SIDES and
# keeps each binary as $WORK/bin-NAME, so a rebuild during the run changes
# nothing measured.
keep_sides() {
  local spec name bin
  SIDES=()
  for spec in $BINS; do
    name=${spec%%=*}
    bin=${spec#*=}
    [[ $name =~ ^[a-z][a-z0-9_]*$ ]] || die "side name $name: lower-case letters, digits, _"
    [ -x "$bin" ] || die "not executable: $bin"
    keep_binary "$bin" "$WORK/bin-$name"
    SIDES+=("$name")
  done
}
