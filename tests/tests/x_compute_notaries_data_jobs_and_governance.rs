//! The notary panel, data registration, research jobs and governance, driven through the
//! real ABCI app with signed txs: every verdict moves exactly the coins it should, every
//! refusal carries its stable code and moves nothing.

#![allow(clippy::arithmetic_side_effects, clippy::unwrap_used)]

use magnet_chain::client::GasSettings;
use magnet_chain::compute::{self, TREASURY};
use magnet_chain::gov::{self, GenesisValidator};
use magnet_chain::panel::{self, codes, DISPUTE_ESCROW, JOB_ESCROW, NOTARY_POOL};
use magnet_chain::tx::*;
use magnet_chain::{auth, App};
use magnet_e2e::driver::{address, funded_genesis, Chain};
use magnet_proto::magnet::compute::v1::*;
use magnet_proto::magnet::gov::v1::{MsgSubmitProposal, MsgVote};
use magnet_x_compute::ComputeParams;

const FUNDS: u128 = 1_000_000_000_000;
const T0: i64 = 1_700_000_000;
const MAG: u128 = 1_000_000;

fn fee() -> u128 {
    GasSettings::default().fee
}

async fn chain(epoch_length_secs: u64) -> Chain {
    let mut g = funded_genesis(8, FUNDS);
    g.compute.epoch_length_secs = epoch_length_secs;
    g.gov.validators = vec![
        GenesisValidator {
            operator: address(1),
            power: 10,
        },
        GenesisValidator {
            operator: address(2),
            power: 5,
        },
    ];
    Chain::new("magnet-panel-1", T0, &g).await
}

async fn params(c: &Chain) -> ComputeParams {
    compute::params(&c.snapshot()).await.unwrap()
}

async fn register_worker(c: &mut Chain, n: u8, tier: &str) -> u128 {
    let p = params(c).await;
    let bond = *p.min_bond.get(tier.parse().unwrap());
    c.ok(
        n,
        MSG_REGISTER_WORKER_TYPE_URL,
        &MsgRegisterWorker {
            owner: address(n),
            tier: tier.into(),
            bond_amount: bond.to_string(),
            hardware: Some(HardwareProfile::default()),
        },
    )
    .await;
    bond
}

fn join(n: u8, bond: u128) -> MsgJoinNotaryPanel {
    MsgJoinNotaryPanel {
        owner: address(n),
        bond: bond.to_string(),
    }
}

fn data_msg(n: u8, hash: &str, size_bytes: u64) -> MsgRegisterData {
    MsgRegisterData {
        owner: address(n),
        data_hash: hash.into(),
        uri: "magnet://shards/rust-corpus".into(),
        size_bytes,
        domain: "rust".into(),
    }
}

fn challenge(n: u8, kind: &str, target: &str) -> MsgChallenge {
    MsgChallenge {
        challenger: address(n),
        kind: kind.into(),
        target: target.into(),
        reason: "held-out loss got worse".into(),
    }
}

fn vote(n: u8, id: u64, uphold: bool) -> MsgVoteDispute {
    MsgVoteDispute {
        notary: address(n),
        dispute_id: id,
        uphold,
    }
}

async fn dispute(c: &Chain, id: u64) -> panel::Dispute {
    panel::dispute(&c.snapshot(), id)
        .await
        .unwrap()
        .expect("dispute")
}

#[tokio::test]
async fn upheld_data_challenge_slashes_the_owner_and_the_notary_who_approved_it() {
    let mut c = chain(86_400).await;
    let p = params(&c).await;
    let bond = register_worker(&mut c, 1, "gpu_compute").await;
    for n in 2..=4 {
        c.ok(
            n,
            MSG_JOIN_NOTARY_PANEL_TYPE_URL,
            &join(n, p.notary_min_bond),
        )
        .await;
    }
    let hash = "ab".repeat(32);
    c.ok(1, MSG_REGISTER_DATA_TYPE_URL, &data_msg(1, &hash, 4 << 20))
        .await;
    let bal5 = c.balance(&address(5)).await;
    c.ok(5, MSG_CHALLENGE_TYPE_URL, &challenge(5, "data", &hash))
        .await;
    assert_eq!(
        c.balance(&address(5)).await,
        bal5 - p.challenge_deposit - fee()
    );
    assert_eq!(
        c.balance(&auth::module_address(DISPUTE_ESCROW)).await,
        p.challenge_deposit
    );
    let rec = panel::data_record(&c.snapshot(), &hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.status.as_str(), rec.dispute_id),
        ("challenged", Some(0))
    );

    c.ok(2, MSG_VOTE_DISPUTE_TYPE_URL, &vote(2, 0, true)).await;
    c.ok(3, MSG_VOTE_DISPUTE_TYPE_URL, &vote(3, 0, true)).await;
    c.ok(4, MSG_VOTE_DISPUTE_TYPE_URL, &vote(4, 0, false)).await;
    let supply = c.supply().await;
    let treasury = c.balance(&auth::module_address(TREASURY)).await;
    let bal5 = c.balance(&address(5)).await;
    let d = dispute(&c, 0).await;
    c.advance_to(d.vote_end).await;

    let d = dispute(&c, 0).await;
    assert_eq!(
        (d.status.as_str(), d.uphold_votes, d.reject_votes),
        ("upheld", 2, 1)
    );
    let slash = bond * u128::from(p.slash_rate_ppm.bad_data) / 1_000_000;
    assert_eq!(d.slashed, slash.to_string());
    let w = compute::worker(&c.snapshot(), &address(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.bond, (bond - slash).to_string());
    // Notary 4 approved bad data: fraudulent approval (rate 1.0) burns its whole bond.
    assert!(panel::notary(&c.snapshot(), &address(4))
        .await
        .unwrap()
        .is_none());
    assert!(panel::notary(&c.snapshot(), &address(2))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        c.balance(&auth::module_address(NOTARY_POOL)).await,
        2 * p.notary_min_bond
    );
    // Deposit back to the challenger, the fee to the treasury, exactly the slashes burned.
    assert_eq!(c.balance(&address(5)).await, bal5 + p.challenge_deposit);
    assert_eq!(
        c.balance(&auth::module_address(TREASURY)).await,
        treasury + p.data_registration_fee
    );
    assert_eq!(c.supply().await, supply - slash - p.notary_min_bond);
    let rec = panel::data_record(&c.snapshot(), &hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status, "rejected");
    assert_eq!(c.balance(&auth::module_address(DISPUTE_ESCROW)).await, 0);
}

#[tokio::test]
async fn unchallenged_data_is_confirmed_its_fee_split_and_its_units_credited() {
    let mut c = chain(86_400).await;
    let p = params(&c).await;
    register_worker(&mut c, 1, "storage_node").await;
    for n in 2..=3 {
        c.ok(
            n,
            MSG_JOIN_NOTARY_PANEL_TYPE_URL,
            &join(n, p.notary_min_bond),
        )
        .await;
    }
    let hash = "cd".repeat(32);
    c.ok(1, MSG_REGISTER_DATA_TYPE_URL, &data_msg(1, &hash, 3 << 20))
        .await;
    let rec = panel::data_record(&c.snapshot(), &hash)
        .await
        .unwrap()
        .unwrap();
    let (n2, treasury, supply) = (
        c.balance(&address(2)).await,
        c.balance(&auth::module_address(TREASURY)).await,
        c.supply().await,
    );
    c.advance_to(rec.challenge_end).await;
    let rec = panel::data_record(&c.snapshot(), &hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status, "confirmed");
    let fee = p.data_registration_fee;
    let per_notary = fee * u128::from(p.data_fee_split.notaries_ppm) / 1_000_000 / 2;
    let burn = fee * u128::from(p.data_fee_split.burn_ppm) / 1_000_000;
    assert_eq!(c.balance(&address(2)).await, n2 + per_notary);
    assert_eq!(
        c.balance(&auth::module_address(TREASURY)).await,
        treasury + fee - 2 * per_notary - burn
    );
    assert_eq!(c.supply().await, supply - burn);
    let units = 3 * p.data_units_per_mib;
    assert_eq!(rec.units_credited, units.to_string());
    let e = compute::epoch(&c.snapshot()).await.unwrap();
    assert_eq!(
        compute::contribution(&c.snapshot(), e.index, &address(1))
            .await
            .unwrap(),
        units
    );
}

#[tokio::test]
async fn frivolous_challenge_loses_its_deposit_and_the_contribution_stands() {
    let mut c = chain(86_400).await;
    let p = params(&c).await;
    register_worker(&mut c, 1, "gpu_compute").await;
    for n in 2..=3 {
        c.ok(
            n,
            MSG_JOIN_NOTARY_PANEL_TYPE_URL,
            &join(n, p.notary_min_bond),
        )
        .await;
    }
    c.ok(
        1,
        MSG_SUBMIT_CONTRIBUTION_TYPE_URL,
        &MsgSubmitContribution {
            owner: address(1),
            steps: 100,
            model_params: 1_000,
            checkpoint_hash: "ef".repeat(32),
        },
    )
    .await;
    let target = format!("0:{}", address(1));
    c.ok(
        5,
        MSG_CHALLENGE_TYPE_URL,
        &challenge(5, "contribution", &target),
    )
    .await;
    // Frozen while disputed.
    assert_eq!(
        compute::contribution(&c.snapshot(), 0, &address(1))
            .await
            .unwrap(),
        0
    );
    c.ok(2, MSG_VOTE_DISPUTE_TYPE_URL, &vote(2, 0, false)).await;
    c.ok(3, MSG_VOTE_DISPUTE_TYPE_URL, &vote(3, 0, false)).await;
    let (supply, bal5) = (c.supply().await, c.balance(&address(5)).await);
    let d = dispute(&c, 0).await;
    c.advance_to(d.vote_end).await;
    assert_eq!(dispute(&c, 0).await.status, "rejected");
    assert_eq!(
        c.supply().await,
        supply - p.challenge_deposit,
        "deposit burned"
    );
    assert_eq!(c.balance(&address(5)).await, bal5);
    assert_eq!(
        compute::contribution(&c.snapshot(), 0, &address(1))
            .await
            .unwrap(),
        100_000
    );
    // The same target can be challenged again once the first dispute closed.
    c.ok(
        6,
        MSG_CHALLENGE_TYPE_URL,
        &challenge(6, "contribution", &target),
    )
    .await;
}

#[tokio::test]
async fn bad_panel_messages_get_stable_codes_and_change_nothing() {
    let mut c = chain(86_400).await;
    let p = params(&c).await;
    register_worker(&mut c, 1, "gpu_compute").await;
    let hash = "12".repeat(32);
    c.ok(1, MSG_REGISTER_DATA_TYPE_URL, &data_msg(1, &hash, 1 << 20))
        .await;
    let cs = "compute";
    c.refused(
        5,
        MSG_CHALLENGE_TYPE_URL,
        &challenge(5, "data", &hash),
        cs,
        codes::NO_PANEL,
    )
    .await;
    c.refused(
        2,
        MSG_JOIN_NOTARY_PANEL_TYPE_URL,
        &join(2, p.notary_min_bond - 1),
        cs,
        compute::codes::BOND_TOO_LOW,
    )
    .await;
    for n in 2..=3 {
        c.ok(
            n,
            MSG_JOIN_NOTARY_PANEL_TYPE_URL,
            &join(n, p.notary_min_bond),
        )
        .await;
    }
    c.refused(
        2,
        MSG_JOIN_NOTARY_PANEL_TYPE_URL,
        &join(2, p.notary_min_bond),
        cs,
        codes::ALREADY_NOTARY,
    )
    .await;
    c.refused(
        1,
        MSG_REGISTER_DATA_TYPE_URL,
        &data_msg(1, &hash, 1 << 20),
        cs,
        codes::DATA_EXISTS,
    )
    .await;
    c.refused(
        6,
        MSG_REGISTER_DATA_TYPE_URL,
        &data_msg(6, &"34".repeat(32), 1),
        cs,
        compute::codes::NOT_REGISTERED,
    )
    .await;
    c.refused(
        1,
        MSG_CHALLENGE_TYPE_URL,
        &challenge(1, "data", &hash),
        cs,
        codes::CONFLICT_OF_INTEREST,
    )
    .await;
    c.refused(
        5,
        MSG_CHALLENGE_TYPE_URL,
        &challenge(5, "weather", &hash),
        "sdk",
        18,
    )
    .await;
    c.refused(
        5,
        MSG_CHALLENGE_TYPE_URL,
        &challenge(5, "data", &"99".repeat(32)),
        cs,
        codes::UNKNOWN_TARGET,
    )
    .await;
    c.ok(5, MSG_CHALLENGE_TYPE_URL, &challenge(5, "data", &hash))
        .await;
    c.refused(
        6,
        MSG_CHALLENGE_TYPE_URL,
        &challenge(6, "data", &hash),
        cs,
        codes::WRONG_WINDOW,
    )
    .await;
    c.refused(
        6,
        MSG_VOTE_DISPUTE_TYPE_URL,
        &vote(6, 0, true),
        cs,
        codes::NOT_A_NOTARY,
    )
    .await;
    c.refused(
        2,
        MSG_VOTE_DISPUTE_TYPE_URL,
        &vote(2, 9, true),
        cs,
        codes::UNKNOWN_DISPUTE,
    )
    .await;
    c.ok(2, MSG_VOTE_DISPUTE_TYPE_URL, &vote(2, 0, true)).await;
    c.refused(
        2,
        MSG_VOTE_DISPUTE_TYPE_URL,
        &vote(2, 0, false),
        cs,
        codes::DOUBLE_VOTE,
    )
    .await;
    let d = dispute(&c, 0).await;
    assert_eq!(
        (d.uphold_votes, d.reject_votes),
        (1, 0),
        "refused votes counted"
    );
    c.advance_to(d.vote_end).await;
    c.refused(
        3,
        MSG_VOTE_DISPUTE_TYPE_URL,
        &vote(3, 0, true),
        cs,
        codes::WRONG_WINDOW,
    )
    .await;
    // One vote of two notaries meets a one-half quorum: upheld.
    assert_eq!(dispute(&c, 0).await.status, "upheld");
}

fn job_msg(c: &Chain, budget: u128) -> MsgCreateJob {
    MsgCreateJob {
        requester: address(6),
        job_id: "rust-tokenizer-1".into(),
        domain: "rust".into(),
        budget: budget.to_string(),
        commit_end: c.now + 100,
        reveal_end: c.now + 200,
        deadline: c.now + 400,
        evaluators: vec![address(2), address(3), address(4)],
    }
}

#[tokio::test]
async fn research_job_pays_contributors_by_median_score_and_refunds_the_rest() {
    let mut c = chain(86_400).await;
    register_worker(&mut c, 1, "cpu_only").await;
    register_worker(&mut c, 7, "cpu_only").await;
    let budget = 1_000_001u128;
    let mut bad = job_msg(&c, budget);
    bad.reveal_end = bad.commit_end;
    c.refused(
        6,
        MSG_CREATE_JOB_TYPE_URL,
        &bad,
        "compute",
        codes::WRONG_WINDOW,
    )
    .await;
    let job = job_msg(&c, budget);
    let r6 = c.balance(&address(6)).await;
    c.ok(6, MSG_CREATE_JOB_TYPE_URL, &job).await;
    assert_eq!(c.balance(&auth::module_address(JOB_ESCROW)).await, budget);
    c.refused(
        6,
        MSG_CREATE_JOB_TYPE_URL,
        &job,
        "compute",
        codes::JOB_EXISTS,
    )
    .await;
    let task = format!("job:{}", job.job_id);
    let nonce = [7u8; 32];
    let commit = |n: u8, result: &[u8]| MsgCommitResult {
        owner: address(n),
        task_id: task.clone(),
        commitment: magnet_x_compute::commitment(result, &nonce).to_vec(),
    };
    c.refused(
        1,
        MSG_COMMIT_RESULT_TYPE_URL,
        &commit(1, b"a"),
        "compute",
        codes::NOT_CLAIMED,
    )
    .await;
    let claim = |n: u8| MsgClaimJob {
        worker: address(n),
        job_id: job.job_id.clone(),
    };
    c.ok(1, MSG_CLAIM_JOB_TYPE_URL, &claim(1)).await;
    c.refused(
        1,
        MSG_CLAIM_JOB_TYPE_URL,
        &claim(1),
        "compute",
        codes::ALREADY_CLAIMED,
    )
    .await;
    c.refused(
        5,
        MSG_CLAIM_JOB_TYPE_URL,
        &claim(5),
        "compute",
        compute::codes::NOT_REGISTERED,
    )
    .await;
    c.ok(7, MSG_CLAIM_JOB_TYPE_URL, &claim(7)).await;
    let results: [(u8, &[u8]); 2] = [(1, b"val_loss=2.91"), (7, b"val_loss=3.40")];
    for (n, r) in results {
        c.ok(n, MSG_COMMIT_RESULT_TYPE_URL, &commit(n, r)).await;
    }
    let score = |n: u8, s: &[(u8, u64)]| MsgScoreJob {
        evaluator: address(n),
        job_id: job.job_id.clone(),
        scores: s
            .iter()
            .map(|(w, v)| JobScore {
                worker: address(*w),
                score: *v,
            })
            .collect(),
    };
    c.advance_to(job.commit_end).await;
    for (n, r) in results {
        let reveal = MsgRevealResult {
            owner: address(n),
            task_id: task.clone(),
            result: r.to_vec(),
            nonce: nonce.to_vec(),
        };
        c.ok(n, MSG_REVEAL_RESULT_TYPE_URL, &reveal).await;
    }
    c.refused(
        2,
        MSG_SCORE_JOB_TYPE_URL,
        &score(2, &[(1, 1)]),
        "compute",
        codes::WRONG_WINDOW,
    )
    .await;
    c.advance_to(job.reveal_end).await;
    c.refused(
        5,
        MSG_SCORE_JOB_TYPE_URL,
        &score(5, &[(1, 1)]),
        "compute",
        codes::NOT_AN_EVALUATOR,
    )
    .await;
    c.refused(
        2,
        MSG_SCORE_JOB_TYPE_URL,
        &score(2, &[(8, 1)]),
        "compute",
        codes::NOT_REVEALED,
    )
    .await;
    c.refused(
        2,
        MSG_SCORE_JOB_TYPE_URL,
        &score(2, &[(1, 1_000_001)]),
        "sdk",
        18,
    )
    .await;
    c.ok(
        2,
        MSG_SCORE_JOB_TYPE_URL,
        &score(2, &[(1, 800_000), (7, 400_000)]),
    )
    .await;
    c.refused(
        2,
        MSG_SCORE_JOB_TYPE_URL,
        &score(2, &[(1, 1)]),
        "compute",
        codes::DOUBLE_VOTE,
    )
    .await;
    c.ok(
        3,
        MSG_SCORE_JOB_TYPE_URL,
        &score(3, &[(1, 600_000), (7, 400_000)]),
    )
    .await;
    // An outlier evaluator cannot move the median.
    c.ok(
        4,
        MSG_SCORE_JOB_TYPE_URL,
        &score(4, &[(1, 100_000), (7, 500_000)]),
    )
    .await;
    let (b1, b7) = (c.balance(&address(1)).await, c.balance(&address(7)).await);
    c.advance_to(job.deadline).await;
    let j = panel::job(&c.snapshot(), &job.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.status, "settled");
    // medians 600k and 400k: 1_000_001 · 0.6 = 600_000 (floor), · 0.4 = 400_000, refund 1.
    assert_eq!(c.balance(&address(1)).await, b1 + 600_000);
    assert_eq!(c.balance(&address(7)).await, b7 + 400_000);
    assert_eq!(j.refund, "1");
    assert_eq!(c.balance(&address(6)).await, r6 - budget - fee() + 1);
    assert_eq!(c.balance(&auth::module_address(JOB_ESCROW)).await, 0);
}

async fn proposal(c: &Chain, id: u64) -> gov::Proposal {
    gov::proposal(&c.snapshot(), id)
        .await
        .unwrap()
        .expect("proposal")
}

fn propose(n: u8, changes: &str, deposit: u128) -> MsgSubmitProposal {
    MsgSubmitProposal {
        proposer: address(n),
        title: "Double the GPU tier reward".into(),
        changes: changes.into(),
        deposit: deposit.to_string(),
    }
}

fn gov_vote(n: u8, id: u64, option: &str) -> MsgVote {
    MsgVote {
        voter: address(n),
        proposal_id: id,
        option: option.into(),
    }
}

#[tokio::test]
async fn passed_proposal_changes_params_from_the_next_epoch_and_a_failed_one_burns_its_deposit() {
    let mut c = chain(600).await;
    let deposit = 1_000 * MAG;
    let good = r#"{"tier_multiplier_ppm":{"gpu_compute":2000000}}"#;
    let g = "gov";
    c.refused(
        3,
        MSG_SUBMIT_PROPOSAL_TYPE_URL,
        &propose(3, r#"{"slash_rate_ppm":{"bad_data":5}}"#, deposit),
        g,
        gov::codes::INVALID_PARAMS,
    )
    .await;
    c.refused(
        3,
        MSG_SUBMIT_PROPOSAL_TYPE_URL,
        &propose(3, r#"{"tier_rewards":1}"#, deposit),
        g,
        gov::codes::INVALID_PARAMS,
    )
    .await;
    c.refused(
        3,
        MSG_SUBMIT_PROPOSAL_TYPE_URL,
        &propose(3, "not json", deposit),
        g,
        gov::codes::INVALID_PARAMS,
    )
    .await;
    c.refused(
        3,
        MSG_SUBMIT_PROPOSAL_TYPE_URL,
        &propose(3, good, deposit - 1),
        g,
        gov::codes::DEPOSIT_TOO_LOW,
    )
    .await;
    let b3 = c.balance(&address(3)).await;
    c.ok(3, MSG_SUBMIT_PROPOSAL_TYPE_URL, &propose(3, good, deposit))
        .await;
    c.refused(
        3,
        MSG_VOTE_TYPE_URL,
        &gov_vote(3, 0, "yes"),
        g,
        gov::codes::NOT_A_VALIDATOR,
    )
    .await;
    c.refused(
        1,
        MSG_VOTE_TYPE_URL,
        &gov_vote(1, 0, "maybe"),
        g,
        gov::codes::INVALID_OPTION,
    )
    .await;
    c.refused(
        1,
        MSG_VOTE_TYPE_URL,
        &gov_vote(1, 5, "yes"),
        g,
        gov::codes::UNKNOWN_PROPOSAL,
    )
    .await;
    c.ok(1, MSG_VOTE_TYPE_URL, &gov_vote(1, 0, "yes")).await;
    c.refused(
        1,
        MSG_VOTE_TYPE_URL,
        &gov_vote(1, 0, "no"),
        g,
        gov::codes::DOUBLE_VOTE,
    )
    .await;
    c.ok(2, MSG_VOTE_TYPE_URL, &gov_vote(2, 0, "no")).await;
    let p0 = proposal(&c, 0).await;
    assert_eq!((p0.yes, p0.no, p0.total_power), (10, 5, 15));

    // Epoch 0 settles (at T0 + 600) before voting ends: the change waits for the end of epoch 1.
    c.advance_to(T0 + 600).await;
    assert!(c.now < p0.voting_end);
    c.advance_to(p0.voting_end).await;
    let p0 = proposal(&c, 0).await;
    assert_eq!(p0.status, "passed");
    assert_eq!(c.balance(&address(3)).await, b3 - fee() - deposit + deposit);
    c.refused(
        2,
        MSG_VOTE_TYPE_URL,
        &gov_vote(2, 0, "yes"),
        g,
        gov::codes::VOTING_CLOSED,
    )
    .await;
    let e = compute::epoch(&c.snapshot()).await.unwrap();
    assert_eq!(e.index, 1, "epoch 0 settled before the tally");
    assert_eq!(params(&c).await.tier_multiplier_ppm.gpu_compute, 1_000_000);
    c.advance_to(e.start_time + 600).await;
    assert_eq!(compute::epoch(&c.snapshot()).await.unwrap().index, 2);
    let now = params(&c).await;
    assert_eq!(now.tier_multiplier_ppm.gpu_compute, 2_000_000);
    assert_eq!(now.tier_multiplier_ppm.orchestrator, 3_000_000, "untouched");

    // Only 5 of 15 power votes (< 33.4 % quorum): rejected, deposit burned.
    c.ok(4, MSG_SUBMIT_PROPOSAL_TYPE_URL, &propose(4, good, deposit))
        .await;
    c.ok(2, MSG_VOTE_TYPE_URL, &gov_vote(2, 1, "yes")).await;
    let b4 = c.balance(&address(4)).await;
    c.advance_to(proposal(&c, 1).await.voting_end).await;
    assert_eq!(proposal(&c, 1).await.status, "rejected");
    assert_eq!(c.balance(&address(4)).await, b4);
    assert_eq!(c.balance(&auth::module_address(gov::GOV_ACCOUNT)).await, 0);
}

#[tokio::test]
async fn records_are_queryable_over_abci() {
    let mut c = chain(86_400).await;
    let p = params(&c).await;
    register_worker(&mut c, 1, "gpu_compute").await;
    c.ok(
        2,
        MSG_JOIN_NOTARY_PANEL_TYPE_URL,
        &join(2, p.notary_min_bond),
    )
    .await;
    let hash = "56".repeat(32);
    c.ok(1, MSG_REGISTER_DATA_TYPE_URL, &data_msg(1, &hash, 1 << 20))
        .await;
    c.ok(5, MSG_CHALLENGE_TYPE_URL, &challenge(5, "data", &hash))
        .await;
    async fn q(app: &App, path: &str, data: &str) -> tendermint::v0_38::abci::response::Query {
        app.query(tendermint::v0_38::abci::request::Query {
            data: data.as_bytes().to_vec().into(),
            path: path.into(),
            // 0 = latest (tendermint's Height::default() is 1).
            height: 0u32.into(),
            prove: false,
        })
        .await
    }
    let cases = [
        (magnet_chain::query::PATH_COMPUTE_NOTARY, address(2), "bond"),
        (
            magnet_chain::query::PATH_COMPUTE_DATA,
            hash.clone(),
            "challenged",
        ),
        (
            magnet_chain::query::PATH_COMPUTE_DISPUTE,
            "0".into(),
            "open",
        ),
        (
            magnet_chain::query::PATH_GOV_PARAMS,
            String::new(),
            "validators",
        ),
    ];
    assert!(
        panel::notary(&c.snapshot(), &address(2))
            .await
            .unwrap()
            .is_some(),
        "notary in state"
    );
    for (path, data, needle) in cases {
        let r = q(&c.app, path, &data).await;
        assert_eq!(r.code.value(), 0, "{path}: {}", r.log);
        let text = String::from_utf8(r.value.to_vec()).unwrap();
        assert!(text.contains(needle), "{path}: {text}");
    }
    let r = q(&c.app, magnet_chain::query::PATH_COMPUTE_JOB, "nope").await;
    assert_eq!(r.code.value(), magnet_chain::query::CODE_NOT_FOUND);
}
