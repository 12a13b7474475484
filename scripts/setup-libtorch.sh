#!/usr/bin/env bash
# Makes `.libtorch` a link to a libtorch 2.11.0 (the exact version tch 0.24.0 accepts), which
# `.cargo/config.toml` hands to tch's build script. An existing torch 2.11.0 is used where one is
# found (AUTORESEARCH_PYTHON, the project's .venv, then python3); otherwise the PyPI wheel
# torch==2.11.0 (CUDA build, also runs on CPU-only machines; about 4.6 GB) goes into .venv/.
set -euo pipefail
cd "$(dirname "$0")/.."
want=2.11.0

# Prints the torch package directory of python "$1" when it has torch $want, else fails.
torch_dir() {
  "$1" - "$want" <<'PY' 2>/dev/null
import importlib.metadata as md, importlib.util, sys
if md.version("torch").split("+")[0] != sys.argv[1]:
    sys.exit(1)
print(importlib.util.find_spec("torch").submodule_search_locations[0])
PY
}

if [ -f .libtorch/lib/libtorch_cpu.so ]; then
  exit 0
fi

for py in "${AUTORESEARCH_PYTHON:-}" .venv/bin/python python3; do
  [ -n "$py" ] && command -v "$py" >/dev/null || continue
  if dir=$(torch_dir "$py"); then
    ln -sfn "$dir" .libtorch
    echo "libtorch: using torch $want at $dir" >&2
    exit 0
  fi
done

command -v python3 >/dev/null || {
  echo "error: python3 is needed to install torch==$want (apt-get install python3 python3-venv)" >&2
  exit 1
}
echo "libtorch: installing torch==$want into .venv/ (about 4.6 GB, a minute or two)..." >&2
[ -x .venv/bin/python ] || python3 -m venv .venv
# --no-compile: byte-compiling torch's Python files is a third of the install's CPU time (20 of 77 s
# on 2 cores), and only the libraries and headers are needed here; Python compiles what it imports.
.venv/bin/python -m pip install --disable-pip-version-check -q --no-compile "torch==$want"
dir=$(torch_dir .venv/bin/python) || {
  echo "error: torch==$want did not install into .venv/; see pip's output above" >&2
  exit 1
}
ln -sfn "$dir" .libtorch
echo "libtorch: torch $want installed at $dir" >&2
