#!/usr/bin/env bash
# Two workers doing real work against a running localnet made by setup.sh (users
# user2/user3 of DIR/client). Each worker:
#   1. registers on chain (cpu_only tier, bond, its hardware profile),
#   2. trains a `tiny` BitNet b1.58 model with burn on real text found on this machine
#      (falls back to generated text), exporting it in Hugging Face format,
#   3. posts its training compute (steps x parameters, SHA-256 of the checkpoint),
#   4. commits to its held-out test loss, reveals it after the commit window,
#   5. collects its reward once the epoch settled.
# Worker 0 then serves its model over the OpenAI-compatible API and answers a completion.
#   localnet/workers.sh DIR RPC0 RPC1
# Env: MAGNETD_BIN, MAGNET_WORKER_BIN, WORKER_STEPS (40)
set -euo pipefail
dir="$1"; rpc=("$2" "$3")
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
md() { "$MAGNETD_BIN" "$@"; }
mw="$MAGNET_WORKER_BIN"
home="$dir/client"
steps="${WORKER_STEPS:-40}"
field() { sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",]*\)\"\{0,1\}.*/\1/p" | head -1; }
tx() { local node="$1"; shift; md tx compute "$@" --home "$home" --node "$node" -y -o json | field code; }

for w in 0 1; do
  key="user$((w+2))"
  echo "worker$w ($key): register cpu_only via ${rpc[$w]}: code $(tx "${rpc[$w]}" register-worker "$key" --tier cpu_only --bond 100000000umag --cpu-cores "$(nproc)" --ram-mb $(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 )))"
done

declare -a loss params
for w in 0 1; do
  out="$dir/worker$w"; mkdir -p "$out"
  cat > "$out/train.toml" <<TOML
out_dir = "$out/run"
seed = $((w + 1))
steps = $steps
batch_size = 8
seq_len = 64
lr = 4e-3
val_every = 20
progress = false

[model]
preset = "tiny"

[data]
source = "auto"
max_bytes = 300000
vocab_size = 512
TOML
  echo "worker$w: training a tiny BitNet b1.58 model ($steps steps, burn on CPU)"
  "$mw" train --config "$out/train.toml" > "$out/report.json"
  params[$w]=$(field params < "$out/report.json")
  loss[$w]=$(field test_loss < "$out/report.json")
  hash=$(sha256sum "$out/run/checkpoint.safetensors" | cut -d' ' -f1)
  echo "worker$w: trained ${params[$w]} parameters, held-out test loss ${loss[$w]}, checkpoint $hash"
  echo "worker$w: submit-contribution: code $(tx "${rpc[$w]}" submit-contribution "user$((w+2))" --steps "$steps" --model-params "${params[$w]}" --checkpoint-hash "$hash")"
done

task="localnet-eval-$(date +%s)"
nonce() { printf '%064x' "$((1000 + $1))"; }
for w in 0 1; do
  echo "worker$w: commit test_loss=${loss[$w]} to task $task: code $(tx "${rpc[$w]}" commit "user$((w+2))" "$task" --result "test_loss=${loss[$w]}" --nonce-hex "$(nonce $w)")"
done
echo "workers: waiting for the commit window to close, then revealing"
for w in 0 1; do
  for _ in $(seq 1 120); do
    c=$(tx "${rpc[$w]}" reveal "user$((w+2))" "$task" --result "test_loss=${loss[$w]}" --nonce-hex "$(nonce $w)" 2>/dev/null || true)
    [ "$c" = "0" ] && { echo "worker$w: revealed"; break; }
    sleep 2
  done
done

epoch=$(md query compute epoch --node "${rpc[0]}" -o json | field index)
echo "workers: waiting for epoch $epoch to settle"
for _ in $(seq 1 120); do
  md query compute settlement "$epoch" --node "${rpc[0]}" -o json >/dev/null 2>&1 && break
  sleep 2
done
for w in 0 1; do
  a=$(md keys show "user$((w+2))" -a --home "$home")
  r=$(md query compute reward "$epoch" "$a" --node "${rpc[$w]}" -o json 2>/dev/null | field reward)
  echo "worker$w: reward for epoch $epoch: ${r:-0}umag; claim-rewards: code $(tx "${rpc[$w]}" claim-rewards "user$((w+2))")"
done

port=18080
"$mw" serve --model "$dir/worker0/run/hf" --model-name tiny --listen "127.0.0.1:$port" > "$dir/worker0/serve.log" 2>&1 &
echo $! > "$dir/worker0/serve.pid"
for _ in $(seq 1 60); do curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1 && break; sleep 0.5; done
echo "worker0: serving; POST /v1/completions:"
curl -s "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
  -d '{"model":"tiny","prompt":"fn main() {","max_tokens":24,"temperature":0}' || true
echo
