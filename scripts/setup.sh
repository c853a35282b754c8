#!/usr/bin/env bash
# Installs everything MAGNET needs on a fresh Debian machine: system libraries for
# the Rust build (clang for bindgen, protoc for prost, RocksDB to link against) and
# CometBFT v0.38 built with `go install`. Idempotent: skips what is already there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

COMETBFT_VERSION="${COMETBFT_VERSION:-v0.38.19}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_pkgs=()
for pkg in libclang-dev protobuf-compiler librocksdb-dev libsnappy-dev liblz4-dev libzstd-dev build-essential pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup first" >&2
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  echo "setup: go not found; CometBFT is installed with 'go install' and needs Go >= 1.22" >&2
  exit 1
fi

have=""
if command -v cometbft >/dev/null 2>&1; then have="$(cometbft version 2>/dev/null || true)"; fi
if [ "v$have" != "$COMETBFT_VERSION" ] && [ "$have" != "$COMETBFT_VERSION" ]; then
  echo "setup: installing CometBFT $COMETBFT_VERSION with go install (found: '${have:-none}')"
  go install "github.com/cometbft/cometbft/cmd/cometbft@${COMETBFT_VERSION}"
fi
echo "setup: cometbft $(cometbft version), $(cargo --version), $(protoc --version)"
