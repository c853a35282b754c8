//! Property test over random histories of x-compute activity driven through the ABCI
//! app (register, contribute, commit, honest/dishonest/missing reveals, unbond, time
//! jumps up to days). After every block:
//! - supply = genesis + minted (emission schedule) − burned (slashes + burned remainders)
//! - supply = Σ balances of every account (no coin appears or vanishes)
//! - the bonded pool holds exactly Σ worker bonds, and no bond ever grows past what was posted
//! - umag released per UTC day never exceeds the daily cap.

// Test code: plain arithmetic and indexing are fine here.
#![allow(clippy::arithmetic_side_effects, clippy::unwrap_used)]

use std::collections::BTreeMap;

use bytes::Bytes;
use cnidarium::{StateRead, TempStorage};
use cosmrs::crypto::secp256k1::SigningKey;
use futures::StreamExt;
use magnet_chain::client::{GasSettings, TxSigner};
use magnet_chain::compute::{self, BONDED_POOL};
use magnet_chain::genesis::{AppGenesis, GenesisAccount, GenesisCoin};
use magnet_chain::tx;
use magnet_chain::{auth, bank, App};
use magnet_e2e::abci;
use magnet_proto::magnet::compute::v1 as pb;
use proptest::prelude::*;
use prost::Message;

const CHAIN_ID: &str = "magnet-inv-1";
const FUNDS: u128 = 100_000_000_000_000;
const T0: i64 = 1_700_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_slice(&[n + 10; 32]).expect("secret")
}
fn address(n: u8) -> String {
    key(n)
        .public_key()
        .account_id("magnet")
        .expect("address")
        .to_string()
}

#[derive(Debug, Clone)]
enum Action {
    Register { who: u8, tier: u8, extra: u128 },
    Contribute { who: u8, steps: u64 },
    Commit { who: u8, task: u8 },
    Reveal { who: u8, task: u8, honest: bool },
    Unbond { who: u8 },
    Heartbeat { who: u8 },
    Wait { secs: i64 },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0u8..4, 0u8..5, 0u128..1_000_000_000).prop_map(|(who, tier, extra)| Action::Register {
            who,
            tier,
            extra
        }),
        (0u8..4, 1u64..1_000_000).prop_map(|(who, steps)| Action::Contribute { who, steps }),
        (0u8..4, 0u8..3).prop_map(|(who, task)| Action::Commit { who, task }),
        (0u8..4, 0u8..3, any::<bool>()).prop_map(|(who, task, honest)| Action::Reveal {
            who,
            task,
            honest
        }),
        (0u8..4).prop_map(|who| Action::Unbond { who }),
        (0u8..4).prop_map(|who| Action::Heartbeat { who }),
        prop_oneof![
            1i64..400,
            400i64..2_000,
            Just(86_400i64),
            Just(3 * 86_400i64)
        ]
        .prop_map(|secs| Action::Wait { secs }),
    ]
}

struct World {
    _storage: TempStorage,
    app: App,
    height: u64,
    now: i64,
    seq: [u64; 4],
    genesis_supply: u128,
    burned: u128,
    posted: BTreeMap<String, u128>,
    released_per_day: BTreeMap<i64, u128>,
}

impl World {
    async fn new() -> World {
        let storage = TempStorage::new().await.unwrap();
        let mut app = App::new((*storage).clone());
        let g = AppGenesis {
            accounts: (0..4)
                .map(|n| GenesisAccount {
                    address: address(n),
                    coins: vec![GenesisCoin {
                        denom: "umag".into(),
                        amount: FUNDS.to_string(),
                    }],
                })
                .collect(),
            ..Default::default()
        };
        app.init_chain(abci::init_chain_request(CHAIN_ID, T0, &g))
            .await
            .unwrap();
        World {
            _storage: storage,
            app,
            height: 0,
            now: T0,
            seq: [0; 4],
            genesis_supply: 4 * FUNDS,
            burned: 0,
            posted: BTreeMap::new(),
            released_per_day: BTreeMap::new(),
        }
    }

    fn sign<M: Message>(&mut self, who: u8, type_url: &str, msg: &M) -> Vec<u8> {
        let mut s = TxSigner::new(
            key(who),
            CHAIN_ID,
            u64::from(who),
            self.seq[usize::from(who)],
        )
        .unwrap();
        let any = cosmrs::Any {
            type_url: type_url.into(),
            value: msg.encode_to_vec(),
        };
        s.sign_msgs(vec![any], "", GasSettings::default()).unwrap()
    }

    async fn block(&mut self, dt: i64, tx: Option<(u8, Vec<u8>)>) {
        self.height += 1;
        self.now += dt;
        let txs: Vec<Bytes> = tx.iter().map(|(_, t)| Bytes::from(t.clone())).collect();
        let r = self
            .app
            .finalize_block(abci::finalize_request(self.height, self.now, txs))
            .await
            .unwrap();
        self.app.commit().await.unwrap();
        if let (Some((who, _)), Some(res)) = (tx, r.tx_results.first()) {
            if res.code.is_ok() {
                self.seq[usize::from(who)] += 1;
            }
        }
        // Burns announced by events: slashes and burned settlement remainders.
        let all_events = r
            .events
            .iter()
            .chain(r.tx_results.iter().flat_map(|t| t.events.iter()));
        for ev in all_events {
            let attr = |k: &str| {
                ev.attributes
                    .iter()
                    .find(|a| a.key_bytes() == k.as_bytes())
                    .map(|a| String::from_utf8_lossy(a.value_bytes()).to_string())
            };
            if ev.kind == "slash" {
                let amount = attr("amount").unwrap();
                self.burned += amount.trim_end_matches("umag").parse::<u128>().unwrap();
            }
            if ev.kind == "settle_epoch" {
                let released: u128 = attr("released").unwrap().parse().unwrap();
                *self.released_per_day.entry(self.now / 86_400).or_default() += released;
            }
            // Remainders burned at settlement (no contributors) or when an epoch's last
            // contributor collects.
            if ev.kind == "settle_epoch" || ev.kind == "epoch_closed" {
                self.burned += attr("burned").unwrap().parse::<u128>().unwrap();
            }
        }
    }

    async fn check(&self, p: &magnet_x_compute::ComputeParams) -> Result<(), TestCaseError> {
        let snap = self.app.storage().latest_snapshot();
        let supply = bank::supply(&snap, "umag").await.unwrap();
        let schedule: serde_json::Value =
            serde_json::from_slice(&snap.get_raw("compute/emission").await.unwrap().unwrap())
                .unwrap();
        let minted: u128 = schedule["total_minted"]
            .as_u64()
            .map(u128::from)
            .or_else(|| {
                schedule["total_minted"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
            })
            .unwrap_or(0);
        prop_assert_eq!(
            supply,
            self.genesis_supply + minted - self.burned,
            "supply = genesis + minted - burned"
        );
        // Σ balances over every account that ever existed.
        let mut sum = 0u128;
        let mut stream = Box::pin(snap.prefix_raw("bank/balance/"));
        while let Some(item) = stream.next().await {
            let (_, raw) = item.unwrap();
            sum += u128::from_be_bytes(raw.as_slice().try_into().unwrap());
        }
        prop_assert_eq!(sum, supply, "supply = Σ balances");
        // Bonded pool = Σ bonds; bonds never exceed what was posted.
        let mut bonds = 0u128;
        for n in 0..4u8 {
            if let Some(w) = compute::worker(&snap, &address(n)).await.unwrap() {
                let b: u128 = w.bond.parse().unwrap();
                prop_assert!(b <= self.posted[&address(n)], "bond grew");
                bonds += b;
            }
        }
        prop_assert_eq!(
            bank::balance(&snap, &auth::module_address(BONDED_POOL), "umag")
                .await
                .unwrap(),
            bonds
        );
        // The rewards pool holds exactly what is owed: the carry plus every open pot's unpaid part.
        let carry: String =
            serde_json::from_slice(&snap.get_raw("compute/carry").await.unwrap().unwrap()).unwrap();
        let mut owed: u128 = carry.parse().unwrap();
        let mut pots = Box::pin(snap.prefix_raw("compute/pot/"));
        while let Some(item) = pots.next().await {
            let (_, raw) = item.unwrap();
            let pot: magnet_chain::rewards::Pot = serde_json::from_slice(&raw).unwrap();
            let (pool, paid): (u128, u128) = (pot.pool.parse().unwrap(), pot.paid.parse().unwrap());
            prop_assert!(paid <= pool, "paid {} above pool {}", paid, pool);
            owed += pool - paid;
        }
        prop_assert_eq!(
            bank::balance(&snap, &auth::module_address(compute::REWARDS_POOL), "umag")
                .await
                .unwrap(),
            owed,
            "rewards pool = carry + unpaid pots"
        );
        for (day, released) in &self.released_per_day {
            prop_assert!(
                *released <= p.daily_cap,
                "day {}: released {} > cap {}",
                day,
                released,
                p.daily_cap
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn x_compute_invariants_hold_after_every_block(actions in proptest::collection::vec(action(), 5..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut w = World::new().await;
            let p = compute::params(&w.app.storage().latest_snapshot()).await.unwrap();
            let tiers = magnet_x_compute::Tier::ALL;
            for a in actions {
                let tx = match a {
                    Action::Register { who, tier, extra } => {
                        let tier = tiers[usize::from(tier) % tiers.len()];
                        let bond = *p.min_bond.get(tier) + extra;
                        let hw = pb::HardwareProfile { ssd_read_mbps: 500, ssd_write_mbps: 300, ssd_blocks_tested: 1000, ..Default::default() };
                        let msg = pb::MsgRegisterWorker { owner: address(who), tier: tier.as_str().into(), bond_amount: bond.to_string(), hardware: Some(hw) };
                        if compute::worker(&w.app.storage().latest_snapshot(), &address(who)).await.unwrap().is_none() {
                            w.posted.insert(address(who), bond);
                        }
                        Some((who, w.sign(who, tx::MSG_REGISTER_WORKER_TYPE_URL, &msg)))
                    }
                    Action::Contribute { who, steps } => {
                        let msg = pb::MsgSubmitContribution { owner: address(who), steps, model_params: 25_000_000, checkpoint_hash: "cd".repeat(32) };
                        Some((who, w.sign(who, tx::MSG_SUBMIT_CONTRIBUTION_TYPE_URL, &msg)))
                    }
                    Action::Commit { who, task } => {
                        let commitment = magnet_x_compute::commitment(b"r", &[who; 32]).to_vec();
                        let msg = pb::MsgCommitResult { owner: address(who), task_id: format!("t{task}"), commitment };
                        Some((who, w.sign(who, tx::MSG_COMMIT_RESULT_TYPE_URL, &msg)))
                    }
                    Action::Reveal { who, task, honest } => {
                        let result = if honest { b"r".to_vec() } else { b"x".to_vec() };
                        let msg = pb::MsgRevealResult { owner: address(who), task_id: format!("t{task}"), result, nonce: vec![who; 32] };
                        Some((who, w.sign(who, tx::MSG_REVEAL_RESULT_TYPE_URL, &msg)))
                    }
                    Action::Unbond { who } => {
                        Some((who, w.sign(who, tx::MSG_BEGIN_UNBOND_TYPE_URL, &pb::MsgBeginUnbond { owner: address(who) })))
                    }
                    Action::Heartbeat { who } => {
                        Some((who, w.sign(who, tx::MSG_HEARTBEAT_TYPE_URL, &pb::MsgHeartbeat { owner: address(who) })))
                    }
                    Action::Wait { secs } => {
                        w.block(secs, None).await;
                        None
                    }
                };
                if let Some(t) = tx {
                    w.block(7, Some(t)).await;
                }
                w.check(&p).await?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
