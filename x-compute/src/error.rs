//! Stable error codes of the x-compute module (codespace `compute`).

/// Codespace reported with every x-compute rejection.
pub const CODESPACE: &str = "compute";

/// Why an x-compute operation was refused. Every message says what was expected and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputeError {
    #[error("invalid params: {0}")]
    InvalidParams(String),
    #[error("block time went backwards: {0}")]
    TimeWentBackwards(String),
    #[error("arithmetic overflow: {0}")]
    Overflow(String),
    #[error("division by zero: {0}")]
    DivisionByZero(String),
    #[error("reveal does not match commit: {0}")]
    RevealMismatch(String),
    #[error("reveal too early: {0}")]
    RevealTooEarly(String),
    #[error("reveal too late: {0}")]
    RevealTooLate(String),
    #[error("commit too late: {0}")]
    CommitTooLate(String),
    #[error("invalid pubkey: {0}")]
    InvalidPubKey(String),
    #[error("unknown tier: {0}")]
    UnknownTier(String),
    #[error("unknown offense: {0}")]
    UnknownOffense(String),
}

impl ComputeError {
    /// The stable ABCI code of this error. Codes start at 2 (1 is reserved for internal
    /// errors, as in the Cosmos SDK) and a code never changes meaning once released.
    pub fn code(&self) -> u32 {
        match self {
            ComputeError::InvalidParams(_) => 2,
            ComputeError::TimeWentBackwards(_) => 3,
            ComputeError::Overflow(_) => 4,
            ComputeError::DivisionByZero(_) => 5,
            ComputeError::RevealMismatch(_) => 6,
            ComputeError::RevealTooEarly(_) => 7,
            ComputeError::RevealTooLate(_) => 8,
            ComputeError::CommitTooLate(_) => 9,
            ComputeError::InvalidPubKey(_) => 10,
            ComputeError::UnknownTier(_) => 11,
            ComputeError::UnknownOffense(_) => 12,
        }
    }

    /// The codespace every x-compute error is reported under.
    pub fn codespace(&self) -> &'static str {
        CODESPACE
    }
}

/// Result alias for x-compute operations.
pub type ComputeResult<T> = Result<T, ComputeError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn one_of_each() -> Vec<ComputeError> {
        let s = String::new;
        vec![
            ComputeError::InvalidParams(s()),
            ComputeError::TimeWentBackwards(s()),
            ComputeError::Overflow(s()),
            ComputeError::DivisionByZero(s()),
            ComputeError::RevealMismatch(s()),
            ComputeError::RevealTooEarly(s()),
            ComputeError::RevealTooLate(s()),
            ComputeError::CommitTooLate(s()),
            ComputeError::InvalidPubKey(s()),
            ComputeError::UnknownTier(s()),
            ComputeError::UnknownOffense(s()),
        ]
    }

    #[test]
    fn codes_are_unique_nonzero_and_not_the_reserved_one() {
        let errors = one_of_each();
        let codes: BTreeSet<u32> = errors.iter().map(ComputeError::code).collect();
        assert_eq!(codes.len(), errors.len());
        assert!(codes.iter().all(|&c| c >= 2));
        assert!(errors.iter().all(|e| e.codespace() == "compute"));
    }
}
