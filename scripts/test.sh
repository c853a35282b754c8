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
log="$(mktemp)"
set +e
cargo test --locked --workspace -- --test-threads=1 "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one per binary).
passed=$(sed -n 's/^test result: .* \([0-9]*\) passed; \([0-9]*\) failed.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(sed -n 's/^test result: .* \([0-9]*\) passed; \([0-9]*\) failed.*/\2/p' "$log" | awk '{s+=$1} END {print s+0}')
rm -f "$log"
echo "tests: $passed passed, $failed failed"
exit "$rc"
