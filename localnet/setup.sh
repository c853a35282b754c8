#!/usr/bin/env bash
# Creates an N-validator localnet in DIR with the operator commands a real network
# uses: `magnetd init`, `genesis add-account`, `genesis gentx`, `genesis collect`.
# Node i listens on 127.0.0.(IP_BASE+i) with the standard ports 26656/26657/26658.
# Test users user0..user(U-1) live in DIR/client's keyring, funded at genesis.
#
#   localnet/setup.sh DIR [N=4] [USERS=8]
# Env: MAGNETD_BIN, LOCALNET_IP_BASE (2), LOCALNET_CHAIN_ID (magnet-localnet-1),
#      LOCALNET_TIMEOUT_COMMIT (500ms), LOCALNET_COMPUTE_PARAMS (a JSON merge patch of the
#      x-compute genesis params, e.g. '{"epoch_length_secs":30}')
set -euo pipefail
dir="$1"; n="${2:-4}"; users="${3:-8}"
magnetd="${MAGNETD_BIN:-magnetd}"
base="${LOCALNET_IP_BASE:-2}"
chain="${LOCALNET_CHAIN_ID:-magnet-localnet-1}"
tc="${LOCALNET_TIMEOUT_COMMIT:-500ms}"
q() { "$magnetd" "$@" >/dev/null; }

rm -rf "$dir"; mkdir -p "$dir/gentx" "$dir/client"
for i in $(seq 0 $((n-1))); do
  ip="127.0.0.$((base+i))"
  q init "node$i" --home "$dir/node$i" --chain-id "$chain" \
    --p2p-laddr "tcp://$ip:26656" --rpc-laddr "tcp://$ip:26657" --abci-addr "tcp://$ip:26658" \
    --timeout-commit "$tc"
  q keys add "val$i" --home "$dir/node$i"
done
for j in $(seq 0 $((users-1))); do
  q keys add "user$j" --home "$dir/client"
done
for i in $(seq 0 $((n-1))); do
  q genesis add-account "$("$magnetd" keys show "val$i" -a --home "$dir/node$i")" 1000000000000umag --home "$dir/node0"
done
for j in $(seq 0 $((users-1))); do
  q genesis add-account "$("$magnetd" keys show "user$j" -a --home "$dir/client")" 1000000000000umag --home "$dir/node0"
done
if [ -n "${LOCALNET_COMPUTE_PARAMS:-}" ]; then
  q genesis set-params --compute "$LOCALNET_COMPUTE_PARAMS" --home "$dir/node0"
fi
for i in $(seq 1 $((n-1))); do cp "$dir/node0/config/genesis.json" "$dir/node$i/config/genesis.json"; done
for i in $(seq 0 $((n-1))); do
  ip="127.0.0.$((base+i))"
  q genesis gentx "val$i" --power 10 --p2p-external "$ip:26656" --home "$dir/node$i"
  cp "$dir/node$i"/config/gentx/*.json "$dir/gentx/"
done
for i in $(seq 0 $((n-1))); do
  q genesis collect --gentx-dir "$dir/gentx" --home "$dir/node$i"
done
# Every node must hold the byte-identical genesis.
sum0="$(sha256sum < "$dir/node0/config/genesis.json")"
for i in $(seq 1 $((n-1))); do
  [ "$(sha256sum < "$dir/node$i/config/genesis.json")" = "$sum0" ] || { echo "genesis of node$i differs" >&2; exit 1; }
done
echo "localnet: $n validators in $dir (127.0.0.$base..127.0.0.$((base+n-1))), chain $chain, $users funded users"
