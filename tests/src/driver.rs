//! An in-process chain for whole-app tests: a real [`App`] on a temporary RocksDB,
//! fed blocks of txs signed with real secp256k1 keys, one block at a time.

use bytes::Bytes;
use cosmrs::crypto::secp256k1::SigningKey;
use magnet_chain::client::{GasSettings, TxSigner};
use magnet_chain::genesis::{AppGenesis, GenesisAccount, GenesisCoin};
use magnet_chain::{bank, App};
use prost::Message;
use tendermint::abci::types::ExecTxResult;

use crate::abci;

/// Key of test account `n` (secret `[n; 32]`).
pub fn key(n: u8) -> SigningKey {
    SigningKey::from_slice(&[n; 32]).expect("secret")
}

/// Bech32 address of test account `n`.
pub fn address(n: u8) -> String {
    key(n)
        .public_key()
        .account_id("magnet")
        .expect("address")
        .to_string()
}

/// Accounts 1..=n funded with `funds` umag each (account number = n - 1).
pub fn funded_genesis(n: u8, funds: u128) -> AppGenesis {
    AppGenesis {
        accounts: (1..=n)
            .map(|i| GenesisAccount {
                address: address(i),
                coins: vec![GenesisCoin {
                    denom: "umag".into(),
                    amount: funds.to_string(),
                }],
            })
            .collect(),
        ..Default::default()
    }
}

pub struct Chain {
    _storage: cnidarium::TempStorage,
    pub app: App,
    pub chain_id: String,
    pub height: u64,
    pub now: i64,
    seq: std::collections::BTreeMap<u8, u64>,
}

impl Chain {
    pub async fn new(chain_id: &str, genesis_time: i64, genesis: &AppGenesis) -> Chain {
        let storage = cnidarium::TempStorage::new().await.expect("storage");
        let mut app = App::new((*storage).clone());
        app.init_chain(abci::init_chain_request(chain_id, genesis_time, genesis))
            .await
            .expect("init");
        Chain {
            _storage: storage,
            app,
            chain_id: chain_id.into(),
            height: 0,
            now: genesis_time,
            seq: Default::default(),
        }
    }

    /// Signs one message by account `n` with its next sequence.
    pub fn tx<M: Message>(&self, n: u8, type_url: &str, msg: &M) -> Vec<u8> {
        let seq = self.seq.get(&n).copied().unwrap_or(0);
        let mut s = TxSigner::new(key(n), &self.chain_id, u64::from(n).saturating_sub(1), seq)
            .expect("signer");
        let any = cosmrs::Any {
            type_url: type_url.into(),
            value: msg.encode_to_vec(),
        };
        s.sign_msgs(vec![any], "", GasSettings::default())
            .expect("sign")
    }

    /// Finalizes and commits one block `dt` seconds after the previous one.
    pub async fn block(&mut self, dt: i64, txs: Vec<Vec<u8>>) -> Vec<ExecTxResult> {
        self.height = self.height.saturating_add(1);
        self.now = self.now.saturating_add(dt);
        let r = self
            .app
            .finalize_block(abci::finalize_request(
                self.height,
                self.now,
                txs.into_iter().map(Bytes::from).collect(),
            ))
            .await
            .expect("finalize");
        self.app.commit().await.expect("commit");
        r.tx_results
    }

    /// Counts a tx signed with [`Chain::tx`] that the caller will get included itself.
    pub fn bump_sequence(&mut self, n: u8) {
        let s = self.seq.entry(n).or_insert(0);
        *s = s.saturating_add(1);
    }

    /// Runs one tx in its own block 5 s later; bumps the sequence when it succeeded.
    pub async fn run<M: Message>(&mut self, n: u8, type_url: &str, msg: &M) -> ExecTxResult {
        let tx = self.tx(n, type_url, msg);
        let r = self.block(5, vec![tx]).await.remove(0);
        if r.code.is_ok() {
            let s = self.seq.entry(n).or_insert(0);
            *s = s.saturating_add(1);
        }
        r
    }

    /// Runs one tx and asserts it succeeded.
    pub async fn ok<M: Message>(&mut self, n: u8, type_url: &str, msg: &M) -> ExecTxResult {
        let r = self.run(n, type_url, msg).await;
        assert_eq!(r.code.value(), 0, "{type_url} by account {n}: {}", r.log);
        r
    }

    /// Runs one tx and asserts it failed with `(codespace, code)`, changing no balance.
    pub async fn refused<M: Message>(
        &mut self,
        n: u8,
        type_url: &str,
        msg: &M,
        codespace: &str,
        code: u32,
    ) -> String {
        let before = self.balance(&address(n)).await;
        let r = self.run(n, type_url, msg).await;
        assert_eq!(
            (r.codespace.as_str(), r.code.value()),
            (codespace, code),
            "{type_url} by account {n}: {}",
            r.log
        );
        assert_eq!(
            self.balance(&address(n)).await,
            before,
            "a refused tx moved funds"
        );
        r.log
    }

    /// Empty blocks until block time reaches `t`.
    pub async fn advance_to(&mut self, t: i64) {
        while self.now < t {
            let dt = (t.saturating_sub(self.now)).min(60);
            self.block(dt, vec![]).await;
        }
    }

    pub fn snapshot(&self) -> cnidarium::Snapshot {
        self.app.storage().latest_snapshot()
    }

    pub async fn balance(&self, addr: &str) -> u128 {
        bank::balance(&self.snapshot(), addr, "umag")
            .await
            .expect("balance")
    }

    pub async fn supply(&self) -> u128 {
        bank::supply(&self.snapshot(), "umag")
            .await
            .expect("supply")
    }
}
