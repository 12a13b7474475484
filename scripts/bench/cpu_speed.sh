#!/usr/bin/env bash
# CPU training speed of the Rust trainer against the same model in eager PyTorch (scripts/bench/
# model.py), both on the same torch 2.11.0, threads and configuration, run one after the other.
# Usage: scripts/bench/cpu_speed.sh [seconds of counted training each, default 60]
set -euo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-60}
scripts/setup-libtorch.sh
cargo build --release -q -p train
python="$(cd -P .libtorch/../../../.. && pwd)/bin/python"  # the interpreter that owns this torch
rust=$(AUTORESEARCH_TIME_BUDGET=$budget target/release/train 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second"])')
py=$("$python" scripts/bench/model.py "$budget" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second"])')
python3 - "$rust" "$py" <<'PY'
import sys
rust, py = map(float, sys.argv[1:])
print(f"{'trainer':<22}{'tokens/s':>12}")
print(f"{'Rust (tch)':<22}{rust:>12,.0f}")
print(f"{'PyTorch eager':<22}{py:>12,.0f}")
print(f"ratio Rust / PyTorch: {rust / py:.2f}x")
PY
