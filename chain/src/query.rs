//! ABCI queries. Paths follow the Cosmos SDK gRPC-over-ABCI convention
//! (`/cosmos.bank.v1beta1.Query/AllBalances`, proto request in `data`), so any
//! Cosmos client can read balances and accounts; `/store` returns a raw value with
//! an ICS23 proof against the app hash.

use cnidarium::{Snapshot, StateRead, Storage};
use cosmrs::proto::cosmos::auth::v1beta1::{
    BaseAccount, QueryAccountRequest, QueryAccountResponse,
};
use cosmrs::proto::cosmos::bank::v1beta1::{
    QueryAllBalancesRequest, QueryAllBalancesResponse, QueryBalanceRequest, QueryBalanceResponse,
    QuerySupplyOfRequest, QuerySupplyOfResponse, QueryTotalSupplyRequest, QueryTotalSupplyResponse,
};
use cosmrs::proto::cosmos::base::v1beta1::Coin;
use cosmrs::proto::cosmos::crypto::secp256k1::PubKey as ProtoPubKey;
use prost::{Message, Name};
use tendermint::merkle::proof::{ProofOp, ProofOps};
use tendermint::v0_38::abci::{request, response};

use crate::app::App;
use crate::error::TxError;
use crate::{auth, bank};

pub const PATH_ACCOUNT: &str = "/cosmos.auth.v1beta1.Query/Account";
pub const PATH_ALL_BALANCES: &str = "/cosmos.bank.v1beta1.Query/AllBalances";
pub const PATH_BALANCE: &str = "/cosmos.bank.v1beta1.Query/Balance";
pub const PATH_TOTAL_SUPPLY: &str = "/cosmos.bank.v1beta1.Query/TotalSupply";
pub const PATH_SUPPLY_OF: &str = "/cosmos.bank.v1beta1.Query/SupplyOf";
pub const PATH_PARAMS: &str = "/magnet.chain.v1.Query/Params";
pub const PATH_STORE: &str = "/store";
pub const PATH_COMPUTE_WORKER: &str = "/magnet.compute.v1.Query/Worker";
pub const PATH_COMPUTE_PARAMS: &str = "/magnet.compute.v1.Query/Params";
pub const PATH_COMPUTE_EPOCH: &str = "/magnet.compute.v1.Query/Epoch";
/// data = decimal round number; answers a `magnet.compute.v1.Round`.
pub const PATH_COMPUTE_ROUND: &str = "/magnet.compute.v1.Query/Round";
/// data = request id; answers the JSON receipt of a settled x402 call.
pub const PATH_COMPUTE_RECEIPT: &str = "/magnet.compute.v1.Query/InferenceReceipt";
/// data = task id; answers a `magnet.compute.v1.Task`.
pub const PATH_COMPUTE_TASK: &str = "/magnet.compute.v1.Query/Task";
/// data = `<task_id>/<owner>`; answers a `magnet.compute.v1.CommitRecord`.
pub const PATH_COMPUTE_COMMIT: &str = "/magnet.compute.v1.Query/Commit";
pub const PATH_COMPUTE_SETTLEMENT: &str = "/magnet.compute.v1.Query/Settlement";
/// data = notary address / dispute number / data hash / job id; answer the record as JSON.
/// data = `<epoch>/<owner>`; answers the worker's reward for that epoch as JSON.
pub const PATH_COMPUTE_REWARD: &str = "/magnet.compute.v1.Query/Reward";
pub const PATH_COMPUTE_NOTARY: &str = "/magnet.compute.v1.Query/Notary";
pub const PATH_COMPUTE_DISPUTE: &str = "/magnet.compute.v1.Query/Dispute";
pub const PATH_COMPUTE_DATA: &str = "/magnet.compute.v1.Query/DataRecord";
pub const PATH_COMPUTE_JOB: &str = "/magnet.compute.v1.Query/Job";
/// data = proposal number; answers the proposal as JSON.
pub const PATH_GOV_PROPOSAL: &str = "/magnet.gov.v1.Query/Proposal";
/// Answers `{params, validators}` as JSON.
pub const PATH_GOV_PARAMS: &str = "/magnet.gov.v1.Query/Params";
/// ProofOp type of a JMT ICS23 commitment proof.
pub const PROOF_OP_TYPE: &str = "ics23:jmt";

/// Code for "not found", as the Cosmos SDK's `ErrKeyNotFound`.
pub const CODE_NOT_FOUND: u32 = 38;

fn coin(denom: String, amount: u128) -> Coin {
    Coin {
        denom,
        amount: amount.to_string(),
    }
}

// The error *is* the ABCI response, returned as-is; boxing it buys nothing here.
#[allow(clippy::result_large_err)]
fn decode_req<M: Message + Default + Name>(data: &[u8]) -> Result<M, response::Query> {
    M::decode(data).map_err(|e| {
        App::query_error(
            2,
            format!("expected a {} in query data: {e}", M::full_name()),
        )
    })
}

fn from_tx_err(e: TxError) -> response::Query {
    App::query_error(e.code(), e.to_string())
}

pub async fn handle(storage: &Storage, req: request::Query) -> response::Query {
    let latest = storage.latest_version();
    if latest == u64::MAX {
        return App::query_error(18, "no state yet: genesis has not been committed".into());
    }
    let requested = req.height.value();
    let snapshot = if requested == 0 || requested == latest {
        storage.latest_snapshot()
    } else {
        match storage.snapshot(requested) {
            Some(s) => s,
            None => {
                return App::query_error(
                    18,
                    format!("expected a height among recent committed versions (latest {latest}), got {requested}"),
                )
            }
        }
    };
    let height = snapshot.version();
    let result = route(&snapshot, &req).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(r) => r,
    };
    resp.height = height.try_into().unwrap_or_default();
    resp
}

async fn route(s: &Snapshot, req: &request::Query) -> Result<response::Query, response::Query> {
    let value = match req.path.as_str() {
        PATH_ACCOUNT => {
            let r: QueryAccountRequest = decode_req(&req.data)?;
            let addr = auth::validate_address(&r.address).map_err(from_tx_err)?;
            let acc = auth::account(s, &addr).await.map_err(from_tx_err)?.ok_or_else(|| {
                App::query_error(CODE_NOT_FOUND, format!("account {addr} not found"))
            })?;
            let pub_key = if acc.pub_key.is_empty() {
                None
            } else {
                Some(cosmrs::Any {
                    type_url: crate::tx::SECP256K1_PUBKEY_TYPE_URL.into(),
                    value: ProtoPubKey { key: acc.pub_key.clone() }.encode_to_vec(),
                })
            };
            let base = BaseAccount {
                address: acc.address,
                pub_key,
                account_number: acc.account_number,
                sequence: acc.sequence,
            };
            QueryAccountResponse {
                account: Some(cosmrs::Any { type_url: BaseAccount::type_url(), value: base.encode_to_vec() }),
            }
            .encode_to_vec()
        }
        PATH_ALL_BALANCES => {
            let r: QueryAllBalancesRequest = decode_req(&req.data)?;
            let addr = auth::validate_address(&r.address).map_err(from_tx_err)?;
            let balances = bank::all_balances(s, &addr).await.map_err(from_tx_err)?;
            QueryAllBalancesResponse {
                balances: balances.into_iter().map(|(d, a)| coin(d, a)).collect(),
                pagination: None,
            }
            .encode_to_vec()
        }
        PATH_BALANCE => {
            let r: QueryBalanceRequest = decode_req(&req.data)?;
            let addr = auth::validate_address(&r.address).map_err(from_tx_err)?;
            bank::validate_denom(&r.denom).map_err(|e| App::query_error(10, e))?;
            let amount = bank::balance(s, &addr, &r.denom).await.map_err(from_tx_err)?;
            QueryBalanceResponse { balance: Some(coin(r.denom, amount)) }.encode_to_vec()
        }
        PATH_TOTAL_SUPPLY => {
            let _: QueryTotalSupplyRequest = decode_req(&req.data)?;
            let supply = bank::all_supply(s).await.map_err(from_tx_err)?;
            QueryTotalSupplyResponse {
                supply: supply.into_iter().map(|(d, a)| coin(d, a)).collect(),
                pagination: None,
            }
            .encode_to_vec()
        }
        PATH_SUPPLY_OF => {
            let r: QuerySupplyOfRequest = decode_req(&req.data)?;
            bank::validate_denom(&r.denom).map_err(|e| App::query_error(10, e))?;
            let amount = bank::supply(s, &r.denom).await.map_err(from_tx_err)?;
            QuerySupplyOfResponse { amount: Some(coin(r.denom, amount)) }.encode_to_vec()
        }
        PATH_PARAMS => {
            let p = App::params(s).await.map_err(from_tx_err)?;
            serde_json::to_vec(&p).map_err(|e| App::query_error(1, e.to_string()))?
        }
        PATH_COMPUTE_WORKER => {
            let addr = std::str::from_utf8(&req.data)
                .map_err(|_| App::query_error(7, "expected a utf-8 address in query data".into()))?;
            let addr = auth::validate_address(addr).map_err(from_tx_err)?;
            crate::compute::worker(s, &addr)
                .await
                .map_err(from_tx_err)?
                .ok_or_else(|| App::query_error(CODE_NOT_FOUND, format!("worker {addr} not found")))?
                .encode_to_vec()
        }
        PATH_COMPUTE_TASK | PATH_COMPUTE_COMMIT => {
            let text = std::str::from_utf8(&req.data)
                .map_err(|_| App::query_error(18, "expected utf-8 query data".into()))?;
            if req.path == PATH_COMPUTE_TASK {
                crate::compute::validate_task_id(text).map_err(from_tx_err)?;
                crate::compute::task(s, text)
                    .await
                    .map_err(from_tx_err)?
                    .ok_or_else(|| App::query_error(CODE_NOT_FOUND, format!("task {text} not found")))?
                    .encode_to_vec()
            } else {
                let (task_id, owner) = text.split_once('/').ok_or_else(|| {
                    App::query_error(18, format!("expected <task_id>/<owner>, got {text:?}"))
                })?;
                crate::compute::commit_record(s, task_id, owner)
                    .await
                    .map_err(from_tx_err)?
                    .ok_or_else(|| App::query_error(CODE_NOT_FOUND, format!("no commitment from {owner} to {task_id}")))?
                    .encode_to_vec()
            }
        }
        PATH_COMPUTE_RECEIPT => {
            let id = std::str::from_utf8(&req.data)
                .map_err(|_| App::query_error(18, "expected a utf-8 request id".into()))?;
            let rec = crate::compute::inference_receipt(s, id)
                .await
                .map_err(from_tx_err)?
                .ok_or_else(|| App::query_error(CODE_NOT_FOUND, format!("request {id} has not been settled")))?;
            serde_json::to_vec(&rec).map_err(|e| App::query_error(1, e.to_string()))?
        }
        PATH_COMPUTE_ROUND => {
            let n: u64 = std::str::from_utf8(&req.data)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| App::query_error(18, "expected a decimal round number in query data".into()))?;
            crate::compute::round(s, n)
                .await
                .map_err(from_tx_err)?
                .ok_or_else(|| App::query_error(CODE_NOT_FOUND, format!("round {n} not found")))?
                .encode_to_vec()
        }
        PATH_COMPUTE_EPOCH => {
            let e = crate::compute::epoch(s).await.map_err(from_tx_err)?;
            serde_json::to_vec(&e).map_err(|e| App::query_error(1, e.to_string()))?
        }
        PATH_COMPUTE_SETTLEMENT => {
            let n: u64 = std::str::from_utf8(&req.data)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| App::query_error(18, "expected a decimal epoch number in query data".into()))?;
            let rec = crate::compute::settlement(s, n)
                .await
                .map_err(from_tx_err)?
                .ok_or_else(|| App::query_error(CODE_NOT_FOUND, format!("epoch {n} has not been settled")))?;
            serde_json::to_vec(&rec).map_err(|e| App::query_error(1, e.to_string()))?
        }
        PATH_COMPUTE_NOTARY | PATH_COMPUTE_DISPUTE | PATH_COMPUTE_DATA | PATH_COMPUTE_JOB
        | PATH_GOV_PROPOSAL => {
            let id = std::str::from_utf8(&req.data)
                .map_err(|_| App::query_error(18, "expected utf-8 query data".into()))?
                .trim();
            let (kind, key) = match req.path.as_str() {
                PATH_COMPUTE_NOTARY => ("notary", crate::panel::record_key("notary", id)),
                PATH_COMPUTE_DISPUTE => ("dispute", crate::panel::record_key("dispute", id)),
                PATH_COMPUTE_DATA => ("data record", crate::panel::record_key("data", id)),
                PATH_COMPUTE_JOB => ("job", crate::panel::record_key("job", id)),
                _ => ("proposal", id.parse().ok().map(crate::gov::proposal_key)),
            };
            let key = key.ok_or_else(|| {
                App::query_error(18, format!("expected a {kind} id in query data, got {id:?}"))
            })?;
            s.get_raw(&key)
                .await
                .map_err(|e| App::query_error(1, format!("{e:#}")))?
                .ok_or_else(|| App::query_error(CODE_NOT_FOUND, format!("{kind} {id} not found")))?
        }
        PATH_COMPUTE_REWARD => {
            let text = std::str::from_utf8(&req.data)
                .map_err(|_| App::query_error(18, "expected utf-8 query data".into()))?;
            let parsed = text
                .split_once('/')
                .and_then(|(e, o)| Some((e.trim().parse::<u64>().ok()?, o.trim())));
            let (e, owner) = parsed.ok_or_else(|| {
                App::query_error(18, format!("expected <epoch>/<owner>, got {text:?}"))
            })?;
            let rec = crate::rewards::reward(s, e, owner)
                .await
                .map_err(from_tx_err)?
                .ok_or_else(|| App::query_error(CODE_NOT_FOUND, format!("no reward of {owner} in epoch {e}")))?;
            serde_json::to_vec(&rec).map_err(|e| App::query_error(1, e.to_string()))?
        }
        PATH_GOV_PARAMS => {
            let g = crate::gov::export(s).await.map_err(from_tx_err)?;
            serde_json::to_vec(&g).map_err(|e| App::query_error(1, e.to_string()))?
        }
        PATH_COMPUTE_PARAMS => {
            let p = crate::compute::params(s).await.map_err(from_tx_err)?;
            serde_json::to_vec(&p).map_err(|e| App::query_error(1, e.to_string()))?
        }
        PATH_STORE => {
            if req.data.is_empty() {
                return Err(App::query_error(18, "expected a store key in query data, got none".into()));
            }
            let (value, proof) = if req.prove {
                let (v, p) = s
                    .get_with_proof(req.data.to_vec())
                    .await
                    .map_err(|e| App::query_error(1, format!("{e:#}")))?;
                let ops = p
                    .proofs
                    .iter()
                    .map(|cp| ProofOp {
                        field_type: PROOF_OP_TYPE.into(),
                        key: req.data.to_vec(),
                        data: cp.encode_to_vec(),
                    })
                    .collect();
                (v, Some(ProofOps { ops }))
            } else {
                let key = String::from_utf8(req.data.to_vec())
                    .map_err(|_| App::query_error(18, "expected a utf-8 store key".into()))?;
                (s.get_raw(&key).await.map_err(|e| App::query_error(1, format!("{e:#}")))?, None)
            };
            return Ok(response::Query {
                key: req.data.clone(),
                value: value.unwrap_or_default().into(),
                proof,
                ..Default::default()
            });
        }
        other => {
            return Err(App::query_error(
                6,
                format!(
                    "unknown query path {other:?}: expected one of {PATH_ACCOUNT}, {PATH_ALL_BALANCES}, {PATH_BALANCE}, {PATH_TOTAL_SUPPLY}, {PATH_SUPPLY_OF}, {PATH_PARAMS}, {PATH_STORE}"
                ),
            ))
        }
    };
    Ok(response::Query {
        value: value.into(),
        ..Default::default()
    })
}

/// Verifies a `/store` answer against an app hash: membership of `value` under `key`,
/// or, when `value` is empty, that the key is absent. Returns an error naming what failed.
pub fn verify_store_proof(
    app_hash: &[u8],
    key: &[u8],
    value: &[u8],
    proof: &ProofOps,
) -> anyhow::Result<()> {
    let [op] = proof.ops.as_slice() else {
        anyhow::bail!(
            "expected 1 proof op (single JMT store), got {}",
            proof.ops.len()
        );
    };
    if op.field_type != PROOF_OP_TYPE {
        anyhow::bail!(
            "expected proof op type {PROOF_OP_TYPE}, got {}",
            op.field_type
        );
    }
    if op.key != key {
        anyhow::bail!(
            "proof is for key {}, not {}",
            hex::encode(&op.key),
            hex::encode(key)
        );
    }
    let cp = ics23::CommitmentProof::decode(op.data.as_slice())
        .map_err(|e| anyhow::anyhow!("undecodable ICS23 proof: {e}"))?;
    let spec = cnidarium::ics23_spec();
    let root = app_hash.to_vec();
    let ok = if value.is_empty() {
        ics23::verify_non_membership::<ics23::HostFunctionsManager>(&cp, &spec, &root, key)
    } else {
        ics23::verify_membership::<ics23::HostFunctionsManager>(&cp, &spec, &root, key, value)
    };
    if !ok {
        anyhow::bail!(
            "ICS23 proof does not verify {} of key {} against app hash {}",
            if value.is_empty() {
                "absence"
            } else {
                "membership"
            },
            String::from_utf8_lossy(key),
            hex::encode(app_hash)
        );
    }
    Ok(())
}
