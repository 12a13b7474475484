#!/usr/bin/env bash
# The research loop's time per experiment outside the training budget and the agent's thinking,
# on the real enwik8 data: a scratch clone of this repository runs the offline agent for a few
# experiments with a short budget, then the figures are read off its experiments.jsonl. One seed
# per experiment (no re-runs): the noise rules' cost is measured by noise.sh.
# Usage: scripts/bench/loop_overhead.sh [budget seconds, default 20] [experiments, default 4]
set -euo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-20}
experiments=${2:-4}
scripts/setup.sh # libtorch and the sandbox (bubblewrap) the orchestrator runs the trainer in
cargo build --release -q -p orchestrator -p train
[ -f data/enwik8/contract.json ] || cargo run --release -q -p prepare
root=$(pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
git clone -q "$root" "$scratch/repo"
ln -s "$root/.libtorch" "$scratch/repo/.libtorch"
# The clone shares this target directory, as a user's own checkout would have its own, warm one.
(cd "$scratch/repo" && AUTORESEARCH_DATA="$root/data/enwik8" CARGO_TARGET_DIR="$root/target" \
  "$root/target/release/orchestrator" --agent offline --tag bench --time-budget "$budget" \
  --max-experiments "$experiments" --noise-seeds 1 2>"$scratch/stderr") || { cat "$scratch/stderr"; exit 1; }
python3 - "$scratch/repo/runs/bench/experiments.jsonl" <<'PY'
import datetime, json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
stamp = lambda r: datetime.datetime.fromisoformat(r["finished_at"]).timestamp()
print(f"{'#':>2} {'build':>7} {'start-up':>9} {'protected':>10} {'git+log':>8} {'total':>7}"
      "  (seconds; start-up = the run beyond its counted training: start-up, uncounted steps, export;"
      " protected = the recorded score's evaluation)")
totals = []
for prev, r in zip(rows, rows[1:]):  # the baseline has no previous experiment to time from
    res = r["result"] or {}
    protected = r["eval_seconds"]
    startup = r["run_seconds"] - res.get("training_seconds", 0) - protected
    other = stamp(r) - stamp(prev) - r["think_seconds"] - r["build_seconds"] - r["run_seconds"]
    total = r["build_seconds"] + startup + protected + other
    totals.append(total)
    print(f"{r['seq']:>2} {r['build_seconds']:>7.2f} {startup:>9.2f} {protected:>10.2f} {other:>8.2f} {total:>7.2f}")
mean = sum(totals) / len(totals)
print(f"mean overhead (build + start-up + evaluation + git/log): {mean:.1f} s per experiment; "
      f"{3600 / (300 + mean):.1f} experiments/hour at a 300 s budget")
PY
