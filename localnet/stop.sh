#!/usr/bin/env bash
# Stops every process started by start.sh for DIR.
dir="$1"
for f in "$dir"/node*/cometbft.pid "$dir"/node*/magnetd.pid; do
  [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
done
sleep 1
for f in "$dir"/node*/cometbft.pid "$dir"/node*/magnetd.pid; do
  [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
  rm -f "$f"
done
