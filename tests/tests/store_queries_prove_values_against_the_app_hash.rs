//! `/store` queries return ICS23 proofs that verify against the app hash FinalizeBlock
//! returned: membership for present keys, absence for missing ones, and a tampered
//! value or a stale app hash fails verification. Also: proposals built and accepted by
//! the app respect the byte and gas budgets and never carry undecodable txs.

// Test code: plain arithmetic and indexing are fine here.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::needless_range_loop,
    clippy::unwrap_used
)]

use bytes::Bytes;
use cnidarium::TempStorage;
use cosmrs::crypto::secp256k1::SigningKey;
use magnet_chain::client::{GasSettings, TxSigner};
use magnet_chain::genesis::{AppGenesis, GenesisAccount, GenesisCoin};
use magnet_chain::query::{verify_store_proof, PATH_STORE};
use magnet_chain::{state_key, App};
use magnet_e2e::abci;
use tendermint::v0_38::abci::request;

const CHAIN_ID: &str = "magnet-proof-1";
const T0: i64 = 1_700_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_slice(&[n; 32]).expect("secret")
}

fn address(n: u8) -> String {
    key(n)
        .public_key()
        .account_id("magnet")
        .expect("address")
        .to_string()
}

fn time(h: i64) -> tendermint::Time {
    abci::time(T0 + h)
}

async fn store_query(app: &App, k: &str, prove: bool) -> tendermint::v0_38::abci::response::Query {
    app.query(request::Query {
        data: Bytes::from(k.as_bytes().to_vec()),
        path: PATH_STORE.into(),
        height: 0u32.into(),
        prove,
    })
    .await
}

/// An app on a fresh temporary RocksDB with account 1 funded with `umag` at genesis.
async fn new_app(
    umag: &str,
) -> anyhow::Result<(
    TempStorage,
    App,
    tendermint::v0_38::abci::response::InitChain,
)> {
    let storage = TempStorage::new().await?;
    let mut app = App::new((*storage).clone());
    let genesis = AppGenesis {
        accounts: vec![GenesisAccount {
            address: address(1),
            coins: vec![GenesisCoin {
                denom: "umag".into(),
                amount: umag.into(),
            }],
        }],
        ..Default::default()
    };
    let init = app
        .init_chain(abci::init_chain_request(CHAIN_ID, T0, &genesis))
        .await?;
    Ok((storage, app, init))
}

#[tokio::test]
async fn store_queries_prove_values_against_the_app_hash() -> anyhow::Result<()> {
    let (_storage, mut app, init) = new_app("1000000").await?;
    let genesis_hash = init.app_hash.as_bytes().to_vec();

    let tx = TxSigner::new(key(1), CHAIN_ID, 0, 0)?.sign_send(
        &address(2),
        &[("umag".into(), 777)],
        "",
        GasSettings::default(),
    )?;
    let fin = app
        .finalize_block(abci::finalize_request(1, T0 + 1, vec![Bytes::from(tx)]))
        .await?;
    assert_eq!(
        fin.tx_results[0].code.value(),
        0,
        "{}",
        fin.tx_results[0].log
    );
    app.commit().await?;
    let app_hash = fin.app_hash.as_bytes().to_vec();
    assert_ne!(app_hash, genesis_hash);

    // Membership: the recipient's balance, 777 as 16 big-endian bytes.
    let k = state_key::bank::balance(&address(2), "umag");
    let r = store_query(&app, &k, true).await;
    assert_eq!(r.code.value(), 0, "{}", r.log);
    assert_eq!(r.height.value(), 1);
    assert_eq!(r.value.as_ref(), 777u128.to_be_bytes().as_slice());
    let proof = r.proof.clone().expect("proof requested");
    verify_store_proof(&app_hash, k.as_bytes(), &r.value, &proof)?;

    // A tampered value, or the pre-block (genesis) app hash, does not verify.
    let forged = 778u128.to_be_bytes();
    assert!(verify_store_proof(&app_hash, k.as_bytes(), &forged, &proof).is_err());
    assert!(verify_store_proof(&genesis_hash, k.as_bytes(), &r.value, &proof).is_err());

    // Absence: a key that was never written.
    let missing = state_key::bank::balance(&address(3), "umag");
    let r = store_query(&app, &missing, true).await;
    assert!(r.value.is_empty());
    verify_store_proof(&app_hash, missing.as_bytes(), &[], &r.proof.expect("proof"))?;

    // Without --prove: same value, no proof.
    let plain = store_query(&app, &k, false).await;
    assert_eq!(plain.value, Bytes::from(777u128.to_be_bytes().to_vec()));
    assert!(plain.proof.is_none());
    Ok(())
}

#[tokio::test]
async fn proposals_respect_byte_and_gas_budgets() -> anyhow::Result<()> {
    let (_storage, app, _) = new_app("1000000000").await?;
    let mut signer = TxSigner::new(key(1), CHAIN_ID, 0, 0)?;
    let mut txs: Vec<Bytes> = Vec::new();
    for _ in 0..10 {
        txs.push(
            signer
                .sign_send(
                    &address(2),
                    &[("umag".into(), 1)],
                    "",
                    GasSettings::default(),
                )?
                .into(),
        );
    }
    let garbage = Bytes::from_static(b"not a tx");
    let mut with_garbage = txs.clone();
    with_garbage.insert(3, garbage.clone());
    let prepare = |txs: Vec<Bytes>, max_tx_bytes: i64| request::PrepareProposal {
        max_tx_bytes,
        txs,
        local_last_commit: None,
        misbehavior: vec![],
        height: 1u32.into(),
        time: time(1),
        next_validators_hash: tendermint::Hash::None,
        proposer_address: tendermint::account::Id::new([0; 20]),
    };
    // Room for 4 txs with their protobuf overhead: exactly 4 chosen, garbage dropped.
    let budget = i64::try_from(txs[..4].iter().map(|t| t.len() + 11).sum::<usize>())?;
    let p = app
        .prepare_proposal(prepare(with_garbage.clone(), budget))
        .await?;
    assert_eq!(p.txs, txs[..4].to_vec());
    let total: usize = p.txs.iter().map(|t| t.len() + 11).sum();
    assert!(i64::try_from(total)? <= budget);
    // Unlimited bytes: all 10 valid txs, in mempool order.
    let p = app
        .prepare_proposal(prepare(with_garbage.clone(), i64::MAX))
        .await?;
    assert_eq!(p.txs, txs);

    let process = |txs: Vec<Bytes>| request::ProcessProposal {
        txs,
        proposed_last_commit: None,
        misbehavior: vec![],
        hash: tendermint::Hash::None,
        height: 1u32.into(),
        time: time(1),
        next_validators_hash: tendermint::Hash::None,
        proposer_address: tendermint::account::Id::new([0; 20]),
    };
    use tendermint::abci::response::ProcessProposal;
    assert_eq!(
        app.process_proposal(process(txs.clone())).await?,
        ProcessProposal::Accept
    );
    assert_eq!(
        app.process_proposal(process(with_garbage)).await?,
        ProcessProposal::Reject
    );
    // Declared gas above the block limit: 201 txs × 1M gas > 200M.
    let big = GasSettings {
        gas_limit: 1_000_000,
        fee: 10_000,
    };
    let mut heavy: Vec<Bytes> = Vec::new();
    for _ in 0..201 {
        heavy.push(
            signer
                .sign_send(&address(2), &[("umag".into(), 1)], "", big)?
                .into(),
        );
    }
    assert_eq!(
        app.process_proposal(process(heavy.clone())).await?,
        ProcessProposal::Reject
    );
    let p = app.prepare_proposal(prepare(heavy, i64::MAX)).await?;
    assert_eq!(
        p.txs.len(),
        200,
        "gas budget admits exactly 200 txs of 1M gas"
    );
    Ok(())
}
