//! Kernel throughput on one thread (and two for `big`), for both ternary packings:
//! `cargo run --release -p magnet-infer --example kernel_speed [big]`.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]

use std::time::Instant;

use magnet_infer::kernels::{self, Isa, Packing};

fn main() {
    let big = std::env::args().nth(1).is_some_and(|a| a == "big");
    // "big": 1 G weights (256 MB at 2 bits), far beyond the caches (decode streams from DRAM).
    // "l1": 96 rows (30-37 KB), so the kernels' arithmetic alone is timed.
    let l1 = std::env::args().nth(1).is_some_and(|a| a == "l1");
    let (rows, k) = if big {
        (409_600usize, 2560usize)
    } else if l1 {
        (96usize, 1536usize)
    } else {
        (4096usize, 1536usize)
    };
    for packing in [Packing::Tq2, Packing::Trit5] {
        let k_pad = packing.padded_len(k);
        let mut w: Vec<u8> = magnet_infer::mem::huge_vec(rows * packing.row_bytes(k_pad), 0);
        for (i, b) in w.iter_mut().enumerate() {
            // Valid codes of either packing.
            *b = (i * 37 % 81) as u8;
        }
        for n_tok in if big {
            vec![1usize]
        } else {
            vec![1usize, 4, 16]
        } {
            let x: Vec<i8> = (0..n_tok * k_pad).map(|i| (i % 200) as i8).collect();
            // MAGNET_ISA=<name> times one path only.
            let only = std::env::var("MAGNET_ISA").ok();
            for isa in Isa::available()
                .into_iter()
                .filter(|i| only.as_deref().is_none_or(|o| Isa::parse(o) == Ok(*i)))
            {
                let mut out = vec![0i32; rows * n_tok];
                let reps = if isa == Isa::Scalar {
                    1
                } else if big {
                    5
                } else if l1 {
                    20000
                } else {
                    200
                };
                let p = packing.name();
                // Best of many runs: robust to other processes sharing the cores.
                let mut dt = f64::MAX;
                for _ in 0..reps {
                    let t = Instant::now();
                    kernels::ternary_gemm(isa, packing, &w, rows, k_pad, &x, n_tok, &mut out);
                    dt = dt.min(t.elapsed().as_secs_f64());
                }
                if big && isa != Isa::Scalar {
                    // Two threads, each streaming its half of the rows (the decode split).
                    let half = rows / 2;
                    let (wa, wb) = w.split_at(half * packing.row_bytes(k_pad));
                    let (oa, ob) = out.split_at_mut(half);
                    let (xr, mut dt2) = (&x, f64::MAX);
                    for _ in 0..reps {
                        let t = Instant::now();
                        std::thread::scope(|s| {
                            s.spawn(|| {
                                kernels::ternary_gemm(isa, packing, wa, half, k_pad, xr, 1, oa)
                            });
                            kernels::ternary_gemm(isa, packing, wb, rows - half, k_pad, xr, 1, ob);
                        });
                        dt2 = dt2.min(t.elapsed().as_secs_f64());
                    }
                    println!(
                        "ternary {p:<5} {rows}x{k} 2 threads  {:<12} {:8.3} ms  {:6.1} GB/s  {:6.1} Gweights/s",
                        isa.name(),
                        dt2 * 1e3,
                        w.len() as f64 / dt2 / 1e9,
                        (rows * k) as f64 / dt2 / 1e9
                    );
                }
                println!(
                    "ternary {p:<5} {rows}x{k} n_tok {n_tok:>2} {:<12} {:8.3} ms  {:6.1} GB/s  {:6.1} GMAC/s",
                    isa.name(),
                    dt * 1e3,
                    w.len() as f64 / dt / 1e9,
                    (rows * k * n_tok) as f64 / dt / 1e9
                );
            }
        }
    }
}
