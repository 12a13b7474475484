#!/usr/bin/env bash
# The tests, as README.md and .ci/run call them (after scripts/setup.sh): the whole workspace, then
# the trust test once more with two workers in flight (AUTORESEARCH_WORKERS=2, which the
# orchestrator takes when --workers is not given; tests/workers.rs drives the loop itself with one
# worker and with many, kills and resumes included); the attack suites run once, to keep the
# whole under 45 minutes on 2 cores. The Slurm suite runs beside all of that, in a sandbox target
# directory of its own (it mostly waits on the cluster, and one-at-a-time it was the longest
# suite), on a one-node cluster started on this machine first (scripts/slurm-local.sh, root), and
# its output is shown when it ends.
# At the end (also after a failure) it prints the wall time of the build and of each suite.
#
#   scripts/test.sh           everything
#   scripts/test.sh --quick   the unit tests of every crate (the stand-in trainer's rules
#                             included): no end-to-end run, a minute or two once built
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
case "${1:-}" in
  "") ;;
  --quick) quick=true ;;
  *) echo "usage: scripts/test.sh [--quick]" >&2; exit 2 ;;
esac

logs=$(mktemp -d)
times=$logs/times
beside=""
trap 'finish || true; summary; rm -rf "$logs"' EXIT

# Runs "$@" with its output shown and kept, and notes its wall time under the label $1.
timed() {
  local label=$1 started=$SECONDS log
  shift
  log=$(mktemp -p "$logs")
  local status=0
  "$@" 2>&1 | tee "$log" || status=$?
  suites "$label" <"$log" >>"$times"
  printf '%6d s  %s\n' $((SECONDS - started)) "$label (all)" >>"$times"
  return "$status"
}

# The wall time of each test binary in cargo's output, from libtest's "finished in" line.
suites() {
  awk -v pass="$1" '
    /^ *Running / {
      what = $0; sub(/^ *Running /, "", what); sub(/ \(.*$/, "", what)
      bin = $NF; sub(/^.*\//, "", bin); sub(/-[0-9a-f]+\)$/, "", bin)
      name = bin ": " what
    }
    /^ *Doc-tests / { name = $2 ": doc-tests" }
    /^test result:/ {
      seconds = $NF; sub(/s$/, "", seconds)
      printf "%6.0f s  %s\n", seconds, pass " " name
    }'
}

# Waits for the suite run beside the others (see above), shows its output, and fails with it.
finish() {
  [ -n "$beside" ] || return 0
  local status=0
  wait "$beside" || status=$?
  beside=""
  cat "$logs/beside"
  return "$status"
}

summary() {
  echo
  echo "== wall time (s), this run: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  cat "$times"
  echo "== total $SECONDS s"
}

if $quick; then
  timed build cargo test --workspace --release --lib --bins --examples --no-run
  timed unit cargo test --workspace --release --lib --bins --examples
  exit
fi
# The LLM agent's tests run against llama.cpp's server with a small real model.
scripts/setup-llm.sh
timed build cargo test --workspace --release --no-run
timed "build slurm" cargo test --release -p orchestrator --test slurm --no-run
# The cluster is started (its packages installed when missing) before the suites run side by side:
# the dashboard's tests may install chromium meanwhile, and two apt-get runs at once fail on
# dpkg's lock. The Slurm tests start it again, which finds it running.
scripts/slurm-local.sh start >/dev/null
timed slurm env AUTORESEARCH_SANDBOX_TARGET=sandbox-target-slurm \
  cargo test --release -p orchestrator --test slurm >"$logs/beside" 2>&1 &
beside=$!
timed workspace cargo test --workspace --release
timed "two workers" env AUTORESEARCH_WORKERS=2 \
  cargo test --release -p orchestrator --test trust
finish
