//! auth: accounts, account numbers, sequences and secp256k1 signature checks.

use cnidarium::{StateRead, StateWrite};
use k256::ecdsa::{signature::Verifier, Signature, VerifyingKey};
use magnet_proto::magnet::chain::v1::AccountState;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::{TxError, TxResult};
use crate::state_key;

/// Bech32 human-readable prefix of account addresses.
pub const ADDRESS_PREFIX: &str = "magnet";

/// Checks that a string is a `magnet1…` address of 20 bytes and returns it normalised.
pub fn validate_address(address: &str) -> TxResult<String> {
    let id: cosmrs::AccountId = address.parse().map_err(|e| {
        TxError::InvalidAddress(format!("expected a bech32 address, got {address:?}: {e}"))
    })?;
    if id.prefix() != ADDRESS_PREFIX {
        return Err(TxError::InvalidAddress(format!(
            "expected prefix {ADDRESS_PREFIX:?}, got {:?} in {address}",
            id.prefix()
        )));
    }
    if id.to_bytes().len() != 20 {
        return Err(TxError::InvalidAddress(format!(
            "expected a 20-byte address, got {} bytes in {address}",
            id.to_bytes().len()
        )));
    }
    Ok(id.to_string())
}

/// Address of a compressed secp256k1 key: bech32(RIPEMD-160(SHA-256(key))), as in the Cosmos SDK.
/// Only the encoding is checked here (33 bytes, 0x02/0x03 prefix): decompressing the
/// point costs a square root, and signature verification checks the point anyway.
pub fn address_of(pub_key: &[u8]) -> TxResult<String> {
    if pub_key.len() != 33 || !matches!(pub_key[0], 0x02 | 0x03) {
        return Err(TxError::InvalidPubKey(format!(
            "expected a 33-byte compressed secp256k1 key (0x02/0x03 prefix), got {} bytes",
            pub_key.len()
        )));
    }
    let hash = ripemd::Ripemd160::digest(Sha256::digest(pub_key));
    cosmrs::AccountId::new(ADDRESS_PREFIX, &hash)
        .map(|a| a.to_string())
        .map_err(|e| TxError::InvalidPubKey(e.to_string()))
}

/// Address of a module account (fee collector, …): the first 20 bytes of SHA-256(name).
pub fn module_address(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    cosmrs::AccountId::new(ADDRESS_PREFIX, &digest[..20])
        .map(|a| a.to_string())
        .unwrap_or_default()
}

pub async fn account<S: StateRead>(state: &S, address: &str) -> TxResult<Option<AccountState>> {
    match state.get_raw(&state_key::auth::account(address)).await? {
        Some(raw) => AccountState::decode(raw.as_slice())
            .map(Some)
            .map_err(|e| TxError::Internal(format!("corrupt account {address}: {e}"))),
        None => Ok(None),
    }
}

pub fn put_account<S: StateWrite>(state: &mut S, acc: &AccountState) {
    state.put_raw(state_key::auth::account(&acc.address), acc.encode_to_vec());
}

/// Returns the account, creating it with the next account number if it does not exist
/// (accounts come into being when they first receive funds, as in the Cosmos SDK).
pub async fn ensure_account<S: StateRead + StateWrite>(
    state: &mut S,
    address: &str,
) -> TxResult<AccountState> {
    if let Some(acc) = account(state, address).await? {
        return Ok(acc);
    }
    let key = state_key::auth::next_account_number();
    let next = match state.get_raw(key).await? {
        Some(raw) => u64::from_be_bytes(raw.as_slice().try_into().map_err(|_| {
            TxError::Internal("corrupt next_account_number: expected 8 bytes".into())
        })?),
        None => 0,
    };
    let after = next
        .checked_add(1)
        .ok_or_else(|| TxError::Overflow("account numbers exhausted".into()))?;
    state.put_raw(key.to_string(), after.to_be_bytes().to_vec());
    let acc = AccountState {
        address: address.to_string(),
        account_number: next,
        sequence: 0,
        pub_key: Vec::new(),
    };
    put_account(state, &acc);
    Ok(acc)
}

/// Verifies a 64-byte compact (r‖s) secp256k1 signature over SHA-256(msg).
/// High-S signatures are refused explicitly: both (r, s) and (r, n−s) verify, and
/// accepting both would let anyone change a tx hash without the key.
pub fn verify_signature(pub_key: &[u8], msg: &[u8], sig: &[u8]) -> TxResult<()> {
    let vk = VerifyingKey::from_sec1_bytes(pub_key)
        .map_err(|e| TxError::InvalidPubKey(format!("expected a secp256k1 key: {e}")))?;
    if sig.len() != 64 {
        return Err(TxError::Unauthorized(format!(
            "expected a 64-byte compact signature, got {} bytes",
            sig.len()
        )));
    }
    let sig = Signature::from_slice(sig)
        .map_err(|e| TxError::Unauthorized(format!("malformed signature: {e}")))?;
    if sig.normalize_s().is_some() {
        return Err(TxError::HighS(
            "expected a low-S signature (s <= n/2), got high-S".into(),
        ));
    }
    vk.verify(msg, &sig).map_err(|_| {
        TxError::Unauthorized(
            "signature verification failed: expected a signature by the signer's key over the sign doc (check chain-id and account number)".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::{signature::Signer, SigningKey};

    #[test]
    fn high_s_signature_is_refused_while_low_s_verifies() {
        let sk = SigningKey::from_slice(&[7u8; 32]).expect("valid scalar");
        let pk = sk.verifying_key().to_sec1_bytes();
        let sig: Signature = sk.sign(b"hello");
        let low = sig.normalize_s().unwrap_or(sig);
        assert_eq!(verify_signature(&pk, b"hello", &low.to_bytes()), Ok(()));
        // Flip s to n - s: mathematically valid, but malleable.
        let (r, s) = low.split_scalars();
        let high = Signature::from_scalars(r, -*s).expect("valid scalars");
        let err = verify_signature(&pk, b"hello", &high.to_bytes()).unwrap_err();
        assert_eq!(err.code(), 44, "{err}");
        let wrong = verify_signature(&pk, b"other", &low.to_bytes()).unwrap_err();
        assert_eq!(wrong.code(), 4);
    }

    #[test]
    fn addresses_are_validated_with_prefix_and_length() {
        let sk = SigningKey::from_slice(&[9u8; 32]).expect("valid scalar");
        let pk = sk.verifying_key().to_sec1_bytes();
        let addr = address_of(&pk).expect("address");
        assert!(addr.starts_with("magnet1"));
        // Same derivation as cosmrs (the reference Cosmos implementation in Rust).
        let reference = cosmrs::crypto::PublicKey::from(*sk.verifying_key())
            .account_id(ADDRESS_PREFIX)
            .expect("account id");
        assert_eq!(addr, reference.to_string());
        assert_eq!(address_of(&pk[1..]).unwrap_err().code(), 8);
        assert_eq!(validate_address(&addr), Ok(addr.clone()));
        assert_eq!(
            validate_address("cosmos1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqnrql8a")
                .unwrap_err()
                .code(),
            7
        );
        assert_eq!(validate_address("not-an-address").unwrap_err().code(), 7);
    }
}
