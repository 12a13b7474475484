#!/usr/bin/env bash
# The tests, as README.md and .ci/run call them (after scripts/setup.sh): the whole workspace, then
# the loop's own end-to-end test and the trust test once more with two workers in flight
# (AUTORESEARCH_WORKERS=2, which the orchestrator takes when --workers is not given); the attack
# suites run once, to keep the whole under 45 minutes on 2 cores. The Slurm
# tests start a one-node cluster on this machine themselves (scripts/slurm-local.sh, root).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release
AUTORESEARCH_WORKERS=2 cargo test --release -p orchestrator --test offline_loop --test trust
