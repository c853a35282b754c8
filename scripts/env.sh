# Sourced by every MAGNET script: where things build and which system libraries to link.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/magnet-target}"
# rocksdb 0.21 links Debian's librocksdb-dev instead of compiling RocksDB (25 min -> seconds).
export ROCKSDB_LIB_DIR="${ROCKSDB_LIB_DIR:-/usr/lib/x86_64-linux-gnu}"
export SNAPPY_LIB_DIR="${SNAPPY_LIB_DIR:-/usr/lib/x86_64-linux-gnu}"
export PATH="$HOME/go/bin:/usr/local/go/bin:$HOME/.cargo/bin:$PATH"
