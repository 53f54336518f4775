#!/usr/bin/env bash
# Installs what the tests need from Debian's packages, once: etcdctl (a real
# etcd v3 client) and etcd itself for side-by-side checks, and headless
# Chromium with its WebDriver for the dashboard test. Idempotent: it does
# nothing when every tool is already present.
set -euo pipefail
need=()
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing test dependencies: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
