//! `magnet-worker` subcommands owned by magnet-storage.

/// Subcommands of magnet-storage (flattened into `magnet-worker`).
#[derive(clap::Subcommand, Debug)]
pub enum Command {}

/// Runs one subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {}
}
