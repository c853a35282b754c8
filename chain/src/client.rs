//! Client side of the chain: a file keyring, Cosmos SDK tx building and signing with
//! cosmrs, and CometBFT RPC for broadcast, inclusion and queries. Used by the CLI,
//! the benchmark, the tests and (later) `magnet-worker`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use cosmrs::bank::MsgSend;
use cosmrs::crypto::secp256k1::SigningKey;
use cosmrs::proto::cosmos::auth::v1beta1::{
    BaseAccount, QueryAccountRequest, QueryAccountResponse,
};
use cosmrs::proto::cosmos::bank::v1beta1::{QueryAllBalancesRequest, QueryAllBalancesResponse};
use cosmrs::tx::{Body, Fee, Msg as _, SignDoc, SignerInfo};
use cosmrs::{AccountId, Coin, Denom};
use prost::Message;
use serde::{Deserialize, Serialize};
use tendermint_rpc::{Client, HttpClient};

use crate::auth::ADDRESS_PREFIX;
use crate::params::{ChainParams, BOND_DENOM};
use crate::query;

/// A key as stored by the `test` keyring backend: unencrypted, file mode 0600.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub name: String,
    pub address: String,
    /// Compressed secp256k1 public key, hex.
    pub pub_key: String,
    /// Secret scalar, hex.
    pub priv_key: String,
}

pub struct Keyring {
    dir: PathBuf,
}

impl Keyring {
    pub fn open(home: &Path) -> Keyring {
        Keyring {
            dir: home.join("keyring-test"),
        }
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("key name must be non-empty [A-Za-z0-9_-], got {name:?}");
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Creates a key from 32 secret bytes, or a fresh random one.
    pub fn add(&self, name: &str, secret: Option<[u8; 32]>) -> Result<KeyFile> {
        let path = self.path(name)?;
        if path.exists() {
            bail!("key {name:?} already exists in {}", self.dir.display());
        }
        let sk = match secret {
            Some(s) => k256::ecdsa::SigningKey::from_slice(&s).context("invalid secret key")?,
            None => k256::ecdsa::SigningKey::random(&mut rand_core::OsRng),
        };
        let pk = sk.verifying_key().to_sec1_bytes();
        let kf = KeyFile {
            name: name.to_string(),
            address: crate::auth::address_of(&pk)?,
            pub_key: hex::encode(&pk),
            priv_key: hex::encode(sk.to_bytes()),
        };
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(&path, serde_json::to_vec_pretty(&kf)?)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(kf)
    }

    pub fn get(&self, name: &str) -> Result<KeyFile> {
        let path = self.path(name)?;
        let raw = std::fs::read(&path)
            .with_context(|| format!("key {name:?} not found in {}", self.dir.display()))?;
        Ok(serde_json::from_slice(&raw)?)
    }

    pub fn list(&self) -> Result<Vec<KeyFile>> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "json") {
                    out.push(serde_json::from_slice(&std::fs::read(e.path())?)?);
                }
            }
        }
        out.sort_by(|a: &KeyFile, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

impl KeyFile {
    pub fn signing_key(&self) -> Result<SigningKey> {
        let bytes = hex::decode(&self.priv_key).context("priv_key is not hex")?;
        SigningKey::from_slice(&bytes).map_err(|e| anyhow!("invalid key {}: {e}", self.name))
    }
}

/// What a signer needs to know to produce a valid tx.
pub struct TxSigner {
    pub key: SigningKey,
    pub address: AccountId,
    pub account_number: u64,
    pub sequence: u64,
    pub chain_id: String,
}

/// Gas and fee of a tx; the default fits a send with a short memo under default params.
#[derive(Debug, Clone, Copy)]
pub struct GasSettings {
    pub gas_limit: u64,
    pub fee: u128,
}

impl Default for GasSettings {
    fn default() -> Self {
        let gas_limit = 100_000;
        GasSettings {
            gas_limit,
            fee: ChainParams::default().required_fee(gas_limit),
        }
    }
}

impl TxSigner {
    pub fn new(
        key: SigningKey,
        chain_id: &str,
        account_number: u64,
        sequence: u64,
    ) -> Result<Self> {
        let address = key
            .public_key()
            .account_id(ADDRESS_PREFIX)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(TxSigner {
            key,
            address,
            account_number,
            sequence,
            chain_id: chain_id.to_string(),
        })
    }

    /// Signs arbitrary messages at the current sequence and advances it.
    pub fn sign_msgs(
        &mut self,
        msgs: Vec<cosmrs::Any>,
        memo: &str,
        gas: GasSettings,
    ) -> Result<Vec<u8>> {
        let body = Body::new(msgs, memo, 0u32);
        let fee = Fee::from_amount_and_gas(
            Coin {
                denom: BOND_DENOM.parse::<Denom>().map_err(|e| anyhow!("{e}"))?,
                amount: gas.fee,
            },
            gas.gas_limit,
        );
        let auth_info =
            SignerInfo::single_direct(Some(self.key.public_key()), self.sequence).auth_info(fee);
        let chain_id = self
            .chain_id
            .parse()
            .map_err(|e| anyhow!("invalid chain id: {e}"))?;
        let doc = SignDoc::new(&body, &auth_info, &chain_id, self.account_number)
            .map_err(|e| anyhow!("{e}"))?;
        let raw = doc.sign(&self.key).map_err(|e| anyhow!("{e}"))?;
        self.sequence = self
            .sequence
            .checked_add(1)
            .ok_or_else(|| anyhow!("sequence overflow"))?;
        raw.to_bytes().map_err(|e| anyhow!("{e}"))
    }

    pub fn sign_send(
        &mut self,
        to: &str,
        coins: &[(String, u128)],
        memo: &str,
        gas: GasSettings,
    ) -> Result<Vec<u8>> {
        let to_address: AccountId = to
            .parse()
            .map_err(|e| anyhow!("invalid recipient {to:?}: {e}"))?;
        let amount = coins
            .iter()
            .map(|(d, a)| {
                Ok(Coin {
                    denom: d.parse::<Denom>().map_err(|e| anyhow!("{e}"))?,
                    amount: *a,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let msg = MsgSend {
            from_address: self.address.clone(),
            to_address,
            amount,
        };
        let any = msg.to_any().map_err(|e| anyhow!("{e}"))?;
        self.sign_msgs(vec![any], memo, gas)
    }
}

/// Parses `1000umag` or `5umag,7foo` into (denom, amount) pairs.
pub fn parse_coins_arg(s: &str) -> Result<Vec<(String, u128)>> {
    s.split(',')
        .map(|part| {
            let part = part.trim();
            let split = part
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(|| anyhow!("expected <amount><denom>, got {part:?}"))?;
            let (amount, denom) = part.split_at(split);
            let amount: u128 = amount.parse().map_err(|_| {
                anyhow!("expected <amount><denom> with an integer amount, got {part:?}")
            })?;
            crate::bank::validate_denom(denom).map_err(|e| anyhow!(e))?;
            Ok((denom.to_string(), amount))
        })
        .collect()
}

/// A connection to one node's CometBFT RPC.
#[derive(Clone)]
pub struct Node {
    pub rpc: HttpClient,
    pub url: String,
}

/// Outcome of a broadcast: CheckTx's verdict and the tx hash.
#[derive(Debug, Clone, Serialize)]
pub struct BroadcastResult {
    pub txhash: String,
    pub code: u32,
    pub codespace: String,
    pub log: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TxInclusion {
    pub txhash: String,
    pub height: u64,
    pub code: u32,
    pub codespace: String,
    pub log: String,
    pub gas_used: i64,
}

impl Node {
    pub fn connect(url: &str) -> Result<Node> {
        let url_norm = url.replace("tcp://", "http://");
        let rpc = HttpClient::new(url_norm.as_str())
            .with_context(|| format!("invalid node url {url}"))?;
        Ok(Node { rpc, url: url_norm })
    }

    pub async fn chain_id(&self) -> Result<String> {
        let st = self
            .rpc
            .status()
            .await
            .with_context(|| format!("status from {}", self.url))?;
        Ok(st.node_info.network.to_string())
    }

    pub async fn latest_height(&self) -> Result<u64> {
        let st = self
            .rpc
            .status()
            .await
            .with_context(|| format!("status from {}", self.url))?;
        Ok(st.sync_info.latest_block_height.value())
    }

    pub async fn abci_query<M: Message>(&self, path: &str, req: &M) -> Result<Vec<u8>> {
        let r = self
            .rpc
            .abci_query(Some(path.to_string()), req.encode_to_vec(), None, false)
            .await
            .with_context(|| format!("abci_query {path} on {}", self.url))?;
        if r.code.is_err() {
            bail!(
                "query {path} failed: code {} ({}): {}",
                r.code.value(),
                r.codespace,
                r.log
            );
        }
        Ok(r.value)
    }

    pub async fn account(&self, address: &str) -> Result<Option<BaseAccount>> {
        let req = QueryAccountRequest {
            address: address.to_string(),
        };
        match self.abci_query(query::PATH_ACCOUNT, &req).await {
            Ok(v) => {
                let resp = QueryAccountResponse::decode(v.as_slice())?;
                let any = resp
                    .account
                    .ok_or_else(|| anyhow!("empty account response"))?;
                Ok(Some(BaseAccount::decode(any.value.as_slice())?))
            }
            Err(e) if format!("{e}").contains("not found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn balances(&self, address: &str) -> Result<Vec<(String, u128)>> {
        let req = QueryAllBalancesRequest {
            address: address.to_string(),
            pagination: None,
            resolve_denom: false,
        };
        let v = self.abci_query(query::PATH_ALL_BALANCES, &req).await?;
        let resp = QueryAllBalancesResponse::decode(v.as_slice())?;
        resp.balances
            .into_iter()
            .map(|c| Ok((c.denom, c.amount.parse::<u128>()?)))
            .collect()
    }

    pub async fn balance(&self, address: &str, denom: &str) -> Result<u128> {
        Ok(self
            .balances(address)
            .await?
            .into_iter()
            .find(|(d, _)| d == denom)
            .map(|(_, a)| a)
            .unwrap_or(0))
    }

    /// Builds a signer for a key from the account's on-chain number and sequence.
    pub async fn signer_for(&self, key: SigningKey, chain_id: Option<&str>) -> Result<TxSigner> {
        let chain_id = match chain_id {
            Some(c) => c.to_string(),
            None => self.chain_id().await?,
        };
        let address = key
            .public_key()
            .account_id(ADDRESS_PREFIX)
            .map_err(|e| anyhow!("{e}"))?;
        let acc = self
            .account(address.as_ref())
            .await?
            .ok_or_else(|| anyhow!("account {address} does not exist on chain (fund it first)"))?;
        TxSigner::new(key, &chain_id, acc.account_number, acc.sequence)
    }

    pub async fn broadcast(&self, tx: Vec<u8>) -> Result<BroadcastResult> {
        let r = self
            .rpc
            .broadcast_tx_sync(tx)
            .await
            .with_context(|| format!("broadcast to {}", self.url))?;
        Ok(BroadcastResult {
            txhash: r.hash.to_string(),
            code: r.code.value(),
            codespace: r.codespace,
            log: r.log,
        })
    }

    /// Polls until the tx is in a block or `timeout` passes.
    pub async fn wait_for_tx(&self, txhash: &str, timeout: Duration) -> Result<TxInclusion> {
        let hash: tendermint::Hash = txhash
            .parse()
            .map_err(|e| anyhow!("invalid tx hash {txhash}: {e}"))?;
        let start = tokio::time::Instant::now();
        loop {
            if let Ok(r) = self.rpc.tx(hash, false).await {
                return Ok(TxInclusion {
                    txhash: txhash.to_string(),
                    height: r.height.value(),
                    code: r.tx_result.code.value(),
                    codespace: r.tx_result.codespace,
                    log: r.tx_result.log,
                    gas_used: r.tx_result.gas_used,
                });
            }
            if start.elapsed() > timeout {
                bail!("tx {txhash} not included within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// App hash of the state after block `height - 1`, as recorded in block `height`'s header.
    pub async fn app_hash_at(&self, height: u64) -> Result<String> {
        let h = tendermint::block::Height::try_from(height)?;
        let b = self
            .rpc
            .block(h)
            .await
            .with_context(|| format!("block {height} from {}", self.url))?;
        Ok(hex::encode(b.block.header.app_hash.as_bytes()))
    }
}
