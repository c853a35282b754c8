//! Commit-reveal (paper §13.3): a worker first commits `SHA-256(result || nonce)`, then,
//! after the commit window closes and before the reveal window closes, reveals both.
//!
//! The nonce has a fixed length (32 bytes), so `result || nonce` splits one way only: no
//! other (result, nonce) pair concatenates to the same bytes.

use sha2::{Digest, Sha256};

use crate::error::{ComputeError, ComputeResult};
use crate::params::ComputeParams;

/// Length of a reveal nonce, in bytes.
pub const NONCE_LEN: usize = 32;

/// A SHA-256 commitment.
pub type Commitment = [u8; 32];

/// `SHA-256(result || nonce)`.
pub fn commitment(result: &[u8], nonce: &[u8; NONCE_LEN]) -> Commitment {
    let mut h = Sha256::new();
    h.update(result);
    h.update(nonce);
    h.finalize().into()
}

/// Checks that `(result, nonce)` opens `commitment`.
pub fn verify_reveal(
    commitment_seen: &Commitment,
    result: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> ComputeResult<()> {
    let revealed = commitment(result, nonce);
    if &revealed == commitment_seen {
        Ok(())
    } else {
        Err(ComputeError::RevealMismatch(format!(
            "expected {}, got {}",
            hex::encode(commitment_seen),
            hex::encode(revealed)
        )))
    }
}

/// The closing times of a commit-reveal round, in unix seconds of block time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevealWindows {
    /// Commitments are accepted while `now < commit_window_end`.
    pub commit_window_end: u64,
    /// Reveals are accepted while `commit_window_end <= now < reveal_window_end`.
    pub reveal_window_end: u64,
}

impl RevealWindows {
    /// The windows of a round opened at `opened_at` under `params`.
    pub fn open(opened_at: u64, params: &ComputeParams) -> ComputeResult<Self> {
        let overflow = |what: &str| {
            ComputeError::Overflow(format!(
                "{what}: expected a time below 2^64, got an overflow opening at {opened_at}"
            ))
        };
        let commit_window_end = opened_at
            .checked_add(params.commit_window_secs)
            .ok_or_else(|| overflow("commit_window_end"))?;
        let reveal_window_end = commit_window_end
            .checked_add(params.reveal_window_secs)
            .ok_or_else(|| overflow("reveal_window_end"))?;
        Ok(Self {
            commit_window_end,
            reveal_window_end,
        })
    }

    /// Refuses a commitment once the commit window has closed.
    pub fn check_commit_time(&self, now: u64) -> ComputeResult<()> {
        if now >= self.commit_window_end {
            return Err(ComputeError::CommitTooLate(format!(
                "expected a block time before {}, got {now}",
                self.commit_window_end
            )));
        }
        Ok(())
    }

    /// Refuses a reveal before the commit window closes or after the reveal window closes.
    pub fn check_reveal_time(&self, now: u64) -> ComputeResult<()> {
        check_reveal_time(self.commit_window_end, self.reveal_window_end, now)
    }
}

/// A reveal is on time when `commit_window_end <= now < reveal_window_end`.
pub fn check_reveal_time(
    commit_window_end: u64,
    reveal_window_end: u64,
    now: u64,
) -> ComputeResult<()> {
    if now < commit_window_end {
        return Err(ComputeError::RevealTooEarly(format!(
            "expected a block time >= {commit_window_end} (commit window end), got {now}"
        )));
    }
    if now >= reveal_window_end {
        return Err(ComputeError::RevealTooLate(format!(
            "expected a block time before {reveal_window_end} (reveal window end), got {now}"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commitment_is_sha256_of_result_then_nonce() {
        // Checked against a direct hash of the concatenation and an independent vector
        // (Python hashlib).
        let nonce = [7u8; NONCE_LEN];
        let mut joined = b"loss=2.31".to_vec();
        joined.extend_from_slice(&nonce);
        let direct: [u8; 32] = Sha256::digest(&joined).into();
        assert_eq!(commitment(b"loss=2.31", &nonce), direct);
        assert_eq!(
            hex::encode(direct),
            "0c148ad9b3f55264b094a29e36cb28744eeadf53105c119b43ba5dfeea29d4dc"
        );
    }

    #[test]
    fn a_wrong_reveal_names_both_hashes() {
        let nonce = [1u8; NONCE_LEN];
        let c = commitment(b"a", &nonce);
        let err = verify_reveal(&c, b"b", &nonce).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("expected {}", hex::encode(c))),
            "{msg}"
        );
        assert!(msg.contains(&format!("got {}", hex::encode(commitment(b"b", &nonce)))));
        assert_eq!(err.code(), 6);
    }

    #[test]
    fn windows_follow_params_and_refuse_early_and_late() {
        let p = ComputeParams::default();
        let w = RevealWindows::open(1_000, &p).expect("test value");
        assert_eq!(
            w,
            RevealWindows {
                commit_window_end: 1_360,
                reveal_window_end: 1_540
            }
        );
        assert_eq!(w.check_commit_time(1_359), Ok(()));
        assert!(matches!(
            w.check_commit_time(1_360),
            Err(ComputeError::CommitTooLate(_))
        ));
        assert!(matches!(
            w.check_reveal_time(1_359),
            Err(ComputeError::RevealTooEarly(_))
        ));
        assert_eq!(w.check_reveal_time(1_360), Ok(()));
        assert_eq!(w.check_reveal_time(1_539), Ok(()));
        let late = w.check_reveal_time(1_540).unwrap_err();
        assert_eq!(
            late.to_string(),
            "reveal too late: expected a block time before 1540 (reveal window end), got 1540"
        );
        assert!(matches!(
            RevealWindows::open(u64::MAX, &p),
            Err(ComputeError::Overflow(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn an_honest_reveal_verifies(result in prop::collection::vec(any::<u8>(), 0..256), nonce in any::<[u8; 32]>()) {
            prop_assert_eq!(verify_reveal(&commitment(&result, &nonce), &result, &nonce), Ok(()));
        }

        #[test]
        fn any_change_to_result_or_nonce_is_caught(
            result in prop::collection::vec(any::<u8>(), 1..256),
            nonce in any::<[u8; 32]>(),
            idx in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            in_nonce in any::<bool>(),
        ) {
            let c = commitment(&result, &nonce);
            let (mut r2, mut n2) = (result.clone(), nonce);
            if in_nonce { n2[idx.index(NONCE_LEN)] ^= flip } else { r2[idx.index(result.len())] ^= flip }
            prop_assert!(matches!(verify_reveal(&c, &r2, &n2), Err(ComputeError::RevealMismatch(_))));
        }

        #[test]
        fn exactly_one_of_commit_and_reveal_is_open(opened in 0u64..1u64 << 60, now in 0u64..1u64 << 61) {
            let w = RevealWindows::open(opened, &ComputeParams::default()).expect("test value");
            let commit_ok = w.check_commit_time(now).is_ok();
            let reveal_ok = w.check_reveal_time(now).is_ok();
            prop_assert!(!(commit_ok && reveal_ok));
            prop_assert_eq!(reveal_ok, now >= w.commit_window_end && now < w.reveal_window_end);
        }
    }
}
