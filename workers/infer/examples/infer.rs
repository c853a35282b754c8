//! The magnet-infer subcommands as a standalone binary, so they can be built in release without
//! the rest of `magnet-worker`: `cargo run --release -p magnet-infer --example infer -- bench-infer`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "infer")]
struct Cli {
    #[command(subcommand)]
    command: magnet_infer::cli::Command,
}

fn main() -> anyhow::Result<()> {
    magnet_infer::cli::run(Cli::parse().command)
}
