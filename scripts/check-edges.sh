#!/usr/bin/env bash
# Fails when a crate depends against the arrows of DESIGN.md:
# store <- raft <- server <- nines; the gateway knows nothing of Raft;
# the store touches neither the network nor Raft.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
forbid() { # forbid CRATE DEP: CRATE must not depend (even indirectly) on DEP
  if cargo tree -e normal -p "$1" --prefix none 2>/dev/null | awk '{print $1}' | grep -qx "$2"; then
    echo "forbidden edge: $1 depends on $2"; fail=1
  fi
}
for dep in openraft tonic hyper tokio nines-raft nines-server; do forbid nines-store "$dep"; done
for dep in nines-server nines-gateway nines-chaos; do forbid nines-raft "$dep"; done
for dep in openraft nines-raft nines-server nines-store; do forbid nines-gateway "$dep"; done
for dep in openraft nines-raft nines-server nines-store; do forbid nines-registry "$dep"; done
forbid nines-gateway nines-registry
for dep in openraft nines-raft nines-server; do forbid nines-backup "$dep"; done
[ "$fail" = 0 ] && echo "crate edges ok"
exit "$fail"
