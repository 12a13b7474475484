#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the dashboard's browser tests and benchmark
# (crates/orchestrator/tests/dashboard.rs, benches/dashboard.rs), from Debian's packages.
#
#   scripts/browser.sh     install chromium and chromium-driver when missing (apt-get, as root),
#                          then print `CHROMEDRIVER=<path>` on stdout
#
# Idempotent; the tests call it before each browser they start.
set -euo pipefail

say() { echo "browser: $*" >&2; }
die() { echo "browser: error: $*" >&2; exit 1; }

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  [ "$(id -u)" = 0 ] || die "chromium and chromium-driver are missing; install them as root: apt-get install chromium chromium-driver"
  command -v apt-get >/dev/null || die "chromium and chromedriver missing and no apt-get here; install them by hand"
  say "installing chromium and chromium-driver with apt-get"
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  apt=(apt-get install -y -q --no-install-recommends chromium chromium-driver)
  # Two tests may install at once: apt-get waits for the other's lock rather than fail.
  apt+=(-o DPkg::Lock::Timeout=300)
  if ! "${apt[@]}" >"$log" 2>&1; then
    say "apt-get install failed; running apt-get update and trying again"
    { apt-get update -q && "${apt[@]}"; } >>"$log" 2>&1 || { tail -20 "$log" >&2; die "apt-get could not install them (log above)"; }
  fi
  rm -f "$log"
fi
echo "CHROMEDRIVER=$(command -v chromedriver)"
