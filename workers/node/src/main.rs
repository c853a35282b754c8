//! `magnet-worker`: one binary for everything a worker node does. Each library owns the
//! subcommands of its field; this file only gathers them.

use clap::Parser;

/// MAGNET worker node.
#[derive(Parser, Debug)]
#[command(name = "magnet-worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Bitnet(magnet_bitnet::cli::Command),
    #[command(flatten)]
    Infer(magnet_infer::cli::Command),
    #[command(flatten)]
    Storage(magnet_storage::cli::Command),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bitnet(cmd) => magnet_bitnet::cli::run(cmd),
        Command::Infer(cmd) => magnet_infer::cli::run(cmd),
        Command::Storage(cmd) => magnet_storage::cli::run(cmd),
    }
}
