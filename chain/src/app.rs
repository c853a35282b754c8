//! The ABCI++ application: one owner of the chain state, driven request by request.
//!
//! `FinalizeBlock` executes the block on a `StateDelta` over the latest snapshot and
//! *prepares* the RocksDB write batch, which yields the JMT root returned as app hash.
//! `Commit` writes that batch atomically. If the process dies in between, nothing was
//! written: `Info` reports the last committed height and CometBFT replays the block.

use bytes::Bytes;
use cnidarium::{Snapshot, StagedWriteBatch, StateDelta, StateRead, StateWrite, Storage};
use prost::Message;
use tendermint::abci::types::ExecTxResult;
use tendermint::abci::{Code, Event, EventAttributeIndexExt};
use tendermint::v0_38::abci::{request, response};

use crate::error::{TxError, TxResult};
use crate::genesis::AppGenesis;
use crate::params::ChainParams;
use crate::{auth, bank, query, state_key, tx};

/// The version cnidarium reports before genesis has been committed.
const PRE_GENESIS: u64 = u64::MAX;

/// Deliberate crash points for crash-recovery tests (`MAGNETD_FAULT=point:height`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Abort in the middle of executing a block's transactions.
    MidFinalize,
    /// Abort after FinalizeBlock returned its app hash, before Commit persisted it.
    BeforeCommit,
}

#[derive(Debug, Clone, Copy)]
pub struct Fault {
    pub point: FaultPoint,
    pub height: u64,
}

impl Fault {
    pub fn from_env() -> Option<Fault> {
        let v = std::env::var("MAGNETD_FAULT").ok()?;
        let (p, h) = v.split_once(':')?;
        let point = match p {
            "mid-finalize" => FaultPoint::MidFinalize,
            "before-commit" => FaultPoint::BeforeCommit,
            _ => return None,
        };
        Some(Fault {
            point,
            height: h.parse().ok()?,
        })
    }
}

pub struct App {
    storage: Storage,
    /// Block executed by FinalizeBlock, waiting for Commit. (A Mutex only because
    /// RocksDB's write batch is `Send` but not `Sync`; there is never contention.)
    pending: std::sync::Mutex<Option<StagedWriteBatch>>,
    /// CheckTx state: committed state plus the txs accepted into the mempool since.
    mempool: StateDelta<Snapshot>,
    fault: Option<Fault>,
    sigs: tx::SigCache,
    /// Params and chain id of the committed state, reloaded after every commit.
    cached: Option<(ChainParams, String, i64)>,
}

fn tx_error_result(e: &TxError) -> ExecTxResult {
    ExecTxResult {
        code: Code::from(e.code()),
        log: e.to_string(),
        codespace: e.codespace().to_string(),
        ..Default::default()
    }
}

impl App {
    pub fn new(storage: Storage) -> Self {
        let mempool = StateDelta::new(storage.latest_snapshot());
        App {
            storage,
            pending: std::sync::Mutex::new(None),
            mempool,
            fault: Fault::from_env(),
            sigs: tx::SigCache::default(),
            cached: None,
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Last committed block height (0 before the first block).
    pub fn committed_height(&self) -> u64 {
        match self.storage.latest_version() {
            PRE_GENESIS => 0,
            v => v,
        }
    }

    pub async fn app_hash(&self) -> anyhow::Result<Vec<u8>> {
        if self.storage.latest_version() == PRE_GENESIS {
            return Ok(Vec::new());
        }
        Ok(self.storage.latest_snapshot().root_hash().await?.0.to_vec())
    }

    /// Aborts at the first block at or after the fault height that reaches `point`.
    fn maybe_crash(&self, point: FaultPoint, height: u64) {
        if let Some(f) = self.fault {
            if f.point == point && height >= f.height {
                tracing::error!(?point, height, "MAGNETD_FAULT: aborting on purpose");
                std::process::abort();
            }
        }
    }

    pub async fn info(&self, _req: request::Info) -> anyhow::Result<response::Info> {
        Ok(response::Info {
            data: "magnetd".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            app_version: 1,
            last_block_height: self.committed_height().try_into()?,
            last_block_app_hash: self.app_hash().await?.try_into()?,
        })
    }

    pub async fn init_chain(
        &mut self,
        req: request::InitChain,
    ) -> anyhow::Result<response::InitChain> {
        if self.storage.latest_version() != PRE_GENESIS {
            // CometBFT calls InitChain again if it crashed before block 1; genesis is
            // already committed (version 0), so answer with the same hash.
            tracing::info!("genesis already committed; InitChain is a no-op");
            return Ok(response::InitChain {
                consensus_params: None,
                validators: vec![],
                app_hash: self.app_hash().await?.try_into()?,
            });
        }
        let genesis: AppGenesis = if req.app_state_bytes.is_empty() {
            AppGenesis::default()
        } else {
            serde_json::from_slice(&req.app_state_bytes)
                .map_err(|e| anyhow::anyhow!("invalid app_state in genesis: {e}"))?
        };
        genesis
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid genesis: {e}"))?;

        let mut delta = StateDelta::new(self.storage.latest_snapshot());
        delta.put_raw(
            state_key::chain::chain_id().into(),
            req.chain_id.clone().into_bytes(),
        );
        delta.put_raw(
            state_key::chain::params().into(),
            serde_json::to_vec(&genesis.params)?,
        );
        crate::compute::put_params(&mut delta, &genesis.compute)?;
        crate::compute::init_genesis(&mut delta, req.time.unix_timestamp())?;
        crate::gov::init_genesis(&mut delta, &genesis.gov)?;
        let t0 = req.time.unix_timestamp_nanos();
        delta.put_raw(
            state_key::chain::block_time().into(),
            t0.to_be_bytes().to_vec(),
        );
        for acc in &genesis.accounts {
            auth::ensure_account(&mut delta, &acc.address).await?;
            for c in &acc.coins {
                let amount = bank::parse_amount(&c.amount)?;
                bank::mint(&mut delta, &acc.address, &c.denom, amount).await?;
            }
        }
        let root = self.storage.commit(delta).await?;
        self.reset_mempool();
        tracing::info!(chain_id = %req.chain_id, accounts = genesis.accounts.len(), app_hash = %hex::encode(root.0), "genesis committed");
        Ok(response::InitChain {
            consensus_params: None,
            validators: vec![],
            app_hash: root.0.to_vec().try_into()?,
        })
    }

    fn reset_mempool(&mut self) {
        self.mempool = StateDelta::new(self.storage.latest_snapshot());
        self.cached = None;
    }

    /// Params, chain id and block time of the last committed state (read once per
    /// block, not per tx).
    async fn committed_params(&mut self) -> TxResult<(ChainParams, String, i64)> {
        if let Some(c) = &self.cached {
            return Ok(c.clone());
        }
        let snap = self.storage.latest_snapshot();
        let c = (
            Self::params(&snap).await?,
            Self::chain_id(&snap).await?,
            Self::block_time_secs(&snap).await?,
        );
        self.cached = Some(c.clone());
        Ok(c)
    }

    pub async fn params<S: StateRead>(state: &S) -> TxResult<ChainParams> {
        match state.get_raw(state_key::chain::params()).await? {
            Some(raw) => serde_json::from_slice(&raw)
                .map_err(|e| TxError::Internal(format!("corrupt params: {e}"))),
            None => Ok(ChainParams::default()),
        }
    }

    /// Time of the last block written to `state`, unix seconds (genesis time before block 1).
    pub async fn block_time_secs<S: StateRead>(state: &S) -> TxResult<i64> {
        match state.get_raw(state_key::chain::block_time()).await? {
            Some(raw) => {
                let arr: [u8; 16] = raw.as_slice().try_into().map_err(|_| {
                    TxError::Internal("corrupt block time: expected 16 bytes".into())
                })?;
                let secs = i128::from_be_bytes(arr).div_euclid(1_000_000_000);
                i64::try_from(secs).map_err(|_| TxError::Internal("block time out of range".into()))
            }
            None => Ok(0),
        }
    }

    pub async fn chain_id<S: StateRead>(state: &S) -> TxResult<String> {
        let raw = state
            .get_raw(state_key::chain::chain_id())
            .await?
            .ok_or_else(|| TxError::Internal("chain id missing: genesis not initialised".into()))?;
        String::from_utf8(raw).map_err(|_| TxError::Internal("chain id is not utf-8".into()))
    }

    pub async fn check_tx(&mut self, req: request::CheckTx) -> response::CheckTx {
        match self.check_tx_inner(&req.tx).await {
            Ok((gas_wanted, gas_used, events)) => response::CheckTx {
                gas_wanted,
                gas_used,
                events,
                ..Default::default()
            },
            Err(e) => response::CheckTx {
                code: Code::from(e.code()),
                log: e.to_string(),
                codespace: e.codespace().to_string(),
                ..Default::default()
            },
        }
    }

    async fn check_tx_inner(&mut self, raw: &[u8]) -> TxResult<(i64, i64, Vec<Event>)> {
        // CheckTx runs against the last committed block's time.
        let (params, chain_id, time) = self.committed_params().await?;
        let decoded = tx::decode(raw, &params)?;
        let height = self.committed_height().saturating_add(1);
        let ctx = crate::compute::BlockCtx { height, time };
        let mut child = StateDelta::new(&mut self.mempool);
        let events = tx::execute(
            &mut child,
            &decoded,
            &chain_id,
            ctx,
            &params,
            &mut self.sigs,
        )
        .await?;
        child.apply();
        Ok((
            i64::try_from(decoded.gas_limit).unwrap_or(i64::MAX),
            i64::try_from(decoded.gas_used).unwrap_or(i64::MAX),
            events,
        ))
    }

    /// Picks mempool txs that decode and fit the byte and gas budgets. Commit/reveal
    /// txs go first so a flood of other txs cannot crowd them out of their windows;
    /// a tx is only moved ahead if no earlier tx of the same signer stays behind, so
    /// each signer's sequence order is kept. Otherwise mempool order is kept.
    pub async fn prepare_proposal(
        &self,
        req: request::PrepareProposal,
    ) -> anyhow::Result<response::PrepareProposal> {
        let params = Self::params(&self.storage.latest_snapshot()).await?;
        let max_bytes = u64::try_from(req.max_tx_bytes).unwrap_or(0);
        let mut priority = Vec::new();
        let mut normal = Vec::new();
        let mut held_back = std::collections::BTreeSet::new();
        for raw in req.txs {
            let Ok(decoded) = tx::decode(&raw, &params) else {
                continue;
            };
            let urgent = decoded.msgs.iter().all(tx::Msg::is_commit_reveal);
            if urgent && !held_back.contains(&decoded.signer) {
                priority.push((raw, decoded.gas_limit));
            } else {
                held_back.insert(decoded.signer.clone());
                normal.push((raw, decoded.gas_limit));
            }
        }
        let (mut bytes, mut gas) = (0u64, 0u64);
        let mut txs = Vec::new();
        for (raw, gas_limit) in priority.into_iter().chain(normal) {
            // CometBFT counts each tx with its protobuf field overhead (tag + length varint,
            // at most 1 + 10 bytes); count it too so a full block never exceeds max_tx_bytes.
            let len = u64::try_from(raw.len())
                .unwrap_or(u64::MAX)
                .saturating_add(11);
            let (Some(nb), Some(ng)) = (bytes.checked_add(len), gas.checked_add(gas_limit)) else {
                break;
            };
            if nb > max_bytes || ng > params.max_gas_per_block {
                continue;
            }
            bytes = nb;
            gas = ng;
            txs.push(raw);
        }
        Ok(response::PrepareProposal { txs })
    }

    /// Rejects proposals an honest PrepareProposal would never build.
    pub async fn process_proposal(
        &self,
        req: request::ProcessProposal,
    ) -> anyhow::Result<response::ProcessProposal> {
        let params = Self::params(&self.storage.latest_snapshot()).await?;
        let mut gas = 0u64;
        for raw in &req.txs {
            match tx::decode(raw, &params) {
                Ok(d) => match gas.checked_add(d.gas_limit) {
                    Some(g) if g <= params.max_gas_per_block => gas = g,
                    _ => return Ok(response::ProcessProposal::Reject),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "rejecting proposal with an undecodable tx");
                    return Ok(response::ProcessProposal::Reject);
                }
            }
        }
        Ok(response::ProcessProposal::Accept)
    }

    pub async fn finalize_block(
        &mut self,
        req: request::FinalizeBlock,
    ) -> anyhow::Result<response::FinalizeBlock> {
        let height = req.height.value();
        let expected = self
            .committed_height()
            .checked_add(1)
            .ok_or_else(|| anyhow::anyhow!("height overflow"))?;
        anyhow::ensure!(
            height == expected,
            "FinalizeBlock for height {height}, expected {expected} (last committed {})",
            self.committed_height()
        );
        let mut delta = StateDelta::new(self.storage.latest_snapshot());
        let params = Self::params(&delta).await?;
        let chain_id = Self::chain_id(&delta).await?;
        delta.put_raw(
            state_key::chain::block_height().into(),
            height.to_be_bytes().to_vec(),
        );
        let t = req.time.unix_timestamp_nanos();
        delta.put_raw(
            state_key::chain::block_time().into(),
            t.to_be_bytes().to_vec(),
        );
        let ctx = crate::compute::BlockCtx {
            height,
            time: req.time.unix_timestamp(),
        };

        let mut tx_results = Vec::with_capacity(req.txs.len());
        let half = req.txs.len() / 2;
        for (i, raw) in req.txs.iter().enumerate() {
            if i == half {
                self.maybe_crash(FaultPoint::MidFinalize, height);
            }
            let result = match tx::decode(raw, &params) {
                Err(e) => tx_error_result(&e),
                Ok(decoded) => {
                    let mut child = StateDelta::new(&mut delta);
                    match tx::execute(
                        &mut child,
                        &decoded,
                        &chain_id,
                        ctx,
                        &params,
                        &mut self.sigs,
                    )
                    .await
                    {
                        Ok(events) => {
                            child.apply();
                            ExecTxResult {
                                gas_wanted: i64::try_from(decoded.gas_limit).unwrap_or(i64::MAX),
                                gas_used: i64::try_from(decoded.gas_used).unwrap_or(i64::MAX),
                                events,
                                ..Default::default()
                            }
                        }
                        Err(e) => {
                            // child dropped: the failed tx leaves no trace in state.
                            let mut r = tx_error_result(&e);
                            r.gas_wanted = i64::try_from(decoded.gas_limit).unwrap_or(i64::MAX);
                            r
                        }
                    }
                }
            };
            tx_results.push(result);
        }

        // End of block: bounded x-compute work (matured unbondings).
        let mut events = vec![Event::new(
            "magnet_block",
            [("txs", req.txs.len().to_string()).index()],
        )];
        let t_end = std::time::Instant::now();
        events.extend(crate::compute::end_block(&mut delta, ctx).await?);
        let end_block = t_end.elapsed();

        let t_hash = std::time::Instant::now();
        let staged = self.storage.prepare_commit(delta).await?;
        tracing::debug!(
            height,
            end_block_us = end_block.as_micros() as u64,
            prepare_commit_us = t_hash.elapsed().as_micros() as u64,
            "finalize_block"
        );
        let app_hash = staged.root_hash().0.to_vec();
        *self
            .pending
            .get_mut()
            .map_err(|_| anyhow::anyhow!("pending lock poisoned"))? = Some(staged);
        self.maybe_crash(FaultPoint::BeforeCommit, height);
        Ok(response::FinalizeBlock {
            events,
            tx_results,
            validator_updates: vec![],
            consensus_param_updates: None,
            app_hash: app_hash.try_into()?,
        })
    }

    pub async fn commit(&mut self) -> anyhow::Result<response::Commit> {
        let staged = self
            .pending
            .get_mut()
            .map_err(|_| anyhow::anyhow!("pending lock poisoned"))?
            .take()
            .ok_or_else(|| anyhow::anyhow!("Commit without a preceding FinalizeBlock"))?;
        let height = staged.version();
        let root = self.storage.commit_batch(staged)?;
        tracing::debug!(height, app_hash = %hex::encode(root.0), "committed");
        self.reset_mempool();
        Ok(response::Commit {
            data: Bytes::new(),
            retain_height: 0u32.into(),
        })
    }

    pub async fn query(&self, req: request::Query) -> response::Query {
        query::handle(&self.storage, req).await
    }

    /// Encodes an error the way every query path reports it.
    pub fn query_error(code: u32, log: String) -> response::Query {
        response::Query {
            code: Code::from(code),
            log,
            codespace: crate::error::CODESPACE.into(),
            ..Default::default()
        }
    }
}

/// Convenience for clients/tests: decode a prost message or report what was wrong.
pub fn decode_msg<M: Message + Default>(bytes: &[u8]) -> anyhow::Result<M> {
    Ok(M::decode(bytes)?)
}
