#!/usr/bin/env bash
# What other work on the machine does to a run: the trainer (at a 10 s budget) and the protected
# evaluator, alone and beside one and two busy processes (`nice yes > /dev/null`), with libtorch's
# default OpenMP settings and with the ones the orchestrator sets in its jails
# (crates/orchestrator/src/sandbox/env.rs: OMP_WAIT_POLICY=PASSIVE, one thread per core the
# workers share). Prints both side by side: wall seconds and steps of the trainer, wall seconds of
# the evaluator (cut at the limit given, shown as >N).
# The data is a corpus of the Rust crates' sources in cargo's registry (about 24 MB, vocab 8192,
# the cpu profile), prepared once into target/bench-load: enwik8 needs no network here, and the
# model and its speed are the CPU configuration's either way.
# Usage: scripts/bench/load.sh [budget seconds, default 10] [evaluation limit, default 120]
set -euo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-10}
eval_limit=${2:-120}
scripts/setup-libtorch.sh >/dev/null
cargo build --release -q -p train -p prepare
root=$(pwd)
bench="$root/target/bench-load"
data="$bench/data"
if [ ! -f "$data/contract.json" ]; then
  rm -rf "$bench/corpus" && mkdir -p "$bench/corpus"
  # awk, not head: under pipefail a reader that stops early fails the writer.
  find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -name '*.rs' -size +4k -size -64k | sort |
    awk 'NR <= 4000' | xargs cat | awk 'NR <= 600000' |
    split -C 8192 -d -a 5 --additional-suffix=.txt - "$bench/corpus/doc"
  target/release/prepare --input "$bench/corpus" --data-dir "$data" --profile cpu \
    --eval-bytes 500000 --time-budget "$budget" >/dev/null 2>"$bench/prepare.log"
fi
export LD_LIBRARY_PATH="$root/.libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AUTORESEARCH_DATA="$data" AUTORESEARCH_DEVICE=cpu AUTORESEARCH_TIME_BUDGET="$budget"
model="$bench/model.pt"
AUTORESEARCH_EXPORT="$model" target/release/train >/dev/null 2>"$bench/train.log"
cores=$(nproc)
busy=()
start_busy() { for _ in $(seq "$1"); do nice yes >/dev/null & busy+=($!); done; sleep 1; }
stop_busy() { for pid in "${busy[@]}"; do kill "$pid"; done; wait "${busy[@]}" 2>/dev/null || true; busy=(); }
trap stop_busy EXIT
# One run of the trainer and one of the evaluator in the environment given: "train_s steps eval_s".
measure() {
  local t0 t1 steps ev
  t0=$(date +%s.%N)
  steps=$(env "$@" target/release/train 2>/dev/null | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["num_steps"])')
  t1=$(date +%s.%N)
  local train_s; train_s=$(python3 -c "print(f'{$t1-$t0:.1f}')")
  t0=$(date +%s.%N)
  if env "$@" timeout "$eval_limit" target/release/evaluate "$model" val >/dev/null 2>&1; then
    t1=$(date +%s.%N); ev=$(python3 -c "print(f'{$t1-$t0:.1f}')")
  else
    ev=">$eval_limit"
  fi
  echo "$train_s $steps $ev"
}
default=(-u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u OMP_NUM_THREADS)
chosen=(OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS="$cores")
printf '%-22s | %-28s | %-28s\n' "" "default OpenMP" "OMP_WAIT_POLICY=PASSIVE"
printf '%-22s | %9s %6s %10s | %9s %6s %10s\n' "beside" "train s" "steps" "eval s" "train s" "steps" "eval s"
for load in 0 1 2; do
  start_busy "$load"
  read -r dt ds de < <(measure "${default[@]}")
  read -r ct cs ce < <(measure "${chosen[@]}")
  stop_busy
  printf '%-22s | %9s %6s %10s | %9s %6s %10s\n' "$load busy process(es)" "$dt" "$ds" "$de" "$ct" "$cs" "$ce"
done
# Two workers on these cores: two trainers at once, each with half the cores in the chosen setting.
t0=$(date +%s.%N)
env "${default[@]}" target/release/train >/dev/null 2>&1 & a=$!; env "${default[@]}" target/release/train >/dev/null 2>&1; wait $a
t1=$(date +%s.%N); dd=$(python3 -c "print(f'{$t1-$t0:.1f}')")
half=$(( cores / 2 > 0 ? cores / 2 : 1 ))
t0=$(date +%s.%N)
env OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$half target/release/train >/dev/null 2>&1 & a=$!
env OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$half target/release/train >/dev/null 2>&1; wait $a
t1=$(date +%s.%N); cd2=$(python3 -c "print(f'{$t1-$t0:.1f}')")
printf '%-22s | %9s %6s %10s | %9s %6s %10s\n' "2 trainers at once" "$dd" "-" "-" "$cd2" "-" "-"
echo "(wall seconds at a ${budget} s budget on $cores cores; 'OMP_NUM_THREADS=$half' for the two trainers at once)"
