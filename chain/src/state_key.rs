//! Every key the chain writes, in one place. Keys are a public API: proofs,
//! exports and external readers depend on them, so they never change shape.

pub mod chain {
    pub fn chain_id() -> &'static str {
        "chain/chain_id"
    }
    pub fn params() -> &'static str {
        "chain/params"
    }
    pub fn block_height() -> &'static str {
        "chain/block_height"
    }
    pub fn block_time() -> &'static str {
        "chain/block_time"
    }
    pub fn validators() -> &'static str {
        "chain/validators"
    }
}

pub mod auth {
    pub fn account_prefix() -> &'static str {
        "auth/account/"
    }
    pub fn account(address: &str) -> String {
        format!("auth/account/{address}")
    }
    pub fn next_account_number() -> &'static str {
        "auth/next_account_number"
    }
}

pub mod compute {
    pub fn params() -> &'static str {
        "compute/params"
    }
    pub fn worker_prefix() -> &'static str {
        "compute/worker/"
    }
    pub fn worker(owner: &str) -> String {
        format!("compute/worker/{owner}")
    }
    pub fn emission() -> &'static str {
        "compute/emission"
    }
    pub fn epoch() -> &'static str {
        "compute/epoch"
    }
    /// Settlement remainder carried into the next epoch's pool (already minted).
    pub fn carry() -> &'static str {
        "compute/carry"
    }
    pub fn contributions_of_epoch(epoch: u64) -> String {
        format!("compute/contrib/{epoch:020}/")
    }
    pub fn contribution(epoch: u64, owner: &str) -> String {
        format!("compute/contrib/{epoch:020}/{owner}")
    }
    pub fn settlement(epoch: u64) -> String {
        format!("compute/settlement/{epoch:020}")
    }
    pub fn task(task_id: &str) -> String {
        format!("compute/task/{task_id}")
    }
    pub fn commits_of_task(task_id: &str) -> String {
        format!("compute/commit/{task_id}/")
    }
    pub fn commit(task_id: &str, owner: &str) -> String {
        format!("compute/commit/{task_id}/{owner}")
    }
    /// Tasks ordered by reveal deadline, for missed-reveal penalties at end of block.
    pub fn task_deadline_prefix() -> &'static str {
        "compute/task_deadline/"
    }
    pub fn task_deadline(reveal_end: i64, task_id: &str) -> String {
        format!("compute/task_deadline/{:020}/{task_id}", reveal_end.max(0))
    }
    pub fn inference_receipt(request_id: &str) -> String {
        format!("compute/x402/{request_id}")
    }
    pub fn round(round: u64) -> String {
        format!("compute/round/{round:020}")
    }
    pub fn next_round() -> &'static str {
        "compute/next_round"
    }
    /// Unbonding queue ordered by completion time: zero-padded so byte order = time order.
    pub fn unbonding_prefix() -> &'static str {
        "compute/unbonding/"
    }
    pub fn unbonding(complete_time: i64, owner: &str) -> String {
        format!("compute/unbonding/{:020}/{owner}", complete_time.max(0))
    }
}

pub mod bank {
    pub fn balance_prefix() -> &'static str {
        "bank/balance/"
    }
    /// All balances of one address share a prefix, so `AllBalances` is one prefix scan.
    pub fn balances_of(address: &str) -> String {
        format!("bank/balance/{address}/")
    }
    pub fn balance(address: &str, denom: &str) -> String {
        format!("bank/balance/{address}/{denom}")
    }
    pub fn supply_prefix() -> &'static str {
        "bank/supply/"
    }
    pub fn supply(denom: &str) -> String {
        format!("bank/supply/{denom}")
    }
}
