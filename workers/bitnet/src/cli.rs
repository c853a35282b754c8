//! `magnet-worker` subcommands owned by magnet-bitnet.

/// Subcommands of magnet-bitnet (flattened into `magnet-worker`).
#[derive(clap::Subcommand, Debug)]
pub enum Command {}

/// Runs one subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {}
}
