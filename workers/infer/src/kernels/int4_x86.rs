//! x86-64 SIMD kernels for int4 matrices ([`crate::int4`]): AVX-512 VNNI and AVX2 + FMA.
//!
//! Both follow the canonical order of the module docs of [`crate::int4`] exactly: the 16 lanes
//! of a group are exact i32 sums (`vpdpbusd`, or `vpmaddubsw` + `vpmaddwd`) started from the
//! correction vector, converted to f32 and fused-multiply-added with the group scale into one
//! accumulator per lane; the lanes are then summed in the fixed tree order. Hence the results
//! are bit-identical to the scalar path.
//!
//! Like `x86.rs`, `unsafe` is only used for unaligned vector loads from slices whose lengths were
//! checked (once per tile, so the inner loops carry no bounds checks), for prefetch hints inside
//! the code slice, and for calling `#[target_feature]` functions after run-time detection.
#![allow(unsafe_code)]

use std::arch::x86_64::*;
use std::ops::Range;

use crate::int4::{Int4Matrix, GROUP, GROUP_BYTES, LANES};

pub(crate) fn has_avx512_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

pub(crate) fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Rows processed together (they share the activation and correction loads).
const ROW_TILE: usize = 4;

/// 64 bytes at `p`.
///
/// # Safety
/// `p` must point to 64 readable bytes (no alignment needed).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load512<T>(p: *const T) -> __m512i {
    // SAFETY: the caller guarantees 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(p.cast()) }
}

/// 32 bytes at `p`.
///
/// # Safety
/// `p` must point to 32 readable bytes (no alignment needed).
#[inline]
#[target_feature(enable = "avx")]
unsafe fn load256<T>(p: *const T) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// Bytes beyond the start of the next row tile where prefetching starts (measured on Zen 4:
/// 1–4 KB are equivalent; without any software prefetch the kernels stream at ~7 GB/s, a third
/// of the rate with it).
const PREFETCH_EXTRA: usize = 2048;

/// Software prefetch of the next row tile, one cache line per row and group, in address order.
///
/// The rows of a tile are read side by side (4 streams `row_bytes` apart, crossing 4 KB pages
/// at different times), which the hardware prefetchers follow poorly; prefetching the next tile
/// sequentially while this one is computed keeps 1–2 tiles (~5 KB each for 2560 columns) ahead.
struct Prefetcher<'a> {
    codes: &'a [u8],
    base: usize,
}

impl<'a> Prefetcher<'a> {
    fn new(codes: &'a [u8], next_tile: usize) -> Self {
        Prefetcher {
            codes,
            base: next_tile + PREFETCH_EXTRA,
        }
    }

    #[inline(always)]
    fn line(&self, off: usize) {
        let off = self.base + off;
        if off < self.codes.len() {
            // SAFETY: `off` is inside `codes`; a prefetch is only a hint and never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(self.codes.as_ptr().add(off).cast()) }
        }
    }
}

/// Canonical tail of the reduction from `a[i] = acc[i] + acc[i+8]` (8 lanes):
/// `b[i] = a[i] + a[i+4]`, `c[i] = b[i] + b[i+2]`, `c[0] + c[1]`.
#[inline]
#[target_feature(enable = "avx")]
fn reduce8(a: __m256) -> f32 {
    let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    // movehl(b, b) = [b2, b3, b2, b3].
    let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    // Lane 0: c0 + c1.
    _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps::<0b01>(c, c)))
}

/// Canonical reduction of 16 lane accumulators (no `_mm512_reduce_add_ps`: its order is not
/// ours).
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(v: __m512) -> f32 {
    // 128-bit lanes [2, 3, 2, 3]: element i < 8 becomes v[i + 8].
    let hi = _mm512_shuffle_f32x4::<0b11_10_11_10>(v, v);
    reduce8(_mm512_castps512_ps256(_mm512_add_ps(v, hi)))
}

/// Writes a tile result into `out` (output rows `row0..row0 + R`, tokens `t..t + N`).
fn store<const R: usize, const N: usize>(
    tile: [[f32; N]; R],
    out: &mut [f32],
    row0: usize,
    t: usize,
    n_tok: usize,
) {
    for (i, vals) in tile.iter().enumerate() {
        let base = (row0 + i) * n_tok + t;
        out[base..base + N].copy_from_slice(vals);
    }
}

/// Activation and correction rows of tokens `t..t+N`.
fn token_views<'a, const N: usize>(
    x: &'a [i8],
    corr: &'a [i32],
    k_pad: usize,
    t: usize,
) -> ([&'a [i8]; N], [&'a [i32]; N]) {
    let cpt = k_pad / GROUP * LANES;
    (
        std::array::from_fn(|j| &x[(t + j) * k_pad..(t + j + 1) * k_pad]),
        std::array::from_fn(|j| &corr[(t + j) * cpt..(t + j + 1) * cpt]),
    )
}

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI: per group and row, one 64-byte code load, two nibble planes, two `vpdpbusd`
// per token (codes unsigned, activations signed) started from the correction vector.

/// `R` consecutive rows from `r0` × `N` tokens.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn tile_avx512<const R: usize, const N: usize>(
    m: &Int4Matrix,
    r0: usize,
    xs: [&[i8]; N],
    cs: [&[i32]; N],
) -> [[f32; N]; R] {
    let groups = m.groups();
    let rb = m.row_bytes();
    // Checked once here; every load below stays inside these slices.
    let codes = &m.codes()[r0 * rb..(r0 + R) * rb];
    let scales = &m.scales()[r0 * groups..(r0 + R) * groups];
    for t in 0..N {
        assert!(xs[t].len() == groups * GROUP && cs[t].len() == groups * LANES);
    }
    let pf = Prefetcher::new(m.codes(), (r0 + R) * rb);
    let mask = _mm512_set1_epi8(0x0F);
    let mut acc = [[_mm512_setzero_ps(); N]; R];
    for g in 0..groups {
        // SAFETY (all loads of this iteration): g < groups, each token holds groups * 128
        // activations and groups * 16 corrections, each row of `codes` groups * 64 bytes.
        let xl: [__m512i; N] =
            std::array::from_fn(|t| unsafe { load512(xs[t].as_ptr().add(g * GROUP)) });
        let xh: [__m512i; N] = std::array::from_fn(|t| unsafe {
            load512(xs[t].as_ptr().add(g * GROUP + GROUP_BYTES))
        });
        let c: [__m512i; N] =
            std::array::from_fn(|t| unsafe { load512(cs[t].as_ptr().add(g * LANES)) });
        for (i, acc_i) in acc.iter_mut().enumerate() {
            pf.line((g * R + i) * GROUP_BYTES);
            // SAFETY: as above (row i < R, group g < groups).
            let v = unsafe { load512(codes.as_ptr().add(i * rb + g * GROUP_BYTES)) };
            let lo = _mm512_and_si512(v, mask);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask);
            let s = _mm512_set1_ps(scales[i * groups + g]);
            for (t, a) in acc_i.iter_mut().enumerate() {
                let d = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(c[t], lo, xl[t]), hi, xh[t]);
                *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s, *a);
            }
        }
    }
    std::array::from_fn(|i| std::array::from_fn(|t| reduce16(acc[i][t])))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn gemm_avx512_impl(
    m: &Int4Matrix,
    rows: Range<usize>,
    x: &[i8],
    corr: &[i32],
    n_tok: usize,
    out: &mut [f32],
) {
    let k_pad = m.k_pad();
    let mut r = rows.start;
    while r < rows.end {
        let tile_rows = if rows.end - r >= ROW_TILE {
            ROW_TILE
        } else {
            1
        };
        let row0 = r - rows.start;
        let mut t = 0;
        while t < n_tok {
            let n = (n_tok - t).min(4);
            macro_rules! run {
                ($r:literal, $n:literal) => {{
                    let (xs, cs) = token_views::<$n>(x, corr, k_pad, t);
                    store(tile_avx512::<$r, $n>(m, r, xs, cs), out, row0, t, n_tok);
                }};
            }
            match (tile_rows, n) {
                (ROW_TILE, 1) => run!(4, 1),
                (ROW_TILE, 2) => run!(4, 2),
                (ROW_TILE, 3) => run!(4, 3),
                (ROW_TILE, _) => run!(4, 4),
                (_, 1) => run!(1, 1),
                (_, 2) => run!(1, 2),
                (_, 3) => run!(1, 3),
                _ => run!(1, 4),
            }
            t += n;
        }
        r += tile_rows;
    }
}

/// See [`crate::int4::int4_gemm`]; shapes are checked by the caller.
pub(crate) fn int4_gemm_avx512(
    m: &Int4Matrix,
    rows: Range<usize>,
    x: &[i8],
    corr: &[i32],
    n_tok: usize,
    out: &mut [f32],
) {
    assert!(
        has_avx512_vnni(),
        "AVX-512 VNNI kernel called on a CPU without it"
    );
    // SAFETY: the CPU supports avx512f, avx512bw and avx512vnni (checked above).
    unsafe { gemm_avx512_impl(m, rows, x, corr, n_tok, out) }
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA: two 32-byte halves per group (lanes 0-7 and 8-15); `vpmaddubsw` (codes u8 ×
// activations i8; |pair| ≤ 2·15·128, and the sum of both planes ≤ 7680: no saturation), then
// `vpmaddwd` with ones into i32 lanes of 4 bytes, plus the correction.

#[inline]
#[target_feature(enable = "avx2,fma")]
fn tile_avx2<const R: usize, const N: usize>(
    m: &Int4Matrix,
    r0: usize,
    xs: [&[i8]; N],
    cs: [&[i32]; N],
) -> [[f32; N]; R] {
    let groups = m.groups();
    let rb = m.row_bytes();
    // Checked once here; every load below stays inside these slices.
    let codes = &m.codes()[r0 * rb..(r0 + R) * rb];
    let scales = &m.scales()[r0 * groups..(r0 + R) * groups];
    for t in 0..N {
        assert!(xs[t].len() == groups * GROUP && cs[t].len() == groups * LANES);
    }
    let pf = Prefetcher::new(m.codes(), (r0 + R) * rb);
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    // acc[h][i][t]: lanes 8h..8h+8 of row i, token t.
    let mut acc = [[[_mm256_setzero_ps(); N]; R]; 2];
    for g in 0..groups {
        for (h, acc_h) in acc.iter_mut().enumerate() {
            // SAFETY (all loads of this iteration): g < groups and h < 2, each token holds
            // groups * 128 activations and groups * 16 corrections, each row of `codes`
            // groups * 64 bytes.
            let xl: [__m256i; N] =
                std::array::from_fn(|t| unsafe { load256(xs[t].as_ptr().add(g * GROUP + h * 32)) });
            let xh: [__m256i; N] = std::array::from_fn(|t| unsafe {
                load256(xs[t].as_ptr().add(g * GROUP + GROUP_BYTES + h * 32))
            });
            let c: [__m256i; N] =
                std::array::from_fn(|t| unsafe { load256(cs[t].as_ptr().add(g * LANES + h * 8)) });
            for (i, acc_i) in acc_h.iter_mut().enumerate() {
                if h == 0 {
                    pf.line((g * R + i) * GROUP_BYTES);
                }
                // SAFETY: as above (row i < R).
                let v = unsafe { load256(codes.as_ptr().add(i * rb + g * GROUP_BYTES + h * 32)) };
                let lo = _mm256_and_si256(v, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
                let s = _mm256_set1_ps(scales[i * groups + g]);
                for (t, a) in acc_i.iter_mut().enumerate() {
                    let p = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo, xl[t]),
                        _mm256_maddubs_epi16(hi, xh[t]),
                    );
                    let d = _mm256_add_epi32(_mm256_madd_epi16(p, ones), c[t]);
                    *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), s, *a);
                }
            }
        }
    }
    std::array::from_fn(|i| {
        std::array::from_fn(|t| reduce8(_mm256_add_ps(acc[0][i][t], acc[1][i][t])))
    })
}

#[target_feature(enable = "avx2,fma")]
fn gemm_avx2_impl(
    m: &Int4Matrix,
    rows: Range<usize>,
    x: &[i8],
    corr: &[i32],
    n_tok: usize,
    out: &mut [f32],
) {
    let k_pad = m.k_pad();
    let mut r = rows.start;
    while r < rows.end {
        // 16 ymm registers: 4 rows for one token (8 accumulators), else one row × ≤ 4 tokens.
        let tile_rows = if n_tok == 1 && rows.end - r >= ROW_TILE {
            ROW_TILE
        } else {
            1
        };
        let row0 = r - rows.start;
        let mut t = 0;
        while t < n_tok {
            let n = (n_tok - t).min(4);
            macro_rules! run {
                ($r:literal, $n:literal) => {{
                    let (xs, cs) = token_views::<$n>(x, corr, k_pad, t);
                    store(tile_avx2::<$r, $n>(m, r, xs, cs), out, row0, t, n_tok);
                }};
            }
            match (tile_rows, n) {
                (ROW_TILE, _) => run!(4, 1),
                (_, 1) => run!(1, 1),
                (_, 2) => run!(1, 2),
                (_, 3) => run!(1, 3),
                _ => run!(1, 4),
            }
            t += n;
        }
        r += tile_rows;
    }
}

/// See [`crate::int4::int4_gemm`]; shapes are checked by the caller.
pub(crate) fn int4_gemm_avx2(
    m: &Int4Matrix,
    rows: Range<usize>,
    x: &[i8],
    corr: &[i32],
    n_tok: usize,
    out: &mut [f32],
) {
    assert!(
        has_avx2_fma(),
        "AVX2 kernel called on a CPU without AVX2 and FMA"
    );
    // SAFETY: the CPU supports avx2 and fma (checked above).
    unsafe { gemm_avx2_impl(m, rows, x, corr, n_tok, out) }
}
