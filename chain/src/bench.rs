//! placeholder replaced below
use clap::Args;
#[derive(Args)]
pub struct BenchArgs {}
pub async fn run(_a: BenchArgs, _h: &std::path::Path, _j: bool) -> anyhow::Result<()> { anyhow::bail!("bench: not built yet") }
