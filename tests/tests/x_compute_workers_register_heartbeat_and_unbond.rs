//! x-compute's worker registry driven through the ABCI app: registration moves the
//! bond into the bonded pool and binds the node id to the signer's key; storage tiers
//! with a failing SSD report are demoted; bad registrations get stable `compute` codes
//! and change nothing; unbonding returns the bond only after the delay.

// Test code: plain arithmetic and indexing are fine here.
#![allow(clippy::arithmetic_side_effects, clippy::unwrap_used)]

use bytes::Bytes;
use magnet_chain::client::GasSettings;
use magnet_chain::compute::{self, codes, BONDED_POOL};
use magnet_chain::tx::{
    MSG_BEGIN_UNBOND_TYPE_URL, MSG_HEARTBEAT_TYPE_URL, MSG_REGISTER_WORKER_TYPE_URL,
};
use magnet_chain::{auth, bank};
use magnet_e2e::abci;
use magnet_e2e::driver::{address, funded_genesis, key, Chain};
use magnet_proto::magnet::compute::v1::{
    HardwareProfile, MsgBeginUnbond, MsgHeartbeat, MsgRegisterWorker,
};
use tendermint::v0_38::abci::request;

const CHAIN_ID: &str = "magnet-compute-1";
const FUNDS: u128 = 1_000_000_000_000;
const GENESIS_TIME: i64 = 1_700_000_000;
const UNBONDING_DELAY: u64 = 600;

/// The in-process chain of these tests: four funded accounts, a short unbonding delay.
async fn new_chain() -> Chain {
    let mut g = funded_genesis(4, FUNDS);
    g.compute.unbonding_delay_secs = UNBONDING_DELAY;
    // A disputed worker must stay slashable: windows fit inside the unbonding delay.
    g.compute.dispute_window_secs = 300;
    g.compute.data_challenge_window_secs = 300;
    Chain::new(CHAIN_ID, GENESIS_TIME, &g).await
}

/// Registers a worker and asserts it was accepted.
async fn register_ok(c: &mut Chain, n: u8, msg: MsgRegisterWorker) {
    c.ok(n, MSG_REGISTER_WORKER_TYPE_URL, &msg).await;
}

fn register(n: u8, tier: &str, bond: u128, hw: HardwareProfile) -> MsgRegisterWorker {
    MsgRegisterWorker {
        owner: address(n),
        tier: tier.into(),
        bond_amount: bond.to_string(),
        hardware: Some(hw),
    }
}

fn good_ssd() -> HardwareProfile {
    HardwareProfile {
        cpu_cores: 8,
        ram_mb: 32768,
        ssd_read_mbps: 400,
        ssd_write_mbps: 200,
        ssd_blocks_tested: 1000,
        ..Default::default()
    }
}

#[tokio::test]
async fn x_compute_workers_register_heartbeat_and_unbond() {
    let mut c = new_chain().await;
    let p = compute::params(&c.app.storage().latest_snapshot())
        .await
        .unwrap();
    let pool = auth::module_address(BONDED_POOL);
    let gpu_min = *p.min_bond.get(magnet_x_compute::Tier::GpuCompute);
    let fee = GasSettings::default().fee;

    // A valid gpu_compute registration moves exactly the bond (+ fee) and binds the node id.
    register_ok(
        &mut c,
        1,
        register(1, "gpu_compute", gpu_min, HardwareProfile::default()),
    )
    .await;
    assert_eq!(c.balance(&address(1)).await, FUNDS - gpu_min - fee);
    assert_eq!(c.balance(&pool).await, gpu_min);
    let w = compute::worker(&c.app.storage().latest_snapshot(), &address(1))
        .await
        .unwrap()
        .expect("registered");
    let pk = key(1).public_key().to_bytes();
    assert_eq!(w.node_id, magnet_x_compute::node_id(&pk).unwrap());
    assert_eq!(
        (w.tier.as_str(), w.bond.as_str()),
        ("gpu_compute", gpu_min.to_string().as_str())
    );
    assert_eq!(w.last_heartbeat_time, c.now);

    // Refusals: stable codes in codespace "compute" (or "sdk"), nothing moves.
    let before = (c.balance(&address(2)).await, c.balance(&pool).await);
    let cases: Vec<(u8, MsgRegisterWorker, &str, u32)> = vec![
        (
            1,
            register(1, "gpu_compute", gpu_min, HardwareProfile::default()),
            "compute",
            codes::ALREADY_REGISTERED,
        ),
        (
            2,
            register(2, "gpu_compute", gpu_min - 1, HardwareProfile::default()),
            "compute",
            codes::BOND_TOO_LOW,
        ),
        (
            2,
            register(2, "quantum", gpu_min, HardwareProfile::default()),
            "compute",
            0,
        ),
        (
            2,
            register(3, "gpu_compute", gpu_min, HardwareProfile::default()),
            "sdk",
            4,
        ),
        (
            2,
            register(2, "gpu_compute", FUNDS * 2, HardwareProfile::default()),
            "sdk",
            5,
        ),
    ];
    for (n, msg, codespace, code) in cases {
        let r = c.run(n, MSG_REGISTER_WORKER_TYPE_URL, &msg).await;
        assert!(r.code.is_err(), "{msg:?} was accepted");
        assert_eq!(r.codespace, codespace, "{}", r.log);
        if code != 0 {
            assert_eq!(r.code.value(), code, "{}", r.log);
        }
        assert!(!r.log.is_empty());
    }
    assert_eq!(
        (c.balance(&address(2)).await, c.balance(&pool).await),
        before
    );

    // Storage tiers need a passing SSD report, otherwise they are placed in mobile_light.
    let storage_min = *p.min_bond.get(magnet_x_compute::Tier::StorageNode);
    let slow = HardwareProfile {
        ssd_read_mbps: 100,
        ssd_write_mbps: 200,
        ssd_blocks_tested: 1000,
        ..Default::default()
    };
    register_ok(&mut c, 2, register(2, "storage_node", storage_min, slow)).await;
    let w2 = compute::worker(&c.app.storage().latest_snapshot(), &address(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (w2.requested_tier.as_str(), w2.tier.as_str()),
        ("storage_node", "mobile_light")
    );
    register_ok(
        &mut c,
        3,
        register(3, "storage_node", storage_min, good_ssd()),
    )
    .await;
    let w3 = compute::worker(&c.app.storage().latest_snapshot(), &address(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w3.tier, "storage_node");

    // Heartbeat records block time; staleness follows the window.
    let r = c
        .run(
            1,
            MSG_HEARTBEAT_TYPE_URL,
            &MsgHeartbeat { owner: address(1) },
        )
        .await;
    assert_eq!(r.code.value(), 0, "{}", r.log);
    let w = compute::worker(&c.app.storage().latest_snapshot(), &address(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.last_heartbeat_time, c.now);
    assert!(!compute::is_stale(&w, c.now + 120, &p));
    assert!(compute::is_stale(&w, c.now + 121, &p));
    let r = c
        .run(
            4,
            MSG_HEARTBEAT_TYPE_URL,
            &MsgHeartbeat { owner: address(4) },
        )
        .await;
    assert_eq!(
        (r.codespace.as_str(), r.code.value()),
        ("compute", codes::NOT_REGISTERED)
    );

    // Unbonding: the bond stays in the pool until the delay has passed in block time.
    let r = c
        .run(
            1,
            MSG_BEGIN_UNBOND_TYPE_URL,
            &MsgBeginUnbond { owner: address(1) },
        )
        .await;
    assert_eq!(r.code.value(), 0, "{}", r.log);
    let started = c.now;
    let r = c
        .run(
            1,
            MSG_BEGIN_UNBOND_TYPE_URL,
            &MsgBeginUnbond { owner: address(1) },
        )
        .await;
    assert_eq!(r.code.value(), codes::ALREADY_UNBONDING);
    let r = c
        .run(
            1,
            MSG_HEARTBEAT_TYPE_URL,
            &MsgHeartbeat { owner: address(1) },
        )
        .await;
    assert_eq!(r.code.value(), codes::ALREADY_UNBONDING);
    let bal_unbonding = c.balance(&address(1)).await;
    let pool_before = c.balance(&pool).await;
    let due = started + i64::try_from(UNBONDING_DELAY).unwrap();
    c.block(due - c.now - 1, vec![]).await; // one second early
    assert_eq!(c.balance(&address(1)).await, bal_unbonding);
    c.block(1, vec![]).await; // due now
    assert_eq!(c.balance(&address(1)).await, bal_unbonding + gpu_min);
    assert_eq!(c.balance(&pool).await, pool_before - gpu_min);
    assert!(
        compute::worker(&c.app.storage().latest_snapshot(), &address(1))
            .await
            .unwrap()
            .is_none()
    );

    // Bonds and fees are transfers: supply moved only by the epochs' emission.
    let snap = c.app.storage().latest_snapshot();
    let settled = compute::epoch(&snap).await.unwrap().index;
    let mut released = 0u128;
    for e in 0..settled {
        let rec = compute::settlement(&snap, e)
            .await
            .unwrap()
            .expect("settled");
        released += rec.released.parse::<u128>().unwrap();
    }
    assert!(settled >= 1, "the unbonding delay spans an epoch");
    let supply = bank::supply(&snap, "umag").await.unwrap();
    assert_eq!(supply, 4 * FUNDS + released);
}

fn contribution(
    n: u8,
    steps: u64,
    model_params: u64,
) -> magnet_proto::magnet::compute::v1::MsgSubmitContribution {
    magnet_proto::magnet::compute::v1::MsgSubmitContribution {
        owner: address(n),
        steps,
        model_params,
        checkpoint_hash: "ab".repeat(32),
    }
}

/// Epoch settlement in FinalizeBlock: the schedule's release is minted into the rewards
/// pool; each worker collects R_i = pool·T_i·C_i/ΣT·C (orchestrator 3x vs gpu_compute 1x)
/// with its next heartbeat; once both have, the remainder is carried; supply = genesis +
/// released, and the daily cap holds across a multi-day halt.
#[tokio::test]
async fn x_compute_epochs_settle_rewards_by_tier_and_contribution() {
    use magnet_chain::tx::MSG_SUBMIT_CONTRIBUTION_TYPE_URL as SUBMIT;
    let mut c = new_chain().await;
    let p = compute::params(&c.app.storage().latest_snapshot())
        .await
        .unwrap();
    let gpu_min = *p.min_bond.get(magnet_x_compute::Tier::GpuCompute);
    let orch_min = *p.min_bond.get(magnet_x_compute::Tier::Orchestrator);
    register_ok(
        &mut c,
        1,
        register(1, "gpu_compute", gpu_min, HardwareProfile::default()),
    )
    .await;
    register_ok(&mut c, 2, register(2, "orchestrator", orch_min, good_ssd())).await;

    // Refusals: unregistered worker, malformed checkpoint hash, zero steps.
    let r = c.run(3, SUBMIT, &contribution(3, 10, 10)).await;
    assert_eq!(
        (r.codespace.as_str(), r.code.value()),
        ("compute", codes::NOT_REGISTERED)
    );
    let mut bad = contribution(1, 10, 10);
    bad.checkpoint_hash = "xyz".into();
    assert_eq!(c.run(1, SUBMIT, &bad).await.code.value(), 18);
    assert_eq!(
        c.run(1, SUBMIT, &contribution(1, 0, 10)).await.code.value(),
        18
    );

    // Equal training compute from both workers in epoch 0.
    for n in [1u8, 2] {
        let r = c.run(n, SUBMIT, &contribution(n, 1000, 50_000_000)).await;
        assert_eq!(r.code.value(), 0, "{}", r.log);
    }
    let snap = c.app.storage().latest_snapshot();
    let supply0 = bank::supply(&snap, "umag").await.unwrap();
    let bal1 = bank::balance(&snap, &address(1), "umag").await.unwrap();
    let bal2 = bank::balance(&snap, &address(2), "umag").await.unwrap();
    assert_eq!(compute::epoch(&snap).await.unwrap().index, 0);

    // Cross the epoch boundary (600 s of block time after genesis).
    c.block(600, vec![]).await;
    let snap = c.app.storage().latest_snapshot();
    let rec = compute::settlement(&snap, 0)
        .await
        .unwrap()
        .expect("epoch 0 settled");
    assert_eq!(compute::epoch(&snap).await.unwrap().index, 1);
    let released: u128 = rec.released.parse().unwrap();
    let pool: u128 = rec.pool.parse().unwrap();
    assert!(released > 0 && released <= p.daily_cap);
    assert_eq!(pool, released, "nothing carried into epoch 0");
    assert!(rec.open && rec.contributors == 2, "{rec:?}");
    // Settlement pays nobody yet: each worker collects with its next heartbeat.
    assert_eq!(
        bank::balance(&snap, &address(1), "umag").await.unwrap(),
        bal1
    );
    let owed1 = magnet_chain::rewards::reward(&snap, 0, &address(1))
        .await
        .unwrap()
        .expect("owed");
    assert!(!owed1.claimed);
    let fee = GasSettings::default().fee;
    for n in [1u8, 2] {
        let r = c
            .run(
                n,
                MSG_HEARTBEAT_TYPE_URL,
                &MsgHeartbeat { owner: address(n) },
            )
            .await;
        assert_eq!(r.code.value(), 0, "{}", r.log);
    }
    let snap = c.app.storage().latest_snapshot();
    let rec = compute::settlement(&snap, 0).await.unwrap().unwrap();
    assert!(!rec.open, "closed once every contributor claimed");
    let remainder: u128 = rec.remainder.parse().unwrap();
    let r1 = bank::balance(&snap, &address(1), "umag").await.unwrap() + fee - bal1;
    let r2 = bank::balance(&snap, &address(2), "umag").await.unwrap() + fee - bal2;
    assert_eq!(
        r1.to_string(),
        owed1.reward,
        "paid what the query said was owed"
    );
    assert_eq!(r1 + r2 + remainder, pool, "conservation");
    assert!(
        remainder < 2,
        "rounding remainder below the number of workers: {remainder}"
    );
    assert!(
        r2.abs_diff(3 * r1) <= 3,
        "orchestrator earns 3x gpu_compute: {r2} vs {r1}"
    );
    assert_eq!(
        bank::supply(&snap, "umag").await.unwrap(),
        supply0 + released,
        "supply = genesis + minted"
    );
    assert_eq!(rec.carried_out, rec.remainder);
    // A second heartbeat pays nothing more.
    let before = bank::balance(&snap, &address(1), "umag").await.unwrap();
    c.run(
        1,
        MSG_HEARTBEAT_TYPE_URL,
        &MsgHeartbeat { owner: address(1) },
    )
    .await;
    assert_eq!(c.balance(&address(1)).await, before - fee);

    // An epoch with no contributions: the whole pool is carried (already minted).
    c.block(600, vec![]).await;
    let snap = c.app.storage().latest_snapshot();
    let rec1 = compute::settlement(&snap, 1)
        .await
        .unwrap()
        .expect("epoch 1 settled");
    assert_eq!(rec1.contributors, 0);
    assert_eq!(rec1.carried_out, rec1.pool);
    let carried_in: u128 = rec1.carried_in.parse().unwrap();
    assert_eq!(
        carried_in, remainder,
        "epoch 0's remainder was carried into epoch 1"
    );

    // A 3-day halt: the next epoch releases at most one daily cap.
    let before = bank::supply(&snap, "umag").await.unwrap();
    c.block(3 * 86_400, vec![]).await;
    let snap = c.app.storage().latest_snapshot();
    let rec2 = compute::settlement(&snap, 2)
        .await
        .unwrap()
        .expect("epoch 2 settled");
    let released2: u128 = rec2.released.parse().unwrap();
    assert!(
        released2 <= p.daily_cap,
        "released {released2} > cap {}",
        p.daily_cap
    );
    assert_eq!(
        bank::supply(&snap, "umag").await.unwrap(),
        before + released2
    );
}

/// Commit-reveal through the app: a reveal inside its window that opens the commitment
/// is recorded; a mismatched reveal is slashed (mismatched_reveal) and the slash is
/// burned; a commitment never revealed is penalised (missed_reveal) when the reveal
/// window closes; early, late and duplicate messages get stable codes; and commit or
/// reveal txs go first in a proposal under spam.
#[tokio::test]
async fn x_compute_commit_reveal_windows_and_slashing() {
    use magnet_chain::compute::cr_codes;
    use magnet_chain::tx::{
        MSG_COMMIT_RESULT_TYPE_URL as COMMIT, MSG_REVEAL_RESULT_TYPE_URL as REVEAL,
    };
    use magnet_proto::magnet::compute::v1::{MsgCommitResult, MsgRevealResult};
    let mut c = new_chain().await;
    let p = compute::params(&c.app.storage().latest_snapshot())
        .await
        .unwrap();
    let gpu_min = *p.min_bond.get(magnet_x_compute::Tier::GpuCompute);
    for n in 1..=3u8 {
        register_ok(
            &mut c,
            n,
            register(n, "gpu_compute", gpu_min, HardwareProfile::default()),
        )
        .await;
    }
    let nonce = |n: u8| [n; 32];
    let result = b"eval-score:0.8125".to_vec();
    let commit = |n: u8| MsgCommitResult {
        owner: address(n),
        task_id: "eval-42".into(),
        commitment: magnet_x_compute::commitment(&result, &nonce(n)).to_vec(),
    };
    for n in 1..=3u8 {
        let r = c.run(n, COMMIT, &commit(n)).await;
        assert_eq!(r.code.value(), 0, "{}", r.log);
    }
    assert_eq!(
        c.run(1, COMMIT, &commit(1)).await.code.value(),
        cr_codes::DUPLICATE_COMMIT
    );
    let reveal = |n: u8, res: &[u8]| MsgRevealResult {
        owner: address(n),
        task_id: "eval-42".into(),
        result: res.to_vec(),
        nonce: nonce(n).to_vec(),
    };
    // Too early: the commit window is still open.
    let r = c.run(1, REVEAL, &reveal(1, &result)).await;
    assert_eq!(r.codespace, "compute", "{}", r.log);
    assert!(r.log.contains("expected"), "{}", r.log);

    let snap = c.app.storage().latest_snapshot();
    let task = compute::task(&snap, "eval-42").await.unwrap().unwrap();
    let supply0 = bank::supply(&snap, "umag").await.unwrap();
    // Into the reveal window (no epoch settlement before the reveal window ends:
    // commit 360 s + reveal 180 s < 600 s epoch).
    c.block(task.commit_window_end - c.now, vec![]).await;
    let r = c.run(1, REVEAL, &reveal(1, &result)).await;
    assert_eq!(r.code.value(), 0, "{}", r.log);
    let r = c.run(2, REVEAL, &reveal(2, b"a different result")).await;
    assert_eq!(
        r.code.value(),
        0,
        "a mismatched reveal is recorded and slashed: {}",
        r.log
    );
    assert_eq!(
        c.run(1, REVEAL, &reveal(1, &result)).await.code.value(),
        cr_codes::ALREADY_REVEALED
    );

    let snap = c.app.storage().latest_snapshot();
    let rec1 = compute::commit_record(&snap, "eval-42", &address(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec1.outcome.as_str(), rec1.result.clone()),
        ("revealed", result.clone())
    );
    let rec2 = compute::commit_record(&snap, "eval-42", &address(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec2.outcome, "mismatched");
    let mismatch_slash =
        magnet_x_compute::slash_amount(gpu_min, magnet_x_compute::Offense::MismatchedReveal, &p);
    assert!(mismatch_slash > 0 && mismatch_slash <= gpu_min);
    assert_eq!(rec2.slashed, mismatch_slash.to_string());
    let w2 = compute::worker(&snap, &address(2)).await.unwrap().unwrap();
    assert_eq!(w2.bond, (gpu_min - mismatch_slash).to_string());
    assert_eq!(
        bank::supply(&snap, "umag").await.unwrap(),
        supply0 - mismatch_slash,
        "slash is burned"
    );

    // Worker 3 never reveals: penalised when the reveal window closes.
    c.block(task.reveal_window_end - c.now, vec![]).await;
    let snap = c.app.storage().latest_snapshot();
    let rec3 = compute::commit_record(&snap, "eval-42", &address(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec3.outcome, "missed");
    let missed_slash =
        magnet_x_compute::slash_amount(gpu_min, magnet_x_compute::Offense::MissedReveal, &p);
    assert_eq!(rec3.slashed, missed_slash.to_string());
    assert!(
        compute::task(&snap, "eval-42")
            .await
            .unwrap()
            .unwrap()
            .closed
    );
    // Too late now.
    let r = c.run(3, REVEAL, &reveal(3, &result)).await;
    assert_eq!(r.codespace, "compute");
    // Slash never exceeds the bond: worker 2's bond after its slash covers it.
    let w1 = compute::worker(&snap, &address(1)).await.unwrap().unwrap();
    assert_eq!(
        w1.bond,
        gpu_min.to_string(),
        "an honest worker keeps its bond"
    );

    // Priority: with room for only a few txs, a commit at the end of a flood of sends
    // is still proposed, ahead of them.
    let mut spam: Vec<Bytes> = Vec::new();
    for _ in 0..20 {
        let tx = c.tx(
            4,
            "/cosmos.bank.v1beta1.MsgSend",
            &cosmrs::proto::cosmos::bank::v1beta1::MsgSend {
                from_address: address(4),
                to_address: address(1),
                amount: vec![cosmrs::proto::cosmos::base::v1beta1::Coin {
                    denom: "umag".into(),
                    amount: "1".into(),
                }],
            },
        );
        c.bump_sequence(4);
        spam.push(tx.into());
    }
    let late_commit = MsgCommitResult {
        owner: address(1),
        task_id: "eval-43".into(),
        commitment: vec![7; 32],
    };
    let commit_tx: Bytes = c.tx(1, COMMIT, &late_commit).into();
    let mut mempool = spam.clone();
    mempool.push(commit_tx.clone());
    let budget = i64::try_from(spam[..3].iter().map(|t| t.len() + 11).sum::<usize>()).unwrap();
    let prop = c
        .app
        .prepare_proposal(request::PrepareProposal {
            max_tx_bytes: budget,
            txs: mempool,
            local_last_commit: None,
            misbehavior: vec![],
            height: (c.height + 1).try_into().unwrap(),
            time: abci::time(c.now + 1),
            next_validators_hash: tendermint::Hash::None,
            proposer_address: tendermint::account::Id::new([0; 20]),
        })
        .await
        .unwrap();
    assert_eq!(
        prop.txs.first(),
        Some(&commit_tx),
        "the commit leads the proposal"
    );
    assert!(prop.txs.len() >= 2 && prop.txs.len() <= 3);
    assert_eq!(prop.txs[1], spam[0], "sends keep their order behind it");
}

/// x402 API revenue: a paid call is split (defaults 60% contributors by weight, 25%
/// serving node, 10% treasury, 5% burned) with every unit accounted for; the request id
/// settles once; the serving node must be a registered worker; a payer who cannot
/// cover the amount is refused and nothing moves.
#[tokio::test]
async fn x_compute_x402_revenue_is_split_and_burned_exactly() {
    use magnet_chain::tx::MSG_SETTLE_INFERENCE_TYPE_URL as SETTLE;
    use magnet_proto::magnet::compute::v1::{ContributorWeight, MsgSettleInference};
    let mut c = new_chain().await;
    let p = compute::params(&c.app.storage().latest_snapshot())
        .await
        .unwrap();
    let gpu_min = *p.min_bond.get(magnet_x_compute::Tier::GpuCompute);
    register_ok(
        &mut c,
        1,
        register(1, "gpu_compute", gpu_min, HardwareProfile::default()),
    )
    .await;
    let fee = GasSettings::default().fee;
    let treasury = auth::module_address(compute::TREASURY);
    let msg = |id: &str, node: u8, amount: u128| MsgSettleInference {
        payer: address(4),
        request_id: id.into(),
        serving_node: address(node),
        amount: amount.to_string(),
        contributors: vec![
            ContributorWeight {
                address: address(2),
                weight: "1".into(),
            },
            ContributorWeight {
                address: address(3),
                weight: "2".into(),
            },
        ],
    };
    let snap = c.app.storage().latest_snapshot();
    let supply0 = bank::supply(&snap, "umag").await.unwrap();
    let before: Vec<u128> =
        futures::future::join_all([address(1), address(2), address(3), address(4)].iter().map(
            |a| {
                let snap = snap.clone();
                let a = a.clone();
                async move { bank::balance(&snap, &a, "umag").await.unwrap() }
            },
        ))
        .await;
    let amount = 3_000_001u128;
    let r = c.run(4, SETTLE, &msg("req-1", 1, amount)).await;
    assert_eq!(r.code.value(), 0, "{}", r.log);
    let snap = c.app.storage().latest_snapshot();
    let bal = |n: u8| {
        let snap = snap.clone();
        async move { bank::balance(&snap, &address(n), "umag").await.unwrap() }
    };
    let node_share = bal(1).await - before[0];
    let c2 = bal(2).await - before[1];
    let c3 = bal(3).await - before[2];
    let paid = before[3] - bal(4).await - fee;
    let burned = supply0 - bank::supply(&snap, "umag").await.unwrap();
    let tre = bank::balance(&snap, &treasury, "umag").await.unwrap();
    assert_eq!(paid, amount);
    assert_eq!(
        node_share + c2 + c3 + tre + burned,
        amount,
        "every unit accounted for"
    );
    assert_eq!(node_share, amount * 250_000 / 1_000_000);
    assert_eq!(burned, amount * 50_000 / 1_000_000);
    assert!(
        c3.abs_diff(2 * c2) <= 2,
        "contributors paid 1:2 by weight: {c2} vs {c3}"
    );
    let rec = compute::inference_receipt(&snap, "req-1")
        .await
        .unwrap()
        .expect("receipt");
    assert_eq!(rec.amount, amount.to_string());

    // Refusals change nothing.
    let snap_before = bank::balance(&snap, &address(4), "umag").await.unwrap();
    let r = c.run(4, SETTLE, &msg("req-1", 1, 10)).await;
    assert_eq!(r.codespace, "compute", "replayed request id: {}", r.log);
    let r = c.run(4, SETTLE, &msg("req-2", 2, 10)).await;
    assert_eq!(
        (r.codespace.as_str(), r.code.value()),
        ("compute", codes::NOT_REGISTERED),
        "{}",
        r.log
    );
    let r = c.run(4, SETTLE, &msg("req-3", 1, FUNDS * 10)).await;
    assert_eq!(r.code.value(), 5, "{}", r.log);
    let r = c.run(4, SETTLE, &msg("req-4", 1, 0)).await;
    assert_eq!(r.code.value(), 10, "{}", r.log);
    let snap = c.app.storage().latest_snapshot();
    assert_eq!(
        bank::balance(&snap, &address(4), "umag").await.unwrap(),
        snap_before
    );
}

/// DiLoCo round registry: rounds open in sequence; the leader is sorted(eligible by
/// node id)[round mod N]; only eligible workers submit one gradient each before the
/// deadline; only the leader finalizes, and only after a gradient exists.
#[tokio::test]
async fn x_compute_diloco_rounds_pick_the_leader_and_record_gradients() {
    use magnet_chain::compute::round_codes;
    use magnet_chain::tx::{
        MSG_FINALIZE_ROUND_TYPE_URL as FINALIZE, MSG_OPEN_ROUND_TYPE_URL as OPEN,
        MSG_SUBMIT_GRADIENT_TYPE_URL as GRAD,
    };
    use magnet_proto::magnet::compute::v1::{MsgFinalizeRound, MsgOpenRound, MsgSubmitGradient};
    let mut c = new_chain().await;
    let p = compute::params(&c.app.storage().latest_snapshot())
        .await
        .unwrap();
    let gpu_min = *p.min_bond.get(magnet_x_compute::Tier::GpuCompute);
    for n in 1..=3u8 {
        register_ok(
            &mut c,
            n,
            register(n, "gpu_compute", gpu_min, HardwareProfile::default()),
        )
        .await;
    }
    let h = |b: u8| hex::encode([b; 32]);
    let open = |round: u64| MsgOpenRound {
        owner: address(1),
        round,
        inner_steps: 500,
        duration_secs: 300,
        base_checkpoint_hash: h(1),
        eligible: vec![address(3), address(1), address(2)],
    };
    assert_eq!(
        c.run(1, OPEN, &open(1)).await.code.value(),
        round_codes::WRONG_ROUND,
        "rounds start at 0"
    );
    let r = c.run(1, OPEN, &open(0)).await;
    assert_eq!(r.code.value(), 0, "{}", r.log);
    let snap = c.app.storage().latest_snapshot();
    let round = compute::round(&snap, 0).await.unwrap().unwrap();
    // Expected leader: sort the three workers by node id, take index 0 mod 3.
    let mut by_node: Vec<(String, String)> = Vec::new();
    for n in 1..=3u8 {
        let w = compute::worker(&snap, &address(n)).await.unwrap().unwrap();
        by_node.push((w.node_id, address(n)));
    }
    by_node.sort();
    assert_eq!(
        round.eligible,
        by_node.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>()
    );
    assert_eq!(round.leader, by_node[0].1);
    let leader_n = (1..=3u8).find(|n| address(*n) == round.leader).unwrap();
    let other_n = (1..=3u8).find(|n| *n != leader_n).unwrap();

    let grad = |n: u8| MsgSubmitGradient {
        owner: address(n),
        round: 0,
        gradient_hash: h(n + 10),
        content_id: format!("shard-{n}"),
        local_loss_ppm: 2_500_000,
    };
    // Finalizing before any gradient, or by a non-leader, is refused.
    let fin = |n: u8| MsgFinalizeRound {
        owner: address(n),
        round: 0,
        merged_checkpoint_hash: h(99),
    };
    assert_eq!(
        c.run(leader_n, FINALIZE, &fin(leader_n)).await.code.value(),
        round_codes::NO_GRADIENTS
    );
    assert_eq!(
        c.run(4, GRAD, &grad(4)).await.code.value(),
        round_codes::NOT_ELIGIBLE
    );
    for n in 1..=2u8 {
        let r = c.run(n, GRAD, &grad(n)).await;
        assert_eq!(r.code.value(), 0, "{}", r.log);
    }
    assert_eq!(
        c.run(1, GRAD, &grad(1)).await.code.value(),
        round_codes::DUPLICATE_GRADIENT
    );
    assert_eq!(
        c.run(other_n, FINALIZE, &fin(other_n)).await.code.value(),
        round_codes::NOT_LEADER
    );
    let r = c.run(leader_n, FINALIZE, &fin(leader_n)).await;
    assert_eq!(r.code.value(), 0, "{}", r.log);
    let round = compute::round(&c.app.storage().latest_snapshot(), 0)
        .await
        .unwrap()
        .unwrap();
    assert!(round.finalized);
    assert_eq!(round.merged_checkpoint_hash, h(99));
    assert_eq!(round.gradients.len(), 2);
    assert_eq!(
        c.run(3, GRAD, &grad(3)).await.code.value(),
        round_codes::ROUND_CLOSED
    );

    // Round 1: the leader rotates to index 1; a gradient after the deadline is refused.
    let r = c.run(1, OPEN, &open(1)).await;
    assert_eq!(r.code.value(), 0, "{}", r.log);
    let round1 = compute::round(&c.app.storage().latest_snapshot(), 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(round1.leader, by_node[1].1);
    c.block(301, vec![]).await;
    let late = MsgSubmitGradient {
        round: 1,
        ..grad(2)
    };
    assert_eq!(
        c.run(2, GRAD, &late).await.code.value(),
        round_codes::ROUND_CLOSED
    );
}
