#!/usr/bin/env bash
# What a fresh machine needs before the first run or test and that they do not set up themselves:
# bubblewrap, the sandbox the agent's code runs in (its build, the trainer, the evaluator),
# installed with apt-get when missing and we are root; otherwise this says what to do.
# libtorch 2.11.0 is set up by whoever needs it first, with scripts/setup-libtorch.sh: the
# orchestrator on its first start, beside the data's preparation (building the orchestrator needs
# no libtorch, so nothing waits for the download before that), and scripts/test.sh before it builds.
set -euo pipefail
cd "$(dirname "$0")/.."

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
