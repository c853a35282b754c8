#!/usr/bin/env bash
# The main job: installs what is missing, builds magnetd and magnet-worker, brings up
# a 4-validator localnet (4 CometBFT + 4 magnetd processes on 127.0.0.2-5, 60 s epochs),
# sends real signed bank transfers through it, then runs two workers that register,
# train tiny BitNet models, post their compute, commit-reveal their test loss, collect
# epoch rewards and serve a model (localnet/workers.sh); and shows every node agreeing
# on balances and app hash.
# Runs until Ctrl-C (or for LOCALNET_DURATION seconds), then stops every process.
#   localnet/run.sh [DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/env.sh
bash scripts/setup.sh
cargo build --locked --bin magnetd --bin magnet-worker
export MAGNETD_BIN="$CARGO_TARGET_DIR/debug/magnetd"
export MAGNET_WORKER_BIN="$CARGO_TARGET_DIR/debug/magnet-worker"
export COMETBFT_BIN="$(command -v cometbft)"
dir="${1:-$root/localnet/.run}"
n=4
LOCALNET_COMPUTE_PARAMS='{"epoch_length_secs":60,"commit_window_secs":15,"reveal_window_secs":15}' \
  bash localnet/setup.sh "$dir" "$n" 4
trap 'kill "$(cat "$dir/worker0/serve.pid" 2>/dev/null)" 2>/dev/null; bash "$root/localnet/stop.sh" "$dir"; echo "localnet: stopped"' EXIT INT TERM
bash localnet/start.sh "$dir"
nodes=(); for i in $(seq 0 $((n-1))); do nodes+=("tcp://127.0.0.$((2+i)):26657"); done
md() { "$MAGNETD_BIN" "$@"; }

echo "localnet: waiting for the first blocks"
for _ in $(seq 1 60); do
  h=$(md status --node "${nodes[0]}" -o json 2>/dev/null | sed -n 's/.*"latest_block_height":"\([0-9]*\)".*/\1/p' || true)
  [ "${h:-0}" -ge 2 ] && break; sleep 1
done
to="$(md keys show user1 -a --home "$dir/client")"
for i in 0 1 2; do
  md tx bank send user0 "$to" "$(( (i+1) * 1000 ))umag" --home "$dir/client" --node "${nodes[$i]}" -y
done
echo "localnet: balance of user1 on every node"
for nd in "${nodes[@]}"; do echo "  $nd: $(md query bank balances "$to" --node "$nd" -o json)"; done
bash localnet/workers.sh "$dir" "${nodes[1]}" "${nodes[2]}"
for i in 2 3; do
  a="$(md keys show "user$i" -a --home "$dir/client")"
  echo "localnet: worker user$i on every node:"
  for nd in "${nodes[@]}"; do echo "  $nd: $(md query bank balances "$a" --node "$nd" -o json)"; done
done

end=$(( $(date +%s) + ${LOCALNET_DURATION:-1000000000} ))
while [ "$(date +%s)" -lt "$end" ]; do
  line=""
  for nd in "${nodes[@]}"; do
    st=$(md status --node "$nd" -o json 2>/dev/null || echo '{}')
    h=$(echo "$st" | sed -n 's/.*"latest_block_height":"\([0-9]*\)".*/\1/p' || true)
    a=$(echo "$st" | sed -n 's/.*"latest_app_hash":"\([0-9a-f]\{8\}\).*/\1/p')
    line="$line  h=${h:-?} app=${a:-?}"
  done
  echo "localnet:$line"
  sleep 5
done
