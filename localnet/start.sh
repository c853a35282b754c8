#!/usr/bin/env bash
# Starts every node of a localnet made by setup.sh: one magnetd (ABCI app) and one
# cometbft process per validator. Logs and pids go to DIR/nodeI/{magnetd,cometbft}.{log,pid}.
#   localnet/start.sh DIR
set -euo pipefail
dir="$1"
magnetd="${MAGNETD_BIN:-magnetd}"
cometbft="${COMETBFT_BIN:-cometbft}"
for h in "$dir"/node*; do
  "$magnetd" start --home "$h" >"$h/magnetd.log" 2>&1 &
  echo $! >"$h/magnetd.pid"
done
sleep 0.5
for h in "$dir"/node*; do
  "$cometbft" start --home "$h" >"$h/cometbft.log" 2>&1 &
  echo $! >"$h/cometbft.pid"
done
echo "localnet: started $(ls -d "$dir"/node* | wc -l) validators"
