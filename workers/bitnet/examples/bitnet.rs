//! The bitnet subcommands of `magnet-worker` without building the whole worker:
//! `cargo run -p magnet-bitnet --example bitnet -- train --config train.toml`.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "bitnet")]
struct Cli {
    #[command(subcommand)]
    command: magnet_bitnet::cli::Command,
}

fn main() -> anyhow::Result<()> {
    magnet_bitnet::cli::run(Cli::parse().command)
}
