//! Transaction pipeline: Cosmos SDK `TxRaw` decoding, stateless checks, and
//! execution (signature, account number, sequence, fee, messages) against a state.
//!
//! Validation runs in two phases, as in Penumbra's actions: `decode` needs no state
//! (size, encoding, signer shape, fee vs. gas, message syntax) and is what
//! Prepare/ProcessProposal use; `execute` checks against the state and writes.
//! A tx that fails anywhere changes nothing: callers run it in a forked delta and
//! apply the delta only on success.

use std::collections::BTreeMap;

use cnidarium::{StateRead, StateWrite};
use cosmrs::proto::cosmos::bank::v1beta1::MsgSend;
use cosmrs::proto::cosmos::crypto::secp256k1::PubKey as ProtoPubKey;
use cosmrs::proto::cosmos::tx::signing::v1beta1::SignMode;
use cosmrs::proto::cosmos::tx::v1beta1::{mode_info, AuthInfo, SignDoc, TxBody, TxRaw};
use magnet_proto::magnet::compute::v1 as pb;
use magnet_proto::magnet::gov::v1 as gov_pb;
use prost::Message;
use sha2::{Digest, Sha256};
use tendermint::abci::{Event, EventAttributeIndexExt};

use crate::error::{TxError, TxResult};
use crate::params::ChainParams;
use crate::{auth, bank};

pub const MSG_SEND_TYPE_URL: &str = "/cosmos.bank.v1beta1.MsgSend";
pub const SECP256K1_PUBKEY_TYPE_URL: &str = "/cosmos.crypto.secp256k1.PubKey";
pub const MSG_REGISTER_WORKER_TYPE_URL: &str = "/magnet.compute.v1.MsgRegisterWorker";
pub const MSG_HEARTBEAT_TYPE_URL: &str = "/magnet.compute.v1.MsgHeartbeat";
pub const MSG_BEGIN_UNBOND_TYPE_URL: &str = "/magnet.compute.v1.MsgBeginUnbond";
pub const MSG_SUBMIT_CONTRIBUTION_TYPE_URL: &str = "/magnet.compute.v1.MsgSubmitContribution";
pub const MSG_COMMIT_RESULT_TYPE_URL: &str = "/magnet.compute.v1.MsgCommitResult";
pub const MSG_REVEAL_RESULT_TYPE_URL: &str = "/magnet.compute.v1.MsgRevealResult";
pub const MSG_SETTLE_INFERENCE_TYPE_URL: &str = "/magnet.compute.v1.MsgSettleInference";
pub const MSG_OPEN_ROUND_TYPE_URL: &str = "/magnet.compute.v1.MsgOpenRound";
pub const MSG_SUBMIT_GRADIENT_TYPE_URL: &str = "/magnet.compute.v1.MsgSubmitGradient";
pub const MSG_FINALIZE_ROUND_TYPE_URL: &str = "/magnet.compute.v1.MsgFinalizeRound";
pub const MSG_CLAIM_REWARDS_TYPE_URL: &str = "/magnet.compute.v1.MsgClaimRewards";
pub const MSG_JOIN_NOTARY_PANEL_TYPE_URL: &str = "/magnet.compute.v1.MsgJoinNotaryPanel";
pub const MSG_REGISTER_DATA_TYPE_URL: &str = "/magnet.compute.v1.MsgRegisterData";
pub const MSG_CHALLENGE_TYPE_URL: &str = "/magnet.compute.v1.MsgChallenge";
pub const MSG_VOTE_DISPUTE_TYPE_URL: &str = "/magnet.compute.v1.MsgVoteDispute";
pub const MSG_CREATE_JOB_TYPE_URL: &str = "/magnet.compute.v1.MsgCreateJob";
pub const MSG_CLAIM_JOB_TYPE_URL: &str = "/magnet.compute.v1.MsgClaimJob";
pub const MSG_SCORE_JOB_TYPE_URL: &str = "/magnet.compute.v1.MsgScoreJob";
pub const MSG_SUBMIT_PROPOSAL_TYPE_URL: &str = "/magnet.gov.v1.MsgSubmitProposal";
pub const MSG_VOTE_TYPE_URL: &str = "/magnet.gov.v1.MsgVote";
const KNOWN_TYPE_URLS: [&str; 21] = [
    MSG_CLAIM_REWARDS_TYPE_URL,
    MSG_JOIN_NOTARY_PANEL_TYPE_URL,
    MSG_REGISTER_DATA_TYPE_URL,
    MSG_CHALLENGE_TYPE_URL,
    MSG_VOTE_DISPUTE_TYPE_URL,
    MSG_CREATE_JOB_TYPE_URL,
    MSG_CLAIM_JOB_TYPE_URL,
    MSG_SCORE_JOB_TYPE_URL,
    MSG_SUBMIT_PROPOSAL_TYPE_URL,
    MSG_VOTE_TYPE_URL,
    MSG_OPEN_ROUND_TYPE_URL,
    MSG_SUBMIT_GRADIENT_TYPE_URL,
    MSG_FINALIZE_ROUND_TYPE_URL,
    MSG_SETTLE_INFERENCE_TYPE_URL,
    MSG_COMMIT_RESULT_TYPE_URL,
    MSG_REVEAL_RESULT_TYPE_URL,
    MSG_SUBMIT_CONTRIBUTION_TYPE_URL,
    MSG_SEND_TYPE_URL,
    MSG_REGISTER_WORKER_TYPE_URL,
    MSG_HEARTBEAT_TYPE_URL,
    MSG_BEGIN_UNBOND_TYPE_URL,
];

/// Name of the module account that collects fees.
pub const FEE_COLLECTOR: &str = "fee_collector";

/// A message the chain knows how to execute.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Send {
        from: String,
        to: String,
        coins: BTreeMap<String, u128>,
    },
    RegisterWorker {
        owner: String,
        tier: magnet_x_compute::Tier,
        bond: u128,
        hardware: pb::HardwareProfile,
    },
    Heartbeat {
        owner: String,
    },
    BeginUnbond {
        owner: String,
    },
    SubmitContribution {
        owner: String,
        steps: u64,
        model_params: u64,
        checkpoint_hash: String,
    },
    OpenRound(pb::MsgOpenRound),
    SubmitGradient(pb::MsgSubmitGradient),
    FinalizeRound(pb::MsgFinalizeRound),
    SettleInference {
        payer: String,
        request_id: String,
        serving_node: String,
        amount: u128,
        contributors: BTreeMap<String, u128>,
    },
    CommitResult {
        owner: String,
        task_id: String,
        commitment: Vec<u8>,
    },
    RevealResult {
        owner: String,
        task_id: String,
        result: Vec<u8>,
        nonce: Vec<u8>,
    },
    JoinNotaryPanel {
        owner: String,
        bond: u128,
    },
    ClaimRewards {
        owner: String,
    },
    RegisterData(pb::MsgRegisterData),
    Challenge(pb::MsgChallenge),
    VoteDispute(pb::MsgVoteDispute),
    CreateJob(pb::MsgCreateJob),
    ClaimJob(pb::MsgClaimJob),
    ScoreJob(pb::MsgScoreJob),
    SubmitProposal {
        proposer: String,
        title: String,
        changes: String,
        deposit: u128,
    },
    Vote(gov_pb::MsgVote),
}

impl Msg {
    /// Commit and reveal messages are time-critical: they go first in proposals.
    pub fn is_commit_reveal(&self) -> bool {
        matches!(self, Msg::CommitResult { .. } | Msg::RevealResult { .. })
    }
}

/// Decodes a module message and checks that the account it acts for (`owner`) is the
/// tx signer: every message is signed by its owner, anything else is unauthorized.
fn decode_owned<M: Message + Default>(
    any: &cosmrs::Any,
    signer: &str,
    owner: impl Fn(&M) -> &String,
) -> TxResult<(M, String)> {
    let kind = any.type_url.trim_start_matches('/');
    let m: M = decode_proto(kind, &any.value)?;
    let owner = auth::validate_address(owner(&m))?;
    if owner != signer {
        return Err(TxError::Unauthorized(format!(
            "{kind} owner must be the signer: expected {signer}, got {owner}"
        )));
    }
    Ok((m, owner))
}

/// A tx that passed every stateless check.
#[derive(Debug, Clone)]
pub struct DecodedTx {
    /// SHA-256 of the raw bytes: the hash CometBFT indexes the tx under.
    pub hash: [u8; 32],
    pub body_bytes: Vec<u8>,
    pub auth_info_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub signer: String,
    pub signer_pub_key: Vec<u8>,
    pub sequence: u64,
    pub gas_limit: u64,
    pub gas_used: u64,
    pub fee: u128,
    pub timeout_height: u64,
    pub msgs: Vec<Msg>,
}

fn decode_proto<M: Message + Default>(what: &str, bytes: &[u8]) -> TxResult<M> {
    M::decode(bytes).map_err(|e| TxError::Decode(format!("expected a valid {what}: {e}")))
}

/// Stateless decoding and checks.
pub fn decode(raw: &[u8], params: &ChainParams) -> TxResult<DecodedTx> {
    let max = usize::try_from(params.max_tx_bytes).unwrap_or(usize::MAX);
    if raw.len() > max {
        return Err(TxError::TxTooLarge(format!(
            "expected at most {max} bytes, got {}",
            raw.len()
        )));
    }
    if raw.is_empty() {
        return Err(TxError::Decode("expected a TxRaw, got 0 bytes".into()));
    }
    let tx_raw: TxRaw = decode_proto("cosmos.tx.v1beta1.TxRaw", raw)?;
    // TxRaw is the one unsigned layer: prost would accept unknown or repeated fields,
    // letting anyone re-encode a valid tx under a new hash. Only the canonical encoding
    // is accepted, as the Cosmos SDK's decoder does.
    let canonical_len = tx_raw.encoded_len();
    if canonical_len != raw.len() || tx_raw.encode_to_vec() != raw {
        return Err(TxError::Decode(format!(
            "expected the canonical TxRaw encoding ({canonical_len} bytes), got {} bytes with unknown, repeated or reordered fields",
            raw.len()
        )));
    }
    let body: TxBody = decode_proto("cosmos.tx.v1beta1.TxBody", &tx_raw.body_bytes)?;
    let auth_info: AuthInfo = decode_proto("cosmos.tx.v1beta1.AuthInfo", &tx_raw.auth_info_bytes)?;

    // Exactly one signer, signing in SIGN_MODE_DIRECT with a secp256k1 key.
    let signature = match tx_raw.signatures.as_slice() {
        [] => return Err(TxError::NoSignatures("expected 1 signature, got 0".into())),
        [sig] if sig.is_empty() => {
            return Err(TxError::NoSignatures(
                "expected a 64-byte signature, got an empty one".into(),
            ))
        }
        [sig] => sig.clone(),
        sigs => {
            return Err(TxError::Unauthorized(format!(
                "expected 1 signature, got {}",
                sigs.len()
            )))
        }
    };
    let signer_info = match auth_info.signer_infos.as_slice() {
        [one] => one,
        infos => {
            return Err(TxError::Unauthorized(format!(
                "expected 1 signer info, got {}",
                infos.len()
            )))
        }
    };
    let any_pk = signer_info.public_key.as_ref().ok_or_else(|| {
        TxError::InvalidPubKey("expected the signer's public key in signer_info, got none".into())
    })?;
    if any_pk.type_url != SECP256K1_PUBKEY_TYPE_URL {
        return Err(TxError::InvalidPubKey(format!(
            "expected key type {SECP256K1_PUBKEY_TYPE_URL}, got {:?}",
            any_pk.type_url
        )));
    }
    let pk: ProtoPubKey = decode_proto("cosmos.crypto.secp256k1.PubKey", &any_pk.value)?;
    if pk.key.len() != 33 {
        return Err(TxError::InvalidPubKey(format!(
            "expected a 33-byte compressed key, got {} bytes",
            pk.key.len()
        )));
    }
    let signer = auth::address_of(&pk.key)?;
    let mode = match signer_info.mode_info.as_ref().and_then(|m| m.sum.as_ref()) {
        Some(mode_info::Sum::Single(single)) => single.mode,
        Some(mode_info::Sum::Multi(_)) => {
            return Err(TxError::Unauthorized(
                "expected a single-key signer, got a multisig mode".into(),
            ))
        }
        None => {
            return Err(TxError::Unauthorized(
                "expected mode_info SIGN_MODE_DIRECT, got none".into(),
            ))
        }
    };
    if mode != SignMode::Direct as i32 {
        return Err(TxError::Unauthorized(format!(
            "expected SIGN_MODE_DIRECT ({}), got sign mode {mode}",
            SignMode::Direct as i32
        )));
    }

    // Fee and gas.
    let fee = auth_info
        .fee
        .as_ref()
        .ok_or_else(|| TxError::InsufficientFee("expected a fee, got none".into()))?;
    if !fee.payer.is_empty() || !fee.granter.is_empty() {
        return Err(TxError::InvalidRequest(format!(
            "expected no fee payer or granter, got payer {:?} granter {:?}",
            fee.payer, fee.granter
        )));
    }
    if fee.gas_limit == 0 || fee.gas_limit > params.max_gas_per_tx {
        return Err(TxError::InvalidGasLimit(format!(
            "expected a gas limit in [1, {}], got {}",
            params.max_gas_per_tx, fee.gas_limit
        )));
    }
    let mut fee_amount = 0u128;
    for coin in &fee.amount {
        if coin.denom != params.fee_denom {
            return Err(TxError::InsufficientFee(format!(
                "expected fees in {}, got {:?}",
                params.fee_denom, coin.denom
            )));
        }
        let a = bank::parse_amount(&coin.amount)?;
        fee_amount = fee_amount
            .checked_add(a)
            .ok_or_else(|| TxError::Overflow("fee sum exceeds 2^128-1".into()))?;
    }

    // Body.
    if body.messages.is_empty() {
        return Err(TxError::InvalidRequest(
            "expected at least 1 message, got 0".into(),
        ));
    }
    let max_msgs = usize::try_from(params.max_msgs_per_tx).unwrap_or(usize::MAX);
    if body.messages.len() > max_msgs {
        return Err(TxError::TooManyMessages(format!(
            "expected at most {max_msgs} messages, got {}",
            body.messages.len()
        )));
    }
    let max_memo = usize::try_from(params.max_memo_bytes).unwrap_or(usize::MAX);
    if body.memo.len() > max_memo {
        return Err(TxError::InvalidRequest(format!(
            "expected a memo of at most {max_memo} bytes, got {}",
            body.memo.len()
        )));
    }
    if let Some(ext) = body.extension_options.first() {
        return Err(TxError::UnknownRequest(format!(
            "expected no extension options, got {:?}",
            ext.type_url
        )));
    }
    let mut msgs = Vec::with_capacity(body.messages.len());
    for any in &body.messages {
        match any.type_url.as_str() {
            MSG_SEND_TYPE_URL => {
                let m: MsgSend = decode_proto("cosmos.bank.v1beta1.MsgSend", &any.value)?;
                let from = auth::validate_address(&m.from_address)?;
                let to = auth::validate_address(&m.to_address)?;
                if from != signer {
                    return Err(TxError::Unauthorized(format!(
                        "MsgSend from_address must be the signer: expected {signer}, got {from}"
                    )));
                }
                let coins = bank::parse_coins(&m.amount)?;
                msgs.push(Msg::Send { from, to, coins });
            }
            MSG_REGISTER_WORKER_TYPE_URL => {
                let (m, owner) = decode_owned::<pb::MsgRegisterWorker>(any, &signer, |m| &m.owner)?;
                let tier: magnet_x_compute::Tier = m.tier.parse()?;
                let bond = bank::parse_amount(&m.bond_amount)?;
                msgs.push(Msg::RegisterWorker {
                    owner,
                    tier,
                    bond,
                    hardware: m.hardware.unwrap_or_default(),
                });
            }
            MSG_HEARTBEAT_TYPE_URL => {
                let (_, owner) = decode_owned::<pb::MsgHeartbeat>(any, &signer, |m| &m.owner)?;
                msgs.push(Msg::Heartbeat { owner });
            }
            MSG_BEGIN_UNBOND_TYPE_URL => {
                let (_, owner) = decode_owned::<pb::MsgBeginUnbond>(any, &signer, |m| &m.owner)?;
                msgs.push(Msg::BeginUnbond { owner });
            }
            MSG_OPEN_ROUND_TYPE_URL => {
                let (m, _) = decode_owned::<pb::MsgOpenRound>(any, &signer, |m| &m.owner)?;
                msgs.push(Msg::OpenRound(m));
            }
            MSG_SUBMIT_GRADIENT_TYPE_URL => {
                let (m, _) = decode_owned::<pb::MsgSubmitGradient>(any, &signer, |m| &m.owner)?;
                msgs.push(Msg::SubmitGradient(m));
            }
            MSG_FINALIZE_ROUND_TYPE_URL => {
                let (m, _) = decode_owned::<pb::MsgFinalizeRound>(any, &signer, |m| &m.owner)?;
                msgs.push(Msg::FinalizeRound(m));
            }
            MSG_SETTLE_INFERENCE_TYPE_URL => {
                let (m, payer) =
                    decode_owned::<pb::MsgSettleInference>(any, &signer, |m| &m.payer)?;
                let serving_node = auth::validate_address(&m.serving_node)?;
                let amount = bank::parse_amount(&m.amount)?;
                if amount == 0 {
                    return Err(TxError::InvalidCoins(
                        "expected a positive amount, got 0".into(),
                    ));
                }
                if m.contributors.len() > 32 {
                    return Err(TxError::InvalidRequest(format!(
                        "expected at most 32 contributors, got {}",
                        m.contributors.len()
                    )));
                }
                let mut contributors = BTreeMap::new();
                for c in &m.contributors {
                    let addr = auth::validate_address(&c.address)?;
                    let w = bank::parse_amount(&c.weight)?;
                    if contributors.insert(addr.clone(), w).is_some() {
                        return Err(TxError::InvalidRequest(format!(
                            "expected each contributor once, got {addr} twice"
                        )));
                    }
                }
                msgs.push(Msg::SettleInference {
                    payer,
                    request_id: m.request_id,
                    serving_node,
                    amount,
                    contributors,
                });
            }
            MSG_CLAIM_REWARDS_TYPE_URL => {
                let (_, owner) = decode_owned::<pb::MsgClaimRewards>(any, &signer, |m| &m.owner)?;
                msgs.push(Msg::ClaimRewards { owner });
            }
            MSG_JOIN_NOTARY_PANEL_TYPE_URL => {
                let (m, owner) =
                    decode_owned::<pb::MsgJoinNotaryPanel>(any, &signer, |m| &m.owner)?;
                let bond = bank::parse_amount(&m.bond)?;
                msgs.push(Msg::JoinNotaryPanel { owner, bond });
            }
            MSG_REGISTER_DATA_TYPE_URL => {
                let (mut m, owner) =
                    decode_owned::<pb::MsgRegisterData>(any, &signer, |m| &m.owner)?;
                m.owner = owner;
                msgs.push(Msg::RegisterData(m));
            }
            MSG_CHALLENGE_TYPE_URL => {
                let (mut m, owner) =
                    decode_owned::<pb::MsgChallenge>(any, &signer, |m| &m.challenger)?;
                m.challenger = owner;
                msgs.push(Msg::Challenge(m));
            }
            MSG_VOTE_DISPUTE_TYPE_URL => {
                let (mut m, owner) =
                    decode_owned::<pb::MsgVoteDispute>(any, &signer, |m| &m.notary)?;
                m.notary = owner;
                msgs.push(Msg::VoteDispute(m));
            }
            MSG_CREATE_JOB_TYPE_URL => {
                let (mut m, owner) =
                    decode_owned::<pb::MsgCreateJob>(any, &signer, |m| &m.requester)?;
                m.requester = owner;
                msgs.push(Msg::CreateJob(m));
            }
            MSG_CLAIM_JOB_TYPE_URL => {
                let (mut m, owner) = decode_owned::<pb::MsgClaimJob>(any, &signer, |m| &m.worker)?;
                m.worker = owner;
                msgs.push(Msg::ClaimJob(m));
            }
            MSG_SCORE_JOB_TYPE_URL => {
                let (mut m, owner) =
                    decode_owned::<pb::MsgScoreJob>(any, &signer, |m| &m.evaluator)?;
                m.evaluator = owner;
                msgs.push(Msg::ScoreJob(m));
            }
            MSG_SUBMIT_PROPOSAL_TYPE_URL => {
                let (m, proposer) =
                    decode_owned::<gov_pb::MsgSubmitProposal>(any, &signer, |m| &m.proposer)?;
                let deposit = bank::parse_amount(&m.deposit)?;
                msgs.push(Msg::SubmitProposal {
                    proposer,
                    title: m.title,
                    changes: m.changes,
                    deposit,
                });
            }
            MSG_VOTE_TYPE_URL => {
                let (mut m, voter) = decode_owned::<gov_pb::MsgVote>(any, &signer, |m| &m.voter)?;
                m.voter = voter;
                msgs.push(Msg::Vote(m));
            }
            MSG_COMMIT_RESULT_TYPE_URL => {
                let (m, owner) = decode_owned::<pb::MsgCommitResult>(any, &signer, |m| &m.owner)?;
                msgs.push(Msg::CommitResult {
                    owner,
                    task_id: m.task_id,
                    commitment: m.commitment,
                });
            }
            MSG_REVEAL_RESULT_TYPE_URL => {
                let (m, owner) = decode_owned::<pb::MsgRevealResult>(any, &signer, |m| &m.owner)?;
                msgs.push(Msg::RevealResult {
                    owner,
                    task_id: m.task_id,
                    result: m.result,
                    nonce: m.nonce,
                });
            }
            MSG_SUBMIT_CONTRIBUTION_TYPE_URL => {
                let (m, owner) =
                    decode_owned::<pb::MsgSubmitContribution>(any, &signer, |m| &m.owner)?;
                msgs.push(Msg::SubmitContribution {
                    owner,
                    steps: m.steps,
                    model_params: m.model_params,
                    checkpoint_hash: m.checkpoint_hash,
                });
            }
            other => {
                return Err(TxError::UnknownRequest(format!(
                    "expected a message type in {KNOWN_TYPE_URLS:?}, got {other:?}"
                )))
            }
        }
    }

    let gas_used = params.gas_used(raw.len(), msgs.len());
    if gas_used > fee.gas_limit {
        return Err(TxError::OutOfGas(format!(
            "expected gas limit >= {gas_used}, got {}",
            fee.gas_limit
        )));
    }
    let required = params.required_fee(fee.gas_limit);
    if fee_amount < required {
        return Err(TxError::InsufficientFee(format!(
            "expected at least {required}{} for gas limit {}, got {fee_amount}{}",
            params.fee_denom, fee.gas_limit, params.fee_denom
        )));
    }

    Ok(DecodedTx {
        hash: Sha256::digest(raw).into(),
        body_bytes: tx_raw.body_bytes,
        auth_info_bytes: tx_raw.auth_info_bytes,
        signature,
        signer,
        signer_pub_key: pk.key,
        sequence: signer_info.sequence,
        gas_limit: fee.gas_limit,
        gas_used,
        fee: fee_amount,
        timeout_height: body.timeout_height,
        msgs,
    })
}

/// Signatures this node has already verified, keyed by tx hash, with the account
/// number they were verified under. A signature's validity is a pure function of
/// (tx bytes, chain-id, account number), so a hit skips the elliptic-curve work
/// without changing any result: CheckTx, recheck and FinalizeBlock verify each tx once.
#[derive(Default)]
pub struct SigCache {
    verified: std::collections::HashMap<[u8; 32], u64>,
    order: std::collections::VecDeque<[u8; 32]>,
}

impl SigCache {
    const CAPACITY: usize = 200_000;

    fn is_verified(&self, hash: &[u8; 32], account_number: u64) -> bool {
        self.verified.get(hash) == Some(&account_number)
    }

    fn insert(&mut self, hash: [u8; 32], account_number: u64) {
        if self.verified.insert(hash, account_number).is_none() {
            self.order.push_back(hash);
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.verified.remove(&old);
                }
            }
        }
    }
}

/// Executes a decoded tx: replay protection (chain-id, account number, sequence),
/// signature, fee, then messages. Returns the tx's events.
pub async fn execute<S: StateRead + StateWrite>(
    state: &mut S,
    tx: &DecodedTx,
    chain_id: &str,
    ctx: crate::compute::BlockCtx,
    params: &ChainParams,
    sigs: &mut SigCache,
) -> TxResult<Vec<Event>> {
    let height = ctx.height;
    if tx.timeout_height != 0 && height > tx.timeout_height {
        return Err(TxError::TxTimeoutHeight(format!(
            "expected block height <= timeout height {}, got {height}",
            tx.timeout_height
        )));
    }
    let mut acc = auth::account(state, &tx.signer).await?.ok_or_else(|| {
        TxError::UnknownAddress(format!(
            "account {} does not exist: expected it to have received funds first",
            tx.signer
        ))
    })?;
    if !acc.pub_key.is_empty() && acc.pub_key != tx.signer_pub_key {
        return Err(TxError::InvalidPubKey(format!(
            "expected the key on file {}, got {}",
            hex::encode(&acc.pub_key),
            hex::encode(&tx.signer_pub_key)
        )));
    }
    if tx.sequence != acc.sequence {
        return Err(TxError::WrongSequence(format!(
            "account sequence mismatch, expected {}, got {}",
            acc.sequence, tx.sequence
        )));
    }
    // The sign doc binds chain-id and account number: a tx signed for another chain,
    // or for an account that was re-created, fails here.
    if !sigs.is_verified(&tx.hash, acc.account_number) {
        let sign_doc = SignDoc {
            body_bytes: tx.body_bytes.clone(),
            auth_info_bytes: tx.auth_info_bytes.clone(),
            chain_id: chain_id.to_string(),
            account_number: acc.account_number,
        };
        auth::verify_signature(&tx.signer_pub_key, &sign_doc.encode_to_vec(), &tx.signature)?;
        sigs.insert(tx.hash, acc.account_number);
    }

    let mut events = Vec::new();
    if tx.fee > 0 {
        let collector = auth::module_address(FEE_COLLECTOR);
        bank::transfer(state, &tx.signer, &collector, &params.fee_denom, tx.fee)
            .await
            .map_err(|e| match e {
                TxError::InsufficientFunds(m) => {
                    TxError::InsufficientFunds(format!("cannot pay fee: {m}"))
                }
                other => other,
            })?;
        events.push(Event::new(
            "tx",
            [
                ("fee", format!("{}{}", tx.fee, params.fee_denom)).index(),
                ("fee_payer", tx.signer.clone()).index(),
            ],
        ));
    }
    acc.sequence = acc
        .sequence
        .checked_add(1)
        .ok_or_else(|| TxError::Overflow("sequence exhausted".into()))?;
    acc.pub_key = tx.signer_pub_key.clone();
    auth::put_account(state, &acc);
    events.push(Event::new(
        "tx",
        [("acc_seq", format!("{}/{}", tx.signer, tx.sequence)).index()],
    ));

    for msg in &tx.msgs {
        match msg {
            Msg::Send { from, to, coins } => {
                auth::ensure_account(state, to).await?;
                let mut amount_str = Vec::new();
                for (denom, amount) in coins {
                    bank::transfer(state, from, to, denom, *amount).await?;
                    amount_str.push(format!("{amount}{denom}"));
                }
                events.push(Event::new(
                    "message",
                    [
                        ("action", MSG_SEND_TYPE_URL.to_string()).index(),
                        ("sender", from.clone()).index(),
                        ("module", "bank".to_string()).index(),
                    ],
                ));
                events.push(Event::new(
                    "transfer",
                    [
                        ("recipient", to.clone()).index(),
                        ("sender", from.clone()).index(),
                        ("amount", amount_str.join(",")).index(),
                    ],
                ));
            }
            Msg::RegisterWorker {
                owner,
                tier,
                bond,
                hardware,
            } => {
                events.extend(
                    crate::compute::register_worker(
                        state,
                        ctx,
                        owner,
                        &tx.signer_pub_key,
                        *tier,
                        *bond,
                        hardware,
                    )
                    .await?,
                );
            }
            Msg::Heartbeat { owner } => {
                events.extend(crate::compute::heartbeat(state, ctx, owner).await?)
            }
            Msg::BeginUnbond { owner } => {
                events.extend(crate::compute::begin_unbond(state, ctx, owner).await?)
            }
            Msg::OpenRound(m) => {
                events.extend(crate::compute::open_round(state, ctx, &tx.signer, m).await?)
            }
            Msg::SubmitGradient(m) => {
                events.extend(crate::compute::submit_gradient(state, ctx, &tx.signer, m).await?)
            }
            Msg::FinalizeRound(m) => {
                events.extend(crate::compute::finalize_round(state, &tx.signer, m).await?)
            }
            Msg::SettleInference {
                payer,
                request_id,
                serving_node,
                amount,
                contributors,
            } => events.extend(
                crate::compute::settle_inference(
                    state,
                    ctx,
                    payer,
                    request_id,
                    serving_node,
                    *amount,
                    contributors,
                )
                .await?,
            ),
            Msg::CommitResult {
                owner,
                task_id,
                commitment,
            } => events.extend(
                crate::compute::commit_result(state, ctx, owner, task_id, commitment).await?,
            ),
            Msg::RevealResult {
                owner,
                task_id,
                result,
                nonce,
            } => events.extend(
                crate::compute::reveal_result(state, ctx, owner, task_id, result, nonce).await?,
            ),
            Msg::ClaimRewards { owner } => {
                events.extend(crate::compute::claim_rewards(state, owner).await?)
            }
            Msg::JoinNotaryPanel { owner, bond } => {
                events.extend(crate::panel::join_notary_panel(state, ctx, owner, *bond).await?)
            }
            Msg::RegisterData(m) => {
                events.extend(crate::panel::register_data(state, ctx, m).await?)
            }
            Msg::Challenge(m) => events.extend(crate::panel::challenge(state, ctx, m).await?),
            Msg::VoteDispute(m) => events.extend(
                crate::panel::vote_dispute(state, ctx, &m.notary, m.dispute_id, m.uphold).await?,
            ),
            Msg::CreateJob(m) => events.extend(crate::panel::create_job(state, ctx, m).await?),
            Msg::ClaimJob(m) => {
                events.extend(crate::panel::claim_job(state, ctx, &m.worker, &m.job_id).await?)
            }
            Msg::ScoreJob(m) => events.extend(crate::panel::score_job(state, ctx, m).await?),
            Msg::SubmitProposal {
                proposer,
                title,
                changes,
                deposit,
            } => events.extend(
                crate::gov::submit_proposal(state, ctx, proposer, title, changes, *deposit).await?,
            ),
            Msg::Vote(m) => events
                .extend(crate::gov::vote(state, ctx, &m.voter, m.proposal_id, &m.option).await?),
            Msg::SubmitContribution {
                owner,
                steps,
                model_params,
                checkpoint_hash,
            } => events.extend(
                crate::compute::submit_contribution(
                    state,
                    owner,
                    *steps,
                    *model_params,
                    checkpoint_hash,
                )
                .await?,
            ),
        }
    }
    Ok(events)
}
