#!/usr/bin/env bash
# The offline search on the real trainer (enwik8, CPU profile, a short budget) against the one it
# replaced, on equal trial counts and several seeds. Each run is a fresh tag in a scratch clone,
# `--noise-seeds 1` (every change judged on one run), `--fresh` for the new search (no memory of
# other runs). Today's search runs in a clone of OLD_SEARCH (default: the commit before the model-based
# searches, whose trainer has the same constants and training; only its clock call differs), its
# trainers built in target/ as the new one's, its evaluator in target-evaluator/ (as that version
# did: the first time, libtorch's wrapper is compiled there, minutes). Prints each run's best val_bpb after every trial, the
# medians per search, and on how many trials the new search reached the old one's final best.
# Usage: scripts/bench/search.sh [budget seconds, default 15] [trials, default 10] [seeds, default 2]
#                                [first seed, default 1: more seeds beside ones measured before]
# AUTORESEARCH_DATA=DIR scores on another prepared data set: the CPU profile with a 100 KB
# validation prefix (`prepare --profile cpu --eval-bytes 100000 --data-dir DIR`) is scored in
# seconds where the profile's 1 MB takes about a minute on 2 cores, most of a 15 s trial.
set -euo pipefail
# A relative AUTORESEARCH_DATA is from where the caller stands (the runs are made in clones).
data=${AUTORESEARCH_DATA:+$(realpath -m "$AUTORESEARCH_DATA")}
cd "$(dirname "$0")/../.."
budget=${1:-15}
trials=${2:-10}
seeds=${3:-2}
first=${4:-1}
seed_list=$(seq "$first" $((first + seeds - 1)))
old=${OLD_SEARCH:-4a6a990}
root=$(pwd)
scripts/setup.sh # libtorch and the sandbox (bubblewrap) the orchestrator runs the trainer in
data=${data:-$root/data/enwik8}
[ -f "$data/contract.json" ] || cargo run --release -q -p prepare -- --data-dir "$data"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# Both orchestrators from one target directory: the old one built first and copied aside.
git clone -q "$root" "$scratch/old"
git -C "$scratch/old" checkout -q --detach "$old"
(cd "$scratch/old" && CARGO_TARGET_DIR="$root/target" cargo build --release -q -p orchestrator)
cp "$root/target/release/orchestrator" "$scratch/old-orchestrator"
cargo build --release -q -p orchestrator -p train

run() { # name commit orchestrator seed flags...
  local name=$1 commit=$2 bin=$3 seed=$4
  shift 4
  local repo="$scratch/$name-$seed"
  git clone -q "$root" "$repo"
  git -C "$repo" checkout -q --detach "$commit"
  # To where it points: the old search's sandbox recreates one link, not a chain of them.
  ln -s "$(readlink -f "$root/.libtorch")" "$repo/.libtorch"
  local started=$SECONDS
  (cd "$repo" && AUTORESEARCH_DATA="$data" CARGO_TARGET_DIR="$root/target" \
    "$bin" --agent offline --tag bench --seed "$seed" --time-budget "$budget" \
    --noise-seeds 1 --max-experiments $((trials + 1)) "$@" 2>"$repo.stderr") \
    || { tail -20 "$repo.stderr"; exit 1; }
  echo "$name seed $seed: $((SECONDS - started)) s"
  cp "$repo/runs/bench/experiments.jsonl" "$scratch/$name-$seed.jsonl"
}
for seed in $seed_list; do
  run old "$old" "$scratch/old-orchestrator" "$seed"
  run new HEAD "$root/target/release/orchestrator" "$seed" --fresh
done
python3 - "$scratch" "$trials" $seed_list <<'PY'
import json, statistics, sys
scratch, trials, seed_list = sys.argv[1], int(sys.argv[2]), [int(s) for s in sys.argv[3:]]

def records(path):
    """A run's records in the order the experiments were numbered."""
    return sorted((json.loads(l) for l in open(path)), key=lambda r: r["seq"])

def curve(path):
    """The best (kept) val_bpb after each trial."""
    rows = records(path)
    best, out = None, []
    for r in rows:
        if r["status"] == "keep":
            best = r["val_bpb"]
        if r["seq"] > 0:
            out.append(best)
    return rows[0]["val_bpb"], out

runs = {name: [curve(f"{scratch}/{name}-{s}.jsonl") for s in seed_list] for name in ("old", "new")}
for name in ("old", "new"):
    for s in seed_list:
        print(f"{name} seed {s}, trial by trial:")
        for r in records(f"{scratch}/{name}-{s}.jsonl"):
            score = "-" if r["val_bpb"] is None else f"{r['val_bpb']:.4f}"
            print(f"  #{r['seq']} {r['status']} {score} {r['description']}")
for name, rs in runs.items():
    for s, (base, c) in zip(seed_list, rs):
        print(f"{name} seed {s}: baseline {base:.4f}; best after each trial: " + " ".join(f"{b:.4f}" for b in c))
    finals = [c[-1] for _, c in rs]
    print(f"{name}: final best median {statistics.median(finals):.4f} (min {min(finals):.4f}, max {max(finals):.4f})")
reach = []
for (_, old), (_, new) in zip(runs["old"], runs["new"]):
    hit = next((i + 1 for i, b in enumerate(new) if b <= old[-1]), None)
    reach.append(hit)
print("trials the new search took to reach the old one's final best, per seed: "
      + ", ".join("not within %d" % trials if h is None else str(h) for h in reach)
      + f" (goal: at most {trials // 2})")
PY
