//! gov: parameter-change proposals for x-compute, voted by validator operators.
//!
//! A proposal carries a JSON merge patch of [`ComputeParams`] and a deposit of at least
//! `min_deposit` (held by the `gov` module account). The patched params must validate at
//! submission. Validator operators (from genesis, with their voting power) vote yes / no /
//! abstain once each until `voting_period_secs` of block time have passed. Then, at the end
//! of a block: quorum = voted power ≥ `quorum_ppm` of all power; passed = yes > `threshold_ppm`
//! of (yes + no). With quorum the deposit comes back, without it is burned. A passed proposal
//! is re-applied to the params in force (and validated again) and takes effect when the
//! current epoch settles, so an epoch is always paid under one parameter set.

use cnidarium::{StateRead, StateWrite};
use futures::StreamExt;
use magnet_x_compute::ComputeParams;
use serde::{Deserialize, Serialize};
use tendermint::abci::{Event, EventAttributeIndexExt};

use crate::compute::{get_json, put_json, BlockCtx};
use crate::error::{TxError, TxResult};
use crate::params::BOND_DENOM;
use crate::{auth, bank};

pub const CODESPACE: &str = "gov";
/// Module account holding proposal deposits.
pub const GOV_ACCOUNT: &str = "gov";
/// Proposals tallied per block (bounded end-of-block work).
pub const MAX_TALLIES_PER_BLOCK: usize = 10;
pub const MAX_TITLE_BYTES: usize = 140;
pub const MAX_CHANGES_BYTES: usize = 8192;

pub mod codes {
    pub const UNKNOWN_PROPOSAL: u32 = 2;
    pub const INVALID_PARAMS: u32 = 3;
    pub const DEPOSIT_TOO_LOW: u32 = 4;
    pub const NOT_A_VALIDATOR: u32 = 5;
    pub const DOUBLE_VOTE: u32 = 6;
    pub const VOTING_CLOSED: u32 = 7;
    pub const INVALID_OPTION: u32 = 8;
}

fn err(code: u32, message: String) -> TxError {
    TxError::Module {
        codespace: CODESPACE,
        code,
        message,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovParams {
    /// Smallest deposit a proposal needs, in umag.
    pub min_deposit: String,
    pub voting_period_secs: u64,
    /// Share of all voting power that must vote, in ppm.
    pub quorum_ppm: u64,
    /// Share of yes among yes + no needed to pass (strictly more than), in ppm.
    pub threshold_ppm: u64,
}

impl Default for GovParams {
    fn default() -> Self {
        GovParams {
            min_deposit: (1_000u128 * magnet_x_compute::params::UMAG_PER_MAG).to_string(),
            voting_period_secs: 600,
            quorum_ppm: 334_000,
            threshold_ppm: 500_000,
        }
    }
}

impl GovParams {
    pub fn validate(&self) -> Result<(), String> {
        let d: u128 = self.min_deposit.parse().map_err(|_| {
            format!(
                "gov min_deposit: expected a decimal amount, got {:?}",
                self.min_deposit
            )
        })?;
        if d == 0 {
            return Err("gov min_deposit: expected > 0, got 0".into());
        }
        if !(1..=30 * 86_400).contains(&self.voting_period_secs) {
            return Err(format!(
                "gov voting_period_secs: expected in [1, 2592000], got {}",
                self.voting_period_secs
            ));
        }
        for (name, v) in [
            ("quorum_ppm", self.quorum_ppm),
            ("threshold_ppm", self.threshold_ppm),
        ] {
            if !(1..=1_000_000).contains(&v) {
                return Err(format!("gov {name}: expected in [1, 1000000], got {v}"));
            }
        }
        Ok(())
    }
}

/// A validator operator account and its voting power.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisValidator {
    pub operator: String,
    pub power: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GovGenesis {
    #[serde(default)]
    pub params: GovParams,
    /// Filled by `magnetd genesis collect` from the gentxs.
    #[serde(default)]
    pub validators: Vec<GenesisValidator>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u64,
    pub proposer: String,
    pub title: String,
    /// The JSON merge patch, as submitted.
    pub changes: serde_json::Value,
    pub deposit: String,
    pub submitted_at: i64,
    pub voting_end: i64,
    pub yes: u64,
    pub no: u64,
    pub abstain: u64,
    /// voting | passed | rejected | failed (passed, but no longer valid against the params in force)
    pub status: String,
    pub total_power: u64,
}

mod key {
    pub fn params() -> &'static str {
        "gov/params"
    }
    pub fn validator(op: &str) -> String {
        format!("gov/validator/{op}")
    }
    pub fn validator_prefix() -> &'static str {
        "gov/validator/"
    }
    pub fn total_power() -> &'static str {
        "gov/total_power"
    }
    pub fn proposal(id: u64) -> String {
        format!("gov/proposal/{id:020}")
    }
    pub fn next_proposal() -> &'static str {
        "gov/next_proposal"
    }
    pub fn vote(id: u64, voter: &str) -> String {
        format!("gov/vote/{id:020}/{voter}")
    }
    pub fn deadline_prefix() -> &'static str {
        "gov/deadline/"
    }
    pub fn deadline(end: i64, id: u64) -> String {
        format!("gov/deadline/{:020}/{id:020}", end.max(0))
    }
    pub fn pending_params() -> &'static str {
        "compute/pending_params"
    }
}

pub fn proposal_key(id: u64) -> String {
    key::proposal(id)
}
pub fn params_key() -> &'static str {
    key::params()
}
pub fn validator_prefix() -> &'static str {
    key::validator_prefix()
}

pub fn init_genesis<S: StateWrite>(state: &mut S, g: &GovGenesis) -> TxResult<()> {
    put_json(state, key::params().into(), &g.params)?;
    let mut total = 0u64;
    for v in &g.validators {
        put_json(state, key::validator(&v.operator), &v.power)?;
        total = total
            .checked_add(v.power)
            .ok_or_else(|| TxError::Overflow("total voting power exceeds 2^64".into()))?;
    }
    put_json(state, key::total_power().into(), &total)
}

/// The gov part of `magnetd export`.
pub async fn export<S: StateRead>(state: &S) -> TxResult<GovGenesis> {
    let mut validators = Vec::new();
    let mut stream = Box::pin(state.prefix_raw(key::validator_prefix()));
    while let Some(item) = stream.next().await {
        let (k, raw) = item?;
        let power: u64 = serde_json::from_slice(&raw)
            .map_err(|e| TxError::Internal(format!("corrupt {k}: {e}")))?;
        let operator = k
            .strip_prefix(key::validator_prefix())
            .unwrap_or(&k)
            .to_string();
        validators.push(GenesisValidator { operator, power });
    }
    Ok(GovGenesis {
        params: params(state).await?,
        validators,
    })
}

pub async fn params<S: StateRead>(state: &S) -> TxResult<GovParams> {
    Ok(get_json(state, key::params()).await?.unwrap_or_default())
}

pub async fn proposal<S: StateRead>(state: &S, id: u64) -> TxResult<Option<Proposal>> {
    get_json(state, &key::proposal(id)).await
}

/// RFC 7386 merge patch: objects merge recursively, anything else replaces.
fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(slot) if v.is_object() => merge(slot, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// The params that `changes` would give on top of `current`, validated.
pub fn apply_changes(
    current: &ComputeParams,
    changes: &serde_json::Value,
) -> TxResult<ComputeParams> {
    if !changes.is_object() {
        return Err(err(
            codes::INVALID_PARAMS,
            format!("changes: expected a JSON object, got {changes}"),
        ));
    }
    let mut v = serde_json::to_value(current).map_err(|e| TxError::Internal(e.to_string()))?;
    merge(&mut v, changes);
    let p: ComputeParams = serde_json::from_value(v)
        .map_err(|e| err(codes::INVALID_PARAMS, format!("changes: {e}")))?;
    p.validate().map_err(|e| err(codes::INVALID_PARAMS, e))?;
    Ok(p)
}

pub async fn submit_proposal<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    proposer: &str,
    title: &str,
    changes: &str,
    deposit: u128,
) -> TxResult<Vec<Event>> {
    if title.is_empty() || title.len() > MAX_TITLE_BYTES {
        return Err(TxError::InvalidRequest(format!(
            "title: expected 1-{MAX_TITLE_BYTES} bytes, got {}",
            title.len()
        )));
    }
    if changes.len() > MAX_CHANGES_BYTES {
        return Err(TxError::InvalidRequest(format!(
            "changes: expected at most {MAX_CHANGES_BYTES} bytes, got {}",
            changes.len()
        )));
    }
    let patch: serde_json::Value = serde_json::from_str(changes).map_err(|e| {
        err(
            codes::INVALID_PARAMS,
            format!("changes: expected JSON, got an error: {e}"),
        )
    })?;
    let current = crate::compute::params(state).await?;
    apply_changes(&current, &patch)?;
    let gp = params(state).await?;
    let min: u128 = bank::parse_amount(&gp.min_deposit)?;
    if deposit < min {
        return Err(err(
            codes::DEPOSIT_TOO_LOW,
            format!("deposit: expected at least {min}{BOND_DENOM}, got {deposit}{BOND_DENOM}"),
        ));
    }
    bank::transfer(
        state,
        proposer,
        &auth::module_address(GOV_ACCOUNT),
        BOND_DENOM,
        deposit,
    )
    .await?;
    let id: u64 = get_json(state, key::next_proposal()).await?.unwrap_or(0);
    put_json(state, key::next_proposal().into(), &id.saturating_add(1))?;
    let period = i64::try_from(gp.voting_period_secs).unwrap_or(i64::MAX);
    let voting_end = ctx.time.saturating_add(period);
    let total_power: u64 = get_json(state, key::total_power()).await?.unwrap_or(0);
    let p = Proposal {
        id,
        proposer: proposer.into(),
        title: title.into(),
        changes: patch,
        deposit: deposit.to_string(),
        submitted_at: ctx.time,
        voting_end,
        yes: 0,
        no: 0,
        abstain: 0,
        status: "voting".into(),
        total_power,
    };
    put_json(state, key::proposal(id), &p)?;
    state.put_raw(key::deadline(voting_end, id), vec![]);
    Ok(vec![Event::new(
        "submit_proposal",
        [
            ("proposal_id", id.to_string()).index(),
            ("proposer", proposer.to_string()).index(),
            ("voting_end", voting_end.to_string()).index(),
        ],
    )])
}

pub async fn vote<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
    voter: &str,
    id: u64,
    option: &str,
) -> TxResult<Vec<Event>> {
    let power: u64 = get_json(state, &key::validator(voter))
        .await?
        .filter(|p: &u64| *p > 0)
        .ok_or_else(|| {
            err(
                codes::NOT_A_VALIDATOR,
                format!("expected a validator operator with voting power, {voter} has none"),
            )
        })?;
    let mut p = proposal(state, id).await?.ok_or_else(|| {
        err(
            codes::UNKNOWN_PROPOSAL,
            format!("expected an existing proposal {id}, found none"),
        )
    })?;
    if p.status != "voting" || ctx.time >= p.voting_end {
        return Err(err(
            codes::VOTING_CLOSED,
            format!(
                "proposal {id}: expected a vote before {}, got status {} at {}",
                p.voting_end, p.status, ctx.time
            ),
        ));
    }
    let vk = key::vote(id, voter);
    if state.get_raw(&vk).await?.is_some() {
        return Err(err(
            codes::DOUBLE_VOTE,
            format!("proposal {id}: expected one vote from {voter}, got a second"),
        ));
    }
    let slot = match option {
        "yes" => &mut p.yes,
        "no" => &mut p.no,
        "abstain" => &mut p.abstain,
        other => {
            return Err(err(
                codes::INVALID_OPTION,
                format!("option: expected yes, no or abstain, got {other:?}"),
            ))
        }
    };
    *slot = slot
        .checked_add(power)
        .ok_or_else(|| TxError::Overflow("vote tally exceeds 2^64".into()))?;
    put_json(state, vk, &option)?;
    put_json(state, key::proposal(id), &p)?;
    Ok(vec![Event::new(
        "proposal_vote",
        [
            ("proposal_id", id.to_string()).index(),
            ("voter", voter.to_string()).index(),
            ("option", option.to_string()).index(),
            ("power", power.to_string()).index(),
        ],
    )])
}

/// (quorum reached, passed) for a tally.
pub fn tally(yes: u64, no: u64, abstain: u64, total: u64, gp: &GovParams) -> (bool, bool) {
    // u64 values widened to u128: none of these sums or products can overflow.
    let w = u128::from;
    let voted = w(yes).saturating_add(w(no)).saturating_add(w(abstain));
    let quorum =
        total > 0 && voted.saturating_mul(1_000_000) >= w(gp.quorum_ppm).saturating_mul(w(total));
    let cast = w(yes).saturating_add(w(no));
    let passed = quorum
        && cast > 0
        && w(yes).saturating_mul(1_000_000) > w(gp.threshold_ppm).saturating_mul(cast);
    (quorum, passed)
}

pub async fn end_block<S: StateRead + StateWrite>(
    state: &mut S,
    ctx: BlockCtx,
) -> TxResult<Vec<Event>> {
    let prefix = key::deadline_prefix();
    let mut due = Vec::new();
    {
        let mut stream = Box::pin(state.prefix_raw(prefix));
        while let Some(item) = stream.next().await {
            let (k, _) = item?;
            let rest = k.strip_prefix(prefix).unwrap_or(&k);
            let parsed = rest
                .split_once('/')
                .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.parse::<u64>().ok()?)));
            let (t, id) = parsed.ok_or_else(|| TxError::Internal(format!("corrupt key {k}")))?;
            if t > ctx.time || due.len() >= MAX_TALLIES_PER_BLOCK {
                break;
            }
            due.push((k.clone(), id));
        }
    }
    let mut events = Vec::new();
    let gp = params(state).await?;
    let gov_addr = auth::module_address(GOV_ACCOUNT);
    for (k, id) in due {
        state.delete(k);
        let Some(mut p) = proposal(state, id).await? else {
            continue;
        };
        let (quorum, passed) = tally(p.yes, p.no, p.abstain, p.total_power, &gp);
        let deposit = bank::parse_amount(&p.deposit)?;
        if quorum {
            bank::transfer(state, &gov_addr, &p.proposer, BOND_DENOM, deposit).await?;
        } else {
            bank::burn(state, &gov_addr, BOND_DENOM, deposit).await?;
        }
        p.status = if passed {
            // Applied on top of whatever is in force (or already pending) now.
            let base = match get_json::<_, ComputeParams>(state, key::pending_params()).await? {
                Some(pending) => pending,
                None => crate::compute::params(state).await?,
            };
            match apply_changes(&base, &p.changes) {
                Ok(next) => {
                    put_json(state, key::pending_params().into(), &next)?;
                    "passed".into()
                }
                Err(_) => "failed".into(),
            }
        } else {
            "rejected".into()
        };
        put_json(state, key::proposal(id), &p)?;
        events.push(Event::new(
            "proposal_tally",
            [
                ("proposal_id", id.to_string()).index(),
                ("status", p.status.clone()).index(),
                ("yes", p.yes.to_string()).index(),
                ("no", p.no.to_string()).index(),
                ("abstain", p.abstain.to_string()).index(),
                ("deposit_burned", (!quorum).to_string()).index(),
            ],
        ));
    }
    Ok(events)
}

/// Called right after an epoch settles: params voted in take effect for the new epoch.
pub async fn apply_pending_params<S: StateRead + StateWrite>(
    state: &mut S,
) -> TxResult<Vec<Event>> {
    let Some(next) = get_json::<_, ComputeParams>(state, key::pending_params()).await? else {
        return Ok(vec![]);
    };
    crate::compute::put_params(state, &next)?;
    state.delete(key::pending_params().into());
    Ok(vec![Event::new(
        "params_changed",
        [("module", "compute".to_string()).index()],
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merge_patch_changes_only_named_fields_and_refuses_bad_ones() {
        let cur = ComputeParams::default();
        let p = apply_changes(
            &cur,
            &serde_json::json!({"tier_multiplier_ppm": {"gpu_compute": 2_000_000}}),
        )
        .expect("valid");
        assert_eq!(p.tier_multiplier_ppm.gpu_compute, 2_000_000);
        assert_eq!(
            p.tier_multiplier_ppm.orchestrator,
            cur.tier_multiplier_ppm.orchestrator
        );
        let e = apply_changes(
            &cur,
            &serde_json::json!({"slash_rate_ppm": {"bad_data": 5}}),
        )
        .unwrap_err();
        assert_eq!(
            (e.codespace(), e.code()),
            (CODESPACE, codes::INVALID_PARAMS)
        );
        assert!(e.to_string().contains("slash_rate_ppm.bad_data"), "{e}");
        let e = apply_changes(&cur, &serde_json::json!({"no_such_param": 1})).unwrap_err();
        assert!(e.to_string().contains("no_such_param"), "{e}");
        assert!(apply_changes(&cur, &serde_json::json!([1])).is_err());
    }

    proptest! {
        #[test]
        fn tally_passes_only_with_quorum_and_a_yes_majority(yes in 0u64..1000, no in 0u64..1000, ab in 0u64..1000, extra in 0u64..3000) {
            let gp = GovParams::default();
            let total = yes + no + ab + extra;
            let (q, passed) = tally(yes, no, ab, total, &gp);
            prop_assert_eq!(q, total > 0 && (yes + no + ab) as u128 * 1_000_000 >= 334_000u128 * total as u128);
            if passed { prop_assert!(q && yes > no); }
            if q && yes > no { prop_assert!(passed); }
        }
    }
}
