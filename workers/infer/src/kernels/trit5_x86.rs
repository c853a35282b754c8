//! 5-trit ternary GEMM on AVX-512 (BW + VNNI + VBMI); layout in `trit5.rs`.
//!
//! Decoding 64 packed bytes: two subtract-and-min steps take `81·u4` off each byte, leaving
//! the low four digits as an index `rem < 81`; four `vpermi2b` look the digits up.
//!
//! * **One token** (decode): per block and row, the four looked-up digits and `81·u4 = v − rem`
//!   (one subtract) go to `vpdpbusd`; the top digit's register holds 81 times its sum and is
//!   divided out exactly once per row. 14 vector operations per 320 weights, against 11 per
//!   256 for the 2-bit kernel.
//! * **Several tokens** (prefill): each row group is decoded once into digit planes (one byte
//!   per weight, in L1/L2), then every tile of up to four tokens is loads and `vpdpbusd`
//!   only, instead of decoding again per tile.
//!
//! Measured on Zen 4: one `vpermi2b` costs about as much as one `vpdpbusd` (they share
//! ports). Variants tried and dropped: one permute into 2-bit fields masked in place with one
//! accumulator per field (more operations in total, slower), compares into masks for the top
//! digit in the one-token path (two more operations per block).
//!
//! `unsafe` is for vector loads and stores inside bounds asserted once per tile, and for
//! calling `#[target_feature]` functions after run-time detection. Reductions are written as
//! plain loops rather than generic helpers such as `array::map`: a generic function is not
//! compiled with the caller's `target_feature`, and a reduction built without AVX-512 cost a
//! third of the prefill time.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::trit5::{digit_table, BLOCK5};
use super::BLOCK_BYTES;

/// Whether this CPU runs the kernel (AVX-512 F/BW/VNNI and VBMI).
pub(super) fn available() -> bool {
    super::x86::has_avx512_vnni() && is_x86_feature_detected!("avx512vbmi")
}

/// Bytes ahead of the current block that the one-token kernel prefetches (2–8 KB measured
/// within noise on the 256 MB streaming benchmark).
const PREFETCH_AHEAD: usize = 4096;

#[inline]
#[target_feature(enable = "avx512f")]
fn load512(s: &[u8]) -> __m512i {
    let s = &s[..64];
    // SAFETY: `s` is exactly 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
}

/// The `vpermi2b` tables of digits 0..3: `[p][0]` covers indices 0..63, `[p][1]` 64..127.
#[inline]
#[target_feature(enable = "avx512f")]
fn tables() -> [[__m512i; 2]; 4] {
    const T: [[u8; 128]; 4] = [
        digit_table(0),
        digit_table(1),
        digit_table(2),
        digit_table(3),
    ];
    let mut out = [[_mm512_setzero_si512(); 2]; 4];
    for (o, t) in out.iter_mut().zip(&T) {
        *o = [load512(&t[..64]), load512(&t[64..])];
    }
    out
}

/// Multiplicative inverse of 81 modulo 2^32: `v · INV81 = v / 81` (wrapping) for every exact
/// multiple `v` of 81 in the i32 range.
const INV81: i32 = 0x781948b1u32 as i32;

/// Index of digits 0..3 and top digit of 64 packed bytes: `(rem, r1)` where `rem = v − 81·u4`
/// (two wrap-and-min steps: `v − 81` wraps above `v` when `v < 81`) and `r1` is `v` after the
/// first step (so `u4 = [v ≠ r1] + [r1 ≠ rem]`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn split(v: __m512i, c81: __m512i) -> (__m512i, __m512i) {
    let r1 = _mm512_min_epu8(v, _mm512_sub_epi8(v, c81));
    (_mm512_min_epu8(r1, _mm512_sub_epi8(r1, c81)), r1)
}

/// `R` rows (one row group) × one token. Per block and row: the index of digits 0..3, four
/// `vpermi2b`, and the top digit accumulated as `81·u4 = v − rem` (one subtract) into its own
/// register, divided out at the end. `w` starts at the group.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
fn tile1<const R: usize>(w: &[u8], blocks: usize, x: &[i8]) -> [i32; R] {
    // Every load below stays inside these bounds (checked once, not per load).
    assert!(
        w.len() >= blocks * R * BLOCK_BYTES,
        "weights shorter than the tile"
    );
    assert!(
        x.len() >= blocks * BLOCK5,
        "activations shorter than the tile"
    );
    let tab = tables();
    let c81 = _mm512_set1_epi8(81);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    // Two accumulators per row for digits 0..3 (shorter `vpdpbusd` chains), one for 81·u4.
    let mut acc = [[_mm512_setzero_si512(); 3]; R];
    for b in 0..blocks {
        let base = b * R * BLOCK_BYTES;
        for i in 0..R {
            // A prefetch is only a hint and never faults, even past the end of `w`.
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(base + PREFETCH_AHEAD + i * 64).cast());
        }
        // SAFETY: `b·320 + p·64 + 64 ≤ blocks·320 ≤ x.len()` (asserted above).
        let a: [__m512i; 5] = std::array::from_fn(|p| unsafe {
            _mm512_loadu_si512(xp.add(b * BLOCK5 + p * 64).cast())
        });
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `base + r·64 + 64 ≤ blocks·R·64 ≤ w.len()` (asserted above).
            let v = unsafe { _mm512_loadu_si512(wp.add(base + r * BLOCK_BYTES).cast()) };
            let (rem, _) = split(v, c81);
            for (p, t) in tab.iter().enumerate() {
                let u = _mm512_permutex2var_epi8(t[0], rem, t[1]);
                acc[p % 2] = _mm512_dpbusd_epi32(acc[p % 2], u, a[p]);
            }
            acc[2] = _mm512_dpbusd_epi32(acc[2], _mm512_sub_epi8(v, rem), a[4]);
        }
    }
    let inv81 = _mm512_set1_epi32(INV81);
    // Plain loops, not `array::map`: that generic function is not compiled with this
    // function's `target_feature`, and the reduction built without AVX-512 costs more than
    // the blocks of a short row.
    let mut out = [0i32; R];
    for (o, [a0, a1, a81]) in out.iter_mut().zip(acc) {
        // Each lane of a81 is 81·S (S = that lane's top-digit sum) modulo 2^32, since vpdpbusd
        // adds with wrap-around; 81 is odd, so multiplying by its inverse gives S modulo 2^32,
        // which is S itself because S is a partial sum of the row's exact i32 dot product.
        let s = _mm512_add_epi32(a0, a1);
        *o = _mm512_reduce_add_epi32(_mm512_add_epi32(s, _mm512_mullo_epi32(a81, inv81)));
    }
    out
}

/// Decodes `R` rows × `blocks` blocks of a row group into digit planes: `planes[((b·R + r)·5 +
/// p)·64 + j]` = digit `p` of byte `j` of block `b` of row `r` (one byte per weight, the
/// operand `vpdpbusd` takes).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
fn decode_planes<const R: usize>(w: &[u8], blocks: usize, planes: &mut [u8]) {
    assert!(
        w.len() >= blocks * R * BLOCK_BYTES,
        "weights shorter than the tile"
    );
    assert!(
        planes.len() >= blocks * R * BLOCK5,
        "plane buffer shorter than the tile"
    );
    let tab = tables();
    let c81 = _mm512_set1_epi8(81);
    let one = _mm512_set1_epi8(1);
    let (wp, pp) = (w.as_ptr(), planes.as_mut_ptr());
    for i in 0..blocks * R {
        // SAFETY: `i·64 + 64 ≤ blocks·R·64 ≤ w.len()` and `i·320 + 320 ≤ planes.len()`
        // (asserted above).
        unsafe {
            let v = _mm512_loadu_si512(wp.add(i * BLOCK_BYTES).cast());
            let (rem, r1) = split(v, c81);
            for (p, t) in tab.iter().enumerate() {
                let u = _mm512_permutex2var_epi8(t[0], rem, t[1]);
                _mm512_storeu_si512(pp.add(i * BLOCK5 + p * 64).cast(), u);
            }
            let k1 = _mm512_cmpneq_epu8_mask(v, r1);
            let k2 = _mm512_cmpneq_epu8_mask(r1, rem);
            let top = _mm512_mask_add_epi8(_mm512_maskz_mov_epi8(k1, one), k2, one, one);
            _mm512_storeu_si512(pp.add(i * BLOCK5 + 4 * 64).cast(), top);
        }
    }
}

/// `R` rows × `N` tokens on decoded digit planes ([`decode_planes`]): loads and `vpdpbusd`
/// only.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn tile_planes<const R: usize, const N: usize>(
    planes: &[u8],
    blocks: usize,
    xs: [&[i8]; N],
) -> [[i32; N]; R] {
    assert!(
        planes.len() >= blocks * R * BLOCK5,
        "plane buffer shorter than the tile"
    );
    assert!(
        xs.iter().all(|x| x.len() >= blocks * BLOCK5),
        "activations shorter than the tile"
    );
    let pp = planes.as_ptr();
    let xp: [*const i8; N] = std::array::from_fn(|t| xs[t].as_ptr());
    let mut acc = [[_mm512_setzero_si512(); N]; R];
    for b in 0..blocks {
        for p in 0..5 {
            // SAFETY: offsets below `blocks·320` (activations) and `blocks·R·320` (planes),
            // asserted above.
            let a: [__m512i; N] = std::array::from_fn(|t| unsafe {
                _mm512_loadu_si512(xp[t].add(b * BLOCK5 + p * 64).cast())
            });
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: `(b·R + r)·320 + p·64 + 64 ≤ blocks·R·320 ≤ planes.len()` (asserted).
                let u = unsafe { _mm512_loadu_si512(pp.add((b * R + r) * BLOCK5 + p * 64).cast()) };
                for t in 0..N {
                    acc[t] = _mm512_dpbusd_epi32(acc[t], u, a[t]);
                }
            }
        }
    }
    // Plain loops, not closures (see `tile1`).
    let mut out = [[0i32; N]; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (o, v) in o.iter_mut().zip(a) {
            *o = _mm512_reduce_add_epi32(*v);
        }
    }
    out
}

/// One `R`-row group (rows `r0..r0 + R` of `n_rows`) over all tokens; results go to
/// `out[t * n_rows + r]`. Several tokens: the group is decoded once into `planes`, then run in
/// token tiles of up to 4.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
fn rows<const R: usize>(
    w: &[u8],
    x: &[i8],
    k_pad: usize,
    n_tok: usize,
    (r0, n_rows): (usize, usize),
    planes: &mut Vec<u8>,
    out: &mut [i32],
) {
    let blocks = k_pad / BLOCK5;
    if n_tok == 1 {
        let o = tile1::<R>(w, blocks, x);
        out[r0..r0 + R].copy_from_slice(&o);
        return;
    }
    planes.resize(blocks * R * BLOCK5, 0);
    decode_planes::<R>(w, blocks, planes);
    let xt = |t: usize| &x[t * k_pad..(t + 1) * k_pad];
    let mut t = 0;
    while t < n_tok {
        let n = (n_tok - t).min(4);
        let mut vals = [[0i32; 4]; R];
        match n {
            1 => {
                let o = tile_planes::<R, 1>(planes, blocks, [xt(t)]);
                (0..R).for_each(|r| vals[r][0] = o[r][0]);
            }
            2 => {
                let o = tile_planes::<R, 2>(planes, blocks, [xt(t), xt(t + 1)]);
                (0..R).for_each(|r| vals[r][..2].copy_from_slice(&o[r]));
            }
            3 => {
                let o = tile_planes::<R, 3>(planes, blocks, [xt(t), xt(t + 1), xt(t + 2)]);
                (0..R).for_each(|r| vals[r][..3].copy_from_slice(&o[r]));
            }
            _ => {
                let xs = [xt(t), xt(t + 1), xt(t + 2), xt(t + 3)];
                let o = tile_planes::<R, 4>(planes, blocks, xs);
                (0..R).for_each(|r| vals[r] = o[r]);
            }
        }
        for j in 0..n {
            let o = &mut out[(t + j) * n_rows + r0..(t + j) * n_rows + r0 + R];
            for (slot, v) in o.iter_mut().zip(&vals) {
                *slot = v[j];
            }
        }
        t += n;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
fn gemm_impl(w: &[u8], n_rows: usize, k_pad: usize, x: &[i8], n_tok: usize, out: &mut [i32]) {
    let rb = k_pad / 5;
    let mut planes = Vec::new();
    let mut r = 0;
    while r < n_rows {
        let gr = (n_rows - r).min(super::ROW_GROUP);
        // The group and everything after it (for prefetching across the group boundary).
        let g = &w[r * rb..];
        let (at, pl) = ((r, n_rows), &mut planes);
        match gr {
            4 => rows::<4>(g, x, k_pad, n_tok, at, pl, out),
            3 => rows::<3>(g, x, k_pad, n_tok, at, pl, out),
            2 => rows::<2>(g, x, k_pad, n_tok, at, pl, out),
            _ => rows::<1>(g, x, k_pad, n_tok, at, pl, out),
        }
        r += gr;
    }
}

/// 5-trit GEMM (shapes checked by the caller, `super::ternary_gemm`).
pub(super) fn gemm(w: &[u8], n_rows: usize, k_pad: usize, x: &[i8], n_tok: usize, out: &mut [i32]) {
    assert!(
        available(),
        "AVX-512 VBMI kernel called on a CPU without it"
    );
    // SAFETY: the CPU supports every feature the kernel enables (checked above).
    unsafe { gemm_impl(w, n_rows, k_pad, x, n_tok, out) }
}
