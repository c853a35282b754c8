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

pub(crate) fn err(code: u32, message: String) -> TxError {
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
    Ok(get_json(state, state_key::compute::params())
        .await?
        .unwrap_or_default())
}

pub fn put_params<S: StateWrite>(state: &mut S, p: &ComputeParams) -> TxResult<()> {
    let raw = serde_json::to_vec(p).map_err(|e| TxError::Internal(e.to_string()))?;
    state.put_raw(state_key::compute::params().into(), raw);
    Ok(())
}

pub async fn worker<S: StateRead>(state: &S, owner: &str) -> TxResult<Option<Worker>> {
    get_proto(state, &state_key::compute::worker(owner)).await
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

pub(crate) async fn registered<S: StateRead>(state: &S, owner: &str) -> TxResult<Worker> {
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
    let mut events = vec![Event::new(
        "heartbeat",
        [
            ("owner", owner.to_string()).index(),
            ("node_id", w.node_id.clone()).index(),
        ],
    )];
    // The worker record is at hand: collect without reading it again.
    let e = epoch(state).await?;
    events.extend(crate::rewards::claim(state, owner, w.tier.parse()?, e.index).await?);
    Ok(events)
}

/// Pays the worker its rewards of settled epochs (also done by heartbeat and unbond).
pub async fn claim_rewards<S: StateRead + StateWrite>(
    state: &mut S,
    owner: &str,
) -> TxResult<Vec<Event>> {
    let w = registered(state, owner).await?;
    let e = epoch(state).await?;
    crate::rewards::claim(state, owner, w.tier.parse()?, e.index).await
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
    // Settled epochs are paid out; the running epoch's contribution is forfeited.
    let tier: Tier = w.tier.parse()?;
    let e = epoch(state).await?;
    let mut events = crate::rewards::claim(state, owner, tier, e.index).await?;
    crate::rewards::set_units(state, e.index, owner, tier, 0, &p).await?;
    w.unbonding = true;
    w.unbond_complete_time = complete;
    put_worker(state, &w);
    state.put_raw(
        state_key::compute::unbonding(complete, owner),
        owner.as_bytes().to_vec(),
    );
    events.push(Event::new(
        "begin_unbond",
        [
            ("owner", owner.to_string()).index(),
            ("complete_time", complete.to_string()).index(),
        ],
    ));
    Ok(events)
}

/// Releases matured unbondings (oldest first, bounded per block): the bond returns
/// to the owner and the worker leaves the registry.
pub async fn end_block<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
) -> TxResult<Vec<Event>> {
    // Votes and disputes close before the epoch settles, so their effects land in it.
    let mut events = crate::gov::end_block(state, ctx).await?;
    events.extend(crate::panel::end_block(state, ctx).await?);
    events.extend(maybe_settle_epoch(state, ctx).await?);
    // Penalties before releases: a bond still unbonding can be slashed for a missed reveal.
    events.extend(close_tasks(state, ctx).await?);
    events.extend(release_unbondings(state, ctx).await?);
    Ok(events)
}

async fn release_unbondings<S: StateRead + StateWrite>(
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
        // Rewards still owed (more epochs than one unbond message could pay) go out first.
        let current = epoch(state).await?.index;
        events.extend(crate::rewards::claim(state, &owner, w.tier.parse()?, current).await?);
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

/// Module account that receives each epoch's emission and pays rewards out of it.
pub const REWARDS_POOL: &str = "compute_rewards";
/// Most contribution units one worker can accrue in an epoch (2^80). With tier
/// multipliers ≤ 100x (< 2^27 ppm) and ≤ 10^4 contributors (< 2^14), Σ T·C < 2^121:
/// settlement can never overflow, so user input can never halt the chain there.
pub const MAX_EPOCH_UNITS: u128 = 1 << 80;

/// The epoch being accumulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EpochState {
    pub index: u64,
    pub start_time: i64,
}

/// What an epoch settlement recorded on chain (queryable, also emitted as an event).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SettlementRecord {
    pub epoch: u64,
    pub start_time: i64,
    pub end_time: i64,
    pub height: u64,
    /// Newly minted by the emission schedule for this epoch (counts against the daily cap).
    pub released: String,
    /// Remainder carried in from the previous epoch (minted earlier).
    pub carried_in: String,
    pub pool: String,
    /// Σ T_j·C_j over the epoch's contributors (ppm-weighted units).
    pub total_weight: String,
    pub contributors: u64,
    /// True while contributors still have rewards to claim; the remainder is known (and
    /// carried or burned) once the last one has claimed.
    pub open: bool,
    pub remainder: String,
    pub carried_out: String,
    pub burned: String,
}

pub(crate) async fn get_json<S: StateRead, T: serde::de::DeserializeOwned>(
    state: &S,
    key: &str,
) -> TxResult<Option<T>> {
    match state.get_raw(key).await? {
        Some(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| TxError::Internal(format!("corrupt {key}: {e}"))),
        None => Ok(None),
    }
}

pub(crate) fn put_json<S: StateWrite, T: serde::Serialize>(
    state: &mut S,
    key: String,
    v: &T,
) -> TxResult<()> {
    let raw = serde_json::to_vec(v).map_err(|e| TxError::Internal(e.to_string()))?;
    state.put_raw(key, raw);
    Ok(())
}

/// Genesis: emission accrues from the genesis time; epoch 0 starts then.
pub fn init_genesis<S: StateWrite>(state: &mut S, genesis_time: i64) -> TxResult<()> {
    let t = u64::try_from(genesis_time)
        .map_err(|_| TxError::Internal("genesis time before 1970".into()))?;
    put_json(
        state,
        state_key::compute::emission().into(),
        &magnet_x_compute::EmissionSchedule::new(t),
    )?;
    put_json(
        state,
        state_key::compute::epoch().into(),
        &EpochState {
            index: 0,
            start_time: genesis_time,
        },
    )?;
    put_json(state, state_key::compute::carry().into(), &"0")
}

pub async fn epoch<S: StateRead>(state: &S) -> TxResult<EpochState> {
    get_json(state, state_key::compute::epoch())
        .await?
        .ok_or_else(|| TxError::Internal("compute epoch state missing".into()))
}

pub async fn settlement<S: StateRead>(state: &S, index: u64) -> TxResult<Option<SettlementRecord>> {
    get_json(state, &state_key::compute::settlement(index)).await
}

pub async fn contribution<S: StateRead>(state: &S, index: u64, owner: &str) -> TxResult<u128> {
    bank::get_u128(state, &state_key::compute::contribution(index, owner)).await
}

/// Adds training compute (steps × model size) to the owner's score for the current epoch.
pub async fn submit_contribution<S: StateRead + StateWrite>(
    state: &mut S,
    owner: &str,
    steps: u64,
    model_params: u64,
    checkpoint_hash: &str,
) -> TxResult<Vec<Event>> {
    let w = registered(state, owner).await?;
    if w.unbonding {
        return Err(err(
            codes::ALREADY_UNBONDING,
            format!("worker {owner} is unbonding: expected an active worker"),
        ));
    }
    let hash_ok =
        checkpoint_hash.len() == 64 && checkpoint_hash.bytes().all(|c| c.is_ascii_hexdigit());
    if !hash_ok {
        return Err(TxError::InvalidRequest(format!(
            "checkpoint_hash: expected 64 hex characters (SHA-256), got {checkpoint_hash:?}"
        )));
    }
    if steps == 0 || model_params == 0 {
        return Err(TxError::InvalidRequest(format!(
            "expected steps > 0 and model_params > 0, got steps {steps}, model_params {model_params}"
        )));
    }
    // u64 × u64 fits in u128.
    let units = u128::from(steps).saturating_mul(u128::from(model_params));
    let e = epoch(state).await?;
    let tier: Tier = w.tier.parse()?;
    let total = contribution(state, e.index, owner)
        .await?
        .checked_add(units)
        .filter(|t| *t <= MAX_EPOCH_UNITS)
        .ok_or_else(|| {
            TxError::Overflow(format!(
                "contribution of {owner} in epoch {}: expected at most {MAX_EPOCH_UNITS} units in total, got more by adding {units}",
                e.index
            ))
        })?;
    let p = params(state).await?;
    crate::rewards::set_units(state, e.index, owner, tier, total, &p).await?;
    Ok(vec![Event::new(
        "submit_contribution",
        [
            ("owner", owner.to_string()).index(),
            ("epoch", e.index.to_string()).index(),
            ("units", units.to_string()).index(),
            ("checkpoint_hash", checkpoint_hash.to_lowercase()).index(),
        ],
    )])
}

/// Settles the current epoch once `epoch_length_secs` of block time have passed:
/// mints the schedule's release into the rewards pool, pays `R_i = pool·T_i·C_i/ΣT·C`,
/// carries or burns the remainder, records the settlement and opens the next epoch.
pub async fn maybe_settle_epoch<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
) -> TxResult<Vec<Event>> {
    let p = params(state).await?;
    let e = epoch(state).await?;
    let length = i64::try_from(p.epoch_length_secs).unwrap_or(i64::MAX);
    if ctx.time < e.start_time.saturating_add(length) {
        return Ok(vec![]);
    }
    let rewards_addr = auth::module_address(REWARDS_POOL);
    let mut schedule: magnet_x_compute::EmissionSchedule =
        get_json(state, state_key::compute::emission())
            .await?
            .ok_or_else(|| TxError::Internal("emission schedule missing".into()))?;
    let now =
        u64::try_from(ctx.time).map_err(|_| TxError::Internal("block time before 1970".into()))?;
    let released = schedule.pool_for_epoch(now, &p)?;
    put_json(state, state_key::compute::emission().into(), &schedule)?;
    if released > 0 {
        bank::mint(state, &rewards_addr, BOND_DENOM, released).await?;
    }
    let carried_in = crate::rewards::carry(state).await?;
    let pool = released
        .checked_add(carried_in)
        .ok_or_else(|| TxError::Overflow("epoch pool exceeds 2^128".into()))?;
    // The carry is consumed into this pool; remainders disposed from now on add to it anew.
    put_json(state, state_key::compute::carry().into(), &"0")?;

    let totals = crate::rewards::totals(state, e.index).await?;
    let (remainder, carried_out, burned) = crate::rewards::settle(state, e.index, pool, &p).await?;
    // With no contributors the whole pool is disposed of now; otherwise it waits for claims.
    let open = totals.contributors > 0 && totals.total_weight != "0";
    let record = SettlementRecord {
        epoch: e.index,
        start_time: e.start_time,
        end_time: ctx.time,
        height: ctx.height,
        released: released.to_string(),
        carried_in: carried_in.to_string(),
        pool: pool.to_string(),
        total_weight: totals.total_weight.clone(),
        contributors: totals.contributors,
        open,
        remainder: remainder.to_string(),
        carried_out: carried_out.to_string(),
        burned: burned.to_string(),
    };
    put_json(state, state_key::compute::settlement(e.index), &record)?;
    put_json(
        state,
        state_key::compute::epoch().into(),
        &EpochState {
            index: e.index.saturating_add(1),
            start_time: ctx.time,
        },
    )?;
    let mut events = crate::gov::apply_pending_params(state).await?;
    events.insert(
        0,
        Event::new(
            "settle_epoch",
            [
                ("epoch", e.index.to_string()).index(),
                ("released", released.to_string()).index(),
                ("pool", pool.to_string()).index(),
                ("contributors", totals.contributors.to_string()).index(),
                ("total_weight", totals.total_weight.clone()).index(),
                ("carried", carried_out.to_string()).index(),
                ("burned", burned.to_string()).index(),
            ],
        ),
    );
    Ok(events)
}

/// Most commitments one task accepts: bounds the end-of-block missed-reveal scan.
pub const MAX_COMMITS_PER_TASK: u32 = 1_000;
/// Tasks whose reveal deadline is processed per block.
pub const MAX_TASK_DEADLINES_PER_BLOCK: usize = 100;
/// Longest accepted revealed result, in bytes.
pub const MAX_RESULT_BYTES: usize = 4096;

pub mod cr_codes {
    pub const DUPLICATE_COMMIT: u32 = 111;
    pub const NO_COMMITMENT: u32 = 112;
    pub const ALREADY_REVEALED: u32 = 113;
    pub const TASK_FULL: u32 = 114;
}

/// Task ids: 1–64 characters of `[A-Za-z0-9_.:-]` (no `/`: they are key segments).
pub fn validate_task_id(task_id: &str) -> TxResult<()> {
    let ok = (1..=64).contains(&task_id.len())
        && task_id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.:-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(TxError::InvalidRequest(format!(
            "task_id: expected 1-64 chars of [A-Za-z0-9_.:-], got {task_id:?}"
        )))
    }
}

use magnet_proto::magnet::compute::v1::{CommitRecord, Task};

pub(crate) async fn get_proto<S: StateRead, M: Message + Default>(
    state: &S,
    key: &str,
) -> TxResult<Option<M>> {
    match state.get_raw(key).await? {
        Some(raw) => M::decode(raw.as_slice())
            .map(Some)
            .map_err(|e| TxError::Internal(format!("corrupt {key}: {e}"))),
        None => Ok(None),
    }
}

pub async fn task<S: StateRead>(state: &S, task_id: &str) -> TxResult<Option<Task>> {
    get_proto(state, &state_key::compute::task(task_id)).await
}

pub async fn commit_record<S: StateRead>(
    state: &S,
    task_id: &str,
    owner: &str,
) -> TxResult<Option<CommitRecord>> {
    get_proto(state, &state_key::compute::commit(task_id, owner)).await
}

pub(crate) fn secs(t: i64) -> TxResult<u64> {
    u64::try_from(t).map_err(|_| TxError::Internal("block time before 1970".into()))
}

/// Slashes `offense`'s rate of the worker's bond (never more than the bond) and burns it.
pub async fn slash<S: StateRead + StateWrite>(
    state: &mut S,
    owner: &str,
    offense: magnet_x_compute::Offense,
) -> TxResult<(u128, Vec<Event>)> {
    let p = params(state).await?;
    let Some(mut w) = worker(state, owner).await? else {
        return Ok((0, vec![]));
    };
    let bond = bank::parse_amount(&w.bond)?;
    let amount = magnet_x_compute::slash_amount(bond, offense, &p);
    if amount == 0 {
        return Ok((0, vec![]));
    }
    // slash_amount <= bond, so this cannot underflow.
    let rest = bond
        .checked_sub(amount)
        .ok_or_else(|| TxError::Internal("slash above bond".into()))?;
    w.bond = rest.to_string();
    put_worker(state, &w);
    bank::burn(
        state,
        &auth::module_address(BONDED_POOL),
        BOND_DENOM,
        amount,
    )
    .await?;
    Ok((
        amount,
        vec![Event::new(
            "slash",
            [
                ("owner", owner.to_string()).index(),
                ("offense", offense.as_str().to_string()).index(),
                ("amount", format!("{amount}{BOND_DENOM}")).index(),
                ("bond_left", format!("{rest}{BOND_DENOM}")).index(),
            ],
        )],
    ))
}

pub async fn commit_result<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    owner: &str,
    task_id: &str,
    commitment: &[u8],
) -> TxResult<Vec<Event>> {
    validate_task_id(task_id)?;
    if commitment.len() != 32 {
        return Err(TxError::InvalidRequest(format!(
            "commitment: expected 32 bytes (SHA-256), got {}",
            commitment.len()
        )));
    }
    let w = registered(state, owner).await?;
    if w.unbonding {
        return Err(err(
            codes::ALREADY_UNBONDING,
            format!("worker {owner} is unbonding: expected an active worker"),
        ));
    }
    crate::panel::check_job_commit(state, task_id, owner).await?;
    let p = params(state).await?;
    let mut t = match task(state, task_id).await? {
        Some(t) => t,
        None => {
            let win = magnet_x_compute::RevealWindows::open(secs(ctx.time)?, &p)?;
            let to_i64 = |v: u64| {
                i64::try_from(v).map_err(|_| TxError::Overflow("window end exceeds i64".into()))
            };
            let t = Task {
                task_id: task_id.to_string(),
                opened_at: ctx.time,
                commit_window_end: to_i64(win.commit_window_end)?,
                reveal_window_end: to_i64(win.reveal_window_end)?,
                commit_count: 0,
                closed: false,
            };
            state.put_raw(
                state_key::compute::task_deadline(t.reveal_window_end, task_id),
                vec![],
            );
            t
        }
    };
    if ctx.time >= t.commit_window_end {
        return Err(magnet_x_compute::ComputeError::CommitTooLate(format!(
            "task {task_id}: expected a block time before {}, got {}",
            t.commit_window_end, ctx.time
        ))
        .into());
    }
    if commit_record(state, task_id, owner).await?.is_some() {
        return Err(err(
            cr_codes::DUPLICATE_COMMIT,
            format!("task {task_id}: expected one commitment from {owner}, got a second"),
        ));
    }
    if t.commit_count >= MAX_COMMITS_PER_TASK {
        return Err(err(cr_codes::TASK_FULL, format!("task {task_id}: expected fewer than {MAX_COMMITS_PER_TASK} commitments, it is full")));
    }
    t.commit_count = t.commit_count.saturating_add(1);
    state.put_raw(state_key::compute::task(task_id), t.encode_to_vec());
    let rec = CommitRecord {
        task_id: task_id.to_string(),
        owner: owner.to_string(),
        commitment: commitment.to_vec(),
        committed_at: ctx.time,
        outcome: "pending".into(),
        result: vec![],
        slashed: "0".into(),
    };
    state.put_raw(
        state_key::compute::commit(task_id, owner),
        rec.encode_to_vec(),
    );
    Ok(vec![Event::new(
        "commit_result",
        [
            ("owner", owner.to_string()).index(),
            ("task_id", task_id.to_string()).index(),
            ("commitment", hex::encode(commitment)).index(),
            ("reveal_window_end", t.reveal_window_end.to_string()).index(),
        ],
    )])
}

/// Reveal: on a match the result is recorded; on a mismatch the tx still succeeds so
/// the slash (mismatched_reveal) is applied and recorded.
pub async fn reveal_result<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    owner: &str,
    task_id: &str,
    result: &[u8],
    nonce: &[u8],
) -> TxResult<Vec<Event>> {
    validate_task_id(task_id)?;
    if result.len() > MAX_RESULT_BYTES {
        return Err(TxError::InvalidRequest(format!(
            "result: expected at most {MAX_RESULT_BYTES} bytes, got {}",
            result.len()
        )));
    }
    let nonce: [u8; 32] = nonce.try_into().map_err(|_| {
        TxError::InvalidRequest(format!("nonce: expected 32 bytes, got {}", nonce.len()))
    })?;
    let t = task(state, task_id).await?.ok_or_else(|| {
        err(
            cr_codes::NO_COMMITMENT,
            format!("task {task_id}: expected an open task, found none"),
        )
    })?;
    let mut rec = commit_record(state, task_id, owner).await?.ok_or_else(|| {
        err(
            cr_codes::NO_COMMITMENT,
            format!("task {task_id}: expected a commitment from {owner}, found none"),
        )
    })?;
    if rec.outcome != "pending" {
        return Err(err(
            cr_codes::ALREADY_REVEALED,
            format!(
                "task {task_id}: expected a pending commitment from {owner}, it is {}",
                rec.outcome
            ),
        ));
    }
    magnet_x_compute::check_reveal_time(
        secs(t.commit_window_end)?,
        secs(t.reveal_window_end)?,
        secs(ctx.time)?,
    )?;
    let committed: [u8; 32] = rec
        .commitment
        .as_slice()
        .try_into()
        .map_err(|_| TxError::Internal("stored commitment is not 32 bytes".into()))?;
    let mut events = Vec::new();
    match magnet_x_compute::verify_reveal(&committed, result, &nonce) {
        Ok(()) => {
            rec.outcome = "revealed".into();
            rec.result = result.to_vec();
        }
        Err(mismatch) => {
            let (amount, ev) =
                slash(state, owner, magnet_x_compute::Offense::MismatchedReveal).await?;
            rec.outcome = "mismatched".into();
            rec.slashed = amount.to_string();
            events.extend(ev);
            tracing::debug!(%owner, %task_id, %mismatch, "mismatched reveal slashed");
        }
    }
    state.put_raw(
        state_key::compute::commit(task_id, owner),
        rec.encode_to_vec(),
    );
    events.push(Event::new(
        "reveal_result",
        [
            ("owner", owner.to_string()).index(),
            ("task_id", task_id.to_string()).index(),
            ("outcome", rec.outcome.clone()).index(),
        ],
    ));
    Ok(events)
}

/// Closes tasks whose reveal window has ended: every commitment still pending is
/// penalised (missed_reveal). Bounded per block.
async fn close_tasks<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
) -> TxResult<Vec<Event>> {
    let prefix = state_key::compute::task_deadline_prefix();
    let mut due = Vec::new();
    {
        let mut stream = Box::pin(state.prefix_raw(prefix));
        while let Some(item) = stream.next().await {
            let (key, _) = item?;
            let mut parts = key.strip_prefix(prefix).unwrap_or_default().splitn(2, '/');
            let time: i64 = parts
                .next()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| TxError::Internal(format!("corrupt task deadline key {key}")))?;
            // A reveal at exactly reveal_window_end is already late.
            if time > ctx.time {
                break;
            }
            let task_id = parts.next().unwrap_or_default().to_string();
            due.push((key, task_id));
            if due.len() >= MAX_TASK_DEADLINES_PER_BLOCK {
                break;
            }
        }
    }
    let mut events = Vec::new();
    for (key, task_id) in due {
        state.delete(key);
        let mut pending = Vec::new();
        {
            let cprefix = state_key::compute::commits_of_task(&task_id);
            let mut stream = Box::pin(state.prefix_raw(&cprefix));
            while let Some(item) = stream.next().await {
                let (ckey, raw) = item?;
                let rec = CommitRecord::decode(raw.as_slice())
                    .map_err(|e| TxError::Internal(format!("corrupt {ckey}: {e}")))?;
                if rec.outcome == "pending" {
                    pending.push(rec);
                }
            }
        }
        for mut rec in pending {
            let (amount, ev) =
                slash(state, &rec.owner, magnet_x_compute::Offense::MissedReveal).await?;
            rec.outcome = "missed".into();
            rec.slashed = amount.to_string();
            state.put_raw(
                state_key::compute::commit(&task_id, &rec.owner),
                rec.encode_to_vec(),
            );
            events.extend(ev);
        }
        if let Some(mut t) = task(state, &task_id).await? {
            t.closed = true;
            state.put_raw(state_key::compute::task(&task_id), t.encode_to_vec());
        }
        events.push(Event::new("close_task", [("task_id", task_id).index()]));
    }
    Ok(events)
}

/// Module account receiving the treasury share of API revenue.
pub const TREASURY: &str = "treasury";

/// The on-chain receipt of a settled x402 call (`compute/x402/<request_id>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InferenceReceipt {
    pub request_id: String,
    pub payer: String,
    pub serving_node: String,
    pub amount: String,
    pub height: u64,
    pub shares: magnet_x_compute::RevenueShares,
}

pub async fn inference_receipt<S: StateRead>(
    state: &S,
    request_id: &str,
) -> TxResult<Option<InferenceReceipt>> {
    get_json(state, &state_key::compute::inference_receipt(request_id)).await
}

/// Settles a paid inference call: the payer's amount is split per `revenue_split`
/// (contributors by weight, serving node, treasury, burn). Each request id settles once.
pub async fn settle_inference<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    payer: &str,
    request_id: &str,
    serving_node: &str,
    amount: u128,
    contributors: &std::collections::BTreeMap<String, u128>,
) -> TxResult<Vec<Event>> {
    validate_task_id(request_id)?;
    if inference_receipt(state, request_id).await?.is_some() {
        return Err(err(
            cr_codes::DUPLICATE_COMMIT,
            format!(
                "request {request_id}: expected an unsettled request id, it was already settled"
            ),
        ));
    }
    let node = registered(state, serving_node).await?;
    if node.unbonding {
        return Err(err(
            codes::ALREADY_UNBONDING,
            format!("serving node {serving_node} is unbonding: expected an active worker"),
        ));
    }
    let p = params(state).await?;
    let shares = magnet_x_compute::split_revenue(amount, &p.revenue_split, contributors)?;
    // Check the payer can cover the whole amount before moving anything (clear error).
    let have = bank::balance(state, payer, BOND_DENOM).await?;
    if have < amount {
        return Err(TxError::InsufficientFunds(format!(
            "payer {payer} needs {amount}{BOND_DENOM} for request {request_id}, has {have}{BOND_DENOM}"
        )));
    }
    for (who, share) in &shares.contributors {
        auth::ensure_account(state, who).await?;
        bank::transfer(state, payer, who, BOND_DENOM, *share).await?;
    }
    bank::transfer(state, payer, serving_node, BOND_DENOM, shares.serving_node).await?;
    bank::transfer(
        state,
        payer,
        &auth::module_address(TREASURY),
        BOND_DENOM,
        shares.treasury,
    )
    .await?;
    bank::burn(state, payer, BOND_DENOM, shares.burn).await?;
    let receipt = InferenceReceipt {
        request_id: request_id.to_string(),
        payer: payer.to_string(),
        serving_node: serving_node.to_string(),
        amount: amount.to_string(),
        height: ctx.height,
        shares: shares.clone(),
    };
    put_json(
        state,
        state_key::compute::inference_receipt(request_id),
        &receipt,
    )?;
    Ok(vec![
        Event::new(
            "settle_inference",
            [
                ("request_id", request_id.to_string()).index(),
                ("payer", payer.to_string()).index(),
                ("serving_node", serving_node.to_string()).index(),
                ("amount", format!("{amount}{BOND_DENOM}")).index(),
                (
                    "contributors",
                    shares.contributors.values().sum::<u128>().to_string(),
                )
                    .index(),
                ("treasury", shares.treasury.to_string()).index(),
            ],
        ),
        Event::new(
            "burn",
            [("amount", format!("{}{BOND_DENOM}", shares.burn)).index()],
        ),
    ])
}

/// Most workers in one DiLoCo round (bounds the round record and per-round work).
pub const MAX_ROUND_WORKERS: usize = 64;

pub mod round_codes {
    pub const WRONG_ROUND: u32 = 121;
    pub const NOT_ELIGIBLE: u32 = 122;
    pub const ROUND_CLOSED: u32 = 123;
    pub const NOT_LEADER: u32 = 124;
    pub const DUPLICATE_GRADIENT: u32 = 125;
    pub const NO_GRADIENTS: u32 = 126;
}

use magnet_proto::magnet::compute::v1::{GradientCommitment, Round};

fn validate_hash(field: &str, h: &str) -> TxResult<()> {
    if h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(TxError::InvalidRequest(format!(
            "{field}: expected 64 hex characters (SHA-256), got {h:?}"
        )))
    }
}

pub async fn round<S: StateRead>(state: &S, n: u64) -> TxResult<Option<Round>> {
    get_proto(state, &state_key::compute::round(n)).await
}

pub async fn next_round<S: StateRead>(state: &S) -> TxResult<u64> {
    Ok(get_json::<_, u64>(state, state_key::compute::next_round())
        .await?
        .unwrap_or(0))
}

/// Opens the next DiLoCo round; the leader is `sorted(eligible)[round mod N]` (by node id).
pub async fn open_round<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    owner: &str,
    m: &magnet_proto::magnet::compute::v1::MsgOpenRound,
) -> TxResult<Vec<Event>> {
    let expected = next_round(state).await?;
    if m.round != expected {
        return Err(err(
            round_codes::WRONG_ROUND,
            format!("expected round {expected}, got {}", m.round),
        ));
    }
    registered(state, owner).await?;
    validate_hash("base_checkpoint_hash", &m.base_checkpoint_hash)?;
    if m.inner_steps == 0 || m.duration_secs == 0 {
        return Err(TxError::InvalidRequest(format!(
            "expected inner_steps > 0 and duration_secs > 0, got {} and {}",
            m.inner_steps, m.duration_secs
        )));
    }
    if m.eligible.is_empty() || m.eligible.len() > MAX_ROUND_WORKERS {
        return Err(TxError::InvalidRequest(format!(
            "expected 1..={MAX_ROUND_WORKERS} eligible workers, got {}",
            m.eligible.len()
        )));
    }
    let mut by_node = std::collections::BTreeMap::new();
    for addr in &m.eligible {
        let addr = auth::validate_address(addr)?;
        let w = registered(state, &addr).await.map_err(|_| {
            err(
                round_codes::NOT_ELIGIBLE,
                format!("eligible worker {addr}: expected a registered worker, found none"),
            )
        })?;
        if w.unbonding {
            return Err(err(
                round_codes::NOT_ELIGIBLE,
                format!("eligible worker {addr} is unbonding"),
            ));
        }
        if by_node.insert(w.node_id.clone(), addr.clone()).is_some() {
            return Err(TxError::InvalidRequest(format!(
                "expected each eligible worker once, got {addr} twice"
            )));
        }
    }
    let eligible: Vec<String> = by_node.into_values().collect();
    let n =
        u64::try_from(eligible.len()).map_err(|_| TxError::Overflow("eligible count".into()))?;
    let leader_idx = usize::try_from(m.round.checked_rem(n).unwrap_or(0)).unwrap_or(0);
    let leader = eligible.get(leader_idx).cloned().unwrap_or_default();
    let deadline = ctx
        .time
        .checked_add(
            i64::try_from(m.duration_secs)
                .map_err(|_| TxError::Overflow("duration exceeds i64".into()))?,
        )
        .ok_or_else(|| TxError::Overflow("round deadline overflows".into()))?;
    let r = Round {
        round: m.round,
        inner_steps: m.inner_steps,
        opened_at: ctx.time,
        deadline,
        base_checkpoint_hash: m.base_checkpoint_hash.to_lowercase(),
        eligible,
        leader: leader.clone(),
        gradients: vec![],
        merged_checkpoint_hash: String::new(),
        finalized: false,
    };
    state.put_raw(state_key::compute::round(m.round), r.encode_to_vec());
    put_json(
        state,
        state_key::compute::next_round().into(),
        &m.round.saturating_add(1),
    )?;
    Ok(vec![Event::new(
        "open_round",
        [
            ("round", m.round.to_string()).index(),
            ("leader", leader).index(),
            ("deadline", deadline.to_string()).index(),
            ("inner_steps", m.inner_steps.to_string()).index(),
        ],
    )])
}

async fn open_round_for<S: StateRead>(state: &S, n: u64) -> TxResult<Round> {
    let r = round(state, n).await?.ok_or_else(|| {
        err(
            round_codes::WRONG_ROUND,
            format!("expected an opened round {n}, found none"),
        )
    })?;
    if r.finalized {
        return Err(err(
            round_codes::ROUND_CLOSED,
            format!("round {n}: expected an open round, it is finalized"),
        ));
    }
    Ok(r)
}

pub async fn submit_gradient<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    owner: &str,
    m: &magnet_proto::magnet::compute::v1::MsgSubmitGradient,
) -> TxResult<Vec<Event>> {
    let mut r = open_round_for(state, m.round).await?;
    if ctx.time >= r.deadline {
        return Err(err(
            round_codes::ROUND_CLOSED,
            format!(
                "round {}: expected a block time before the deadline {}, got {}",
                m.round, r.deadline, ctx.time
            ),
        ));
    }
    if !r.eligible.iter().any(|e| e == owner) {
        return Err(err(
            round_codes::NOT_ELIGIBLE,
            format!(
                "round {}: {owner} is not among its {} eligible workers",
                m.round,
                r.eligible.len()
            ),
        ));
    }
    if r.gradients.iter().any(|g| g.owner == owner) {
        return Err(err(
            round_codes::DUPLICATE_GRADIENT,
            format!(
                "round {}: expected one gradient from {owner}, got a second",
                m.round
            ),
        ));
    }
    validate_hash("gradient_hash", &m.gradient_hash)?;
    if m.content_id.is_empty() || m.content_id.len() > 128 {
        return Err(TxError::InvalidRequest(format!(
            "content_id: expected 1-128 bytes, got {}",
            m.content_id.len()
        )));
    }
    let w = registered(state, owner).await?;
    r.gradients.push(GradientCommitment {
        owner: owner.to_string(),
        node_id: w.node_id,
        gradient_hash: m.gradient_hash.to_lowercase(),
        content_id: m.content_id.clone(),
        local_loss_ppm: m.local_loss_ppm,
        submitted_at: ctx.time,
    });
    state.put_raw(state_key::compute::round(m.round), r.encode_to_vec());
    Ok(vec![Event::new(
        "submit_gradient",
        [
            ("round", m.round.to_string()).index(),
            ("owner", owner.to_string()).index(),
            ("gradient_hash", m.gradient_hash.to_lowercase()).index(),
        ],
    )])
}

pub async fn finalize_round<S: StateRead + StateWrite>(
    state: &mut S,
    owner: &str,
    m: &magnet_proto::magnet::compute::v1::MsgFinalizeRound,
) -> TxResult<Vec<Event>> {
    let mut r = open_round_for(state, m.round).await?;
    if r.leader != owner {
        return Err(err(
            round_codes::NOT_LEADER,
            format!(
                "round {}: expected the leader {}, got {owner}",
                m.round, r.leader
            ),
        ));
    }
    if r.gradients.is_empty() {
        return Err(err(
            round_codes::NO_GRADIENTS,
            format!(
                "round {}: expected at least one gradient before merging, got none",
                m.round
            ),
        ));
    }
    validate_hash("merged_checkpoint_hash", &m.merged_checkpoint_hash)?;
    r.merged_checkpoint_hash = m.merged_checkpoint_hash.to_lowercase();
    r.finalized = true;
    state.put_raw(state_key::compute::round(m.round), r.encode_to_vec());
    Ok(vec![Event::new(
        "finalize_round",
        [
            ("round", m.round.to_string()).index(),
            ("merged_checkpoint_hash", r.merged_checkpoint_hash.clone()).index(),
            ("gradients", r.gradients.len().to_string()).index(),
        ],
    )])
}
