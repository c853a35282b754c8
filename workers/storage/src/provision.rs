//! SSD provisioning test (`magnet-worker provision`): 4 KiB random writes then random reads over
//! 1000 blocks of a scratch file. Pass: > 100 MB/s read and > 50 MB/s write (MB = 10^6 bytes), the
//! thresholds the chain applies to the `HardwareProfile` of a storage-tier registration.
//!
//! What is measured: with `O_DIRECT` (the normal case on ext4/xfs) every 4 KiB read and write goes
//! to the device, bypassing the page cache, one request at a time (queue depth 1), and the write
//! phase ends with an `fsync` inside the timed region. Where `O_DIRECT` is refused (tmpfs, some
//! overlay filesystems) writes fall back to buffered writes with `fdatasync` after each one, and reads
//! would come from the page cache, which is not an SSD read: the report says so and does not pass.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

/// Minimum random-read throughput, MB/s (chain: `SSD_MIN_READ_MBPS`).
pub const MIN_READ_MBPS: u64 = 100;
/// Minimum random-write throughput, MB/s (chain: `SSD_MIN_WRITE_MBPS`).
pub const MIN_WRITE_MBPS: u64 = 50;
/// Minimum blocks tested (chain: `SSD_MIN_BLOCKS`).
pub const MIN_BLOCKS: u64 = 1000;
const ALIGN: usize = 4096;

/// Options of the provisioning test.
#[derive(Args, Debug, Clone)]
pub struct ProvisionArgs {
    /// Directory on the SSD to test (a scratch file is created and removed there).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Blocks written and read.
    #[arg(long, default_value_t = MIN_BLOCKS)]
    pub blocks: u64,
    /// Block size in bytes (a multiple of 4096).
    #[arg(long, default_value_t = 4096)]
    pub block_size: usize,
    /// Also write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The report submitted with a storage-tier registration. Field names match the chain's
/// `HardwareProfile` (`ssd_read_mbps`, `ssd_write_mbps`, `ssd_blocks_tested`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProvisionReport {
    /// Random 4 KiB read throughput, MB/s, rounded down.
    pub ssd_read_mbps: u64,
    /// Random 4 KiB write throughput, MB/s, rounded down.
    pub ssd_write_mbps: u64,
    /// Blocks written and read.
    pub ssd_blocks_tested: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// read > 100, write > 50, blocks >= 1000, and the reads bypassed the page cache.
    pub passed: bool,
    /// The scratch file tested.
    pub path: String,
    /// "O_DIRECT" or "buffered+fdatasync-per-write (reads from page cache)".
    pub method: String,
    /// Read IOPS.
    pub read_iops: f64,
    /// Write IOPS.
    pub write_iops: f64,
    /// Why it failed, when it did.
    pub reason: Option<String>,
}

/// Pseudo-random permutation of 0..n (xorshift Fisher-Yates; the order only needs to defeat readahead).
fn permutation(n: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Runs the test and returns the report.
pub fn measure(args: &ProvisionArgs) -> anyhow::Result<ProvisionReport> {
    anyhow::ensure!(
        args.block_size > 0 && args.block_size % ALIGN == 0,
        "--block-size must be a multiple of {ALIGN}"
    );
    anyhow::ensure!(args.blocks > 0, "--blocks must be positive");
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let path = args
        .dir
        .join(format!(".magnet-provision-{}.bin", std::process::id()));
    let bs = args.block_size;
    let total = args.blocks * bs as u64;
    // Lay the file out first (not timed), so the timed writes overwrite allocated blocks.
    {
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let chunk = vec![0xA5u8; 1 << 20];
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    let result = run_io(&path, args, bs);
    let _ = std::fs::remove_file(&path);
    let (direct, write_secs, read_secs) = result?;
    let mb = total as f64 / 1e6;
    let read = mb / read_secs;
    let write = mb / write_secs;
    let mut reasons = Vec::new();
    if !direct {
        reasons.push(
            "O_DIRECT unavailable: reads were served by the page cache, not the SSD".to_string(),
        );
    }
    if read as u64 <= MIN_READ_MBPS {
        reasons.push(format!("read {read:.1} MB/s <= {MIN_READ_MBPS}"));
    }
    if write as u64 <= MIN_WRITE_MBPS {
        reasons.push(format!("write {write:.1} MB/s <= {MIN_WRITE_MBPS}"));
    }
    if args.blocks < MIN_BLOCKS {
        reasons.push(format!("{} blocks < {MIN_BLOCKS}", args.blocks));
    }
    Ok(ProvisionReport {
        ssd_read_mbps: read as u64,
        ssd_write_mbps: write as u64,
        ssd_blocks_tested: args.blocks,
        block_size: bs as u64,
        passed: reasons.is_empty(),
        path: path.display().to_string(),
        method: if direct {
            "O_DIRECT".into()
        } else {
            "buffered+fdatasync-per-write (reads from page cache)".into()
        },
        read_iops: args.blocks as f64 / read_secs,
        write_iops: args.blocks as f64 / write_secs,
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    })
}

/// Returns (used O_DIRECT, write seconds, read seconds).
fn run_io(
    path: &std::path::Path,
    args: &ProvisionArgs,
    bs: usize,
) -> anyhow::Result<(bool, f64, f64)> {
    let direct = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    let (file, direct) = match direct {
        Ok(f) => (f, true),
        Err(_) => (OpenOptions::new().read(true).write(true).open(path)?, false),
    };
    // O_DIRECT needs a buffer aligned to the logical block size: carve one out of a larger Vec.
    let mut backing = vec![0u8; bs + ALIGN];
    let skew = (ALIGN - backing.as_ptr() as usize % ALIGN) % ALIGN;
    let buf = &mut backing[skew..skew + bs];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed);
    let order = permutation(args.blocks, seed);
    let start = Instant::now();
    for (n, &blk) in order.iter().enumerate() {
        buf[0] = n as u8;
        file.write_all_at(buf, blk * bs as u64)
            .context("random write")?;
        if !direct {
            file.sync_data().context("fdatasync")?;
        }
    }
    file.sync_all().context("fsync")?;
    let write_secs = start.elapsed().as_secs_f64().max(1e-9);
    let order = permutation(args.blocks, seed.rotate_left(17) ^ 0xdead_beef);
    let start = Instant::now();
    for &blk in &order {
        file.read_exact_at(buf, blk * bs as u64)
            .context("random read")?;
    }
    let read_secs = start.elapsed().as_secs_f64().max(1e-9);
    Ok((direct, write_secs, read_secs))
}

/// `magnet-worker provision`: prints the report (and writes it with `--out`).
pub fn run(args: &ProvisionArgs) -> anyhow::Result<()> {
    let report = measure(args)?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &json).with_context(|| format!("write {}", out.display()))?;
    }
    println!("{json}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioning_report_has_chain_fields_and_consistent_verdict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = ProvisionArgs {
            dir: dir.path().to_path_buf(),
            blocks: 64,
            block_size: 4096,
            out: None,
        };
        let r = measure(&args).expect("measure");
        assert_eq!(r.ssd_blocks_tested, 64);
        assert!(r.read_iops > 0.0 && r.write_iops > 0.0);
        // 64 blocks is below the chain minimum: never a pass, whatever the speed.
        assert!(!r.passed);
        assert!(
            r.reason.as_deref().unwrap_or("").contains("blocks"),
            "{r:?}"
        );
        let json = serde_json::to_value(&r).expect("json");
        for k in [
            "ssd_read_mbps",
            "ssd_write_mbps",
            "ssd_blocks_tested",
            "passed",
            "block_size",
            "path",
        ] {
            assert!(json.get(k).is_some(), "missing {k}");
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "scratch file removed"
        );
        let p = permutation(1000, 42);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(p, sorted);
    }
}
