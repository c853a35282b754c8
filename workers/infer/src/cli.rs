//! `magnet-worker` subcommands owned by magnet-infer.

/// Subcommands of magnet-infer (flattened into `magnet-worker`).
#[derive(clap::Subcommand, Debug)]
pub enum Command {}

/// Runs one subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {}
}
