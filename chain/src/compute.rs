//! x-compute wiring: the bonded worker registry on top of the pure
//! `magnet-x-compute` crate (tiers, minimum bonds, node ids, params).
//!
//! Bonds move from the worker's account into the `compute_bonded` module account
//! and come back only after the unbonding delay, processed at the end of each block
//! from a time-ordered queue (at most [`MAX_UNBONDINGS_PER_BLOCK`] per block).

use cnidarium::{StateRead, StateWrite};
use futures::StreamExt;
use magnet_proto::magnet::compute::v1::{HardwareProfile, Worker};
use magnet_x_compute::{ComputeParams, Tier};
use prost::Message;
use tendermint::abci::{Event, EventAttributeIndexExt};

use crate::error::{TxError, TxResult};
use crate::params::BOND_DENOM;
use crate::{auth, bank, state_key};

/// Module account holding every bond.
pub const BONDED_POOL: &str = "compute_bonded";
/// Bounded end-of-block work: unbondings released per block.
pub const MAX_UNBONDINGS_PER_BLOCK: usize = 100;
/// SSD provisioning thresholds a storage tier must pass (paper §12).
pub const SSD_MIN_READ_MBPS: u64 = 100;
pub const SSD_MIN_WRITE_MBPS: u64 = 50;
pub const SSD_MIN_BLOCKS: u64 = 1000;

const CODESPACE: &str = magnet_x_compute::CODESPACE;

fn err(code: u32, message: String) -> TxError {
    TxError::Module {
        codespace: CODESPACE,
        code,
        message,
    }
}

/// Chain-side registry errors (codes above the pure crate's range).
pub mod codes {
    pub const ALREADY_REGISTERED: u32 = 101;
    pub const NOT_REGISTERED: u32 = 102;
    pub const BOND_TOO_LOW: u32 = 103;
    pub const ALREADY_UNBONDING: u32 = 104;
}

/// Block context a message executes in.
#[derive(Debug, Clone, Copy)]
pub struct BlockCtx {
    pub height: u64,
    /// Block time, unix seconds.
    pub time: i64,
}

pub async fn params<S: StateRead>(state: &S) -> TxResult<ComputeParams> {
    match state.get_raw(state_key::compute::params()).await? {
        Some(raw) => serde_json::from_slice(&raw)
            .map_err(|e| TxError::Internal(format!("corrupt compute params: {e}"))),
        None => Ok(ComputeParams::default()),
    }
}

pub fn put_params<S: StateWrite>(state: &mut S, p: &ComputeParams) -> TxResult<()> {
    let raw = serde_json::to_vec(p).map_err(|e| TxError::Internal(e.to_string()))?;
    state.put_raw(state_key::compute::params().into(), raw);
    Ok(())
}

pub async fn worker<S: StateRead>(state: &S, owner: &str) -> TxResult<Option<Worker>> {
    match state.get_raw(&state_key::compute::worker(owner)).await? {
        Some(raw) => Worker::decode(raw.as_slice())
            .map(Some)
            .map_err(|e| TxError::Internal(format!("corrupt worker {owner}: {e}"))),
        None => Ok(None),
    }
}

fn put_worker<S: StateWrite>(state: &mut S, w: &Worker) {
    state.put_raw(state_key::compute::worker(&w.owner), w.encode_to_vec());
}

/// Whether an SSD provisioning report passes: 4 KB random read > 100 MB/s and
/// write > 50 MB/s, measured over at least 1000 blocks.
pub fn ssd_report_passes(hw: &HardwareProfile) -> bool {
    hw.ssd_read_mbps > SSD_MIN_READ_MBPS
        && hw.ssd_write_mbps > SSD_MIN_WRITE_MBPS
        && hw.ssd_blocks_tested >= SSD_MIN_BLOCKS
}

/// Tier granted for a requested tier: storage-bearing tiers (orchestrator,
/// storage_node) with a failing SSD report are placed in `mobile_light`.
pub fn granted_tier(requested: Tier, hw: &HardwareProfile) -> Tier {
    match requested {
        Tier::Orchestrator | Tier::StorageNode if !ssd_report_passes(hw) => Tier::MobileLight,
        t => t,
    }
}

async fn registered<S: StateRead>(state: &S, owner: &str) -> TxResult<Worker> {
    worker(state, owner).await?.ok_or_else(|| {
        err(
            codes::NOT_REGISTERED,
            format!("expected a registered worker at {owner}, found none"),
        )
    })
}

pub async fn register_worker<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    owner: &str,
    owner_pub_key: &[u8],
    requested: Tier,
    bond: u128,
    hardware: &HardwareProfile,
) -> TxResult<Vec<Event>> {
    let p = params(state).await?;
    if let Some(w) = worker(state, owner).await? {
        return Err(err(
            codes::ALREADY_REGISTERED,
            format!(
                "expected {owner} to be unregistered, it is already worker {} ({})",
                w.node_id, w.tier
            ),
        ));
    }
    let tier = granted_tier(requested, hardware);
    let min = tier.min_bond(&p);
    if bond < min {
        return Err(err(
            codes::BOND_TOO_LOW,
            format!(
                "bond for tier {tier}: expected at least {min}{BOND_DENOM}, got {bond}{BOND_DENOM}"
            ),
        ));
    }
    let node_id = magnet_x_compute::node_id(owner_pub_key)?;
    bank::transfer(
        state,
        owner,
        &auth::module_address(BONDED_POOL),
        BOND_DENOM,
        bond,
    )
    .await?;
    let w = Worker {
        owner: owner.to_string(),
        node_id: node_id.clone(),
        requested_tier: requested.as_str().to_string(),
        tier: tier.as_str().to_string(),
        bond: bond.to_string(),
        hardware: Some(hardware.clone()),
        registered_height: ctx.height,
        last_heartbeat_time: ctx.time,
        unbonding: false,
        unbond_complete_time: 0,
    };
    put_worker(state, &w);
    Ok(vec![Event::new(
        "register_worker",
        [
            ("owner", owner.to_string()).index(),
            ("node_id", node_id).index(),
            ("tier", tier.as_str().to_string()).index(),
            ("requested_tier", requested.as_str().to_string()).index(),
            ("bond", format!("{bond}{BOND_DENOM}")).index(),
        ],
    )])
}

pub async fn heartbeat<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    owner: &str,
) -> TxResult<Vec<Event>> {
    let mut w = registered(state, owner).await?;
    if w.unbonding {
        return Err(err(
            codes::ALREADY_UNBONDING,
            format!("worker {owner} is unbonding: expected an active worker"),
        ));
    }
    w.last_heartbeat_time = ctx.time;
    put_worker(state, &w);
    Ok(vec![Event::new(
        "heartbeat",
        [
            ("owner", owner.to_string()).index(),
            ("node_id", w.node_id).index(),
        ],
    )])
}

pub async fn begin_unbond<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    owner: &str,
) -> TxResult<Vec<Event>> {
    let p = params(state).await?;
    let mut w = registered(state, owner).await?;
    if w.unbonding {
        return Err(err(
            codes::ALREADY_UNBONDING,
            format!(
                "worker {owner}: expected an active worker, already unbonding until {}",
                w.unbond_complete_time
            ),
        ));
    }
    let delay = i64::try_from(p.unbonding_delay_secs)
        .map_err(|_| TxError::Overflow("unbonding delay exceeds i64".into()))?;
    let complete = ctx
        .time
        .checked_add(delay)
        .ok_or_else(|| TxError::Overflow("unbonding completion time overflows".into()))?;
    w.unbonding = true;
    w.unbond_complete_time = complete;
    put_worker(state, &w);
    state.put_raw(
        state_key::compute::unbonding(complete, owner),
        owner.as_bytes().to_vec(),
    );
    Ok(vec![Event::new(
        "begin_unbond",
        [
            ("owner", owner.to_string()).index(),
            ("complete_time", complete.to_string()).index(),
        ],
    )])
}

/// Releases matured unbondings (oldest first, bounded per block): the bond returns
/// to the owner and the worker leaves the registry.
pub async fn end_block<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
) -> TxResult<Vec<Event>> {
    let prefix = state_key::compute::unbonding_prefix();
    let mut due = Vec::new();
    {
        let mut stream = Box::pin(state.prefix_raw(prefix));
        while let Some(item) = stream.next().await {
            let (key, owner) = item?;
            let time: i64 = key
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('/').next())
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| TxError::Internal(format!("corrupt unbonding key {key}")))?;
            if time > ctx.time {
                break;
            }
            due.push((key, String::from_utf8_lossy(&owner).into_owned()));
            if due.len() >= MAX_UNBONDINGS_PER_BLOCK {
                break;
            }
        }
    }
    let mut events = Vec::new();
    for (key, owner) in due {
        state.delete(key);
        let Some(w) = worker(state, &owner).await? else {
            continue;
        };
        let bond = bank::parse_amount(&w.bond)?;
        bank::transfer(
            state,
            &auth::module_address(BONDED_POOL),
            &owner,
            BOND_DENOM,
            bond,
        )
        .await?;
        state.delete(state_key::compute::worker(&owner));
        events.push(Event::new(
            "complete_unbond",
            [
                ("owner", owner).index(),
                ("amount", format!("{bond}{BOND_DENOM}")).index(),
            ],
        ));
    }
    Ok(events)
}

/// Whether a worker is stale at block time `now` (no heartbeat within the window).
pub fn is_stale(w: &Worker, now: i64, p: &ComputeParams) -> bool {
    let window = i64::try_from(p.heartbeat_stale_secs).unwrap_or(i64::MAX);
    now.saturating_sub(w.last_heartbeat_time) > window
}
