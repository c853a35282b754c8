//! `magnet-storage-node`: the `magnet-worker storage-node` subcommand as its own binary, so that
//! integration tests can spawn real storage processes.

use clap::Parser;

/// MAGNET storage node.
#[derive(Parser, Debug)]
#[command(name = "magnet-storage-node", version, about)]
struct Cli {
    #[command(flatten)]
    args: magnet_storage::cli::NodeArgs,
}

fn main() -> anyhow::Result<()> {
    magnet_storage::cli::run_node(&Cli::parse().args)
}
