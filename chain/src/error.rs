//! Stable transaction error codes.
//!
//! Codes follow the Cosmos SDK `sdk` codespace numbering where a Cosmos client
//! already knows the meaning (sequence mismatch = 32, insufficient funds = 5, …),
//! so wallets and explorers render them correctly. A code never changes meaning.

/// Codespace reported with every rejection of the auth/bank/tx pipeline.
pub const CODESPACE: &str = "sdk";

/// Why a transaction was rejected. Every message says what was expected and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("tx parse error: {0}")]
    Decode(String),
    #[error("invalid sequence: {0}")]
    WrongSequence(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("insufficient funds: {0}")]
    InsufficientFunds(String),
    #[error("unknown request: {0}")]
    UnknownRequest(String),
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    #[error("invalid pubkey: {0}")]
    InvalidPubKey(String),
    #[error("unknown address: {0}")]
    UnknownAddress(String),
    #[error("invalid coins: {0}")]
    InvalidCoins(String),
    #[error("out of gas: {0}")]
    OutOfGas(String),
    #[error("insufficient fee: {0}")]
    InsufficientFee(String),
    #[error("no signatures supplied: {0}")]
    NoSignatures(String),
    #[error("tx too large: {0}")]
    TxTooLarge(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid chain-id: {0}")]
    InvalidChainId(String),
    #[error("invalid gas limit: {0}")]
    InvalidGasLimit(String),
    #[error("tx timeout height: {0}")]
    TxTimeoutHeight(String),
    #[error("arithmetic overflow: {0}")]
    Overflow(String),
    #[error("too many messages: {0}")]
    TooManyMessages(String),
    #[error("signature malleability: {0}")]
    HighS(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// An error of another module, with that module's own codespace and code.
    #[error("{message}")]
    Module {
        codespace: &'static str,
        code: u32,
        message: String,
    },
}

impl TxError {
    /// The stable ABCI code of this error (never 0).
    pub fn code(&self) -> u32 {
        match self {
            TxError::Decode(_) => 2,
            TxError::WrongSequence(_) => 32,
            TxError::Unauthorized(_) => 4,
            TxError::InsufficientFunds(_) => 5,
            TxError::UnknownRequest(_) => 6,
            TxError::InvalidAddress(_) => 7,
            TxError::InvalidPubKey(_) => 8,
            TxError::UnknownAddress(_) => 9,
            TxError::InvalidCoins(_) => 10,
            TxError::OutOfGas(_) => 11,
            TxError::InsufficientFee(_) => 13,
            TxError::NoSignatures(_) => 15,
            TxError::TxTooLarge(_) => 21,
            TxError::InvalidRequest(_) => 18,
            TxError::InvalidChainId(_) => 28,
            TxError::InvalidGasLimit(_) => 41,
            TxError::TxTimeoutHeight(_) => 30,
            TxError::Overflow(_) => 34,
            TxError::TooManyMessages(_) => 43,
            TxError::HighS(_) => 44,
            TxError::Internal(_) => 1,
            TxError::Module { code, .. } => *code,
        }
    }

    pub fn codespace(&self) -> &'static str {
        match self {
            TxError::Module { codespace, .. } => codespace,
            _ => CODESPACE,
        }
    }
}

pub type TxResult<T> = Result<T, TxError>;

impl From<anyhow::Error> for TxError {
    fn from(e: anyhow::Error) -> Self {
        TxError::Internal(format!("{e:#}"))
    }
}

impl From<magnet_x_compute::ComputeError> for TxError {
    fn from(e: magnet_x_compute::ComputeError) -> Self {
        TxError::Module {
            codespace: e.codespace(),
            code: e.code(),
            message: e.to_string(),
        }
    }
}
