//! Lazy payout is exact: whatever the tiers and contributions, what workers collect by
//! heartbeat after an epoch settles equals, to the unit, what the pure
//! `magnet_x_compute::settle_epoch` computes for `R_i = pool·T_i·C_i/ΣT·C`, and the
//! remainder it leaves is what the chain carries.

#![allow(clippy::arithmetic_side_effects, clippy::unwrap_used)]

use std::collections::BTreeMap;

use magnet_chain::client::GasSettings;
use magnet_chain::compute;
use magnet_chain::tx::*;
use magnet_e2e::driver::{address, funded_genesis, Chain};
use magnet_proto::magnet::compute::v1::*;
use magnet_x_compute::Tier;
use proptest::prelude::*;

const T0: i64 = 1_700_000_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn lazy_payout_pays_exactly_the_settlement_formula(
        workers in proptest::collection::vec((0usize..5, 1u64..5_000, 1u64..10_000_000), 1..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = Chain::new("magnet-lazy-1", T0, &funded_genesis(8, 1_000_000_000_000_000)).await;
            let p = compute::params(&c.snapshot()).await.unwrap();
            let mut expected_in = BTreeMap::new();
            for (i, (tier, steps, size)) in workers.iter().enumerate() {
                let n = i as u8 + 1;
                let tier = Tier::ALL[*tier];
                // Storage tiers need a passing SSD report to keep their tier.
                let hw = HardwareProfile { ssd_read_mbps: 500, ssd_write_mbps: 300, ssd_blocks_tested: 1000, ..Default::default() };
                c.ok(n, MSG_REGISTER_WORKER_TYPE_URL, &MsgRegisterWorker {
                    owner: address(n), tier: tier.as_str().into(),
                    bond_amount: p.min_bond.get(tier).to_string(), hardware: Some(hw),
                }).await;
                c.ok(n, MSG_SUBMIT_CONTRIBUTION_TYPE_URL, &MsgSubmitContribution {
                    owner: address(n), steps: *steps, model_params: *size, checkpoint_hash: "ab".repeat(32),
                }).await;
                expected_in.insert(address(n), (tier, u128::from(*steps) * u128::from(*size)));
            }
            c.advance_to(T0 + 600).await;
            let rec = compute::settlement(&c.snapshot(), 0).await.unwrap().expect("settled");
            let pool: u128 = rec.pool.parse().unwrap();
            let expected = magnet_x_compute::settle_epoch(pool, &expected_in, &p).unwrap();
            let fee = GasSettings::default().fee;
            for (i, _) in workers.iter().enumerate() {
                let n = i as u8 + 1;
                let before = c.balance(&address(n)).await;
                c.ok(n, MSG_HEARTBEAT_TYPE_URL, &MsgHeartbeat { owner: address(n) }).await;
                let got = c.balance(&address(n)).await + fee - before;
                let want = expected.rewards.get(&address(n)).copied().unwrap_or(0);
                prop_assert_eq!(got, want, "worker {}", n);
            }
            let rec = compute::settlement(&c.snapshot(), 0).await.unwrap().unwrap();
            prop_assert!(!rec.open);
            prop_assert_eq!(rec.remainder, expected.remainder.to_string());
            prop_assert_eq!(rec.carried_out, expected.remainder.to_string());
            Ok::<(), TestCaseError>(())
        })?;
    }
}
