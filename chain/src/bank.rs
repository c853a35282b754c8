//! bank: balances and total supply per denomination, in u128 base units with checked math.

use cnidarium::{StateRead, StateWrite};
use futures::StreamExt;
use std::collections::BTreeMap;

use crate::error::{TxError, TxResult};
use crate::state_key;

/// Cosmos SDK denom rule: a letter, then 2–127 of `[a-zA-Z0-9/:._-]`.
pub fn validate_denom(denom: &str) -> Result<(), String> {
    let bytes = denom.as_bytes();
    let ok_len = (3..=128).contains(&bytes.len());
    let ok_first = bytes.first().is_some_and(|c| c.is_ascii_alphabetic());
    let ok_rest = bytes
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || b"/:._-".contains(c));
    if ok_len && ok_first && ok_rest {
        Ok(())
    } else {
        Err(format!(
            "invalid denom: expected [a-zA-Z][a-zA-Z0-9/:._-]{{2,127}}, got {denom:?}"
        ))
    }
}

/// Parses a Cosmos `Coin.amount` decimal string into u128 base units.
pub fn parse_amount(amount: &str) -> TxResult<u128> {
    if amount.is_empty() || amount.len() > 39 || !amount.bytes().all(|c| c.is_ascii_digit()) {
        return Err(TxError::InvalidCoins(format!(
            "expected a decimal integer in [0, 2^128), got {amount:?}"
        )));
    }
    amount.parse::<u128>().map_err(|_| {
        TxError::InvalidCoins(format!(
            "expected an amount below 2^128 = {}, got {amount}",
            u128::MAX
        ))
    })
}

/// Validates and collects coins into a denom → amount map: positive amounts, valid and
/// unique denoms, as the Cosmos SDK requires of a `MsgSend`.
pub fn parse_coins(
    coins: &[cosmrs::proto::cosmos::base::v1beta1::Coin],
) -> TxResult<BTreeMap<String, u128>> {
    if coins.is_empty() {
        return Err(TxError::InvalidCoins(
            "expected at least one coin, got none".into(),
        ));
    }
    let mut out = BTreeMap::new();
    for c in coins {
        validate_denom(&c.denom).map_err(TxError::InvalidCoins)?;
        let amount = parse_amount(&c.amount)?;
        if amount == 0 {
            return Err(TxError::InvalidCoins(format!(
                "expected a positive amount of {}, got 0",
                c.denom
            )));
        }
        if out.insert(c.denom.clone(), amount).is_some() {
            return Err(TxError::InvalidCoins(format!(
                "expected each denom once, got {} twice",
                c.denom
            )));
        }
    }
    Ok(out)
}

/// Decodes an amount stored as 16 big-endian bytes (the encoding of every u128 in state).
pub(crate) fn decode_u128(key: &str, raw: &[u8]) -> TxResult<u128> {
    let arr: [u8; 16] = raw.try_into().map_err(|_| {
        TxError::Internal(format!(
            "corrupt amount at {key}: expected 16 bytes, got {}",
            raw.len()
        ))
    })?;
    Ok(u128::from_be_bytes(arr))
}

/// Reads a u128 stored with [`decode_u128`]'s encoding; absent means 0.
pub(crate) async fn get_u128<S: StateRead>(state: &S, key: &str) -> TxResult<u128> {
    match state.get_raw(key).await? {
        Some(raw) => decode_u128(key, &raw),
        None => Ok(0),
    }
}

fn put_u128<S: StateWrite>(state: &mut S, key: String, v: u128) {
    if v == 0 {
        // Zero balances are not stored: exports and proofs stay canonical.
        state.delete(key);
    } else {
        state.put_raw(key, v.to_be_bytes().to_vec());
    }
}

pub async fn balance<S: StateRead>(state: &S, address: &str, denom: &str) -> TxResult<u128> {
    get_u128(state, &state_key::bank::balance(address, denom)).await
}

pub async fn supply<S: StateRead>(state: &S, denom: &str) -> TxResult<u128> {
    get_u128(state, &state_key::bank::supply(denom)).await
}

/// All non-zero balances of an address, ordered by denom.
pub async fn all_balances<S: StateRead>(state: &S, address: &str) -> TxResult<Vec<(String, u128)>> {
    let prefix = state_key::bank::balances_of(address);
    let mut stream = Box::pin(state.prefix_raw(&prefix));
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        let (key, raw) = item?;
        let denom = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
        out.push((denom, decode_u128(&key, &raw)?));
    }
    out.sort();
    Ok(out)
}

/// Total supply of every denomination, ordered by denom.
pub async fn all_supply<S: StateRead>(state: &S) -> TxResult<Vec<(String, u128)>> {
    let prefix = state_key::bank::supply_prefix();
    let mut stream = Box::pin(state.prefix_raw(prefix));
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        let (key, raw) = item?;
        let denom = key.strip_prefix(prefix).unwrap_or(&key).to_string();
        out.push((denom, decode_u128(&key, &raw)?));
    }
    out.sort();
    Ok(out)
}

/// Moves `amount` of `denom` between two addresses; supply is unchanged.
pub async fn transfer<S: StateRead + StateWrite>(
    state: &mut S,
    from: &str,
    to: &str,
    denom: &str,
    amount: u128,
) -> TxResult<()> {
    let from_bal = balance(state, from, denom).await?;
    let new_from = from_bal.checked_sub(amount).ok_or_else(|| {
        TxError::InsufficientFunds(format!(
            "{from} needs {amount}{denom}, has {from_bal}{denom}"
        ))
    })?;
    put_u128(state, state_key::bank::balance(from, denom), new_from);
    let to_bal = balance(state, to, denom).await?;
    let new_to = to_bal.checked_add(amount).ok_or_else(|| {
        TxError::Overflow(format!(
            "balance of {to} would exceed 2^128-1: has {to_bal}{denom}, receiving {amount}{denom}"
        ))
    })?;
    put_u128(state, state_key::bank::balance(to, denom), new_to);
    Ok(())
}

/// Destroys coins held by `from`. Supply shrinks by exactly `amount`.
pub async fn burn<S: StateRead + StateWrite>(
    state: &mut S,
    from: &str,
    denom: &str,
    amount: u128,
) -> TxResult<()> {
    let bal = balance(state, from, denom).await?;
    let new_bal = bal.checked_sub(amount).ok_or_else(|| {
        TxError::InsufficientFunds(format!(
            "burn from {from}: needs {amount}{denom}, has {bal}{denom}"
        ))
    })?;
    let sup = supply(state, denom).await?;
    // balance <= supply, so this cannot underflow once the balance check passed.
    let new_sup = sup
        .checked_sub(amount)
        .ok_or_else(|| TxError::Internal(format!("supply of {denom} below a balance")))?;
    put_u128(state, state_key::bank::balance(from, denom), new_bal);
    put_u128(state, state_key::bank::supply(denom), new_sup);
    Ok(())
}

/// Creates new coins (genesis allocation, later: emission). Supply grows by exactly `amount`.
pub async fn mint<S: StateRead + StateWrite>(
    state: &mut S,
    to: &str,
    denom: &str,
    amount: u128,
) -> TxResult<()> {
    let sup = supply(state, denom).await?;
    let new_sup = sup.checked_add(amount).ok_or_else(|| {
        TxError::Overflow(format!(
            "supply of {denom} would exceed 2^128-1: is {sup}, minting {amount}"
        ))
    })?;
    let bal = balance(state, to, denom).await?;
    // bal <= supply, so this cannot overflow once the supply check passed.
    let new_bal = bal
        .checked_add(amount)
        .ok_or_else(|| TxError::Overflow(format!("balance of {to} overflows")))?;
    put_u128(state, state_key::bank::supply(denom), new_sup);
    put_u128(state, state_key::bank::balance(to, denom), new_bal);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnidarium::{StateDelta, TempStorage};
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Mint {
            to: usize,
            amount: u128,
        },
        Transfer {
            from: usize,
            to: usize,
            amount: u128,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let amount = prop_oneof![0u128..1_000, any::<u128>(), Just(u128::MAX)];
        prop_oneof![
            (0usize..4, amount.clone()).prop_map(|(to, amount)| Op::Mint { to, amount }),
            (0usize..4, 0usize..4, amount).prop_map(|(from, to, amount)| Op::Transfer {
                from,
                to,
                amount
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Supply = Σ balances after any sequence of mints and transfers; a failed
        /// operation (overflow, insufficient funds) leaves every balance unchanged.
        #[test]
        fn supply_equals_sum_of_balances_and_failures_change_nothing(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let storage = TempStorage::new().await.expect("storage");
                let mut state = StateDelta::new(storage.latest_snapshot());
                let addrs: Vec<String> = (0..4).map(|i| crate::auth::module_address(&format!("acct{i}"))).collect();
                for op in ops {
                    let before: Vec<u128> = futures::future::join_all(addrs.iter().map(|a| balance(&state, a, "umag"))).await.into_iter().map(|r| r.expect("read")).collect();
                    let mut child = StateDelta::new(&mut state);
                    let res = match &op {
                        Op::Mint { to, amount } => mint(&mut child, &addrs[*to], "umag", *amount).await,
                        Op::Transfer { from, to, amount } => transfer(&mut child, &addrs[*from], &addrs[*to], "umag", *amount).await,
                    };
                    if res.is_ok() {
                        child.apply();
                    } else {
                        drop(child);
                        let after: Vec<u128> = futures::future::join_all(addrs.iter().map(|a| balance(&state, a, "umag"))).await.into_iter().map(|r| r.expect("read")).collect();
                        prop_assert_eq!(&before, &after, "failed {:?} changed balances", op);
                    }
                    let sum = futures::future::join_all(addrs.iter().map(|a| balance(&state, a, "umag"))).await.into_iter().try_fold(0u128, |acc, r| acc.checked_add(r.expect("read")));
                    prop_assert_eq!(sum, Some(supply(&state, "umag").await.expect("supply")));
                }
                Ok(())
            })?;
        }
    }

    #[test]
    fn denoms_and_amounts_are_validated() {
        assert!(validate_denom("umag").is_ok());
        assert!(validate_denom("ibc/ABC-1.x:y_z").is_ok());
        for bad in ["", "u", "1mag", "um ag", "umag!"] {
            assert!(validate_denom(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_amount(&u128::MAX.to_string()), Ok(u128::MAX));
        assert_eq!(
            parse_amount("340282366920938463463374607431768211456")
                .unwrap_err()
                .code(),
            10
        );
        assert_eq!(parse_amount("-1").unwrap_err().code(), 10);
        assert_eq!(parse_amount("").unwrap_err().code(), 10);
    }
}
