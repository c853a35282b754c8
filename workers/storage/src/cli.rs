//! `magnet-worker` subcommands owned by magnet-storage (storage and p2p).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

/// Subcommands of magnet-storage (flattened into `magnet-worker`).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a storage node: Storage + P2p gRPC over TLS 1.3 and the repair daemon.
    StorageNode(NodeArgs),
    /// Store and read objects on storage nodes.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// SSD provisioning test (4 KiB random I/O); prints the JSON report a worker submits when
    /// registering for a storage tier.
    Provision(crate::provision::ProvisionArgs),
    /// Benchmark erasure coding (encode / decode with 2 lost) against memcpy.
    BenchStorage(crate::bench::StorageBenchArgs),
    /// Benchmark the p2p transport: signed RPC round trips and a checkpoint transfer over TLS.
    BenchP2p(crate::bench::P2pBenchArgs),
}

/// Options of a storage node.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Data dir: node key, TLS certificate, pins, shards, manifests.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: String,
    /// Other storage nodes (repeatable).
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Repair daemon period in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub repair_interval_secs: f64,
    /// A holder not heard from for this long is stale, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub stale_after_secs: f64,
    /// Replication target per shard.
    #[arg(long, default_value_t = 3)]
    pub replicas_min: usize,
    /// Replication ceiling per shard.
    #[arg(long, default_value_t = 5)]
    pub replicas_max: usize,
    /// Repair traffic budget, MiB/s.
    #[arg(long, default_value_t = 32)]
    pub repair_mib_per_sec: u64,
}

impl NodeArgs {
    /// The node configuration these options describe.
    pub fn config(&self) -> anyhow::Result<crate::node::StorageNodeConfig> {
        let mut cfg = crate::node::StorageNodeConfig::new(
            self.data_dir.clone(),
            self.listen.clone(),
            self.peers.clone(),
        );
        cfg.repair_interval = Duration::try_from_secs_f64(self.repair_interval_secs)
            .context("--repair-interval-secs")?;
        cfg.stale_after =
            Duration::try_from_secs_f64(self.stale_after_secs).context("--stale-after-secs")?;
        anyhow::ensure!(
            !cfg.repair_interval.is_zero(),
            "--repair-interval-secs must be positive"
        );
        anyhow::ensure!(
            (1..=self.replicas_max).contains(&self.replicas_min),
            "need 1 <= --replicas-min <= --replicas-max"
        );
        cfg.replicas_min = self.replicas_min;
        cfg.replicas_max = self.replicas_max;
        cfg.repair_bytes_per_sec = self.repair_mib_per_sec.saturating_mul(1024 * 1024);
        Ok(cfg)
    }
}

/// Object commands.
#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Erasure-code a file onto the nodes; prints its manifest (JSON).
    Put {
        /// Client data dir (key, pins).
        #[arg(long)]
        data_dir: PathBuf,
        /// Storage nodes (repeatable).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// File to store.
        file: PathBuf,
    },
    /// Read an object back from any 4 shards.
    Get {
        /// Client data dir (key, pins).
        #[arg(long)]
        data_dir: PathBuf,
        /// Storage nodes (repeatable).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// Object id (hex SHA-256).
        object_id: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Copies of each shard of each object on the given nodes.
    Status {
        /// Client data dir (key, pins).
        #[arg(long)]
        data_dir: PathBuf,
        /// Storage nodes (repeatable).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

fn client(
    data_dir: &std::path::Path,
    nodes: Vec<String>,
) -> anyhow::Result<crate::client::ObjectClient> {
    let identity = magnet_p2p::node::NodeIdentity::load(
        data_dir,
        magnet_p2p::node::NodeIdentity::mode_from_env(),
        magnet_p2p::auth::DEFAULT_WINDOW,
    )?;
    Ok(crate::client::ObjectClient::new(identity, nodes))
}

/// Runs a storage node until killed.
pub fn run_node(args: &NodeArgs) -> anyhow::Result<()> {
    init_tracing();
    let cfg = args.config()?;
    runtime()?.block_on(async move {
        let node = crate::node::start(cfg).await?;
        println!("{} serving on {}", node.node_id, node.server.addr);
        tokio::signal::ctrl_c().await.context("wait for ctrl-c")?;
        node.daemon.abort();
        node.server.shutdown().await;
        Ok(())
    })
}

/// Runs one subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::StorageNode(args) => run_node(&args),
        Command::Storage(StorageCommand::Put {
            data_dir,
            nodes,
            file,
        }) => {
            init_tracing();
            let bytes = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            runtime()?.block_on(async {
                let manifest = client(&data_dir, nodes)?.put(&bytes).await?;
                println!("{}", serde_json::to_string_pretty(&manifest)?);
                Ok(())
            })
        }
        Command::Storage(StorageCommand::Get {
            data_dir,
            nodes,
            object_id,
            out,
        }) => {
            init_tracing();
            runtime()?.block_on(async {
                let bytes = client(&data_dir, nodes)?.get(&object_id).await?;
                std::fs::write(&out, &bytes).with_context(|| format!("write {}", out.display()))?;
                println!("{} bytes -> {}", bytes.len(), out.display());
                Ok(())
            })
        }
        Command::Storage(StorageCommand::Status { data_dir, nodes }) => {
            init_tracing();
            runtime()?.block_on(async {
                let c = client(&data_dir, nodes.clone())?;
                let first = nodes.first().context("no node")?;
                for m in c.peers().list_manifests(first).await? {
                    let counts = c.replica_counts(&m, &nodes).await;
                    println!(
                        "{} {} bytes copies per shard {:?}",
                        m.object_id, m.object_len, counts
                    );
                }
                Ok(())
            })
        }
        Command::Provision(args) => crate::provision::run(&args),
        Command::BenchStorage(args) => crate::bench::storage(&args),
        Command::BenchP2p(args) => runtime()?.block_on(crate::bench::p2p(&args)),
    }
}
