#!/usr/bin/env bash
# Throughput benchmark: the same 4-validator CometBFT localnet (same genesis, config,
# timeout_commit, mempool) runs first magnetd, then CometBFT's built-in kvstore app;
# `magnetd bench` submits the same number of txs to each and measures committed tx/s
# and p50/p99 inclusion latency. Prints both and the magnet/kvstore ratio.
#   localnet/bench.sh [TXS=4000] [SENDERS=16]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/env.sh
bash scripts/setup.sh
cargo build --locked --release --bin magnetd
export MAGNETD_BIN="$CARGO_TARGET_DIR/release/magnetd"
export COMETBFT_BIN="$(command -v cometbft)"
txs="${1:-4000}"; senders="${2:-16}"
work="$(mktemp -d)"
export LOCALNET_IP_BASE=60
nodes="http://127.0.0.60:26657,http://127.0.0.61:26657,http://127.0.0.62:26657,http://127.0.0.63:26657"
cleanup() { bash "$root/localnet/stop.sh" "$work/magnet" 2>/dev/null; bash "$root/localnet/stop.sh" "$work/kv" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM

wait_blocks() {
  for _ in $(seq 1 120); do
    h=$("$MAGNETD_BIN" status --node http://127.0.0.60:26657 -o json 2>/dev/null | sed -n 's/.*"latest_block_height":"\([0-9]*\)".*/\1/p' || true)
    [ "${h:-0}" -ge 3 ] && return 0; sleep 0.5
  done
  echo "localnet did not start" >&2; return 1
}

echo "== magnetd (bank sends, $txs txs, $senders senders)"
bash localnet/setup.sh "$work/magnet" 4 "$senders" >/dev/null
bash localnet/start.sh "$work/magnet" >/dev/null
wait_blocks
"$MAGNETD_BIN" bench --target magnet --nodes "$nodes" --txs "$txs" --senders "$senders" --home "$work/magnet/client" -o json | tee "$work/magnet.json"
bash localnet/stop.sh "$work/magnet"

echo "== CometBFT kvstore ($txs txs, $senders senders)"
bash localnet/setup.sh "$work/kv" 4 0 >/dev/null
for h in "$work/kv"/node*; do
  "$COMETBFT_BIN" start --home "$h" --proxy_app=kvstore >"$h/cometbft.log" 2>&1 &
  echo $! >"$h/cometbft.pid"
done
wait_blocks
"$MAGNETD_BIN" bench --target kvstore --nodes "$nodes" --txs "$txs" --senders "$senders" -o json | tee "$work/kv.json"
bash localnet/stop.sh "$work/kv"

field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" "$1"; }
m=$(field "$work/magnet.json" tps); k=$(field "$work/kv.json" tps)
echo
printf "%-10s %10s %8s %8s\n" app "tx/s" "p50 ms" "p99 ms"
printf "%-10s %10.1f %8s %8s\n" magnetd "$m" "$(field "$work/magnet.json" p50_ms)" "$(field "$work/magnet.json" p99_ms)"
printf "%-10s %10.1f %8s %8s\n" kvstore "$k" "$(field "$work/kv.json" p50_ms)" "$(field "$work/kv.json" p99_ms)"
awk -v m="$m" -v k="$k" 'BEGIN { printf "ratio magnetd/kvstore: %.2fx (goal >= 0.5x)\n", m / k }'
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
