//! The notary panel, data registration and research jobs (x-compute, paper §13).
//!
//! - **Notaries** bond at least `notary_min_bond` into [`NOTARY_POOL`] and adjudicate disputes.
//! - **Disputes**: anyone may challenge a data record, a contribution of the current epoch or a
//!   revealed result, locking `challenge_deposit`. The target is frozen; notaries vote until
//!   `dispute_window_secs` have passed; [`magnet_x_compute::tally`] decides. Upheld: the accused
//!   worker is slashed for the offense (bad data / fabricated compute), the deposit comes back,
//!   and every notary who voted to reject the challenge is slashed for fraudulent approval.
//!   Rejected: the deposit is burned (the challenger loses) and the target stands. No quorum:
//!   the deposit comes back and the target stands.
//! - **Data records** pay `data_registration_fee` into escrow; unchallenged for
//!   `data_challenge_window_secs` they are confirmed, the fee is split (notaries / treasury /
//!   burn) and the owner earns data-quality contribution units for the current epoch.
//! - **Research jobs** escrow a budget; workers claim, commit and reveal through the task
//!   commit-reveal (task id `job:<id>`), named evaluators score revealed results, and at the
//!   deadline the escrow pays by the median score and refunds the rest.
//!
//! End-of-block work is bounded: at most [`MAX_CLOSINGS_PER_BLOCK`] items of each queue.

use std::collections::BTreeMap;

use cnidarium::{StateRead, StateWrite};
use futures::StreamExt;
use magnet_proto::magnet::compute::v1 as pb;
use magnet_x_compute::{Offense, Verdict};
use prost::Message;
use serde::{Deserialize, Serialize};
use tendermint::abci::{Event, EventAttributeIndexExt};

use crate::compute::{
    self, err, get_json, put_json, registered, BlockCtx, MAX_EPOCH_UNITS, TREASURY,
};
use crate::error::{TxError, TxResult};
use crate::params::BOND_DENOM;
use crate::{auth, bank};

/// Module account holding notary bonds.
pub const NOTARY_POOL: &str = "compute_notary_bonded";
/// Module account holding challenge deposits.
pub const DISPUTE_ESCROW: &str = "compute_dispute_escrow";
/// Module account holding data registration fees until confirmation.
pub const DATA_ESCROW: &str = "compute_data_escrow";
/// Module account holding research job budgets.
pub const JOB_ESCROW: &str = "compute_job_escrow";
/// Largest notary panel (bounds every tally and fee split).
pub const MAX_NOTARIES: u64 = 100;
/// Bounded end-of-block work per queue (disputes, data records, jobs).
pub const MAX_CLOSINGS_PER_BLOCK: usize = 50;
/// Most claimants and evaluators per job.
pub const MAX_JOB_CLAIMS: u32 = 64;
pub const MAX_JOB_EVALUATORS: usize = 16;
/// Longest a job may run, in seconds of block time (30 days).
pub const MAX_JOB_DURATION_SECS: i64 = 30 * 86_400;
/// Highest score an evaluator may give (ppm: 1_000_000 = perfect).
pub const MAX_SCORE: u64 = 1_000_000;

/// Stable codes of this part of x-compute (codespace `compute`).
pub mod codes {
    pub const NOT_A_NOTARY: u32 = 121;
    pub const ALREADY_NOTARY: u32 = 122;
    pub const PANEL_FULL: u32 = 123;
    pub const UNKNOWN_DISPUTE: u32 = 124;
    pub const DOUBLE_VOTE: u32 = 125;
    pub const WRONG_WINDOW: u32 = 126;
    pub const ALREADY_DISPUTED: u32 = 127;
    pub const UNKNOWN_TARGET: u32 = 128;
    pub const NO_PANEL: u32 = 129;
    pub const CONFLICT_OF_INTEREST: u32 = 130;
    pub const DATA_EXISTS: u32 = 131;
    pub const JOB_EXISTS: u32 = 132;
    pub const UNKNOWN_JOB: u32 = 133;
    pub const NOT_CLAIMED: u32 = 134;
    pub const ALREADY_CLAIMED: u32 = 135;
    pub const NOT_AN_EVALUATOR: u32 = 136;
    pub const JOB_FULL: u32 = 137;
    pub const NOT_REVEALED: u32 = 138;
}

mod key {
    pub fn notary(owner: &str) -> String {
        format!("compute/notary/{owner}")
    }
    pub fn notary_prefix() -> &'static str {
        "compute/notary/"
    }
    pub fn notary_count() -> &'static str {
        "compute/notary_count"
    }
    pub fn dispute(id: u64) -> String {
        format!("compute/dispute/{id:020}")
    }
    pub fn next_dispute() -> &'static str {
        "compute/next_dispute"
    }
    pub fn dispute_vote(id: u64, notary: &str) -> String {
        format!("compute/dispute_vote/{id:020}/{notary}")
    }
    pub fn dispute_votes(id: u64) -> String {
        format!("compute/dispute_vote/{id:020}/")
    }
    pub fn dispute_deadline_prefix() -> &'static str {
        "compute/dispute_deadline/"
    }
    pub fn dispute_deadline(end: i64, id: u64) -> String {
        format!("compute/dispute_deadline/{:020}/{id:020}", end.max(0))
    }
    pub fn open_dispute(kind: &str, target: &str) -> String {
        format!("compute/open_dispute/{kind}/{target}")
    }
    pub fn data(hash: &str) -> String {
        format!("compute/data/{hash}")
    }
    pub fn data_deadline_prefix() -> &'static str {
        "compute/data_deadline/"
    }
    pub fn data_deadline(end: i64, hash: &str) -> String {
        format!("compute/data_deadline/{:020}/{hash}", end.max(0))
    }
    pub fn job(id: &str) -> String {
        format!("compute/job/{id}")
    }
    pub fn job_deadline_prefix() -> &'static str {
        "compute/job_deadline/"
    }
    pub fn job_deadline(end: i64, id: &str) -> String {
        format!("compute/job_deadline/{:020}/{id}", end.max(0))
    }
    pub fn job_claim(id: &str, worker: &str) -> String {
        format!("compute/job_claim/{id}/{worker}")
    }
    pub fn job_scores(id: &str, evaluator: &str) -> String {
        format!("compute/job_score/{id}/{evaluator}")
    }
    pub fn job_scores_prefix(id: &str) -> String {
        format!("compute/job_score/{id}/")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notary {
    pub owner: String,
    pub bond: String,
    pub joined_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    pub id: u64,
    /// data | contribution | reveal
    pub kind: String,
    pub target: String,
    pub challenger: String,
    /// The worker whose data, contribution or result is challenged.
    pub accused: String,
    pub reason: String,
    pub deposit: String,
    pub opened_at: i64,
    pub vote_end: i64,
    /// Panel size when the dispute opened: the quorum's denominator.
    pub panel_size: u64,
    pub uphold_votes: u64,
    pub reject_votes: u64,
    /// Contribution units frozen while a contribution is disputed.
    pub frozen_units: String,
    /// open | upheld | rejected | no_quorum
    pub status: String,
    pub slashed: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRecord {
    pub data_hash: String,
    pub owner: String,
    pub uri: String,
    pub size_bytes: u64,
    pub domain: String,
    pub fee: String,
    pub registered_at: i64,
    pub challenge_end: i64,
    /// pending | challenged | confirmed | rejected
    pub status: String,
    pub dispute_id: Option<u64>,
    pub units_credited: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub requester: String,
    pub domain: String,
    pub budget: String,
    pub created_at: i64,
    pub commit_end: i64,
    pub reveal_end: i64,
    pub deadline: i64,
    pub evaluators: Vec<String>,
    pub claims: u32,
    /// open | settled
    pub status: String,
    /// (worker, consensus score, payout), ordered by worker; filled at settlement.
    pub payouts: Vec<(String, u64, String)>,
    pub refund: String,
}

fn task_id_of_job(job_id: &str) -> String {
    format!("job:{job_id}")
}

fn window_err(what: String) -> TxError {
    err(codes::WRONG_WINDOW, what)
}

async fn get_u64<S: StateRead>(state: &S, k: &str) -> TxResult<u64> {
    Ok(get_json::<_, u64>(state, k).await?.unwrap_or(0))
}

pub async fn notary<S: StateRead>(state: &S, owner: &str) -> TxResult<Option<Notary>> {
    get_json(state, &key::notary(owner)).await
}
pub async fn dispute<S: StateRead>(state: &S, id: u64) -> TxResult<Option<Dispute>> {
    get_json(state, &key::dispute(id)).await
}
pub async fn data_record<S: StateRead>(state: &S, hash: &str) -> TxResult<Option<DataRecord>> {
    get_json(state, &key::data(&hash.to_ascii_lowercase())).await
}
pub async fn job<S: StateRead>(state: &S, id: &str) -> TxResult<Option<Job>> {
    get_json(state, &key::job(id)).await
}

/// State keys of the records above, for the query layer.
pub fn record_key(kind: &str, id: &str) -> Option<String> {
    match kind {
        "notary" => Some(key::notary(id)),
        "dispute" => id.trim().parse().ok().map(key::dispute),
        "data" => Some(key::data(&id.to_ascii_lowercase())),
        "job" => Some(key::job(id)),
        _ => None,
    }
}

async fn notaries<S: StateRead>(state: &S) -> TxResult<Vec<Notary>> {
    let mut out = Vec::new();
    let mut stream = Box::pin(state.prefix_raw(key::notary_prefix()));
    while let Some(item) = stream.next().await {
        let (k, raw) = item?;
        out.push(
            serde_json::from_slice(&raw)
                .map_err(|e| TxError::Internal(format!("corrupt {k}: {e}")))?,
        );
        if out.len() as u64 >= MAX_NOTARIES {
            break;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- notaries

pub async fn join_notary_panel<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    owner: &str,
    bond: u128,
) -> TxResult<Vec<Event>> {
    let p = compute::params(state).await?;
    if notary(state, owner).await?.is_some() {
        return Err(err(
            codes::ALREADY_NOTARY,
            format!("expected {owner} not on the notary panel, it already is"),
        ));
    }
    if bond < p.notary_min_bond {
        return Err(err(
            compute::codes::BOND_TOO_LOW,
            format!(
                "notary bond: expected at least {}{BOND_DENOM}, got {bond}{BOND_DENOM}",
                p.notary_min_bond
            ),
        ));
    }
    let count = get_u64(state, key::notary_count()).await?;
    if count >= MAX_NOTARIES {
        return Err(err(
            codes::PANEL_FULL,
            format!("expected fewer than {MAX_NOTARIES} notaries, the panel has {count}"),
        ));
    }
    bank::transfer(
        state,
        owner,
        &auth::module_address(NOTARY_POOL),
        BOND_DENOM,
        bond,
    )
    .await?;
    put_json(state, key::notary_count().into(), &count.saturating_add(1))?;
    put_json(
        state,
        key::notary(owner),
        &Notary {
            owner: owner.into(),
            bond: bond.to_string(),
            joined_at: ctx.time,
        },
    )?;
    Ok(vec![Event::new(
        "join_notary_panel",
        [
            ("owner", owner.to_string()).index(),
            ("bond", format!("{bond}{BOND_DENOM}")).index(),
        ],
    )])
}

/// Slashes a notary's bond at the fraudulent-approval rate (burned; never more than the
/// bond). A notary left below the minimum bond leaves the panel and gets the rest back.
async fn slash_notary<S: StateRead + StateWrite>(
    state: &mut S,
    owner: &str,
) -> TxResult<(u128, Vec<Event>)> {
    let p = compute::params(state).await?;
    let Some(mut n) = notary(state, owner).await? else {
        return Ok((0, vec![]));
    };
    let bond = bank::parse_amount(&n.bond)?;
    let amount = magnet_x_compute::slash_amount(bond, Offense::FraudulentApproval, &p);
    let rest = bond
        .checked_sub(amount)
        .ok_or_else(|| TxError::Internal("slash above bond".into()))?;
    let pool = auth::module_address(NOTARY_POOL);
    if amount > 0 {
        bank::burn(state, &pool, BOND_DENOM, amount).await?;
    }
    if rest < p.notary_min_bond {
        if rest > 0 {
            bank::transfer(state, &pool, owner, BOND_DENOM, rest).await?;
        }
        state.delete(key::notary(owner));
        let count = get_u64(state, key::notary_count()).await?;
        put_json(state, key::notary_count().into(), &count.saturating_sub(1))?;
    } else {
        n.bond = rest.to_string();
        put_json(state, key::notary(owner), &n)?;
    }
    Ok((
        amount,
        vec![Event::new(
            "slash",
            [
                ("owner", owner.to_string()).index(),
                ("offense", Offense::FraudulentApproval.as_str().to_string()).index(),
                ("amount", format!("{amount}{BOND_DENOM}")).index(),
                ("bond_left", format!("{rest}{BOND_DENOM}")).index(),
            ],
        )],
    ))
}

// ---------------------------------------------------------------- data records

fn validate_hex_hash(field: &str, h: &str) -> TxResult<String> {
    if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(TxError::InvalidRequest(format!(
            "{field}: expected 64 hex characters (SHA-256), got {h:?}"
        )));
    }
    Ok(h.to_ascii_lowercase())
}

fn validate_label(field: &str, v: &str, max: usize) -> TxResult<()> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.:-".contains(&c));
    if !ok {
        return Err(TxError::InvalidRequest(format!(
            "{field}: expected 1-{max} characters of [A-Za-z0-9_.:-], got {v:?}"
        )));
    }
    Ok(())
}

pub async fn register_data<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    m: &pb::MsgRegisterData,
) -> TxResult<Vec<Event>> {
    let hash = validate_hex_hash("data_hash", &m.data_hash)?;
    validate_label("domain", &m.domain, 64)?;
    if m.uri.is_empty() || m.uri.len() > 512 {
        return Err(TxError::InvalidRequest(format!(
            "uri: expected 1-512 bytes, got {}",
            m.uri.len()
        )));
    }
    if m.size_bytes == 0 {
        return Err(TxError::InvalidRequest(
            "size_bytes: expected > 0, got 0".into(),
        ));
    }
    let w = registered(state, &m.owner).await?;
    if w.unbonding {
        return Err(err(
            compute::codes::ALREADY_UNBONDING,
            format!("worker {} is unbonding: expected an active worker", m.owner),
        ));
    }
    if data_record(state, &hash).await?.is_some() {
        return Err(err(
            codes::DATA_EXISTS,
            format!("data {hash}: expected a new record, it is already registered"),
        ));
    }
    let p = compute::params(state).await?;
    let fee = p.data_registration_fee;
    bank::transfer(
        state,
        &m.owner,
        &auth::module_address(DATA_ESCROW),
        BOND_DENOM,
        fee,
    )
    .await?;
    let window = i64::try_from(p.data_challenge_window_secs).unwrap_or(i64::MAX);
    let challenge_end = ctx.time.saturating_add(window);
    let rec = DataRecord {
        data_hash: hash.clone(),
        owner: m.owner.clone(),
        uri: m.uri.clone(),
        size_bytes: m.size_bytes,
        domain: m.domain.clone(),
        fee: fee.to_string(),
        registered_at: ctx.time,
        challenge_end,
        status: "pending".into(),
        dispute_id: None,
        units_credited: "0".into(),
    };
    put_json(state, key::data(&hash), &rec)?;
    state.put_raw(key::data_deadline(challenge_end, &hash), vec![]);
    Ok(vec![Event::new(
        "register_data",
        [
            ("owner", m.owner.clone()).index(),
            ("data_hash", hash).index(),
            ("fee", format!("{fee}{BOND_DENOM}")).index(),
            ("challenge_end", challenge_end.to_string()).index(),
        ],
    )])
}

/// Confirms a record: splits its fee and credits the owner's data-quality units.
async fn confirm_data<S: StateRead + StateWrite>(
    state: &mut S,
    mut rec: DataRecord,
) -> TxResult<Vec<Event>> {
    let p = compute::params(state).await?;
    let fee = bank::parse_amount(&rec.fee)?;
    let panel = notaries(state).await?;
    let shares = magnet_x_compute::split_data_fee(fee, panel.len() as u64, &p.data_fee_split)?;
    let escrow = auth::module_address(DATA_ESCROW);
    if shares.per_notary > 0 {
        for n in &panel {
            bank::transfer(state, &escrow, &n.owner, BOND_DENOM, shares.per_notary).await?;
        }
    }
    if shares.treasury > 0 {
        bank::transfer(
            state,
            &escrow,
            &auth::module_address(TREASURY),
            BOND_DENOM,
            shares.treasury,
        )
        .await?;
    }
    if shares.burn > 0 {
        bank::burn(state, &escrow, BOND_DENOM, shares.burn).await?;
    }
    let units =
        magnet_x_compute::mul_div(u128::from(rec.size_bytes), p.data_units_per_mib, 1 << 20)?;
    let credited = credit_units(state, &rec.owner, units).await?;
    rec.status = "confirmed".into();
    rec.units_credited = credited.to_string();
    put_json(state, key::data(&rec.data_hash), &rec)?;
    Ok(vec![Event::new(
        "confirm_data",
        [
            ("data_hash", rec.data_hash.clone()).index(),
            ("owner", rec.owner.clone()).index(),
            ("units", credited.to_string()).index(),
            ("burned", shares.burn.to_string()).index(),
        ],
    )])
}

/// Adds units to the owner's contribution of the current epoch, saturating at the cap
/// (end-of-block work must not fail on user-sized numbers). Returns what was added.
async fn credit_units<S: StateRead + StateWrite>(
    state: &mut S,
    owner: &str,
    units: u128,
) -> TxResult<u128> {
    // A worker that left or is unbonding earns nothing (its epoch is forfeited).
    let w = match compute::worker(state, owner).await? {
        Some(w) if !w.unbonding => w,
        _ => return Ok(0),
    };
    let e = compute::epoch(state).await?;
    let have = compute::contribution(state, e.index, owner).await?;
    let total = have.saturating_add(units).min(MAX_EPOCH_UNITS);
    let p = compute::params(state).await?;
    // Σ T·C cannot overflow below 2^128 in practice; if it would, the credit is skipped
    // rather than failing the block.
    if crate::rewards::set_units(state, e.index, owner, w.tier.parse()?, total, &p)
        .await
        .is_err()
    {
        return Ok(0);
    }
    Ok(total.saturating_sub(have))
}

// ---------------------------------------------------------------- disputes

/// Splits `<a>:<owner>` at the last `:` (task ids may contain `:`).
fn split_target(target: &str) -> TxResult<(&str, String)> {
    let (a, owner) = target.rsplit_once(':').ok_or_else(|| {
        TxError::InvalidRequest(format!("target: expected \"<id>:<owner>\", got {target:?}"))
    })?;
    Ok((a, auth::validate_address(owner)?))
}

pub async fn challenge<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    m: &pb::MsgChallenge,
) -> TxResult<Vec<Event>> {
    if m.reason.len() > 512 {
        return Err(TxError::InvalidRequest(format!(
            "reason: expected at most 512 bytes, got {}",
            m.reason.len()
        )));
    }
    let p = compute::params(state).await?;
    let panel_size = get_u64(state, key::notary_count()).await?;
    if panel_size == 0 {
        return Err(err(
            codes::NO_PANEL,
            "expected at least one notary to adjudicate, the panel is empty".into(),
        ));
    }
    let mut challenged_data: Option<DataRecord> = None;
    let mut frozen_units = 0u128;
    let (target, accused) = match m.kind.as_str() {
        "data" => {
            let hash = validate_hex_hash("target", &m.target)?;
            let mut rec = data_record(state, &hash).await?.ok_or_else(|| {
                err(
                    codes::UNKNOWN_TARGET,
                    format!("expected a registered data record {hash}, found none"),
                )
            })?;
            if rec.status != "pending" || ctx.time >= rec.challenge_end {
                return Err(window_err(format!(
                    "data {hash}: expected a pending record before {}, got status {} at {}",
                    rec.challenge_end, rec.status, ctx.time
                )));
            }
            let owner = rec.owner.clone();
            rec.status = "challenged".into();
            // Written once, with the dispute id, after every check has passed.
            challenged_data = Some(rec);
            (hash, owner)
        }
        "contribution" => {
            let (epoch, owner) = split_target(&m.target)?;
            let e = compute::epoch(state).await?;
            if epoch.parse::<u64>().ok() != Some(e.index) {
                return Err(window_err(format!(
                    "contribution: expected one of the current epoch {}, got epoch {epoch:?}",
                    e.index
                )));
            }
            frozen_units = compute::contribution(state, e.index, &owner).await?;
            if frozen_units == 0 {
                return Err(err(
                    codes::UNKNOWN_TARGET,
                    format!(
                        "expected a contribution of {owner} in epoch {}, found none",
                        e.index
                    ),
                ));
            }
            let w = registered(state, &owner).await?;
            let p = compute::params(state).await?;
            crate::rewards::set_units(state, e.index, &owner, w.tier.parse()?, 0, &p).await?;
            (format!("{}:{owner}", e.index), owner)
        }
        "reveal" => {
            let (task_id, owner) = split_target(&m.target)?;
            let mut rec = compute::commit_record(state, task_id, &owner)
                .await?
                .ok_or_else(|| {
                    err(
                        codes::UNKNOWN_TARGET,
                        format!("expected a commitment of {owner} to task {task_id}, found none"),
                    )
                })?;
            if rec.outcome != "revealed" {
                return Err(err(
                    codes::NOT_REVEALED,
                    format!(
                        "task {task_id}: expected a revealed result of {owner}, got outcome {}",
                        rec.outcome
                    ),
                ));
            }
            rec.outcome = "disputed".into();
            state.put_raw(
                crate::state_key::compute::commit(task_id, &owner),
                rec.encode_to_vec(),
            );
            (format!("{task_id}:{owner}"), owner)
        }
        other => {
            return Err(TxError::InvalidRequest(format!(
                "kind: expected data, contribution or reveal, got {other:?}"
            )))
        }
    };
    if accused == m.challenger {
        return Err(err(
            codes::CONFLICT_OF_INTEREST,
            format!("expected a challenger other than the accused, got {accused} for both"),
        ));
    }
    let open_key = key::open_dispute(&m.kind, &target);
    if state.get_raw(&open_key).await?.is_some() {
        return Err(err(
            codes::ALREADY_DISPUTED,
            format!("{} {target}: expected no open dispute, one is open", m.kind),
        ));
    }
    registered(state, &accused).await?;
    let deposit = p.challenge_deposit;
    bank::transfer(
        state,
        &m.challenger,
        &auth::module_address(DISPUTE_ESCROW),
        BOND_DENOM,
        deposit,
    )
    .await?;
    let id = get_u64(state, key::next_dispute()).await?;
    put_json(state, key::next_dispute().into(), &id.saturating_add(1))?;
    let window = i64::try_from(p.dispute_window_secs).unwrap_or(i64::MAX);
    let vote_end = ctx.time.saturating_add(window);
    let d = Dispute {
        id,
        kind: m.kind.clone(),
        target: target.clone(),
        challenger: m.challenger.clone(),
        accused: accused.clone(),
        reason: m.reason.clone(),
        deposit: deposit.to_string(),
        opened_at: ctx.time,
        vote_end,
        panel_size,
        uphold_votes: 0,
        reject_votes: 0,
        frozen_units: frozen_units.to_string(),
        status: "open".into(),
        slashed: "0".into(),
    };
    if let Some(mut rec) = challenged_data {
        rec.dispute_id = Some(id);
        put_json(state, key::data(&target), &rec)?;
    }
    put_json(state, key::dispute(id), &d)?;
    put_json(state, open_key, &id)?;
    state.put_raw(key::dispute_deadline(vote_end, id), vec![]);
    Ok(vec![Event::new(
        "challenge",
        [
            ("dispute_id", id.to_string()).index(),
            ("kind", m.kind.clone()).index(),
            ("target", target).index(),
            ("challenger", m.challenger.clone()).index(),
            ("accused", accused).index(),
            ("vote_end", vote_end.to_string()).index(),
        ],
    )])
}

pub async fn vote_dispute<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    voter: &str,
    id: u64,
    uphold: bool,
) -> TxResult<Vec<Event>> {
    if notary(state, voter).await?.is_none() {
        return Err(err(
            codes::NOT_A_NOTARY,
            format!("expected a notary on the panel, {voter} is not one"),
        ));
    }
    let mut d = dispute(state, id).await?.ok_or_else(|| {
        err(
            codes::UNKNOWN_DISPUTE,
            format!("expected an existing dispute {id}, found none"),
        )
    })?;
    if d.status != "open" || ctx.time >= d.vote_end {
        return Err(window_err(format!(
            "dispute {id}: expected an open dispute before {}, got status {} at {}",
            d.vote_end, d.status, ctx.time
        )));
    }
    if voter == d.accused || voter == d.challenger {
        return Err(err(
            codes::CONFLICT_OF_INTEREST,
            format!("dispute {id}: expected a notary who is neither challenger nor accused, got {voter}"),
        ));
    }
    let vk = key::dispute_vote(id, voter);
    if state.get_raw(&vk).await?.is_some() {
        return Err(err(
            codes::DOUBLE_VOTE,
            format!("dispute {id}: expected one vote from {voter}, got a second"),
        ));
    }
    put_json(state, vk, &uphold)?;
    if uphold {
        d.uphold_votes = d.uphold_votes.saturating_add(1);
    } else {
        d.reject_votes = d.reject_votes.saturating_add(1);
    }
    put_json(state, key::dispute(id), &d)?;
    Ok(vec![Event::new(
        "vote_dispute",
        [
            ("dispute_id", id.to_string()).index(),
            ("notary", voter.to_string()).index(),
            ("uphold", uphold.to_string()).index(),
        ],
    )])
}

/// Keys of a time-ordered queue that are due at `now` (bounded).
async fn due_keys<S: StateRead>(
    state: &S,
    prefix: &str,
    now: i64,
) -> TxResult<Vec<(String, String)>> {
    let mut due = Vec::new();
    let mut stream = Box::pin(state.prefix_raw(prefix));
    while let Some(item) = stream.next().await {
        let (k, _) = item?;
        let rest = k.strip_prefix(prefix).unwrap_or(&k);
        let (time, id) = rest
            .split_once('/')
            .ok_or_else(|| TxError::Internal(format!("corrupt queue key {k}")))?;
        let time: i64 = time
            .parse()
            .map_err(|_| TxError::Internal(format!("corrupt queue key {k}")))?;
        if time > now || due.len() >= MAX_CLOSINGS_PER_BLOCK {
            break;
        }
        due.push((k.clone(), id.to_string()));
    }
    Ok(due)
}

async fn close_dispute<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    mut d: Dispute,
) -> TxResult<Vec<Event>> {
    let p = compute::params(state).await?;
    let verdict = magnet_x_compute::tally(
        d.panel_size,
        d.uphold_votes,
        d.reject_votes,
        p.notary_quorum_ppm,
    );
    let mut events = Vec::new();
    let escrow = auth::module_address(DISPUTE_ESCROW);
    let deposit = bank::parse_amount(&d.deposit)?;
    // The votes, in notary order (bounded by the panel size).
    let mut votes = Vec::new();
    {
        let prefix = key::dispute_votes(d.id);
        let mut stream = Box::pin(state.prefix_raw(&prefix));
        while let Some(item) = stream.next().await {
            let (k, raw) = item?;
            let uphold: bool = serde_json::from_slice(&raw)
                .map_err(|e| TxError::Internal(format!("corrupt {k}: {e}")))?;
            votes.push((k.strip_prefix(&prefix).unwrap_or(&k).to_string(), uphold));
        }
    }
    match verdict {
        Verdict::Upheld => {
            bank::transfer(state, &escrow, &d.challenger, BOND_DENOM, deposit).await?;
            let offense = if d.kind == "data" {
                Offense::BadData
            } else {
                Offense::FabricatedCompute
            };
            let (amount, ev) = compute::slash(state, &d.accused, offense).await?;
            d.slashed = amount.to_string();
            events.extend(ev);
            for (n, uphold) in &votes {
                if !uphold {
                    events.extend(slash_notary(state, n).await?.1);
                }
            }
            match d.kind.as_str() {
                "data" => {
                    if let Some(mut rec) = data_record(state, &d.target).await? {
                        let fee = bank::parse_amount(&rec.fee)?;
                        bank::transfer(
                            state,
                            &auth::module_address(DATA_ESCROW),
                            &auth::module_address(TREASURY),
                            BOND_DENOM,
                            fee,
                        )
                        .await?;
                        rec.status = "rejected".into();
                        put_json(state, key::data(&d.target), &rec)?;
                    }
                }
                "reveal" => set_reveal_outcome(state, &d.target, "fabricated").await?,
                // Frozen contribution units are simply dropped.
                _ => {}
            }
        }
        Verdict::Rejected | Verdict::NoQuorum => {
            if verdict == Verdict::Rejected {
                // The challenger lost: its deposit is burned.
                bank::burn(state, &escrow, BOND_DENOM, deposit).await?;
            } else {
                bank::transfer(state, &escrow, &d.challenger, BOND_DENOM, deposit).await?;
            }
            match d.kind.as_str() {
                "data" => {
                    if let Some(rec) = data_record(state, &d.target).await? {
                        events.extend(confirm_data(state, rec).await?);
                    }
                }
                "reveal" => set_reveal_outcome(state, &d.target, "revealed").await?,
                _ => {
                    let units = bank::parse_amount(&d.frozen_units)?;
                    credit_units(state, &d.accused, units).await?;
                }
            }
        }
    }
    d.status = verdict.as_str().into();
    state.delete(key::open_dispute(&d.kind, &d.target));
    put_json(state, key::dispute(d.id), &d)?;
    events.push(Event::new(
        "close_dispute",
        [
            ("dispute_id", d.id.to_string()).index(),
            ("verdict", verdict.as_str().to_string()).index(),
            ("uphold", d.uphold_votes.to_string()).index(),
            ("reject", d.reject_votes.to_string()).index(),
            ("slashed", d.slashed.clone()).index(),
            ("height", ctx.height.to_string()).index(),
        ],
    ));
    Ok(events)
}

async fn set_reveal_outcome<S: StateRead + StateWrite>(
    state: &mut S,
    target: &str,
    outcome: &str,
) -> TxResult<()> {
    let (task_id, owner) = split_target(target)?;
    if let Some(mut rec) = compute::commit_record(state, task_id, &owner).await? {
        rec.outcome = outcome.into();
        state.put_raw(
            crate::state_key::compute::commit(task_id, &owner),
            rec.encode_to_vec(),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- research jobs

pub async fn create_job<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    m: &pb::MsgCreateJob,
) -> TxResult<Vec<Event>> {
    validate_label("job_id", &m.job_id, 48)?;
    validate_label("domain", &m.domain, 64)?;
    let budget = bank::parse_amount(&m.budget)?;
    if budget == 0 {
        return Err(TxError::InvalidCoins(
            "budget: expected > 0umag, got 0".into(),
        ));
    }
    let ordered =
        ctx.time < m.commit_end && m.commit_end < m.reveal_end && m.reveal_end < m.deadline;
    if !ordered || m.deadline.saturating_sub(ctx.time) > MAX_JOB_DURATION_SECS {
        return Err(window_err(format!(
            "expected now ({}) < commit_end < reveal_end < deadline <= now + {MAX_JOB_DURATION_SECS}s, got {} / {} / {}",
            ctx.time, m.commit_end, m.reveal_end, m.deadline
        )));
    }
    if m.evaluators.is_empty() || m.evaluators.len() > MAX_JOB_EVALUATORS {
        return Err(TxError::InvalidRequest(format!(
            "evaluators: expected 1-{MAX_JOB_EVALUATORS}, got {}",
            m.evaluators.len()
        )));
    }
    let mut evaluators = std::collections::BTreeSet::new();
    for e in &m.evaluators {
        if !evaluators.insert(auth::validate_address(e)?) {
            return Err(TxError::InvalidRequest(format!(
                "evaluators: expected each address once, got {e} twice"
            )));
        }
    }
    if job(state, &m.job_id).await?.is_some() {
        return Err(err(
            codes::JOB_EXISTS,
            format!("job {}: expected a new id, it exists", m.job_id),
        ));
    }
    let task_id = task_id_of_job(&m.job_id);
    if compute::task(state, &task_id).await?.is_some() {
        return Err(err(
            codes::JOB_EXISTS,
            format!("task {task_id}: expected a new id, it exists"),
        ));
    }
    bank::transfer(
        state,
        &m.requester,
        &auth::module_address(JOB_ESCROW),
        BOND_DENOM,
        budget,
    )
    .await?;
    let t = pb::Task {
        task_id: task_id.clone(),
        opened_at: ctx.time,
        commit_window_end: m.commit_end,
        reveal_window_end: m.reveal_end,
        commit_count: 0,
        closed: false,
    };
    state.put_raw(crate::state_key::compute::task(&task_id), t.encode_to_vec());
    state.put_raw(
        crate::state_key::compute::task_deadline(m.reveal_end, &task_id),
        vec![],
    );
    let j = Job {
        job_id: m.job_id.clone(),
        requester: m.requester.clone(),
        domain: m.domain.clone(),
        budget: budget.to_string(),
        created_at: ctx.time,
        commit_end: m.commit_end,
        reveal_end: m.reveal_end,
        deadline: m.deadline,
        evaluators: evaluators.into_iter().collect(),
        claims: 0,
        status: "open".into(),
        payouts: vec![],
        refund: "0".into(),
    };
    put_json(state, key::job(&m.job_id), &j)?;
    state.put_raw(key::job_deadline(m.deadline, &m.job_id), vec![]);
    Ok(vec![Event::new(
        "create_job",
        [
            ("job_id", m.job_id.clone()).index(),
            ("requester", m.requester.clone()).index(),
            ("budget", format!("{budget}{BOND_DENOM}")).index(),
            ("deadline", m.deadline.to_string()).index(),
        ],
    )])
}

async fn open_job<S: StateRead>(state: &S, job_id: &str) -> TxResult<Job> {
    job(state, job_id).await?.ok_or_else(|| {
        err(
            codes::UNKNOWN_JOB,
            format!("expected an existing job {job_id}, found none"),
        )
    })
}

pub async fn claim_job<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    worker: &str,
    job_id: &str,
) -> TxResult<Vec<Event>> {
    let mut j = open_job(state, job_id).await?;
    let w = registered(state, worker).await?;
    if w.unbonding {
        return Err(err(
            compute::codes::ALREADY_UNBONDING,
            format!("worker {worker} is unbonding: expected an active worker"),
        ));
    }
    if ctx.time >= j.commit_end {
        return Err(window_err(format!(
            "job {job_id}: expected a claim before {}, got {}",
            j.commit_end, ctx.time
        )));
    }
    let ck = key::job_claim(job_id, worker);
    if state.get_raw(&ck).await?.is_some() {
        return Err(err(
            codes::ALREADY_CLAIMED,
            format!("job {job_id}: expected one claim from {worker}, got a second"),
        ));
    }
    if j.claims >= MAX_JOB_CLAIMS {
        return Err(err(
            codes::JOB_FULL,
            format!("job {job_id}: expected fewer than {MAX_JOB_CLAIMS} claims, it is full"),
        ));
    }
    state.put_raw(ck, vec![]);
    j.claims = j.claims.saturating_add(1);
    put_json(state, key::job(job_id), &j)?;
    Ok(vec![Event::new(
        "claim_job",
        [
            ("job_id", job_id.to_string()).index(),
            ("worker", worker.to_string()).index(),
        ],
    )])
}

/// Commits to a job's task are open to its claimants only.
pub async fn check_job_commit<S: StateRead>(state: &S, task_id: &str, owner: &str) -> TxResult<()> {
    let Some(job_id) = task_id.strip_prefix("job:") else {
        return Ok(());
    };
    open_job(state, job_id).await?;
    if state
        .get_raw(&key::job_claim(job_id, owner))
        .await?
        .is_none()
    {
        return Err(err(
            codes::NOT_CLAIMED,
            format!("job {job_id}: expected a claim by {owner} before committing, found none"),
        ));
    }
    Ok(())
}

pub async fn score_job<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    m: &pb::MsgScoreJob,
) -> TxResult<Vec<Event>> {
    let j = open_job(state, &m.job_id).await?;
    if !j.evaluators.iter().any(|e| e == &m.evaluator) {
        return Err(err(
            codes::NOT_AN_EVALUATOR,
            format!(
                "job {}: expected one of its evaluators, got {}",
                m.job_id, m.evaluator
            ),
        ));
    }
    if ctx.time < j.reveal_end || ctx.time >= j.deadline || j.status != "open" {
        return Err(window_err(format!(
            "job {}: expected scores in [{}, {}), got {}",
            m.job_id, j.reveal_end, j.deadline, ctx.time
        )));
    }
    let sk = key::job_scores(&m.job_id, &m.evaluator);
    if state.get_raw(&sk).await?.is_some() {
        return Err(err(
            codes::DOUBLE_VOTE,
            format!(
                "job {}: expected one score set from {}, got a second",
                m.job_id, m.evaluator
            ),
        ));
    }
    if m.scores.is_empty() || m.scores.len() > MAX_JOB_CLAIMS as usize {
        return Err(TxError::InvalidRequest(format!(
            "scores: expected 1-{MAX_JOB_CLAIMS}, got {}",
            m.scores.len()
        )));
    }
    let task_id = task_id_of_job(&m.job_id);
    let mut scores = BTreeMap::new();
    for s in &m.scores {
        let worker = auth::validate_address(&s.worker)?;
        if s.score > MAX_SCORE {
            return Err(TxError::InvalidRequest(format!(
                "score of {worker}: expected at most {MAX_SCORE}, got {}",
                s.score
            )));
        }
        let revealed = compute::commit_record(state, &task_id, &worker)
            .await?
            .is_some_and(|r| r.outcome == "revealed");
        if !revealed {
            return Err(err(
                codes::NOT_REVEALED,
                format!(
                    "job {}: expected a revealed result of {worker}, found none",
                    m.job_id
                ),
            ));
        }
        if scores.insert(worker.clone(), s.score).is_some() {
            return Err(TxError::InvalidRequest(format!(
                "scores: expected each worker once, got {worker} twice"
            )));
        }
    }
    put_json(state, sk, &scores)?;
    Ok(vec![Event::new(
        "score_job",
        [
            ("job_id", m.job_id.clone()).index(),
            ("evaluator", m.evaluator.clone()).index(),
            ("scored", scores.len().to_string()).index(),
        ],
    )])
}

async fn settle_job<S: StateRead + StateWrite>(state: &mut S, mut j: Job) -> TxResult<Vec<Event>> {
    let task_id = task_id_of_job(&j.job_id);
    // Every evaluator's score of every result still standing (a result found
    // fabricated by the panel after scoring earns nothing).
    let mut given: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    {
        let prefix = key::job_scores_prefix(&j.job_id);
        let mut stream = Box::pin(state.prefix_raw(&prefix));
        while let Some(item) = stream.next().await {
            let (k, raw) = item?;
            let set: BTreeMap<String, u64> = serde_json::from_slice(&raw)
                .map_err(|e| TxError::Internal(format!("corrupt {k}: {e}")))?;
            for (w, s) in set {
                given.entry(w).or_default().push(s);
            }
        }
    }
    let mut consensus = BTreeMap::new();
    for (w, s) in &given {
        let standing = compute::commit_record(state, &task_id, w)
            .await?
            .is_some_and(|r| r.outcome == "revealed");
        if let (true, Some(c)) = (standing, magnet_x_compute::consensus_score(s)) {
            consensus.insert(w.clone(), c);
        }
    }
    let budget = bank::parse_amount(&j.budget)?;
    let out = magnet_x_compute::settle_job(budget, &consensus)?;
    let escrow = auth::module_address(JOB_ESCROW);
    for (w, pay) in &out.payouts {
        bank::transfer(state, &escrow, w, BOND_DENOM, *pay).await?;
    }
    if out.refund > 0 {
        bank::transfer(state, &escrow, &j.requester, BOND_DENOM, out.refund).await?;
    }
    j.status = "settled".into();
    j.refund = out.refund.to_string();
    j.payouts = consensus
        .iter()
        .map(|(w, s)| {
            let pay = out.payouts.get(w).copied().unwrap_or(0);
            (w.clone(), *s, pay.to_string())
        })
        .collect();
    put_json(state, key::job(&j.job_id), &j)?;
    Ok(vec![Event::new(
        "settle_job",
        [
            ("job_id", j.job_id.clone()).index(),
            ("paid", (budget.saturating_sub(out.refund)).to_string()).index(),
            ("refund", out.refund.to_string()).index(),
            ("contributors", out.payouts.len().to_string()).index(),
        ],
    )])
}

// ---------------------------------------------------------------- end of block

/// Closes due disputes, confirms unchallenged data, settles jobs past their deadline.
pub async fn end_block<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
) -> TxResult<Vec<Event>> {
    let mut events = Vec::new();
    for (k, id) in due_keys(state, key::dispute_deadline_prefix(), ctx.time).await? {
        state.delete(k);
        let id: u64 = id
            .parse()
            .map_err(|_| TxError::Internal(format!("corrupt dispute id {id}")))?;
        if let Some(d) = dispute(state, id).await? {
            events.extend(close_dispute(state, ctx, d).await?);
        }
    }
    // A record's deadline entry may be due while a dispute still runs: the verdict decides.
    for (k, hash) in due_keys(state, key::data_deadline_prefix(), ctx.time).await? {
        state.delete(k);
        if let Some(rec) = data_record(state, &hash).await? {
            if rec.status == "pending" {
                events.extend(confirm_data(state, rec).await?);
            }
        }
    }
    for (k, id) in due_keys(state, key::job_deadline_prefix(), ctx.time).await? {
        state.delete(k);
        if let Some(j) = job(state, &id).await? {
            if j.status == "open" {
                events.extend(settle_job(state, j).await?);
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_last_colon() {
        let owner = auth::module_address("w");
        let target = format!("job:abc:{owner}");
        let (task, o) = split_target(&target).expect("split");
        assert_eq!((task, o.as_str()), ("job:abc", owner.as_str()));
        assert!(split_target("no-colon").is_err());
        assert!(split_target("t:not-an-address").is_err());
    }

    #[test]
    fn record_keys_are_distinct_per_kind() {
        assert_eq!(
            record_key("dispute", "7").as_deref(),
            Some("compute/dispute/00000000000000000007")
        );
        assert_eq!(record_key("dispute", "x"), None);
        assert_eq!(record_key("nope", "x"), None);
    }
}
