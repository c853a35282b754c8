//! Epoch rewards with lazy payout, so settling an epoch costs O(1) in FinalizeBlock
//! whatever the number of workers (the approach of the Cosmos SDK's F1 distribution).
//!
//! - While an epoch runs, each contribution updates the worker's units and the epoch's
//!   running totals: Σ T_j·C_j (tier multipliers are fixed within an epoch: governance
//!   changes apply at settlement) and the number of contributors.
//! - Settlement mints the schedule's release into [`REWARDS_POOL`](crate::compute::REWARDS_POOL)
//!   and records a pot: `pool`, `Σ T·C`, contributors. Nothing is paid per worker here.
//! - A worker is paid `R_i = ⌊pool · T_i·C_i / Σ T·C⌋` for each settled epoch on its next
//!   heartbeat, `claim-rewards` or `begin-unbond` (at most [`MAX_CLAIMS_PER_TX`] epochs a
//!   message). The same integer formula as [`magnet_x_compute::settle_epoch`], so every
//!   worker receives exactly what an eager settlement would have paid.
//! - When the last contributor of an epoch has claimed, its remainder
//!   `pool − Σ R_i` is carried into the next settlement or burned, per params: never minted.

use cnidarium::{StateRead, StateWrite};
use futures::StreamExt;
use magnet_x_compute::{ComputeParams, PerTier, RemainderPolicy, Tier};
use serde::{Deserialize, Serialize};
use tendermint::abci::{Event, EventAttributeIndexExt};

use crate::compute::{get_json, put_json, REWARDS_POOL};
use crate::error::{TxError, TxResult};
use crate::params::BOND_DENOM;
use crate::{auth, bank, state_key};

/// Settled epochs paid per message (bounds a heartbeat's work).
pub const MAX_CLAIMS_PER_TX: usize = 64;

/// Running totals of the epoch being accumulated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochTotals {
    /// Σ T_j·C_j (ppm-weighted units), decimal.
    pub total_weight: String,
    pub contributors: u64,
}

/// What a settled epoch still owes its contributors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pot {
    pub epoch: u64,
    pub pool: String,
    pub total_weight: String,
    /// The tier multipliers the epoch was settled under.
    pub tier_multiplier_ppm: PerTier<u64>,
    pub contributors_left: u64,
    pub paid: String,
}

/// One worker's reward for one epoch (queryable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardRecord {
    pub epoch: u64,
    pub owner: String,
    pub units: String,
    pub weight: String,
    pub reward: String,
    pub claimed: bool,
}

mod key {
    pub fn totals(e: u64) -> String {
        format!("compute/epoch_totals/{e:020}")
    }
    pub fn pot(e: u64) -> String {
        format!("compute/pot/{e:020}")
    }
    pub fn unclaimed(owner: &str, e: u64) -> String {
        format!("compute/unclaimed/{owner}/{e:020}")
    }
    pub fn unclaimed_of(owner: &str) -> String {
        format!("compute/unclaimed/{owner}/")
    }
    pub fn paid(e: u64, owner: &str) -> String {
        format!("compute/reward_paid/{e:020}/{owner}")
    }
}

fn parse(s: &str) -> TxResult<u128> {
    s.parse()
        .map_err(|_| TxError::Internal(format!("corrupt amount {s:?}")))
}

pub async fn totals<S: StateRead>(state: &S, e: u64) -> TxResult<EpochTotals> {
    Ok(get_json(state, &key::totals(e))
        .await?
        .unwrap_or(EpochTotals {
            total_weight: "0".into(),
            contributors: 0,
        }))
}

pub async fn pot<S: StateRead>(state: &S, e: u64) -> TxResult<Option<Pot>> {
    get_json(state, &key::pot(e)).await
}

fn weight(units: u128, tier: Tier, mult: &PerTier<u64>) -> TxResult<u128> {
    units
        .checked_mul(u128::from(*mult.get(tier)))
        .ok_or_else(|| TxError::Overflow(format!("weight: {units} units overflow")))
}

/// Sets the worker's units in epoch `e` to `new_units`, keeping the epoch's totals and the
/// worker's unclaimed-epoch index in step. Fails (changing nothing) if Σ T·C would overflow.
pub async fn set_units<S: StateRead + StateWrite>(
    state: &mut S,
    e: u64,
    owner: &str,
    tier: Tier,
    new_units: u128,
    p: &ComputeParams,
) -> TxResult<()> {
    let old_units = crate::compute::contribution(state, e, owner).await?;
    if old_units == new_units {
        return Ok(());
    }
    let mut t = totals(state, e).await?;
    let old_w = weight(old_units, tier, &p.tier_multiplier_ppm)?;
    let new_w = weight(new_units, tier, &p.tier_multiplier_ppm)?;
    let total = parse(&t.total_weight)?
        .checked_sub(old_w)
        .ok_or_else(|| TxError::Internal("epoch weight below a worker's weight".into()))?
        .checked_add(new_w)
        .ok_or_else(|| {
            TxError::Overflow(format!(
                "epoch {e}: expected Σ T·C below 2^128, adding {new_w} overflows"
            ))
        })?;
    t.total_weight = total.to_string();
    let ck = state_key::compute::contribution(e, owner);
    match (old_units, new_units) {
        (0, _) => {
            t.contributors = t.contributors.saturating_add(1);
            state.put_raw(key::unclaimed(owner, e), vec![]);
        }
        (_, 0) => {
            t.contributors = t.contributors.saturating_sub(1);
            state.delete(key::unclaimed(owner, e));
        }
        _ => {}
    }
    if new_units == 0 {
        state.delete(ck);
    } else {
        state.put_raw(ck, new_units.to_be_bytes().to_vec());
    }
    put_json(state, key::totals(e), &t)
}

/// Settles epoch `e` in O(1): records its pot (or, with no contributors, disposes of the
/// whole pool at once). Returns (remainder disposed now, carried, burned).
pub async fn settle<S: StateRead + StateWrite>(
    state: &mut S,
    e: u64,
    pool: u128,
    p: &ComputeParams,
) -> TxResult<(u128, u128, u128)> {
    let t = totals(state, e).await?;
    state.delete(key::totals(e));
    let total = parse(&t.total_weight)?;
    if t.contributors == 0 || total == 0 {
        let (carry, burn) = dispose(state, pool, p.remainder_policy).await?;
        return Ok((pool, carry, burn));
    }
    put_json(
        state,
        key::pot(e),
        &Pot {
            epoch: e,
            pool: pool.to_string(),
            total_weight: total.to_string(),
            tier_multiplier_ppm: p.tier_multiplier_ppm.clone(),
            contributors_left: t.contributors,
            paid: "0".into(),
        },
    )?;
    Ok((0, 0, 0))
}

/// Rewards already minted and waiting for the next settlement's pool.
pub async fn carry<S: StateRead>(state: &S) -> TxResult<u128> {
    Ok(get_json::<_, String>(state, state_key::compute::carry())
        .await?
        .map(|s| parse(&s))
        .transpose()?
        .unwrap_or(0))
}

/// Carries (adds to the carry key) or burns `amount` held by the rewards pool.
async fn dispose<S: StateRead + StateWrite>(
    state: &mut S,
    amount: u128,
    policy: RemainderPolicy,
) -> TxResult<(u128, u128)> {
    match policy {
        RemainderPolicy::Carry => {
            let next = carry(state)
                .await?
                .checked_add(amount)
                .ok_or_else(|| TxError::Overflow("carried rewards exceed 2^128".into()))?;
            put_json(state, state_key::compute::carry().into(), &next.to_string())?;
            Ok((amount, 0))
        }
        RemainderPolicy::Burn => {
            if amount > 0 {
                bank::burn(
                    state,
                    &auth::module_address(REWARDS_POOL),
                    BOND_DENOM,
                    amount,
                )
                .await?;
            }
            Ok((0, amount))
        }
    }
}

/// Pays the owner for its settled, unclaimed epochs (at most [`MAX_CLAIMS_PER_TX`]).
pub async fn claim<S: StateRead + StateWrite>(
    state: &mut S,
    owner: &str,
    tier: Tier,
    current_epoch: u64,
) -> TxResult<Vec<Event>> {
    let prefix = key::unclaimed_of(owner);
    let mut epochs = Vec::new();
    {
        let mut stream = Box::pin(state.prefix_raw(&prefix));
        while let Some(item) = stream.next().await {
            let (k, _) = item?;
            let e: u64 = k
                .strip_prefix(&prefix)
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| TxError::Internal(format!("corrupt key {k}")))?;
            // Keys are ordered by epoch: the first unsettled one ends the scan.
            if e >= current_epoch || epochs.len() >= MAX_CLAIMS_PER_TX {
                break;
            }
            epochs.push(e);
        }
    }
    let p = crate::compute::params(state).await?;
    let pool_addr = auth::module_address(REWARDS_POOL);
    let mut total_paid = 0u128;
    let mut events = Vec::new();
    for e in &epochs {
        let e = *e;
        state.delete(key::unclaimed(owner, e));
        let Some(mut pot) = pot(state, e).await? else {
            continue;
        };
        let units = crate::compute::contribution(state, e, owner).await?;
        let w = weight(units, tier, &pot.tier_multiplier_ppm)?;
        let pool = parse(&pot.pool)?;
        let reward = magnet_x_compute::mul_div(pool, w, parse(&pot.total_weight)?)?;
        if reward > 0 {
            bank::transfer(state, &pool_addr, owner, BOND_DENOM, reward).await?;
        }
        put_json(
            state,
            key::paid(e, owner),
            &(reward.to_string(), w.to_string()),
        )?;
        let paid = parse(&pot.paid)?
            .checked_add(reward)
            .filter(|x| *x <= pool)
            .ok_or_else(|| TxError::Internal(format!("epoch {e} paid above its pool")))?;
        total_paid = total_paid.saturating_add(reward);
        pot.paid = paid.to_string();
        pot.contributors_left = pot.contributors_left.saturating_sub(1);
        if pot.contributors_left == 0 {
            // Every share is paid: what the floors left over is carried or burned now.
            let remainder = pool.saturating_sub(paid);
            let (carry, burn) = dispose(state, remainder, p.remainder_policy).await?;
            state.delete(key::pot(e));
            if let Some(mut rec) = crate::compute::settlement(state, e).await? {
                rec.remainder = remainder.to_string();
                rec.carried_out = carry.to_string();
                rec.burned = burn.to_string();
                rec.open = false;
                put_json(state, state_key::compute::settlement(e), &rec)?;
            }
            events.push(Event::new(
                "epoch_closed",
                [
                    ("epoch", e.to_string()).index(),
                    ("remainder", remainder.to_string()).index(),
                    ("carried", carry.to_string()).index(),
                    ("burned", burn.to_string()).index(),
                ],
            ));
        } else {
            put_json(state, key::pot(e), &pot)?;
        }
    }
    if !epochs.is_empty() {
        events.insert(
            0,
            Event::new(
                "claim_rewards",
                [
                    ("owner", owner.to_string()).index(),
                    ("epochs", epochs.len().to_string()).index(),
                    ("amount", format!("{total_paid}{BOND_DENOM}")).index(),
                ],
            ),
        );
    }
    Ok(events)
}

/// A worker's reward for an epoch: paid, owed, or (epoch still running) none yet.
pub async fn reward<S: StateRead>(
    state: &S,
    e: u64,
    owner: &str,
) -> TxResult<Option<RewardRecord>> {
    let units = crate::compute::contribution(state, e, owner).await?;
    if units == 0 {
        return Ok(None);
    }
    let tier: Tier = match crate::compute::worker(state, owner).await? {
        Some(w) => w.tier.parse()?,
        None => return Ok(None),
    };
    if let Some((paid, w)) = get_json::<_, (String, String)>(state, &key::paid(e, owner)).await? {
        return Ok(Some(RewardRecord {
            epoch: e,
            owner: owner.into(),
            units: units.to_string(),
            weight: w,
            reward: paid,
            claimed: true,
        }));
    }
    let Some(pot) = pot(state, e).await? else {
        return Ok(None);
    };
    let w = weight(units, tier, &pot.tier_multiplier_ppm)?;
    let r = magnet_x_compute::mul_div(parse(&pot.pool)?, w, parse(&pot.total_weight)?)?;
    Ok(Some(RewardRecord {
        epoch: e,
        owner: owner.into(),
        units: units.to_string(),
        weight: w.to_string(),
        reward: r.to_string(),
        claimed: false,
    }))
}
