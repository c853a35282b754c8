//! `magnetd bench`: sustained committed tx/s and inclusion latency against a running
//! localnet, for magnetd's bank sends or CometBFT's built-in `kvstore` app — the same
//! load procedure for both, so `localnet/bench.sh` can print the ratio.
//!
//! Transactions are prepared (signed) before the clock starts; `senders` tasks then
//! submit them with `broadcast_tx_sync`, each sender pinned to one node so its
//! sequence numbers reach one mempool in order. A watcher reads every new block from
//! node 0 and stamps each tx's inclusion time; latency = inclusion − submission.

// Client-side measurement code, not consensus code: float and counter arithmetic is fine here.
#![allow(clippy::arithmetic_side_effects)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use sha2::{Digest, Sha256};
use tendermint_rpc::Client;
use tokio::sync::Mutex;

use magnet_chain::client::{GasSettings, Keyring, Node};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Target {
    /// magnetd: signed Cosmos bank sends.
    Magnet,
    /// CometBFT's built-in kvstore app: `key=value` txs.
    Kvstore,
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = Target::Magnet)]
    target: Target,
    /// CometBFT RPC endpoints, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// Total transactions to submit.
    #[arg(long, default_value_t = 4000)]
    txs: usize,
    /// Concurrent senders (magnet: keys user0..user{N-1} of the keyring in --home).
    #[arg(long, default_value_t = 16)]
    senders: usize,
    /// Give up waiting for inclusion after this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout_secs: u64,
}

fn tx_hash(tx: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(tx))
}

async fn prepare(args: &BenchArgs, home: &Path, nodes: &[Node]) -> Result<Vec<Vec<Vec<u8>>>> {
    let per = args.txs.div_ceil(args.senders);
    let mut out = Vec::with_capacity(args.senders);
    match args.target {
        Target::Kvstore => {
            let run = std::process::id();
            for s in 0..args.senders {
                out.push(
                    (0..per)
                        .map(|i| format!("bench{run}s{s}i{i}=v{i}").into_bytes())
                        .collect(),
                );
            }
        }
        Target::Magnet => {
            let kr = Keyring::open(home);
            let chain_id = nodes[0].chain_id().await?;
            let addrs: Vec<String> = (0..args.senders)
                .map(|s| kr.get(&format!("user{s}")).map(|k| k.address))
                .collect::<Result<_>>()
                .with_context(|| {
                    format!(
                        "bench needs keys user0..user{} in {}",
                        args.senders - 1,
                        home.display()
                    )
                })?;
            for s in 0..args.senders {
                let key = kr.get(&format!("user{s}"))?.signing_key()?;
                let mut signer = nodes[s % nodes.len()]
                    .signer_for(key, Some(&chain_id))
                    .await?;
                let to = &addrs[(s + 1) % addrs.len()];
                let mut txs = Vec::with_capacity(per);
                for _ in 0..per {
                    txs.push(signer.sign_send(
                        to,
                        &[("umag".into(), 1)],
                        "",
                        GasSettings::default(),
                    )?);
                }
                out.push(txs);
            }
        }
    }
    Ok(out)
}

pub async fn run(args: BenchArgs, home: &Path, json: bool) -> Result<()> {
    if args.senders == 0 || args.txs == 0 {
        bail!("--senders and --txs must be positive");
    }
    let nodes: Vec<Node> = args
        .nodes
        .iter()
        .map(|u| Node::connect(u))
        .collect::<Result<_>>()?;
    let batches = prepare(&args, home, &nodes).await?;
    let total: usize = batches.iter().map(Vec::len).sum();

    let sent: Arc<Mutex<HashMap<String, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(total)));
    let included: Arc<Mutex<HashMap<String, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(total)));
    let start_height = nodes[0].latest_height().await?;
    let watcher_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let watcher = {
        let node = nodes[0].clone();
        let included = included.clone();
        let stop = watcher_stop.clone();
        tokio::spawn(async move {
            let mut next = start_height + 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let latest = node.latest_height().await.unwrap_or(0);
                while next <= latest {
                    let Ok(h) = tendermint::block::Height::try_from(next) else {
                        break;
                    };
                    let Ok(b) = node.rpc.block(h).await else {
                        break;
                    };
                    let now = Instant::now();
                    let mut inc = included.lock().await;
                    for tx in b.block.data.iter() {
                        inc.insert(tx_hash(tx), now);
                    }
                    next += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let t0 = Instant::now();
    let rejected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (s, txs) in batches.into_iter().enumerate() {
        let node = nodes[s % nodes.len()].clone();
        let sent = sent.clone();
        let rejected = rejected.clone();
        tasks.push(tokio::spawn(async move {
            for tx in txs {
                let h = tx_hash(&tx);
                let at = Instant::now();
                match node.rpc.broadcast_tx_sync(tx).await {
                    Ok(r) if r.code.is_ok() => {
                        sent.lock().await.insert(h, at);
                    }
                    Ok(r) => {
                        if rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                            eprintln!("bench: rejected: code {} {}", r.code.value(), r.log);
                        }
                    }
                    Err(e) => {
                        if rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                            eprintln!("bench: broadcast error: {e}");
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let submit_secs = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        let done = {
            let s = sent.lock().await;
            let inc = included.lock().await;
            s.keys().all(|h| inc.contains_key(h))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.await?;

    let s = sent.lock().await;
    let inc = included.lock().await;
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut last = t0;
    let mut n_inc = 0usize;
    for (h, at) in s.iter() {
        if let Some(i) = inc.get(h) {
            n_inc += 1;
            last = last.max(*i);
            hist.record(u64::try_from(i.duration_since(*at).as_millis()).unwrap_or(u64::MAX))?;
        }
    }
    let secs = last.duration_since(t0).as_secs_f64().max(1e-9);
    let tps = n_inc as f64 / secs;
    let end_height = nodes[0].latest_height().await?;
    let report = serde_json::json!({
        "target": format!("{:?}", args.target).to_lowercase(),
        "submitted": total,
        "accepted": s.len(),
        "rejected": rejected.load(std::sync::atomic::Ordering::Relaxed),
        "committed": n_inc,
        "seconds": secs,
        "submit_seconds": submit_secs,
        "blocks": end_height.saturating_sub(start_height),
        "tps": tps,
        "p50_ms": hist.value_at_quantile(0.50),
        "p99_ms": hist.value_at_quantile(0.99),
        "max_ms": hist.max(),
    });
    if json {
        println!("{report}");
    } else {
        println!(
            "{:?}: {n_inc}/{total} committed in {secs:.2}s = {tps:.1} tx/s; inclusion latency p50 {} ms, p99 {} ms",
            args.target,
            hist.value_at_quantile(0.50),
            hist.value_at_quantile(0.99)
        );
    }
    if n_inc < s.len() {
        bail!(
            "{} accepted txs were not committed within {}s",
            s.len() - n_inc,
            args.timeout_secs
        );
    }
    Ok(())
}
