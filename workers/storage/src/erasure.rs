//! Reed-Solomon 4+2 over GF(2^16) (reed-solomon-simd): any 4 of the 6 shards rebuild the object.
//!
//! Shards are content-addressed: a shard's id is the hex SHA-256 of its bytes, so the id *is* the
//! checksum. A shard whose bytes do not hash to its id is bit rot: it is treated as lost, never used.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Data shards (K).
pub const DATA_SHARDS: usize = 4;
/// Parity shards (M).
pub const PARITY_SHARDS: usize = 2;
/// K + M.
pub const TOTAL_SHARDS: usize = DATA_SHARDS + PARITY_SHARDS;

/// Errors of encoding and decoding.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ErasureError {
    /// Fewer than K verified shards are available.
    #[error("cannot rebuild object {object_id}: need {need} intact shards of {total}, have {have} (missing {missing:?}, corrupt {corrupt:?})")]
    NotEnoughShards {
        /// Object being rebuilt.
        object_id: String,
        /// K.
        need: usize,
        /// K + M.
        total: usize,
        /// Intact shards found.
        have: usize,
        /// Indices absent.
        missing: Vec<usize>,
        /// Indices present but failing their checksum.
        corrupt: Vec<usize>,
    },
    /// The manifest is not a 4+2 manifest this code can read.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// The codec refused (should not happen with a valid manifest).
    #[error("reed-solomon codec: {0}")]
    Codec(String),
    /// Rebuilt bytes do not hash to the object id.
    #[error("rebuilt object does not match its id: expected {expected}, got {got}")]
    ObjectMismatch {
        /// Object id from the manifest.
        expected: String,
        /// Hash of the rebuilt bytes.
        got: String,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ErasureError>;

/// One shard of an object, by position.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardRef {
    /// 0..4 data, 4..6 parity.
    pub index: u8,
    /// hex SHA-256 of the shard bytes (content address and checksum).
    pub id: String,
}

/// Everything needed to find and rebuild an object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// hex SHA-256 of the object bytes.
    pub object_id: String,
    /// Object length in bytes (the last data shard is zero-padded).
    pub object_len: u64,
    /// Bytes per shard (even, as GF(2^16) needs).
    pub shard_len: u64,
    /// K.
    pub data_shards: u8,
    /// M.
    pub parity_shards: u8,
    /// TOTAL_SHARDS entries, sorted by index.
    pub shards: Vec<ShardRef>,
}

impl Manifest {
    /// Checks the shape (4+2, indices 0..6 in order, hex ids).
    pub fn validate(&self) -> Result<()> {
        if usize::from(self.data_shards) != DATA_SHARDS
            || usize::from(self.parity_shards) != PARITY_SHARDS
        {
            return Err(ErasureError::InvalidManifest(format!(
                "expected {DATA_SHARDS}+{PARITY_SHARDS}, got {}+{}",
                self.data_shards, self.parity_shards
            )));
        }
        if self.shards.len() != TOTAL_SHARDS {
            return Err(ErasureError::InvalidManifest(format!(
                "expected {TOTAL_SHARDS} shards, got {}",
                self.shards.len()
            )));
        }
        for (i, s) in self.shards.iter().enumerate() {
            if usize::from(s.index) != i || !is_hex_id(&s.id) {
                return Err(ErasureError::InvalidManifest(format!(
                    "shard entry {i} is malformed"
                )));
            }
        }
        if self.shard_len == 0 || self.shard_len % 2 != 0 {
            return Err(ErasureError::InvalidManifest(format!(
                "shard_len {} must be even and non-zero",
                self.shard_len
            )));
        }
        let capacity = self.shard_len.checked_mul(DATA_SHARDS as u64);
        if capacity.is_none_or(|c| c < self.object_len) {
            return Err(ErasureError::InvalidManifest(
                "object_len exceeds shard capacity".into(),
            ));
        }
        Ok(())
    }
}

/// hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// True for a 64-char lowercase hex string (a valid shard/object id, safe as a file name).
pub fn is_hex_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Bytes per shard for an object of `len` bytes: ceil(len / K), rounded up to even, at least 2.
pub fn shard_len_for(len: usize) -> usize {
    let per = len.div_ceil(DATA_SHARDS).max(2);
    per.saturating_add(per % 2)
}

/// Splits `object` into 4 data shards and computes 2 parity shards.
pub fn encode(object: &[u8]) -> Result<(Manifest, Vec<Vec<u8>>)> {
    let shard_len = shard_len_for(object.len());
    let mut shards: Vec<Vec<u8>> = object
        .chunks(shard_len)
        .map(|c| {
            let mut s = c.to_vec();
            s.resize(shard_len, 0);
            s
        })
        .collect();
    shards.resize(DATA_SHARDS, vec![0u8; shard_len]);
    let parity = reed_solomon_simd::encode(DATA_SHARDS, PARITY_SHARDS, &shards)
        .map_err(|e| ErasureError::Codec(e.to_string()))?;
    shards.extend(parity);
    let manifest = Manifest {
        object_id: sha256_hex(object),
        object_len: object.len() as u64,
        shard_len: shard_len as u64,
        data_shards: DATA_SHARDS as u8,
        parity_shards: PARITY_SHARDS as u8,
        shards: shards
            .iter()
            .enumerate()
            .map(|(i, s)| ShardRef {
                index: i as u8,
                id: sha256_hex(s),
            })
            .collect(),
    };
    Ok((manifest, shards))
}

/// Rebuilds all 6 shards from whatever is available (`available[i]` is shard `i` if present).
/// Shards failing their checksum are ignored. Used by decode and by repair.
pub fn reconstruct_all(manifest: &Manifest, available: &[Option<Vec<u8>>]) -> Result<Vec<Vec<u8>>> {
    manifest.validate()?;
    let mut intact: Vec<Option<&[u8]>> = vec![None; TOTAL_SHARDS];
    let (mut missing, mut corrupt) = (Vec::new(), Vec::new());
    #[allow(clippy::needless_range_loop)] // i indexes three parallel arrays
    for i in 0..TOTAL_SHARDS {
        match available.get(i).and_then(|s| s.as_deref()) {
            None => missing.push(i),
            Some(bytes)
                if bytes.len() as u64 != manifest.shard_len
                    || sha256_hex(bytes) != manifest.shards[i].id =>
            {
                corrupt.push(i)
            }
            Some(bytes) => intact[i] = Some(bytes),
        }
    }
    let have = intact.iter().filter(|s| s.is_some()).count();
    if have < DATA_SHARDS {
        return Err(ErasureError::NotEnoughShards {
            object_id: manifest.object_id.clone(),
            need: DATA_SHARDS,
            total: TOTAL_SHARDS,
            have,
            missing,
            corrupt,
        });
    }
    let mut data: Vec<Vec<u8>> = Vec::with_capacity(DATA_SHARDS);
    if intact[..DATA_SHARDS].iter().all(|s| s.is_some()) {
        data.extend(intact[..DATA_SHARDS].iter().flatten().map(|s| s.to_vec()));
    } else {
        let originals = intact[..DATA_SHARDS]
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|b| (i, b)));
        let recovery = intact[DATA_SHARDS..]
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|b| (i, b)));
        let mut restored =
            reed_solomon_simd::decode(DATA_SHARDS, PARITY_SHARDS, originals, recovery)
                .map_err(|e| ErasureError::Codec(e.to_string()))?;
        for (i, s) in intact[..DATA_SHARDS].iter().enumerate() {
            match s {
                Some(b) => data.push(b.to_vec()),
                None => data.push(restored.remove(&i).ok_or_else(|| {
                    ErasureError::Codec(format!("decoder did not restore shard {i}"))
                })?),
            }
        }
    }
    let parity = if intact[DATA_SHARDS..].iter().all(|s| s.is_some()) {
        intact[DATA_SHARDS..]
            .iter()
            .flatten()
            .map(|s| s.to_vec())
            .collect()
    } else {
        reed_solomon_simd::encode(DATA_SHARDS, PARITY_SHARDS, &data)
            .map_err(|e| ErasureError::Codec(e.to_string()))?
    };
    data.extend(parity);
    // Intact shards were verified above; only rebuilt ones need checking.
    for (i, s) in data
        .iter()
        .enumerate()
        .filter(|(i, _)| intact[*i].is_none())
    {
        let got = sha256_hex(s);
        if got != manifest.shards[i].id {
            return Err(ErasureError::ObjectMismatch {
                expected: manifest.shards[i].id.clone(),
                got,
            });
        }
    }
    Ok(data)
}

/// Rebuilds the object byte-exactly from any 4 intact shards.
pub fn decode(manifest: &Manifest, available: &[Option<Vec<u8>>]) -> Result<Vec<u8>> {
    let shards = reconstruct_all(manifest, available)?;
    let len = usize::try_from(manifest.object_len)
        .map_err(|_| ErasureError::InvalidManifest("object too large".into()))?;
    let mut object = Vec::with_capacity(len);
    for s in &shards[..DATA_SHARDS] {
        object.extend_from_slice(s);
    }
    object.truncate(len);
    let got = sha256_hex(&object);
    if got != manifest.object_id {
        return Err(ErasureError::ObjectMismatch {
            expected: manifest.object_id.clone(),
            got,
        });
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(len: usize) -> Vec<u8> {
        // Deterministic, non-trivial bytes (xorshift).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn subsets(k: usize) -> Vec<Vec<usize>> {
        (0u32..1 << TOTAL_SHARDS)
            .filter(|m| m.count_ones() as usize == k)
            .map(|m| (0..TOTAL_SHARDS).filter(|i| m & (1 << i) != 0).collect())
            .collect()
    }

    #[test]
    fn all_22_patterns_of_losing_up_to_two_shards_rebuild_byte_exactly() {
        for len in [0usize, 1, 7, 4096, 100_003] {
            let obj = object(len);
            let (manifest, shards) = encode(&obj).expect("encode");
            let mut patterns = 0;
            for lost in 0..=2 {
                for pattern in subsets(lost) {
                    let avail: Vec<Option<Vec<u8>>> = (0..TOTAL_SHARDS)
                        .map(|i| (!pattern.contains(&i)).then(|| shards[i].clone()))
                        .collect();
                    assert_eq!(
                        decode(&manifest, &avail).expect("decode"),
                        obj,
                        "len {len} lost {pattern:?}"
                    );
                    let all = reconstruct_all(&manifest, &avail).expect("reconstruct");
                    assert_eq!(all, shards, "len {len} lost {pattern:?}");
                    patterns += 1;
                }
            }
            assert_eq!(patterns, 22);
        }
    }

    #[test]
    fn all_20_patterns_of_losing_three_shards_fail_cleanly() {
        let obj = object(50_000);
        let (manifest, shards) = encode(&obj).expect("encode");
        let patterns = subsets(3);
        assert_eq!(patterns.len(), 20);
        for pattern in patterns {
            let avail: Vec<Option<Vec<u8>>> = (0..TOTAL_SHARDS)
                .map(|i| (!pattern.contains(&i)).then(|| shards[i].clone()))
                .collect();
            let err = decode(&manifest, &avail).expect_err("3 lost must fail");
            match &err {
                ErasureError::NotEnoughShards { have, missing, .. } => {
                    assert_eq!(*have, 3);
                    assert_eq!(missing, &pattern);
                }
                other => panic!("unexpected error {other:?}"),
            }
            assert!(
                err.to_string()
                    .contains("need 4 intact shards of 6, have 3"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_in_any_shard_is_detected_and_repaired() {
        let obj = object(33_333);
        let (manifest, shards) = encode(&obj).expect("encode");
        for i in 0..TOTAL_SHARDS {
            for bit in [0usize, 7, shards[i].len() * 8 - 1] {
                let mut avail: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
                if let Some(s) = avail[i].as_mut() {
                    s[bit / 8] ^= 1 << (bit % 8);
                }
                assert_ne!(
                    sha256_hex(avail[i].as_deref().expect("present")),
                    manifest.shards[i].id
                );
                let repaired = reconstruct_all(&manifest, &avail).expect("repair");
                assert_eq!(repaired[i], shards[i], "shard {i} bit {bit} repaired");
                assert_eq!(decode(&manifest, &avail).expect("decode"), obj);
                // Bit rot plus two lost shards is one too many: reported as corrupt, not served.
                let mut worse = avail.clone();
                let others: Vec<usize> = (0..TOTAL_SHARDS).filter(|&j| j != i).take(2).collect();
                for j in &others {
                    worse[*j] = None;
                }
                match decode(&manifest, &worse) {
                    Err(ErasureError::NotEnoughShards { corrupt, .. }) => {
                        assert_eq!(corrupt, vec![i])
                    }
                    other => panic!("expected NotEnoughShards, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn shard_ids_are_content_hashes_and_manifest_validates() {
        let (manifest, shards) = encode(&object(1000)).expect("encode");
        manifest.validate().expect("valid");
        for (r, s) in manifest.shards.iter().zip(&shards) {
            assert_eq!(r.id, sha256_hex(s));
            assert_eq!(s.len() as u64, manifest.shard_len);
        }
        let mut bad = manifest.clone();
        bad.shards.pop();
        assert!(matches!(
            decode(&bad, &[]),
            Err(ErasureError::InvalidManifest(_))
        ));
        let mut bad = manifest;
        bad.object_len = u64::MAX;
        assert!(bad.validate().is_err());
    }
}
