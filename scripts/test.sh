#!/usr/bin/env bash
# The tests, as README.md and .ci/run call them (after scripts/setup.sh): the whole workspace, then
# the single-worker loop's end-to-end tests once more with two workers in flight
# (AUTORESEARCH_WORKERS=2, which the orchestrator takes when --workers is not given). The Slurm
# tests start a one-node cluster on this machine themselves (scripts/slurm-local.sh, root).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release
AUTORESEARCH_WORKERS=2 cargo test --release -p orchestrator \
    --test offline_loop --test llm_agent --test trust --test rules --test attacks --test report
