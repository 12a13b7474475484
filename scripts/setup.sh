#!/usr/bin/env bash
# Everything a fresh machine needs before the first run or test:
# - libtorch 2.11.0 (scripts/setup-libtorch.sh links or installs it), while the orchestrator's
#   first build runs beside it: the orchestrator needs no libtorch, and the wheel's install is a
#   minute of one core that the build would otherwise wait for;
# - bubblewrap, the sandbox the agent's code runs in (its build, the trainer, the evaluator):
#   installed with apt-get when missing and we are root; otherwise this says what to do.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-libtorch.sh &
libtorch=$!
built=0
cargo build --release -p orchestrator || built=$?
wait "$libtorch"
[ "$built" = 0 ] || exit "$built"

if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "sandbox: installing bubblewrap" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    cat >&2 <<'MSG'
sandbox: bubblewrap (bwrap) is not installed, and the orchestrator runs the agent's code only in
its sandbox. Install it as an administrator (Debian/Ubuntu: sudo apt-get install bubblewrap;
Fedora: sudo dnf install bubblewrap), or set sandbox = "off" in autoresearch.toml to run the
agent's code unconfined, knowingly.
MSG
  fi
fi
