#!/usr/bin/env bash
# The GPU end to end in one go, on a machine with Python and torch 2.11 but no Rust toolchain:
# prepares enwik8's gpu profile, trains the Rust trainer, scores its export with the protected
# evaluator, trains the same model in PyTorch (scripts/bench/model.py) eager and compiled at the
# same budget, scores their exports the same way, and prints one table with ratios and the CUDA
# checks. About 6-7 minutes at the default 60 s budget.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  cat <<'EOF'
Usage: scripts/bench/gpu.sh [--bin DIR] [--sdist FILE] [--budget SECONDS] [--python PY]
                            [--work DIR] [--profile] [--cpu]

  --bin DIR       prebuilt train, evaluate and prepare binaries (default: target/release);
                  build them anywhere with the same torch (x86_64, 2.11.0):
                  cargo build --release -p train -p prepare
  --sdist FILE    enwik8's source distribution mingru_pytorch-0.2.1.tar.gz, for machines
                  without network (default: data/download/, else prepare fetches it with pip)
  --budget S      counted training seconds of each of the three runs (default: 60)
  --python PY     the Python with torch 2.11 (default: /opt/torch/.venv/bin/python, else python3)
  --work DIR      results and logs (default: runs/gpu-bench)
  --profile       also print the top CUDA kernels of 3 steps of the eager PyTorch port
  --cpu           the CPU configuration instead, a dry run of this script without a GPU

Example, with binaries and the sdist carried to a GPU machine:
  scripts/bench/gpu.sh --bin carry/bin --sdist carry/mingru_pytorch-0.2.1.tar.gz --budget 60
EOF
}

bin=target/release
sdist=
budget=60
python=/opt/torch/.venv/bin/python
[ -x "$python" ] || python=python3
work=runs/gpu-bench
profile=
cpu=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --sdist) sdist=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --profile) profile=--profile; shift ;;
    --cpu) cpu=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

for b in train evaluate prepare; do
  [ -x "$bin/$b" ] || { echo "error: no $bin/$b; see --help for building it" >&2; exit 1; }
done
torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || {
  echo "error: $python has no torch; pass --python" >&2
  exit 1
}
# The binaries' rpath names the build machine's libtorch; here it is the local torch's.
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -n "$sdist" ]; then
  mkdir -p data/download
  cp -n "$sdist" data/download/
fi
mkdir -p "$work"
if [ -n "$cpu" ]; then
  profile_name=cpu port_args=() device=cpu
else
  profile_name=gpu port_args=(--gpu) device=cuda
  "$python" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null || {
    echo "error: torch sees no CUDA device here; use --cpu for a dry run" >&2
    exit 1
  }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
export AUTORESEARCH_DATA=data/enwik8 AUTORESEARCH_DEVICE=$device

stamp() { date +%s.%N; }
t0=$(stamp)
"$bin/prepare" --profile "$profile_name" 2>"$work/prepare.log"
echo "prepare --profile $profile_name: $(echo "$(stamp) - $t0" | "$python" -c 'print(f"{eval(input()):.1f}")') s" >&2

score() {  # score MODEL NAME: the protected evaluator on val
  "$bin/evaluate" "$1" val >"$work/$2.eval.json" 2>"$work/$2.eval.log"
}

echo "Rust trainer, $budget s..." >&2
AUTORESEARCH_TIME_BUDGET=$budget AUTORESEARCH_EXPORT="$work/rust.pt" \
  "$bin/train" >"$work/rust.json" 2>"$work/rust.log"
score "$work/rust.pt" rust
for mode in eager compiled; do
  echo "PyTorch port, $mode, $budget s..." >&2
  extra=()
  [ "$mode" = compiled ] && extra=(--compile)
  [ "$mode" = eager ] && [ -n "$profile" ] && extra=(--profile)
  "$python" scripts/bench/model.py "$budget" "${port_args[@]}" "${extra[@]}" \
    --data data/enwik8 --export "$work/port-$mode.pt" >"$work/port-$mode.json" 2>"$work/port-$mode.log"
  score "$work/port-$mode.pt" "port-$mode"
done
[ -n "$profile" ] && { echo "top kernels of the eager port:"; grep -A 30 "Name" "$work/port-eager.log" || true; }

"$python" - "$work" "$device" <<'PY'
import json, re, sys
work, device = sys.argv[1:]
load = lambda name: json.load(open(f"{work}/{name}"))
rust, rust_eval = load("rust.json"), load("rust.eval.json")
rows = [("Rust trainer", rust["tokens_per_second"], rust["mfu_percent"], rust_eval, rust["peak_memory_mb"], rust["num_steps"])]
for mode in ("eager", "compiled"):
    port, ev = load(f"port-{mode}.json"), load(f"port-{mode}.eval.json")
    rows.append((f"PyTorch port, {mode}", port["tokens_per_second"], port["mfu_percent"], ev, port["peak_memory_mb"], port["steps"]))
fmt = lambda v, f: "-" if v is None else format(v, f)
print(f"{'run':<24}{'tokens/s':>12}{'MFU %':>8}{'val_bpb':>10}{'causal':>8}{'peak MiB':>11}{'steps':>7}")
for name, tps, mfu, ev, mem, steps in rows:
    print(f"{name:<24}{tps:>12,.0f}{fmt(mfu, '.1f'):>8}{fmt(ev['bpb'], '.4f'):>10}{str(ev['causal']):>8}{fmt(mem, ',.0f'):>11}{steps:>7}")
for i, mode in ((1, "eager"), (2, "compiled")):
    print(f"Rust / port {mode}: {rows[0][1] / rows[i][1]:.2f}x tokens/s")
losses = [float(m) for m in re.findall(r"\| loss ([0-9.]+|nan|inf)", open(f"{work}/rust.log").read())]
checks = [
    (f"trainer's device is {device}", f"{rust['device'] == device} ({rust['device']})"),
    ("export is causal", f"{rust_eval['causal']} (probe difference {rust_eval['probe_max_diff']:.2e})"),
    ("loss fell", f"{bool(losses) and losses[-1] < losses[0] - 1} (first {losses[0]:.3f}, last {losses[-1]:.3f})" if losses else "False (no loss lines)"),
    ("trainer's own val_bpb vs protected", f"{rust['val_bpb']} vs {rust_eval['bpb']}"),
]
for name, value in checks:
    print(f"check: {name}: {value}")
PY
