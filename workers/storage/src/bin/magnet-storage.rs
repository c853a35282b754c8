//! `magnet-storage`: every storage/p2p subcommand of `magnet-worker` (`provision`, `storage-node`,
//! `storage put/get/status`, `bench-storage`, `bench-p2p`) without building the other worker crates.

use clap::Parser;

/// MAGNET storage and p2p tools.
#[derive(Parser, Debug)]
#[command(name = "magnet-storage", version, about)]
struct Cli {
    #[command(subcommand)]
    command: magnet_storage::cli::Command,
}

fn main() -> anyhow::Result<()> {
    magnet_storage::cli::run(Cli::parse().command)
}
