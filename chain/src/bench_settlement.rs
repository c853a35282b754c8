//! `magnetd bench-settlement`: the cost of settling one x-compute epoch inside
//! FinalizeBlock, with N registered workers that all contributed.
//!
//! A real [`App`] on a temporary RocksDB: N funded accounts at genesis, N signed
//! `MsgRegisterWorker` txs, then per run N signed `MsgSubmitContribution` txs, then one
//! empty block whose time crosses the epoch boundary. The figure is the wall time of that
//! block's FinalizeBlock (settlement = emission, N reward transfers, the record) and of
//! its Commit; an empty block that settles nothing is timed for comparison.

// Measurement code, not consensus code.
#![allow(clippy::arithmetic_side_effects)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use cosmrs::crypto::secp256k1::SigningKey;
use magnet_chain::client::{GasSettings, TxSigner};
use magnet_chain::genesis::{AppGenesis, GenesisAccount, GenesisCoin};
use magnet_chain::App;
use magnet_proto::magnet::compute::v1 as pb;
use prost::Message;
use sha2::{Digest, Sha256};
use tendermint::abci::types::CommitInfo;
use tendermint::v0_38::abci::request;

#[derive(Args)]
pub struct SettlementArgs {
    /// Workers that contribute in the settled epoch.
    #[arg(long, default_value_t = 10_000)]
    workers: usize,
    /// Epochs settled (each after N fresh contributions).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Txs per setup block.
    #[arg(long, default_value_t = 1_000)]
    block_txs: usize,
}

const CHAIN_ID: &str = "magnet-bench-settlement";
const T0: i64 = 1_700_000_000;

fn time(t: i64) -> Result<tendermint::Time> {
    Ok(tendermint::Time::from_unix_timestamp(t, 0)?)
}

struct Bench {
    app: App,
    height: u64,
    now: i64,
}

impl Bench {
    async fn block(&mut self, dt: i64, txs: Vec<Vec<u8>>) -> Result<(Duration, Duration, usize)> {
        self.height += 1;
        self.now += dt;
        let req = request::FinalizeBlock {
            txs: txs.into_iter().map(Bytes::from).collect(),
            decided_last_commit: CommitInfo {
                round: Default::default(),
                votes: vec![],
            },
            misbehavior: vec![],
            hash: tendermint::Hash::None,
            height: self.height.try_into()?,
            time: time(self.now)?,
            next_validators_hash: tendermint::Hash::None,
            proposer_address: tendermint::account::Id::new([7; 20]),
        };
        let t = Instant::now();
        let r = self.app.finalize_block(req).await?;
        let finalize = t.elapsed();
        let failed = r.tx_results.iter().filter(|x| x.code.is_err()).count();
        if let Some(bad) = r.tx_results.iter().find(|x| x.code.is_err()) {
            anyhow::bail!("setup tx failed at height {}: {}", self.height, bad.log);
        }
        let t = Instant::now();
        self.app.commit().await?;
        Ok((finalize, t.elapsed(), failed))
    }
}

pub async fn run(args: SettlementArgs, json: bool) -> Result<()> {
    let n = args.workers;
    let seeds: Vec<[u8; 32]> = (0..n)
        .map(|i| Sha256::digest(format!("bench-worker-{i}")).into())
        .collect();
    let key = |i: usize| SigningKey::from_slice(&seeds[i]).map_err(|e| anyhow::anyhow!("{e}"));
    let keys: Vec<SigningKey> = (0..n).map(key).collect::<Result<_>>()?;
    let addrs: Vec<String> = keys
        .iter()
        .map(|k| {
            Ok(k.public_key()
                .account_id("magnet")
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .to_string())
        })
        .collect::<Result<_>>()?;
    let mut g = AppGenesis {
        accounts: addrs
            .iter()
            .map(|a| GenesisAccount {
                address: a.clone(),
                coins: vec![GenesisCoin {
                    denom: "umag".into(),
                    amount: "1000000000000".into(),
                }],
            })
            .collect(),
        ..Default::default()
    };
    g.compute.epoch_length_secs = 600;
    let bond = *g.compute.min_bond.get(magnet_x_compute::Tier::CpuOnly);
    let dir = tempfile::tempdir()?;
    let storage = cnidarium::Storage::load(dir.path().join("db"), vec![])
        .await
        .context("opening bench storage")?;
    let mut app = App::new(storage);
    app.init_chain(request::InitChain {
        time: time(T0)?,
        chain_id: CHAIN_ID.into(),
        consensus_params: magnet_chain::params::cometbft_default_consensus_params(),
        validators: vec![],
        app_state_bytes: serde_json::to_vec(&g)?.into(),
        initial_height: 1u32.into(),
    })
    .await?;
    let mut b = Bench {
        app,
        height: 0,
        now: T0,
    };
    let mut seq = vec![0u64; n];
    let sign = |i: usize, seq: u64, type_url: &str, msg: Vec<u8>| -> Result<Vec<u8>> {
        let mut s = TxSigner::new(key(i)?, CHAIN_ID, i as u64, seq)?;
        s.sign_msgs(
            vec![cosmrs::Any {
                type_url: type_url.into(),
                value: msg,
            }],
            "",
            GasSettings::default(),
        )
    };
    let setup = Instant::now();
    let mut txs = Vec::with_capacity(n);
    for i in 0..n {
        let msg = pb::MsgRegisterWorker {
            owner: addrs[i].clone(),
            tier: "cpu_only".into(),
            bond_amount: bond.to_string(),
            hardware: Some(pb::HardwareProfile::default()),
        };
        txs.push(sign(
            i,
            seq[i],
            magnet_chain::tx::MSG_REGISTER_WORKER_TYPE_URL,
            msg.encode_to_vec(),
        )?);
        seq[i] += 1;
    }
    for chunk in txs.chunks(args.block_txs) {
        b.block(1, chunk.to_vec()).await?;
    }
    // Settle the epoch the registrations fell into, so each run starts a fresh epoch.
    b.block(600, vec![]).await?;
    if !json {
        println!(
            "setup: {n} workers registered in {:.1}s",
            setup.elapsed().as_secs_f64()
        );
    }
    let mut results = Vec::new();
    for run in 0..args.runs {
        let mut txs = Vec::with_capacity(n);
        for i in 0..n {
            let msg = pb::MsgSubmitContribution {
                owner: addrs[i].clone(),
                steps: 10 + (i as u64 % 7),
                model_params: 1_000_000,
                checkpoint_hash: hex::encode(Sha256::digest(format!("ckpt-{run}-{i}"))),
            };
            txs.push(sign(
                i,
                seq[i],
                magnet_chain::tx::MSG_SUBMIT_CONTRIBUTION_TYPE_URL,
                msg.encode_to_vec(),
            )?);
            seq[i] += 1;
        }
        for chunk in txs.chunks(args.block_txs) {
            b.block(1, chunk.to_vec()).await?;
        }
        let (idle_f, idle_c, _) = b.block(1, vec![]).await?;
        let epoch = magnet_chain::compute::epoch(&b.app.storage().latest_snapshot()).await?;
        let dt = epoch.start_time + 600 - b.now;
        let (fin, com, _) = b.block(dt.max(1), vec![]).await?;
        let rec =
            magnet_chain::compute::settlement(&b.app.storage().latest_snapshot(), epoch.index)
                .await?
                .context("epoch did not settle")?;
        anyhow::ensure!(
            rec.contributors == n as u64,
            "settled {} of {n} workers",
            rec.contributors
        );
        results.push((fin, com, idle_f, idle_c));
        if !json {
            println!(
                "run {run}: settle epoch {} ({n} workers): FinalizeBlock {:.1} ms, Commit {:.1} ms (empty block: {:.2} ms / {:.2} ms)",
                epoch.index,
                fin.as_secs_f64() * 1e3,
                com.as_secs_f64() * 1e3,
                idle_f.as_secs_f64() * 1e3,
                idle_c.as_secs_f64() * 1e3
            );
        }
        // Payout is lazy: every worker collects its reward with its next heartbeat.
        let mut hb = Vec::with_capacity(n);
        for i in 0..n {
            let msg = pb::MsgHeartbeat {
                owner: addrs[i].clone(),
            };
            hb.push(sign(
                i,
                seq[i],
                magnet_chain::tx::MSG_HEARTBEAT_TYPE_URL,
                msg.encode_to_vec(),
            )?);
            seq[i] += 1;
        }
        let mut claim_time = Duration::ZERO;
        for chunk in hb.chunks(args.block_txs) {
            claim_time += b.block(1, chunk.to_vec()).await?.0;
        }
        let pot =
            magnet_chain::rewards::pot(&b.app.storage().latest_snapshot(), epoch.index).await?;
        anyhow::ensure!(
            pot.is_none(),
            "epoch {} still open after every worker claimed",
            epoch.index
        );
        if !json {
            println!(
                "        {n} heartbeats that claim: {:.1} ms of FinalizeBlock in {} blocks ({:.0} µs per claiming tx, signature check included)",
                claim_time.as_secs_f64() * 1e3,
                n.div_ceil(args.block_txs),
                claim_time.as_secs_f64() * 1e6 / n as f64
            );
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut fins: Vec<f64> = results.iter().map(|r| ms(r.0)).collect();
    fins.sort_by(|a, b| a.total_cmp(b));
    let median = fins.get(fins.len() / 2).copied().unwrap_or(0.0);
    if json {
        println!(
            "{}",
            serde_json::json!({"workers": n, "finalize_ms": fins, "median_finalize_ms": median,
                "commit_ms": results.iter().map(|r| ms(r.1)).collect::<Vec<_>>()})
        );
    } else {
        println!(
            "settlement of {n} workers inside FinalizeBlock: median {median:.1} ms (goal < 50 ms)"
        );
    }
    Ok(())
}
