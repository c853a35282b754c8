//! The ABCI app, driven in-process (no CometBFT), refuses every malformed, mis-signed,
//! replayed or unaffordable transaction with its stable `sdk` code — in CheckTx and in
//! FinalizeBlock alike — and a refused tx leaves balances, sequences and supply exactly
//! as they were. Valid txs in the same block still apply, by exactly amount + fee, and
//! two independent apps fed the same blocks agree on every app hash.

#![allow(clippy::arithmetic_side_effects)]

use bytes::Bytes;
use cnidarium::{StateDelta, StateWrite, Storage, TempStorage};
use cosmrs::crypto::secp256k1::SigningKey;
use cosmrs::proto::cosmos::base::v1beta1::Coin as ProtoCoin;
use cosmrs::proto::cosmos::tx::v1beta1::TxRaw;
use cosmrs::tx::Msg as _;
use magnet_chain::auth::{self, ADDRESS_PREFIX};
use magnet_chain::client::{GasSettings, TxSigner};
use magnet_chain::genesis::{AppGenesis, GenesisAccount, GenesisCoin};
use magnet_chain::params::{ChainParams, BOND_DENOM};
use magnet_chain::{bank, state_key, tx, App};
use magnet_e2e::abci;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use prost::Message;
use tendermint::v0_38::abci::{request, response};

const CHAIN_ID: &str = "magnet-test-1";
const CODESPACE: &str = "sdk";
const FOO: &str = "ufoo";

/// Genesis balances of the two funded accounts (account numbers 0 and 1).
const A_UMAG: u128 = 1_000_000;
const A_UFOO: u128 = 500;
const B_UMAG: u128 = 5_000;
const A_ACC: u64 = 0;
const B_ACC: u64 = 1;

/// Key of sender A (1), recipient B (2) and an unfunded C (3).
fn sk(n: u8) -> SigningKey {
    SigningKey::from_slice(&[n; 32]).expect("valid secp256k1 secret")
}

fn addr(n: u8) -> String {
    sk(n)
        .public_key()
        .account_id(ADDRESS_PREFIX)
        .expect("account id")
        .to_string()
}

fn fee_collector() -> String {
    auth::module_address(tx::FEE_COLLECTOR)
}

fn signer(n: u8, chain_id: &str, account_number: u64, sequence: u64) -> TxSigner {
    TxSigner::new(sk(n), chain_id, account_number, sequence).expect("signer")
}

fn umag(amount: u128) -> Vec<(String, u128)> {
    vec![(BOND_DENOM.to_string(), amount)]
}

/// A correctly signed send of `amount` umag from A to B at A's `sequence`.
fn send_a_to_b(sequence: u64, amount: u128) -> Vec<u8> {
    signer(1, CHAIN_ID, A_ACC, sequence)
        .sign_send(&addr(2), &umag(amount), "", GasSettings::default())
        .expect("sign")
}

fn coin(denom: &str, amount: u128) -> GenesisCoin {
    GenesisCoin {
        denom: denom.into(),
        amount: amount.to_string(),
    }
}

fn genesis() -> AppGenesis {
    AppGenesis {
        params: ChainParams::default(),
        accounts: vec![
            GenesisAccount {
                address: addr(1),
                coins: vec![coin(BOND_DENOM, A_UMAG), coin(FOO, A_UFOO)],
            },
            GenesisAccount {
                address: addr(2),
                coins: vec![coin(BOND_DENOM, B_UMAG)],
            },
        ],
        compute: Default::default(),
        gov: Default::default(),
    }
}

fn init_chain_request(g: &AppGenesis) -> request::InitChain {
    abci::init_chain_request(CHAIN_ID, 1_700_000_000, g)
}

fn finalize_request(height: u64, txs: &[Vec<u8>]) -> request::FinalizeBlock {
    abci::finalize_request(
        height,
        1_700_000_000 + i64::try_from(height).expect("h"),
        txs.iter().cloned().map(Bytes::from).collect(),
    )
}

/// (account_number, sequence, pub_key) of an account.
type AccountView = (u64, u64, Vec<u8>);

/// Everything a refused tx must not touch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    /// (address, all non-zero balances) for A, B, C and the fee collector.
    balances: Vec<(String, Vec<(String, u128)>)>,
    /// (address, (account_number, sequence, pub_key)) for the same addresses.
    accounts: Vec<(String, Option<AccountView>)>,
    supply: Vec<(String, u128)>,
}

/// One in-process chain: an App over its own temporary RocksDB.
struct Chain {
    _tmp: TempStorage,
    storage: Storage,
    app: App,
    height: u64,
}

impl Chain {
    async fn new() -> Chain {
        let (chain, init) = Chain::with_genesis(&genesis()).await;
        let init = init.expect("init_chain");
        assert_eq!(init.app_hash.as_bytes().len(), 32, "genesis app hash");
        chain
    }

    async fn with_genesis(g: &AppGenesis) -> (Chain, anyhow::Result<response::InitChain>) {
        let tmp = TempStorage::new().await.expect("temp storage");
        let storage: Storage = (*tmp).clone();
        let mut app = App::new(storage.clone());
        let init = app.init_chain(init_chain_request(g)).await;
        (
            Chain {
                _tmp: tmp,
                storage,
                app,
                height: 0,
            },
            init,
        )
    }

    async fn check(&mut self, raw: &[u8]) -> response::CheckTx {
        self.app
            .check_tx(request::CheckTx {
                tx: Bytes::copy_from_slice(raw),
                kind: request::CheckTxKind::New,
            })
            .await
    }

    /// FinalizeBlock then Commit the next block; checks that the committed app hash is
    /// the one FinalizeBlock announced.
    async fn block(&mut self, txs: &[Vec<u8>]) -> response::FinalizeBlock {
        let height = self.height + 1;
        let resp = self
            .app
            .finalize_block(finalize_request(height, txs))
            .await
            .expect("finalize_block");
        assert_eq!(resp.tx_results.len(), txs.len(), "one result per tx");
        self.app.commit().await.expect("commit");
        self.height = height;
        assert_eq!(self.app.committed_height(), height);
        assert_eq!(
            self.app.app_hash().await.expect("app hash"),
            resp.app_hash.as_bytes(),
            "committed root differs from FinalizeBlock's app hash at height {height}"
        );
        resp
    }

    async fn balance(&self, address: &str, denom: &str) -> u128 {
        bank::balance(&self.storage.latest_snapshot(), address, denom)
            .await
            .expect("balance")
    }

    async fn sequence(&self, address: &str) -> u64 {
        auth::account(&self.storage.latest_snapshot(), address)
            .await
            .expect("account")
            .expect("account exists")
            .sequence
    }

    async fn supply(&self, denom: &str) -> u128 {
        bank::supply(&self.storage.latest_snapshot(), denom)
            .await
            .expect("supply")
    }

    async fn observe(&self) -> Observed {
        let snap = self.storage.latest_snapshot();
        let mut balances = Vec::new();
        let mut accounts = Vec::new();
        for a in [addr(1), addr(2), addr(3), fee_collector()] {
            balances.push((
                a.clone(),
                bank::all_balances(&snap, &a).await.expect("balances"),
            ));
            let acc = auth::account(&snap, &a)
                .await
                .expect("account")
                .map(|x| (x.account_number, x.sequence, x.pub_key));
            accounts.push((a, acc));
        }
        Observed {
            balances,
            accounts,
            supply: bank::all_supply(&snap).await.expect("supply"),
        }
    }

    /// CheckTx refuses `raw` with `code`, a block carrying it refuses it with the same
    /// code, and after Commit nothing a tx could touch has changed.
    async fn expect_rejected(&mut self, what: &str, raw: Vec<u8>, code: u32) {
        let before = self.observe().await;

        let ct = self.check(&raw).await;
        assert_eq!(
            ct.code.value(),
            code,
            "{what}: CheckTx code (log: {})",
            ct.log
        );
        assert_eq!(ct.codespace, CODESPACE, "{what}: CheckTx codespace");
        assert!(
            !ct.log.is_empty(),
            "{what}: CheckTx log explains the refusal"
        );

        let fb = self.block(std::slice::from_ref(&raw)).await;
        let r = &fb.tx_results[0];
        assert_eq!(
            r.code.value(),
            code,
            "{what}: DeliverTx code (log: {})",
            r.log
        );
        assert_eq!(r.codespace, CODESPACE, "{what}: DeliverTx codespace");
        assert!(r.events.is_empty(), "{what}: a refused tx emits no events");

        let after = self.observe().await;
        assert_eq!(before, after, "{what}: state changed by a refused tx");
    }
}

fn msg_send(from: u8, to: u8, denom: &str, amount: u128) -> cosmrs::Any {
    cosmrs::bank::MsgSend {
        from_address: addr(from).parse().expect("addr"),
        to_address: addr(to).parse().expect("addr"),
        amount: vec![cosmrs::Coin {
            denom: denom.parse().expect("denom"),
            amount,
        }],
    }
    .to_any()
    .expect("any")
}

/// Signs like TxSigner but with any sequence and any fee denom.
fn sign_raw(
    key: u8,
    chain_id: &str,
    account_number: u64,
    sequence: u64,
    msgs: Vec<cosmrs::Any>,
    fee: (&str, u128),
    gas_limit: u64,
) -> Vec<u8> {
    use cosmrs::tx::{Body, Fee, SignDoc, SignerInfo};
    let key = sk(key);
    let body = Body::new(msgs, "", 0u32);
    let fee = Fee::from_amount_and_gas(
        cosmrs::Coin {
            denom: fee.0.parse().expect("denom"),
            amount: fee.1,
        },
        gas_limit,
    );
    let auth_info = SignerInfo::single_direct(Some(key.public_key()), sequence).auth_info(fee);
    let doc = SignDoc::new(
        &body,
        &auth_info,
        &chain_id.parse().expect("chain id"),
        account_number,
    )
    .expect("sign doc");
    doc.sign(&key).expect("sign").to_bytes().expect("bytes")
}

fn raw_tx(raw: &[u8]) -> TxRaw {
    TxRaw::decode(raw).expect("valid TxRaw")
}

/// Re-signs nothing: replaces the (low-S) signature of a valid tx by its twin (r, n−s).
fn to_high_s(raw: &[u8]) -> Vec<u8> {
    let mut t = raw_tx(raw);
    let sig = k256::ecdsa::Signature::from_slice(&t.signatures[0]).expect("64-byte sig");
    assert!(sig.normalize_s().is_none(), "TxSigner must produce low-S");
    let (r, s) = sig.split_scalars();
    let high = k256::ecdsa::Signature::from_scalars(r, -*s).expect("valid scalars");
    assert!(high.normalize_s().is_some(), "n−s is high-S");
    t.signatures[0] = high.to_bytes().to_vec();
    t.encode_to_vec()
}

// ---------------------------------------------------------------------------------

#[tokio::test]
async fn garbage_empty_and_oversize_bytes_are_refused_with_decode_and_size_codes() {
    let mut c = Chain::new().await;
    let max = usize::try_from(ChainParams::default().max_tx_bytes).expect("fits");

    c.expect_rejected("garbage 0xff", vec![0xff; 40], 2).await;
    c.expect_rejected("ascii", b"send 100umag to bob please".to_vec(), 2)
        .await;
    c.expect_rejected("empty", Vec::new(), 2).await;
    // A TxRaw whose body_bytes is not a TxBody.
    let bad_body = TxRaw {
        body_bytes: vec![0xff, 0xff, 0xff],
        auth_info_bytes: vec![],
        signatures: vec![vec![1; 64]],
    }
    .encode_to_vec();
    c.expect_rejected("TxRaw with undecodable body", bad_body, 2)
        .await;
    // A valid tx truncated by one byte.
    let mut cut = send_a_to_b(0, 1);
    cut.pop();
    c.expect_rejected("truncated tx", cut, 2).await;

    // Size bound: exactly max bytes is judged on content (decode error), one more is too large.
    c.expect_rejected("garbage of exactly max_tx_bytes", vec![0xff; max], 2)
        .await;
    c.expect_rejected("one byte over max_tx_bytes", vec![0xff; max + 1], 21)
        .await;
    // An over-long but otherwise valid-looking TxRaw: padding in a signed field.
    let mut t = raw_tx(&send_a_to_b(0, 1));
    t.signatures[0].resize(max, 0);
    c.expect_rejected("oversize TxRaw", t.encode_to_vec(), 21)
        .await;

    assert_eq!(c.sequence(&addr(1)).await, 0);
}

#[tokio::test]
async fn signature_binds_chain_id_and_account_number() {
    let mut c = Chain::new().await;
    let other_chain = signer(1, "other-chain-7", A_ACC, 0)
        .sign_send(&addr(2), &umag(10), "", GasSettings::default())
        .expect("sign");
    c.expect_rejected("wrong chain-id", other_chain, 4).await;

    let wrong_acc = signer(1, CHAIN_ID, 7, 0)
        .sign_send(&addr(2), &umag(10), "", GasSettings::default())
        .expect("sign");
    c.expect_rejected("wrong account number", wrong_acc, 4)
        .await;
    // B's account number with A's key.
    let b_acc = signer(1, CHAIN_ID, B_ACC, 0)
        .sign_send(&addr(2), &umag(10), "", GasSettings::default())
        .expect("sign");
    c.expect_rejected("another account's number", b_acc, 4)
        .await;

    // A signature by the wrong key over a correct sign doc: take A's tx and put C's
    // signature of the same body/auth_info in it.
    let good = raw_tx(&send_a_to_b(0, 10));
    let c_sig = raw_tx(
        &signer(3, CHAIN_ID, A_ACC, 0)
            .sign_send(&addr(2), &umag(10), "", GasSettings::default())
            .expect("sign"),
    )
    .signatures;
    let forged = TxRaw {
        signatures: c_sig,
        ..good
    }
    .encode_to_vec();
    c.expect_rejected("signature by another key", forged, 4)
        .await;

    // The correctly bound tx goes through.
    let fb = c.block(&[send_a_to_b(0, 10)]).await;
    assert_eq!(fb.tx_results[0].code.value(), 0, "{}", fb.tx_results[0].log);
}

#[tokio::test]
async fn sequence_too_low_or_too_high_is_refused_with_32() {
    let mut c = Chain::new().await;
    c.expect_rejected("sequence 1 before any tx", send_a_to_b(1, 3), 32)
        .await;
    let fb = c.block(&[send_a_to_b(0, 5)]).await;
    assert_eq!(fb.tx_results[0].code.value(), 0, "{}", fb.tx_results[0].log);
    assert_eq!(c.sequence(&addr(1)).await, 1);

    // Same sequence, different content (not a byte-for-byte replay).
    c.expect_rejected("sequence too low", send_a_to_b(0, 6), 32)
        .await;
    c.expect_rejected("sequence too high by one", send_a_to_b(2, 6), 32)
        .await;
    c.expect_rejected("sequence far too high", send_a_to_b(1_000, 6), 32)
        .await;
    // TxSigner cannot sign at u64::MAX (it would overflow advancing), so build it by hand.
    let at_max = sign_raw(
        1,
        CHAIN_ID,
        A_ACC,
        u64::MAX,
        vec![msg_send(1, 2, BOND_DENOM, 6)],
        (BOND_DENOM, GasSettings::default().fee),
        GasSettings::default().gas_limit,
    );
    c.expect_rejected("sequence u64::MAX", at_max, 32).await;
    assert_eq!(c.sequence(&addr(1)).await, 1);
}

#[tokio::test]
async fn high_s_twin_of_a_valid_signature_is_refused_with_44() {
    let mut c = Chain::new().await;
    let good = send_a_to_b(0, 25);
    c.expect_rejected("high-S signature", to_high_s(&good), 44)
        .await;
    // Only s was wrong: the original low-S tx is accepted afterwards.
    let fb = c.block(&[good]).await;
    assert_eq!(fb.tx_results[0].code.value(), 0, "{}", fb.tx_results[0].log);
    assert_eq!(c.balance(&addr(2), BOND_DENOM).await, B_UMAG + 25);
}

#[tokio::test]
async fn empty_or_missing_signature_is_refused_with_15() {
    let mut c = Chain::new().await;
    let good = raw_tx(&send_a_to_b(0, 1));
    let empty = TxRaw {
        signatures: vec![vec![]],
        ..good.clone()
    }
    .encode_to_vec();
    c.expect_rejected("empty signature", empty, 15).await;
    let none = TxRaw {
        signatures: vec![],
        ..good.clone()
    }
    .encode_to_vec();
    c.expect_rejected("no signatures", none, 15).await;
    // Wrong-length signatures are unauthorized, not malformed.
    let short = TxRaw {
        signatures: vec![good.signatures[0][..63].to_vec()],
        ..good.clone()
    }
    .encode_to_vec();
    c.expect_rejected("63-byte signature", short, 4).await;
    let zero = TxRaw {
        signatures: vec![vec![0; 64]],
        ..good.clone()
    }
    .encode_to_vec();
    c.expect_rejected("all-zero signature", zero, 4).await;
    let two = TxRaw {
        signatures: vec![good.signatures[0].clone(), good.signatures[0].clone()],
        ..good
    }
    .encode_to_vec();
    c.expect_rejected("two signatures for one signer", two, 4)
        .await;
}

#[tokio::test]
async fn unknown_message_type_is_refused_with_6() {
    use cosmrs::proto::cosmos::staking::v1beta1::MsgDelegate;
    let mut c = Chain::new().await;
    let delegate = cosmrs::Any {
        type_url: "/cosmos.staking.v1beta1.MsgDelegate".into(),
        value: MsgDelegate {
            delegator_address: addr(1),
            validator_address: "magnetvaloper1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq".into(),
            amount: Some(ProtoCoin {
                denom: BOND_DENOM.into(),
                amount: "100".into(),
            }),
        }
        .encode_to_vec(),
    };
    let only = signer(1, CHAIN_ID, A_ACC, 0)
        .sign_msgs(vec![delegate.clone()], "", GasSettings::default())
        .expect("sign");
    c.expect_rejected("MsgDelegate", only, 6).await;

    // A valid send next to the unknown message does not execute either.
    let send = msg_send(1, 2, BOND_DENOM, 100);
    let mixed = signer(1, CHAIN_ID, A_ACC, 0)
        .sign_msgs(vec![send, delegate], "", GasSettings::default())
        .expect("sign");
    c.expect_rejected("MsgSend + MsgDelegate", mixed, 6).await;
}

#[tokio::test]
async fn amounts_near_u128_max_are_insufficient_funds_and_zero_is_invalid_coins() {
    let mut c = Chain::new().await;
    c.expect_rejected("u128::MAX", send_a_to_b(0, u128::MAX), 5)
        .await;
    c.expect_rejected("u128::MAX - 1", send_a_to_b(0, u128::MAX - 1), 5)
        .await;
    // Balance minus fee plus one: the fee is paid first, then the send cannot be.
    let fee = GasSettings::default().fee;
    c.expect_rejected(
        "one more than affordable",
        send_a_to_b(0, A_UMAG - fee + 1),
        5,
    )
    .await;
    // Fee unaffordable for an unfunded... account that does not exist at all: 9.
    let from_c = signer(3, CHAIN_ID, 0, 0)
        .sign_send(&addr(2), &umag(1), "", GasSettings::default())
        .expect("sign");
    c.expect_rejected("sender account does not exist", from_c, 9)
        .await;
    c.expect_rejected("zero amount", send_a_to_b(0, 0), 10)
        .await;
    // Exactly affordable: everything A has goes to B and the fee collector.
    let fb = c.block(&[send_a_to_b(0, A_UMAG - fee)]).await;
    assert_eq!(fb.tx_results[0].code.value(), 0, "{}", fb.tx_results[0].log);
    assert_eq!(c.balance(&addr(1), BOND_DENOM).await, 0);
    assert_eq!(c.balance(&addr(2), BOND_DENOM).await, B_UMAG + A_UMAG - fee);
    assert_eq!(c.supply(BOND_DENOM).await, A_UMAG + B_UMAG);
}

#[tokio::test]
async fn fee_and_gas_limits_are_enforced() {
    let mut c = Chain::new().await;
    let p = ChainParams::default();
    let send = |gas_limit: u64, fee: u128| {
        signer(1, CHAIN_ID, A_ACC, 0)
            .sign_send(&addr(2), &umag(7), "", GasSettings { gas_limit, fee })
            .expect("sign")
    };
    let g = 100_000;
    c.expect_rejected("fee one below minimum", send(g, p.required_fee(g) - 1), 13)
        .await;
    c.expect_rejected("zero fee", send(g, 0), 13).await;
    c.expect_rejected("gas limit 0", send(0, 0), 41).await;
    let over = p.max_gas_per_tx + 1;
    c.expect_rejected("gas limit above max", send(over, p.required_fee(over)), 41)
        .await;
    c.expect_rejected(
        "gas limit u64::MAX",
        send(u64::MAX, u128::from(u64::MAX)),
        41,
    )
    .await;
    c.expect_rejected("gas limit below gas used", send(25_000, 1_000), 11)
        .await;
    c.expect_rejected("gas limit 1", send(1, 1), 11).await;
    // Fee in another denom.
    let foo_fee = sign_raw(
        1,
        CHAIN_ID,
        A_ACC,
        0,
        vec![msg_send(1, 2, BOND_DENOM, 7)],
        (FOO, 10_000),
        g,
    );
    c.expect_rejected("fee in ufoo", foo_fee, 13).await;

    // Boundaries that pass: the exact minimum fee, and the largest allowed gas limit.
    let fb = c
        .block(&[
            send(g, p.required_fee(g)),
            signer(1, CHAIN_ID, A_ACC, 1)
                .sign_send(
                    &addr(2),
                    &umag(7),
                    "",
                    GasSettings {
                        gas_limit: p.max_gas_per_tx,
                        fee: p.required_fee(p.max_gas_per_tx),
                    },
                )
                .expect("sign"),
        ])
        .await;
    for r in &fb.tx_results {
        assert_eq!(r.code.value(), 0, "{}", r.log);
    }
    let fees = p.required_fee(g) + p.required_fee(p.max_gas_per_tx);
    assert_eq!(c.balance(&addr(1), BOND_DENOM).await, A_UMAG - 14 - fees);
    assert_eq!(c.balance(&fee_collector(), BOND_DENOM).await, fees);
}

#[tokio::test]
async fn msg_send_from_an_address_other_than_the_signer_is_unauthorized() {
    let mut c = Chain::new().await;
    let steal = |from: u8, to: u8| msg_send(from, to, BOND_DENOM, 1_000);
    // A signs a send out of B's account.
    let tx1 = signer(1, CHAIN_ID, A_ACC, 0)
        .sign_msgs(vec![steal(2, 1)], "", GasSettings::default())
        .expect("sign");
    c.expect_rejected("from = B, signed by A", tx1, 4).await;
    // Smuggled after a legitimate message.
    let tx2 = signer(1, CHAIN_ID, A_ACC, 0)
        .sign_msgs(vec![steal(1, 2), steal(2, 3)], "", GasSettings::default())
        .expect("sign");
    c.expect_rejected("second message from B", tx2, 4).await;
    // A signs with B's account number and sequence, claiming to be B.
    let tx3 = signer(1, CHAIN_ID, B_ACC, 0)
        .sign_msgs(vec![steal(2, 1)], "", GasSettings::default())
        .expect("sign");
    c.expect_rejected("A's key, B's account number", tx3, 4)
        .await;
}

#[tokio::test]
async fn genesis_refuses_balances_whose_supply_would_overflow() {
    let mut g = genesis();
    g.accounts[1].coins.push(coin(FOO, u128::MAX - 5)); // A already holds 500 ufoo
    let err = g.validate().expect_err("supply overflow must be refused");
    assert!(err.contains("overflows"), "{err}");

    let (c, init) = Chain::with_genesis(&g).await;
    let e = init.expect_err("InitChain must refuse an overflowing genesis");
    assert!(format!("{e:#}").contains("invalid genesis"), "{e:#}");
    assert_eq!(c.storage.latest_version(), u64::MAX, "nothing committed");
    assert_eq!(c.app.committed_height(), 0);

    // Exactly u128::MAX total is allowed.
    let mut edge = genesis();
    edge.accounts[1].coins.push(coin(FOO, u128::MAX - A_UFOO));
    edge.validate().expect("supply of exactly 2^128-1");
    let (c, init) = Chain::with_genesis(&edge).await;
    init.expect("init_chain");
    assert_eq!(c.supply(FOO).await, u128::MAX);
    assert_eq!(c.balance(&addr(2), FOO).await, u128::MAX - A_UFOO);
}

#[tokio::test]
async fn balance_overflow_is_code_34_and_leaves_parent_state_untouched() {
    // Balances a valid genesis cannot produce (their sum exceeds 2^128-1), written raw.
    let tmp = TempStorage::new().await.expect("temp storage");
    let mut state = StateDelta::new(tmp.latest_snapshot());
    let (a, b) = (addr(1), addr(2));
    auth::ensure_account(&mut state, &a).await.expect("acc");
    auth::ensure_account(&mut state, &b).await.expect("acc");
    let put = |s: &mut StateDelta<_>, who: &str, denom: &str, v: u128| {
        s.put_raw(
            state_key::bank::balance(who, denom),
            v.to_be_bytes().to_vec(),
        );
    };
    put(&mut state, &a, BOND_DENOM, A_UMAG);
    put(&mut state, &a, FOO, 100);
    put(&mut state, &b, FOO, u128::MAX - 5);

    // bank::transfer directly.
    {
        let mut child = StateDelta::new(&mut state);
        let e = bank::transfer(&mut child, &a, &b, FOO, 6)
            .await
            .expect_err("overflow");
        assert_eq!(e.code(), 34, "{e}");
        // child dropped
    }
    {
        let mut child = StateDelta::new(&mut state);
        let e = bank::transfer(&mut child, &a, &b, FOO, 100)
            .await
            .expect_err("overflow");
        assert_eq!(e.code(), 34, "{e}");
    }
    assert_eq!(bank::balance(&state, &a, FOO).await.expect("bal"), 100);
    assert_eq!(
        bank::balance(&state, &b, FOO).await.expect("bal"),
        u128::MAX - 5
    );

    // The whole tx pipeline: a signed send that would overflow B is code 34, and the
    // fee it paid before the failing transfer is rolled back with the rest.
    let params = ChainParams::default();
    let raw = signer(1, CHAIN_ID, A_ACC, 0)
        .sign_send(&b, &[(FOO.to_string(), 6)], "", GasSettings::default())
        .expect("sign");
    let decoded = tx::decode(&raw, &params).expect("decodes");
    {
        let mut child = StateDelta::new(&mut state);
        let e = tx::execute(
            &mut child,
            &decoded,
            CHAIN_ID,
            magnet_chain::compute::BlockCtx { height: 1, time: 0 },
            &params,
            &mut tx::SigCache::default(),
        )
        .await
        .expect_err("overflow");
        assert_eq!(e.code(), 34, "{e}");
        assert_eq!(e.codespace(), CODESPACE);
    }
    assert_eq!(
        bank::balance(&state, &a, BOND_DENOM).await.expect("b"),
        A_UMAG
    );
    assert_eq!(bank::balance(&state, &a, FOO).await.expect("b"), 100);
    assert_eq!(
        bank::balance(&state, &b, FOO).await.expect("b"),
        u128::MAX - 5
    );
    assert_eq!(
        auth::account(&state, &a)
            .await
            .expect("a")
            .expect("a")
            .sequence,
        0
    );

    // Up to exactly 2^128-1 is fine.
    let raw = signer(1, CHAIN_ID, A_ACC, 0)
        .sign_send(&b, &[(FOO.to_string(), 5)], "", GasSettings::default())
        .expect("sign");
    let decoded = tx::decode(&raw, &params).expect("decodes");
    let mut child = StateDelta::new(&mut state);
    tx::execute(
        &mut child,
        &decoded,
        CHAIN_ID,
        magnet_chain::compute::BlockCtx { height: 1, time: 0 },
        &params,
        &mut tx::SigCache::default(),
    )
    .await
    .expect("fills B up to u128::MAX");
    child.apply();
    assert_eq!(bank::balance(&state, &b, FOO).await.expect("b"), u128::MAX);
    assert_eq!(bank::balance(&state, &a, FOO).await.expect("b"), 95);
}

#[tokio::test]
async fn valid_send_among_bad_txs_applies_exactly_amount_plus_fee() {
    let mut c = Chain::new().await;
    let fee = GasSettings::default().fee;
    let amount = 12_345;
    let good = send_a_to_b(0, amount);
    let supply_before = c.observe().await.supply;

    let block = vec![
        vec![0xde, 0xad, 0xbe, 0xef], // 2
        send_a_to_b(1, 1),            // 32 (before the good one)
        to_high_s(&good),             // 44
        good.clone(),                 // 0
        good.clone(),                 // 32: replay in the same block
        send_a_to_b(0, 1),            // 32: sequence now used
        send_a_to_b(1, u128::MAX),    // 5
        Vec::new(),                   // 2
        signer(1, "wrong", A_ACC, 1)
            .sign_send(&addr(2), &umag(1), "", GasSettings::default())
            .expect("sign"), // 4
    ];
    let expected = [2, 32, 44, 0, 32, 32, 5, 2, 4];

    // CheckTx sees them against the mempool state: the same verdicts.
    for (raw, want) in block.iter().zip(expected) {
        let r = c.check(raw).await;
        assert_eq!(r.code.value(), want, "CheckTx: {}", r.log);
    }

    let fb = c.block(&block).await;
    let codes: Vec<u32> = fb.tx_results.iter().map(|r| r.code.value()).collect();
    assert_eq!(codes, expected, "{:#?}", fb.tx_results);
    for r in &fb.tx_results {
        if r.code.value() != 0 {
            assert_eq!(r.codespace, CODESPACE);
        }
    }
    let ok = &fb.tx_results[3];
    assert!(ok.gas_used > 0 && ok.gas_used <= ok.gas_wanted, "{ok:?}");
    assert_eq!(ok.gas_wanted, 100_000);
    assert!(ok.events.iter().any(|e| e.kind == "transfer"));

    assert_eq!(c.balance(&addr(1), BOND_DENOM).await, A_UMAG - amount - fee);
    assert_eq!(c.balance(&addr(2), BOND_DENOM).await, B_UMAG + amount);
    assert_eq!(c.balance(&fee_collector(), BOND_DENOM).await, fee);
    assert_eq!(c.balance(&addr(1), FOO).await, A_UFOO);
    assert_eq!(c.sequence(&addr(1)).await, 1);
    assert_eq!(c.sequence(&addr(2)).await, 0);
    assert_eq!(c.observe().await.supply, supply_before, "supply unchanged");
    assert_eq!(c.supply(BOND_DENOM).await, A_UMAG + B_UMAG);
    // The signer's key is now on file.
    let acc = auth::account(&c.storage.latest_snapshot(), &addr(1))
        .await
        .expect("acc")
        .expect("acc");
    assert_eq!(acc.pub_key, sk(1).public_key().to_bytes());
    assert_eq!(acc.account_number, A_ACC);
}

#[tokio::test]
async fn replayed_tx_bytes_fail_with_32_in_the_next_block_and_in_check_tx() {
    let mut c = Chain::new().await;
    let good = send_a_to_b(0, 777);
    let ct = c.check(&good).await;
    assert_eq!(ct.code.value(), 0, "{}", ct.log);
    // Already in the mempool state: the same bytes again are a replay.
    let ct = c.check(&good).await;
    assert_eq!(ct.code.value(), 32, "{}", ct.log);

    let fb = c.block(std::slice::from_ref(&good)).await;
    assert_eq!(fb.tx_results[0].code.value(), 0, "{}", fb.tx_results[0].log);
    let after_first = c.observe().await;

    c.expect_rejected("replay in the next block", good.clone(), 32)
        .await;
    c.expect_rejected("replay two blocks later", good, 32).await;
    assert_eq!(c.observe().await, after_first);
    assert_eq!(c.balance(&addr(2), BOND_DENOM).await, B_UMAG + 777);
}

#[tokio::test]
async fn two_apps_fed_the_same_blocks_agree_on_every_app_hash() {
    let (mut x, ix) = Chain::with_genesis(&genesis()).await;
    let (mut y, iy) = Chain::with_genesis(&genesis()).await;
    let (ix, iy) = (ix.expect("init x"), iy.expect("init y"));
    assert_eq!(ix.app_hash, iy.app_hash, "genesis app hash");

    let mut a = signer(1, CHAIN_ID, A_ACC, 0);
    let mut b = signer(2, CHAIN_ID, B_ACC, 0);
    let g = GasSettings::default();
    let t1 = a.sign_send(&addr(2), &umag(100), "one", g).expect("s");
    let t2 = a.sign_send(&addr(3), &umag(200), "", g).expect("s");
    let t3 = b.sign_send(&addr(1), &umag(50), "", g).expect("s");
    let t4 = a
        .sign_send(&addr(3), &[(FOO.to_string(), 9)], "", g)
        .expect("s");
    let blocks: Vec<Vec<Vec<u8>>> = vec![
        vec![t1.clone(), vec![1, 2, 3]],
        vec![],
        vec![t1.clone(), t2.clone(), t3, to_high_s(&t4)],
        vec![t4, t2, send_a_to_b(0, 1)],
        vec![],
    ];
    let mut hashes = vec![ix.app_hash.as_bytes().to_vec()];
    for (i, txs) in blocks.iter().enumerate() {
        let rx = x.block(txs).await;
        let ry = y.block(txs).await;
        assert_eq!(rx.app_hash, ry.app_hash, "app hash at height {}", i + 1);
        let cx: Vec<_> = rx.tx_results.iter().map(|r| r.code.value()).collect();
        let cy: Vec<_> = ry.tx_results.iter().map(|r| r.code.value()).collect();
        assert_eq!(cx, cy, "tx codes at height {}", i + 1);
        assert_eq!(
            rx.tx_results,
            ry.tx_results,
            "tx results at height {}",
            i + 1
        );
        hashes.push(rx.app_hash.as_bytes().to_vec());
    }
    // Every block writes its height and time, so the hash moves at every height.
    for w in hashes.windows(2) {
        assert_ne!(w[0], w[1]);
    }
    assert_eq!(x.observe().await, y.observe().await);
    assert_eq!(x.sequence(&addr(1)).await, 3);
    assert_eq!(x.sequence(&addr(2)).await, 1);
    assert_eq!(x.balance(&addr(3), BOND_DENOM).await, 200);
    assert_eq!(x.balance(&addr(3), FOO).await, 9);

    // The app hash commits to state, not to tx order or refused txs: the same block 1
    // with its txs reordered gives the same hash, a different amount does not.
    let (mut z, _) = Chain::with_genesis(&genesis()).await;
    let rz = z.block(&[vec![1, 2, 3], t1]).await;
    assert_eq!(rz.app_hash.as_bytes(), hashes[1].as_slice());
    let (mut w, _) = Chain::with_genesis(&genesis()).await;
    let rw = w.block(&[send_a_to_b(0, 101)]).await;
    assert_eq!(rw.tx_results[0].code.value(), 0);
    assert_ne!(rw.app_hash.as_bytes(), hashes[1].as_slice());
}

/// TxRaw is the only unsigned layer of a tx. An extra field appended to it leaves body,
/// auth_info and signature intact, so the tx still verifies — under a different tx hash.
/// The chain refuses high-S signatures for exactly this reason (auth.rs); a second
/// encoding must be refused too, as the Cosmos SDK's decoder does (unknown fields in
/// TxRaw are rejected with ErrTxDecode = 2).
#[tokio::test]
async fn a_second_encoding_of_a_valid_tx_is_refused() {
    let mut c = Chain::new().await;
    let good = send_a_to_b(0, 40);
    // Field 15, wire type LEN, 1 byte: an unknown field prost silently skips.
    let mut unknown = good.clone();
    unknown.extend_from_slice(&[0x7a, 0x01, 0x00]);
    assert_eq!(raw_tx(&unknown), raw_tx(&good), "same decoded TxRaw");
    c.expect_rejected("TxRaw + unknown field", unknown, 2).await;
    // A bogus body_bytes before the real one: prost keeps the last.
    let mut dup = vec![0x0a, 0x01, 0x00];
    dup.extend_from_slice(&good);
    assert_eq!(raw_tx(&dup), raw_tx(&good), "same decoded TxRaw");
    c.expect_rejected("TxRaw with duplicated body_bytes", dup, 2)
        .await;
    let fb = c.block(&[good]).await;
    assert_eq!(fb.tx_results[0].code.value(), 0);
}

// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Input {
    Random(Vec<u8>),
    /// XOR these (index mod len, non-zero mask) into a valid tx.
    Flip(Vec<(usize, u8)>),
    /// Keep the first (index mod len) bytes of a valid tx.
    Truncate(usize),
    /// Insert a byte at (index mod len + 1) into a valid tx.
    Insert(usize, u8),
    /// Overwrite a slice of the signature with random bytes.
    Signature(usize, Vec<u8>),
}

fn apply(input: &Input, valid: &[u8]) -> Vec<u8> {
    let n = valid.len();
    match input {
        Input::Random(bytes) => bytes.clone(),
        Input::Flip(flips) => {
            let mut v = valid.to_vec();
            for (i, m) in flips {
                v[i % n] ^= m;
            }
            v
        }
        Input::Truncate(i) => valid[..i % n].to_vec(),
        Input::Insert(i, b) => {
            let mut v = valid.to_vec();
            v.insert(i % (n + 1), *b);
            v
        }
        Input::Signature(i, bytes) => {
            let mut t = raw_tx(valid);
            let sig = &mut t.signatures[0];
            for (k, b) in bytes.iter().enumerate() {
                let at = (i + k) % sig.len();
                sig[at] = *b;
            }
            t.encode_to_vec()
        }
    }
}

fn input_strategy() -> impl Strategy<Value = Input> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Input::Random),
        proptest::collection::vec((any::<usize>(), 1u8..=255), 1..5).prop_map(Input::Flip),
        any::<usize>().prop_map(Input::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Input::Insert(i, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(i, b)| Input::Signature(i, b)),
    ]
}

/// Random bytes and random damage to a valid tx never panic CheckTx or FinalizeBlock,
/// are always refused with an `sdk` code, and never move a coin or a sequence.
#[test]
fn random_bytes_and_mutated_txs_never_panic_or_move_funds() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let chain = tokio::sync::Mutex::new(rt.block_on(Chain::new()));
    let valid = send_a_to_b(0, 1_000);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&input_strategy(), |input| {
        let raw = apply(&input, &valid);
        if raw == valid {
            return Ok(()); // a mutation that undid itself
        }
        rt.block_on(async {
            let mut c = chain.lock().await;
            let before = c.observe().await;
            let ct = c.check(&raw).await;
            prop_assert_ne!(ct.code.value(), 0, "CheckTx accepted {:?}", input);
            prop_assert_eq!(&ct.codespace, CODESPACE);
            let fb = c.block(&[raw.clone(), raw.clone()]).await;
            for r in &fb.tx_results {
                prop_assert_ne!(r.code.value(), 0, "block accepted {:?}", input);
                prop_assert_eq!(&r.codespace, CODESPACE);
            }
            let after = c.observe().await;
            prop_assert_eq!(before, after, "state changed by {:?}", input);
            Ok::<(), TestCaseError>(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The undamaged tx is still valid: refusals were due to the damage, not to state.
    let mut c = chain.into_inner();
    rt.block_on(async {
        let fb = c.block(&[valid]).await;
        assert_eq!(fb.tx_results[0].code.value(), 0, "{}", fb.tx_results[0].log);
        assert_eq!(c.balance(&addr(2), BOND_DENOM).await, B_UMAG + 1_000);
    });
}
