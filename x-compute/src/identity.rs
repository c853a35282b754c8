//! Worker identity: `nodeId = "node-" || hex(SHA-256(compressed secp256k1 pubkey))[:16]`.

use sha2::{Digest, Sha256};

use crate::error::{ComputeError, ComputeResult};

/// Length of a SEC1 compressed secp256k1 public key.
pub const COMPRESSED_PUBKEY_LEN: usize = 33;

/// The worker's node id, derived from its compressed secp256k1 public key.
///
/// Only the encoding is checked (33 bytes, prefix 0x02/0x03); whether the point is on the
/// curve is the signature verifier's job, which this pure crate does not link.
pub fn node_id(compressed_pubkey: &[u8]) -> ComputeResult<String> {
    if compressed_pubkey.len() != COMPRESSED_PUBKEY_LEN {
        return Err(ComputeError::InvalidPubKey(format!(
            "expected a {COMPRESSED_PUBKEY_LEN}-byte compressed secp256k1 key, got {} bytes",
            compressed_pubkey.len()
        )));
    }
    match compressed_pubkey.first() {
        Some(0x02 | 0x03) => {}
        other => {
            return Err(ComputeError::InvalidPubKey(format!(
                "expected prefix 0x02 or 0x03, got {:#04x}",
                other.copied().unwrap_or(0)
            )))
        }
    }
    let digest = Sha256::digest(compressed_pubkey);
    // 16 hex characters = the first 8 bytes of the digest.
    let prefix = digest.get(..8).unwrap_or_default();
    Ok(format!("node-{}", hex::encode(prefix)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_the_first_16_hex_chars_of_the_key_hash() {
        let mut key = [0x11u8; 33];
        key[0] = 0x02;
        let id = node_id(&key).expect("test value");
        let full = hex::encode(Sha256::digest(key));
        assert_eq!(id, format!("node-{}", &full[..16]));
        assert_eq!(id.len(), 5 + 16);
        // Independent vector (Python hashlib) so the test does not only restate the code.
        assert_eq!(id, "node-e1577700e127f1ce");
        key[0] = 0x03;
        assert_ne!(node_id(&key).expect("test value"), id);
    }

    #[test]
    fn malformed_keys_are_refused_with_what_was_seen() {
        let err = node_id(&[0x02; 65]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid pubkey: expected a 33-byte compressed secp256k1 key, got 65 bytes"
        );
        let mut uncompressed_prefix = [0u8; 33];
        uncompressed_prefix[0] = 0x04;
        let err = node_id(&uncompressed_prefix).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid pubkey: expected prefix 0x02 or 0x03, got 0x04"
        );
        assert!(node_id(&[]).is_err());
    }
}
