#!/usr/bin/env bash
# The minutes from the first README command to the first scored run, as a new user meets them:
# a fresh clone of this repository with a target directory, .venv and data of its own, then
# `scripts/setup.sh && cargo run --release -p orchestrator`, timed phase by phase, with the CPU
# seconds of each (the machine's other load moves the wall times; the CPU times much less).
# The run is the README's, ended after the baseline's first scored run (`--max-experiments 1
# --noise-seeds 1`: the noise seeds come after it and do not count).
# Usage: scripts/bench/first_run.sh [scratch dir, default a new one under /tmp]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
scratch=${1:-$(mktemp -d /tmp/first-run.XXXXXX)}
mkdir -p "$scratch"
repo="$scratch/repo"
[ ! -e "$repo" ] || { echo "$repo exists: pass an empty scratch directory" >&2; exit 1; }
git clone -q "$root" "$repo"
# Its own .venv, as on a fresh machine (pip's cache may make the download quicker than a first one).
# The README's environment, not this shell's: its own target directory and data.
unset CARGO_TARGET_DIR AUTORESEARCH_DATA LIBTORCH
cd "$repo"

start=$(date +%s.%N)
stamp() { echo "$(date +%s.%N) $1" >>"$scratch/phases"; }
# wall, user and system seconds of a command and its children, from GNU time
timed() { /usr/bin/time -f '%e %U %S' -o "$scratch/$1.time" "${@:2}"; }

stamp start
timed setup scripts/setup.sh >"$scratch/setup.log" 2>&1
stamp "setup.sh done"
timed build cargo build --release -p orchestrator >"$scratch/build.log" 2>&1
stamp "orchestrator built"

# Milestones of the run, seen in its files as they appear.
tag=firstrun
(
  seen() { [ -e "$1" ] && ! grep -qF "$2" "$scratch/phases"; }
  while sleep 1; do
    seen .libtorch/lib "libtorch installed" && stamp "libtorch installed"
    seen data/enwik8/contract.json "data prepared" && stamp "data prepared"
    seen "runs/$tag/bin/evaluate" "evaluator built" && stamp "evaluator built"
    seen "runs/$tag/worktree.train" "baseline trainer built" && stamp "baseline trainer built"
  done
) &
watcher=$!
trap 'kill "$watcher" 2>/dev/null || true' EXIT
timed run cargo run --release -p orchestrator -- --tag "$tag" --max-experiments 1 \
  --noise-seeds 1 >"$scratch/run.log" 2>&1 || { tail -30 "$scratch/run.log"; exit 1; }
stamp "first scored run recorded"
kill "$watcher" 2>/dev/null || true

python3 - "$scratch" "$start" "runs/$tag/experiments.jsonl" <<'PY'
import json, sys
scratch, start, records = sys.argv[1], float(sys.argv[2]), sys.argv[3]
print(f"fresh clone in {scratch}/repo; logs and timings in {scratch}")
print(f"{'phase':<28} {'ends at':>8} {'wall':>7}   (seconds since the first command)")
prev = start
for line in open(f"{scratch}/phases"):
    at, name = line.split(" ", 1)
    at = float(at)
    print(f"{name.strip():<28} {at - start:>8.0f} {at - prev:>7.0f}")
    prev = at
print(f"{'command':<28} {'wall':>8} {'CPU':>7}   (user + system, children included)")
for name in ["setup", "build", "run"]:
    wall, user, system = map(float, open(f"{scratch}/{name}.time").read().split()[-3:])
    print(f"{name:<28} {wall:>8.0f} {user + system:>7.0f}")
baseline = json.loads(open(records).readline())
trial = baseline["trials"][0]
# The record is written after the new best's check on the test split, which follows the score.
holdout = baseline["eval_seconds"] - trial["eval_seconds"]
print(f"baseline: build {baseline['build_seconds']:.0f} s, training run {trial['run_seconds']:.0f} s, "
      f"protected evaluation {trial['eval_seconds']:.0f} s, then the holdout's {holdout:.0f} s; "
      f"val_bpb {baseline['val_bpb']}")
print(f"first scored run: {(prev - holdout - start) / 60:.1f} minutes after the first README "
      f"command (recorded at {(prev - start) / 60:.1f})")
PY
