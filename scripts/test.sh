#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test —
# unit and property tests, in-process ABCI tests, and localnet tests that start
# real CometBFT + magnetd processes on 127.0.0.x.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/env.sh
bash scripts/setup.sh
cargo build --locked --bin magnetd
export MAGNETD_BIN="$CARGO_TARGET_DIR/debug/magnetd"
export COMETBFT_BIN="$(command -v cometbft)"
# Localnet tests each start 4 validators (8 processes): run test binaries one
# test at a time so two localnets never compete for the 2 cores.
cargo test --locked --workspace -- --test-threads=1 "$@"
