//! Int4 (group-128 scales) vs int8 LM-head throughput on one thread, one decode token by
//! default: `cargo run --release -p magnet-infer --example int4_speed [n_tok]`.
//! Prints the median of 5 runs (and the best) in GB/s of weight bytes streamed, and checks that
//! every SIMD path returns the scalar bits.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]

use std::time::Instant;

use magnet_infer::int4::{self, Int4Matrix};
use magnet_infer::kernels::{self, Isa};

/// xorshift64*: fast deterministic filler.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Median and best wall time of `reps` runs of `f`, in seconds.
fn median(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[reps / 2], times[0])
}

/// `n_tok` random tokens quantized per token to int8 (absmax), padded to `k_pad`.
fn tokens(cols: usize, k_pad: usize, n_tok: usize, seed: u64) -> Vec<i8> {
    let mut state = seed | 1;
    let mut x = vec![0i8; n_tok * k_pad];
    for t in 0..n_tok {
        // Sum of 4 uniforms: roughly Gaussian activations.
        let xf: Vec<f32> = (0..cols)
            .map(|_| {
                (0..4)
                    .map(|_| (next(&mut state) >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                    .sum()
            })
            .collect();
        let amax = xf.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        for (d, v) in x[t * k_pad..].iter_mut().zip(&xf) {
            *d = (v * 127.0 / amax).round().clamp(-127.0, 127.0) as i8;
        }
    }
    x
}

fn bench(rows: usize, cols: usize, n_tok: usize) {
    let t0 = Instant::now();
    let m = Int4Matrix::random(rows, cols, 0x1234_5678, 0.01);
    let gen_s = t0.elapsed().as_secs_f64();
    let k_pad = m.k_pad();
    println!(
        "== {rows} x {cols}, n_tok {n_tok}: int4 {:.1} MB (built in {:.2} s), int8 {:.1} MB",
        m.bytes() as f64 / 1e6,
        gen_s,
        (rows * kernels::padded_i8_len(cols)) as f64 / 1e6
    );
    let x = tokens(cols, k_pad, n_tok, 99);
    let corr: Vec<i32> = x
        .chunks_exact(k_pad)
        .flat_map(|t| int4::prepare_acts(t, k_pad))
        .collect();

    let mut want: Option<Vec<f32>> = None;
    let mut int4_best = f64::MAX;
    for isa in Isa::available() {
        let mut out = vec![0.0f32; rows * n_tok];
        let (dt, best) = median(5, || {
            int4::int4_gemm(isa, &m, 0..rows, &x, &corr, n_tok, &mut out);
        });
        let same = match &want {
            None => {
                want = Some(out.clone());
                "reference"
            }
            Some(w) if w.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()) => {
                "bit-identical to scalar"
            }
            Some(_) => "MISMATCH vs scalar",
        };
        if isa != Isa::Scalar {
            int4_best = int4_best.min(dt);
        }
        println!(
            "int4 {:<12} {:9.3} ms  {:6.1} GB/s  (best {:6.1} GB/s; {same})",
            isa.name(),
            dt * 1e3,
            m.bytes() as f64 / dt / 1e9,
            m.bytes() as f64 / best / 1e9
        );
    }

    // The int8 head of the same shape.
    let k8 = kernels::padded_i8_len(cols);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut w = vec![0i8; rows * k8];
    for row in w.chunks_exact_mut(k8) {
        for chunk in row[..cols].chunks_mut(8) {
            let z = next(&mut state).to_le_bytes();
            for (d, b) in chunk.iter_mut().zip(z) {
                *d = (b as i8).max(-127);
            }
        }
    }
    let sums: Vec<i32> = w
        .chunks_exact(k8)
        .map(|r| r.iter().map(|&v| i32::from(v)).sum())
        .collect();
    let x8 = tokens(cols, k8, n_tok, 99);
    let bytes8 = w.len() + 4 * sums.len();
    let mut int8_best = f64::MAX;
    for isa in Isa::available() {
        let mut out = vec![0i32; rows * n_tok];
        let (dt, best) = median(5, || {
            kernels::i8_gemm(isa, &w, &sums, k8, &x8, n_tok, &mut out);
        });
        if isa != Isa::Scalar {
            int8_best = int8_best.min(dt);
        }
        println!(
            "int8 {:<12} {:9.3} ms  {:6.1} GB/s  (best {:6.1} GB/s)",
            isa.name(),
            dt * 1e3,
            bytes8 as f64 / dt / 1e9,
            bytes8 as f64 / best / 1e9
        );
    }
    if int4_best < f64::MAX && int8_best < f64::MAX {
        println!(
            "fastest SIMD path (medians): int4 {:.3} ms vs int8 {:.3} ms -> {:.2}x",
            int4_best * 1e3,
            int8_best * 1e3,
            int8_best / int4_best
        );
    }
}

fn main() {
    let n_tok: usize = std::env::args()
        .nth(1)
        .map_or(1, |a| a.parse().expect("n_tok must be a number"));
    bench(32_000, 1536, n_tok);
    bench(128_256, 2560, n_tok);
}
