//! x86-64 SIMD kernels (AVX2; AVX-512 BW + VNNI). `unsafe` here is for unaligned vector loads
//! from slices whose length was checked just before, prefetch hints, and calling
//! `#[target_feature]` functions after run-time detection.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::{BLOCK, BLOCK_BYTES, I8_BLOCK};

pub(super) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}

pub(super) fn has_avx512_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// 64 bytes from the start of `s` (panics if shorter, so the load never leaves the slice).
#[inline]
#[target_feature(enable = "avx512f")]
fn load512(s: &[u8]) -> __m512i {
    let s = &s[..64];
    // SAFETY: `s` is exactly 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load512_i8(s: &[i8]) -> __m512i {
    let s = &s[..64];
    // SAFETY: as in `load512`.
    unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load256(s: &[u8]) -> __m256i {
    let s = &s[..32];
    // SAFETY: `s` is exactly 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load256_i8(s: &[i8]) -> __m256i {
    let s = &s[..32];
    // SAFETY: as in `load256`.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn hsum256(v: __m256i) -> i32 {
    let lo = _mm256_castsi256_si128(v);
    let hi = _mm256_extracti128_si256::<1>(v);
    let s = _mm_add_epi32(lo, hi);
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

// ---------------------------------------------------------------------------------------------
// Ternary, AVX-512 VNNI: one 64-byte code load per block, four shifts, four `vpdpbusd` per token.

/// Runs `$rows::<gr>(group, x, k_pad, n_tok, (r0, n_rows), out)` on every row group of a
/// tiled ternary matrix (`gr` = 4, or fewer in the last group). The group slice runs to the end
/// of `w`, so prefetching crosses group boundaries. (A macro, so each kernel keeps its own
/// `target_feature` context.)
macro_rules! each_row_group {
    ($rows:ident, $w:expr, $n_rows:expr, $k_pad:expr, $x:expr, $n_tok:expr, $out:expr) => {{
        let (n_rows, k_pad) = ($n_rows, $k_pad);
        let rb = k_pad / 4;
        let mut r = 0;
        while r < n_rows {
            let gr = (n_rows - r).min(super::ROW_GROUP);
            let (g, at) = (&$w[r * rb..], (r, n_rows));
            match gr {
                4 => $rows::<4>(g, $x, k_pad, $n_tok, at, $out),
                3 => $rows::<3>(g, $x, k_pad, $n_tok, at, $out),
                2 => $rows::<2>(g, $x, k_pad, $n_tok, at, $out),
                _ => $rows::<1>(g, $x, k_pad, $n_tok, at, $out),
            }
            r += gr;
        }
    }};
}

/// Bytes ahead of the current block that the kernels prefetch (a few KB: enough to cover DRAM
/// latency at full bandwidth, small enough to stay in L1/L2).
const PREFETCH_AHEAD: usize = 2048;

#[inline(always)]
fn prefetch<T>(s: &[T], off: usize) {
    if off < s.len() {
        // SAFETY: `off` is inside `s`; a prefetch is only a hint and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(s.as_ptr().add(off).cast()) }
    }
}

/// Prefetches the cache line at `off` of `s` into L2 (no-op past the end).
pub(super) fn prefetch_l2(s: &[u8], off: usize) {
    if off < s.len() {
        // SAFETY: `off` is inside `s`; a prefetch is only a hint and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(s.as_ptr().add(off).cast()) }
    }
}

/// Prefetches every cache line of `s` into L1.
pub(super) fn prefetch_all<T>(s: &[T]) {
    let bytes = std::mem::size_of_val(s);
    let p = s.as_ptr().cast::<u8>();
    for off in (0..bytes).step_by(64) {
        // SAFETY: `off` is inside `s`; a prefetch is only a hint and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off).cast()) }
    }
}

/// `R` rows (one row group) × `N` tokens; `A` accumulators per (row, token) to break `vpdpbusd`
/// latency chains. `w` starts at the group; its rows are interleaved per block (module docs).
/// Per block: one 64-byte code load per row, one activation load per (shift, token), shared.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn ternary_tile_avx512<const R: usize, const N: usize, const A: usize>(
    w: &[u8],
    blocks: usize,
    xs: [&[i8]; N],
) -> [[i32; N]; R] {
    let mask = _mm512_set1_epi8(3);
    let mut acc = [[[_mm512_setzero_si512(); A]; N]; R];
    for b in 0..blocks {
        let base = b * R * BLOCK_BYTES;
        for i in 0..R {
            prefetch(w, base + PREFETCH_AHEAD + i * 64);
        }
        let v: [__m512i; R] = std::array::from_fn(|r| load512(&w[base + r * BLOCK_BYTES..]));
        // The shift loop is unrolled by hand so the accumulator index is a constant (a dynamic
        // index would force the accumulators out of registers).
        macro_rules! shift {
            ($m:literal, $imm:literal) => {{
                let a: [__m512i; N] =
                    std::array::from_fn(|t| load512_i8(&xs[t][b * BLOCK + $m * 64..]));
                for r in 0..R {
                    let c = _mm512_and_si512(_mm512_srli_epi16::<$imm>(v[r]), mask);
                    for t in 0..N {
                        acc[r][t][$m % A] = _mm512_dpbusd_epi32(acc[r][t][$m % A], c, a[t]);
                    }
                }
            }};
        }
        shift!(0, 0);
        shift!(1, 2);
        shift!(2, 4);
        shift!(3, 6);
    }
    let mut out = [[0i32; N]; R];
    for r in 0..R {
        for t in 0..N {
            let mut s = acc[r][t][0];
            for a in &acc[r][t][1..] {
                s = _mm512_add_epi32(s, *a);
            }
            out[r][t] = _mm512_reduce_add_epi32(s);
        }
    }
    out
}

/// Runs one `R`-row group (rows `r0..r0 + R` of `n_rows`) over all tokens, in token tiles of 4
/// (remainder 1–3); results go to `out[t * n_rows + r]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn ternary_rows_avx512<const R: usize>(
    w: &[u8],
    x: &[i8],
    k_pad: usize,
    n_tok: usize,
    (r0, n_rows): (usize, usize),
    out: &mut [i32],
) {
    let blocks = k_pad / BLOCK;
    let xt = |t: usize| &x[t * k_pad..(t + 1) * k_pad];
    let mut t = 0;
    while t < n_tok {
        let n = (n_tok - t).min(4);
        let mut vals = [[0i32; 4]; R];
        match n {
            1 => {
                let o = ternary_tile_avx512::<R, 1, 2>(w, blocks, [xt(t)]);
                (0..R).for_each(|r| vals[r][0] = o[r][0]);
            }
            2 => {
                let o = ternary_tile_avx512::<R, 2, 1>(w, blocks, [xt(t), xt(t + 1)]);
                (0..R).for_each(|r| vals[r][..2].copy_from_slice(&o[r]));
            }
            3 => {
                let o = ternary_tile_avx512::<R, 3, 1>(w, blocks, [xt(t), xt(t + 1), xt(t + 2)]);
                (0..R).for_each(|r| vals[r][..3].copy_from_slice(&o[r]));
            }
            _ => {
                let o = ternary_tile_avx512::<R, 4, 1>(
                    w,
                    blocks,
                    [xt(t), xt(t + 1), xt(t + 2), xt(t + 3)],
                );
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

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn ternary_gemm_avx512_impl(
    w: &[u8],
    n_rows: usize,
    k_pad: usize,
    x: &[i8],
    n_tok: usize,
    out: &mut [i32],
) {
    each_row_group!(ternary_rows_avx512, w, n_rows, k_pad, x, n_tok, out);
}

pub(super) fn ternary_gemm_avx512(
    w: &[u8],
    n_rows: usize,
    k_pad: usize,
    x: &[i8],
    n_tok: usize,
    out: &mut [i32],
) {
    assert!(
        has_avx512_vnni(),
        "AVX-512 VNNI kernel called on a CPU without it"
    );
    // SAFETY: the CPU supports avx512f, avx512bw and avx512vnni (checked above).
    unsafe { ternary_gemm_avx512_impl(w, n_rows, k_pad, x, n_tok, out) }
}

// ---------------------------------------------------------------------------------------------
// Ternary, AVX2: `vpmaddubsw` (codes u8 × activations i8) into i16, widened once per block.
// Same walk as the AVX-512 kernel: one row group at a time, its interleaved blocks read strictly
// in address order with a software prefetch ahead, each activation load shared by the group's
// rows.

/// `R` rows × `N` tokens over `blocks` blocks of a group of `gr` rows (`w` starts at the
/// group's first block of the tile's first row; block `b` of tile row `r` is at
/// `(b·gr + r)·64`). Per block and 32-byte half: one code load per row, one activation load per
/// (shift, token). Prefetches ahead when the tile is the whole group (`R == gr`).
#[inline]
#[target_feature(enable = "avx2")]
fn ternary_tile_avx2<const R: usize, const N: usize>(
    w: &[u8],
    gr: usize,
    blocks: usize,
    xs: [&[i8]; N],
) -> [[i32; N]; R] {
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); N]; R];
    for b in 0..blocks {
        let base = b * gr * BLOCK_BYTES;
        if R == gr {
            for i in 0..R {
                prefetch(w, base + PREFETCH_AHEAD + i * 64);
            }
        }
        // This block of the tile's rows and tokens (checked here, so the loads below need no
        // further bounds checks).
        let blk = &w[base..base + R * BLOCK_BYTES];
        let mut xb = [&[][..]; N];
        for (t, xt) in xb.iter_mut().enumerate() {
            *xt = &xs[t][b * BLOCK..(b + 1) * BLOCK];
        }
        let mut sum16 = [[_mm256_setzero_si256(); N]; R];
        for h in 0..2 {
            let mut v = [_mm256_setzero_si256(); R];
            for (r, vr) in v.iter_mut().enumerate() {
                *vr = load256(&blk[r * BLOCK_BYTES + h * 32..]);
            }
            // Unrolled by hand so the shift is a constant.
            macro_rules! shift {
                ($m:literal, $imm:literal) => {{
                    let mut c = [_mm256_setzero_si256(); R];
                    for (cr, vr) in c.iter_mut().zip(&v) {
                        *cr = _mm256_and_si256(_mm256_srli_epi16::<$imm>(*vr), mask);
                    }
                    for t in 0..N {
                        let a = load256_i8(&xb[t][$m * 64 + h * 32..]);
                        for r in 0..R {
                            // |pair| ≤ 2·2·128: the i16 sum of 8 such terms per block cannot
                            // saturate.
                            sum16[r][t] =
                                _mm256_add_epi16(sum16[r][t], _mm256_maddubs_epi16(c[r], a));
                        }
                    }
                }};
            }
            shift!(0, 0);
            shift!(1, 2);
            shift!(2, 4);
            shift!(3, 6);
        }
        for r in 0..R {
            for t in 0..N {
                acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(sum16[r][t], ones));
            }
        }
    }
    let mut out = [[0i32; N]; R];
    for r in 0..R {
        for t in 0..N {
            out[r][t] = hsum256(acc[r][t]);
        }
    }
    out
}

/// Runs one `R`-row group (rows `r0..r0 + R` of `n_rows`) over all tokens; results go to
/// `out[t * n_rows + r]`. One token: the whole group in one pass (memory-bound, so the group is
/// streamed once in address order). Several: [`PROMPT_ROWS`] rows × 4 tokens per tile
/// (compute-bound).
#[inline]
#[target_feature(enable = "avx2")]
fn ternary_rows_avx2<const R: usize>(
    w: &[u8],
    x: &[i8],
    k_pad: usize,
    n_tok: usize,
    (r0, n_rows): (usize, usize),
    out: &mut [i32],
) {
    let blocks = k_pad / BLOCK;
    let xt = |t: usize| &x[t * k_pad..(t + 1) * k_pad];
    if n_tok == 1 {
        let o = ternary_tile_avx2::<R, 1>(w, R, blocks, [xt(0)]);
        for (slot, v) in out[r0..r0 + R].iter_mut().zip(o) {
            *slot = v[0];
        }
        return;
    }
    // Rows `i..i + RT` of the group × 4 tokens per tile (remainders: fewer tokens).
    macro_rules! sub {
        ($rt:tt, $i:expr) => {{
            let wi = &w[$i * BLOCK_BYTES..];
            let mut t = 0;
            while t < n_tok {
                let n = (n_tok - t).min(4);
                let mut vals = [[0i32; 4]; $rt];
                match n {
                    1 => {
                        let o = ternary_tile_avx2::<$rt, 1>(wi, R, blocks, [xt(t)]);
                        (0..$rt).for_each(|r| vals[r][0] = o[r][0]);
                    }
                    2 => {
                        let o = ternary_tile_avx2::<$rt, 2>(wi, R, blocks, [xt(t), xt(t + 1)]);
                        (0..$rt).for_each(|r| vals[r][..2].copy_from_slice(&o[r]));
                    }
                    3 => {
                        let o = ternary_tile_avx2::<$rt, 3>(
                            wi,
                            R,
                            blocks,
                            [xt(t), xt(t + 1), xt(t + 2)],
                        );
                        (0..$rt).for_each(|r| vals[r][..3].copy_from_slice(&o[r]));
                    }
                    _ => {
                        vals = ternary_tile_avx2::<$rt, 4>(
                            wi,
                            R,
                            blocks,
                            [xt(t), xt(t + 1), xt(t + 2), xt(t + 3)],
                        );
                    }
                }
                for (r, row) in vals.iter().enumerate() {
                    for (j, v) in row[..n].iter().enumerate() {
                        out[(t + j) * n_rows + r0 + $i + r] = *v;
                    }
                }
                t += n;
            }
        }};
    }
    let mut i = 0;
    while i + PROMPT_ROWS <= R {
        sub!(PROMPT_ROWS, i);
        i += PROMPT_ROWS;
    }
    while i < R {
        sub!(1, i);
        i += 1;
    }
}

/// Rows per AVX2 prompt tile.
const PROMPT_ROWS: usize = 2;

#[target_feature(enable = "avx2")]
fn ternary_gemm_avx2_impl(
    w: &[u8],
    n_rows: usize,
    k_pad: usize,
    x: &[i8],
    n_tok: usize,
    out: &mut [i32],
) {
    each_row_group!(ternary_rows_avx2, w, n_rows, k_pad, x, n_tok, out);
}

pub(super) fn ternary_gemm_avx2(
    w: &[u8],
    n_rows: usize,
    k_pad: usize,
    x: &[i8],
    n_tok: usize,
    out: &mut [i32],
) {
    assert!(has_avx2(), "AVX2 kernel called on a CPU without it");
    // SAFETY: the CPU supports avx2 (checked above).
    unsafe { ternary_gemm_avx2_impl(w, n_rows, k_pad, x, n_tok, out) }
}

// ---------------------------------------------------------------------------------------------
// Int8 × int8 (LM head). Rows are contiguous (`k_pad` bytes each) and processed in tiles of
// [`I8_ROW_TILE`] rows (the last `n_rows % 4` rows one at a time). Per-call work on the
// activations (AVX-512: x ^ 0x80; AVX2 with several tokens: |x|) is done once, not once per row;
// bounds are checked once per tile and the inner loops use raw-pointer loads.
//
// Two tile shapes, by what limits them (measured on Zen 4, one thread, 32000 × 1536 and
// 128256 × 2560, with and without huge pages):
// * One token (decode, the common case) is bound by DRAM bandwidth. The rows of a tile are
//   read one after another, so the tile is a single sequential stream in 32-byte loads, which
//   the hardware prefetchers follow at full speed with no software prefetch. Interleaving the 4
//   rows (4 streams `k_pad` bytes apart) needs software prefetch to stream at all (half speed
//   without) and still streams ~10 % slower than one stream; 64-byte loads also stream ~10 %
//   slower than 32-byte ones here.
// * Two to four tokens are bound by compute, so the 4 rows are interleaved to share each
//   activation load, and the next tile is prefetched in address order ([`I8Prefetch`]).

/// Rows per int8 tile.
const I8_ROW_TILE: usize = 4;

/// Bytes beyond the start of the next row tile where the interleaved int8 tiles prefetch
/// (2–16 KB measured equivalent). The lines go to L2 (`T1`): into L1 (`T0`) the tiles stream
/// 10–30 % slower.
const I8_PREFETCH_AHEAD: usize = 4096;

/// Software prefetch of the next row tile into L2, one cache line at a time in address order.
#[derive(Clone, Copy)]
struct I8Prefetch {
    /// `w` at the first byte to prefetch (may point past its end: only lines below `limit` are
    /// prefetched).
    base: *const i8,
    /// Bytes from `base` that lie inside `w`.
    limit: usize,
}

impl I8Prefetch {
    /// For the tile of rows `r0..r0 + rows` of `w`.
    fn new(w: &[i8], r0: usize, rows: usize, k_pad: usize) -> Self {
        let start = (r0 + rows) * k_pad + I8_PREFETCH_AHEAD;
        I8Prefetch {
            base: w.as_ptr().wrapping_add(start),
            limit: w.len().saturating_sub(start),
        }
    }

    /// Whether the `lines` cache lines from byte `off` all lie inside `w` (checked once per
    /// chunk instead of once per line; near the end of `w` a few lines are skipped).
    #[inline(always)]
    fn covers(self, off: usize, lines: usize) -> bool {
        off + lines * I8_BLOCK <= self.limit
    }

    /// Prefetches the line `off` bytes from the start (call only where `covers` held).
    #[inline(always)]
    fn line(self, off: usize) {
        debug_assert!(off < self.limit);
        // SAFETY: a prefetch is only a hint and never faults; the address lies inside `w`
        // wherever `covers` held.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(self.base.wrapping_add(off)) }
    }
}

/// 64 bytes at `p`.
///
/// # Safety
/// `p` must point to 64 readable bytes (no alignment needed).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn i8_load512<T>(p: *const T) -> __m512i {
    // SAFETY: the caller guarantees 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(p.cast()) }
}

/// 32 bytes at `p`.
///
/// # Safety
/// `p` must point to 32 readable bytes (no alignment needed).
#[inline]
#[target_feature(enable = "avx")]
unsafe fn i8_load256<T>(p: *const T) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// The four i32 lanes of `v`.
#[inline]
#[target_feature(enable = "sse2")]
fn i8_lanes128(v: __m128i) -> [i32; 4] {
    let mut o = [0i32; 4];
    // SAFETY: `o` is 16 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm_storeu_si128(o.as_mut_ptr().cast(), v) };
    o
}

/// Horizontal sums of four vectors at once: `[Σv[0], Σv[1], Σv[2], Σv[3]]` (wrapping).
#[inline]
#[target_feature(enable = "avx512f")]
fn i8_reduce4_avx512(v: [__m512i; 4]) -> [i32; 4] {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d.
    let ab = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[0], v[1]),
        _mm512_unpackhi_epi32(v[0], v[1]),
    );
    let cd = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[2], v[3]),
        _mm512_unpackhi_epi32(v[2], v[3]),
    );
    // Per 128-bit lane: [Σa, Σb, Σc, Σd] of that lane; then the four lanes are added.
    let s = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    let h = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s));
    i8_lanes128(_mm_add_epi32(
        _mm256_castsi256_si128(h),
        _mm256_extracti128_si256::<1>(h),
    ))
}

/// Horizontal sums of four vectors at once: `[Σv[0], Σv[1], Σv[2], Σv[3]]` (wrapping).
#[inline]
#[target_feature(enable = "avx2")]
fn i8_reduce4_avx2(v: [__m256i; 4]) -> [i32; 4] {
    // Per 128-bit lane: [a0+a1, a2+a3, b0+b1, b2+b3], [c.., d..], then [Σa, Σb, Σc, Σd].
    let s = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    i8_lanes128(_mm_add_epi32(
        _mm256_castsi256_si128(s),
        _mm256_extracti128_si256::<1>(s),
    ))
}

/// Horizontal sums of the `R × N` accumulators, four at a time.
#[inline(always)]
fn i8_reduce_tile<V: Copy, const R: usize, const N: usize>(
    acc: [[V; N]; R],
    reduce4: impl Fn([V; 4]) -> [i32; 4],
    reduce1: impl Fn(V) -> i32,
) -> [[i32; N]; R] {
    let at = |f: usize| acc[f / N][f % N];
    let mut vals = [[0i32; N]; R];
    let mut f = 0;
    while f + 4 <= R * N {
        let s = reduce4([at(f), at(f + 1), at(f + 2), at(f + 3)]);
        for (j, v) in s.into_iter().enumerate() {
            vals[(f + j) / N][(f + j) % N] = v;
        }
        f += 4;
    }
    while f < R * N {
        vals[f / N][f % N] = reduce1(at(f));
        f += 1;
    }
    vals
}

/// Rows `t..t + N` of `x` (`k_pad` values each); a plain function, so that `from_fn` inlines.
#[inline(always)]
fn i8_token_rows<T, const N: usize>(x: &[T], k_pad: usize, t: usize) -> [&[T]; N] {
    std::array::from_fn(|j| &x[(t + j) * k_pad..(t + j + 1) * k_pad])
}

/// Writes tile results `vals[i][t] - bias(i)` to `out[(r0 + i) * n_tok + t0 + t]`.
#[inline(always)]
fn i8_store<const R: usize, const N: usize>(
    vals: [[i32; N]; R],
    bias: impl Fn(usize) -> i32,
    out: &mut [i32],
    (r0, t0, n_tok): (usize, usize, usize),
) {
    for (i, v) in vals.iter().enumerate() {
        let o = &mut out[(r0 + i) * n_tok + t0..(r0 + i) * n_tok + t0 + N];
        let b = bias(i);
        for (slot, &s) in o.iter_mut().zip(v) {
            *slot = s.wrapping_sub(b);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Int8 × int8, AVX-512 VNNI: activations biased to u8 once per call (x ^ 0x80 = x + 128),
// `vpdpbusd` (u8 activations × i8 weights, no saturation), then subtract 128 · Σw. The i32
// lanes wrap, so the result is exact whenever the true sum fits in i32.

/// One biased token `x` (`k_pad` bytes) × rows `r0..r0 + R` of `w`, the rows one after
/// another (one sequential stream), in 32-byte `vpdpbusd` (AVX-512 VL) with `A` accumulators
/// per row to hide its latency. Returns the raw biased sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl")]
fn i8_rows_avx512<const R: usize, const A: usize>(
    w: &[i8],
    r0: usize,
    k_pad: usize,
    x: &[u8],
) -> [[i32; 1]; R] {
    // Checked once here; every load below stays inside these slices.
    let rows = &w[r0 * k_pad..(r0 + R) * k_pad];
    assert_eq!(x.len(), k_pad, "activation row is not k_pad bytes");
    let halves = k_pad / 32;
    let mut acc = [[_mm256_setzero_si256(); A]; R];
    for (i, acc_i) in acc.iter_mut().enumerate() {
        let row = rows[i * k_pad..].as_ptr();
        // 32 bytes `h` into accumulator `a` (a constant once the loop below is unrolled).
        let step = |acc_i: &mut [__m256i; A], h: usize, a: usize| {
            // SAFETY: h < k_pad / 32, so bytes 32h..32h + 32 lie inside `x` and inside row i
            // of `rows` (R · k_pad bytes).
            let (xv, wv) = unsafe {
                (
                    i8_load256(x.as_ptr().add(h * 32)),
                    i8_load256(row.add(h * 32)),
                )
            };
            acc_i[a] = _mm256_dpbusd_epi32(acc_i[a], xv, wv);
        };
        let mut h = 0;
        while h + A <= halves {
            for a in 0..A {
                step(acc_i, h + a, a);
            }
            h += A;
        }
        while h < halves {
            step(acc_i, h, 0);
            h += 1;
        }
    }
    let acc: [[__m256i; 1]; R] = std::array::from_fn(|i| {
        [acc[i][1..]
            .iter()
            .fold(acc[i][0], |s, v| _mm256_add_epi32(s, *v))]
    });
    i8_reduce_tile(acc, |v| i8_reduce4_avx2(v), |v| hsum256(v))
}

/// Rows `r0..r0 + R` of `w` × `N` biased tokens `xs` (each `k_pad` bytes), the rows interleaved
/// per 64-byte chunk so that each activation load serves all of them, prefetching the next
/// tile; `A` accumulators per (row, token) so that R·N·A ≥ 8 `vpdpbusd` chains hide its
/// latency. Returns the raw biased sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn i8_tile_avx512<const R: usize, const N: usize, const A: usize>(
    w: &[i8],
    r0: usize,
    k_pad: usize,
    xs: [&[u8]; N],
) -> [[i32; N]; R] {
    // Checked once here; every load below stays inside these slices.
    let rows = &w[r0 * k_pad..(r0 + R) * k_pad];
    for x in xs {
        assert_eq!(x.len(), k_pad, "activation row is not k_pad bytes");
    }
    let chunks = k_pad / I8_BLOCK;
    let pf = I8Prefetch::new(w, r0, R, k_pad);
    let mut acc = [[[_mm512_setzero_si512(); A]; N]; R];
    // One 64-byte chunk `c` into accumulator set `a` (a constant once the loops are unrolled).
    macro_rules! chunk {
        ($c:expr, $a:expr) => {{
            let c = $c;
            // SAFETY: c < chunks, so bytes c·64..c·64 + 64 lie inside each k_pad-byte token.
            let xv: [__m512i; N] =
                std::array::from_fn(|t| unsafe { i8_load512(xs[t].as_ptr().add(c * I8_BLOCK)) });
            // The next tile is R·k_pad bytes, as many as this one: one line per row and chunk.
            let pf_on = pf.covers(c * R * I8_BLOCK, R);
            for (i, acc_i) in acc.iter_mut().enumerate() {
                if pf_on {
                    pf.line((c * R + i) * I8_BLOCK);
                }
                // SAFETY: i < R and c < chunks: inside row i of `rows` (R · k_pad bytes).
                let wv = unsafe { i8_load512(rows.as_ptr().add(i * k_pad + c * I8_BLOCK)) };
                for (a, x) in acc_i.iter_mut().zip(&xv) {
                    a[$a] = _mm512_dpbusd_epi32(a[$a], *x, wv);
                }
            }
        }};
    }
    let mut c = 0;
    while c + A <= chunks {
        for j in 0..A {
            chunk!(c + j, j);
        }
        c += A;
    }
    while c < chunks {
        chunk!(c, 0);
        c += 1;
    }
    let acc: [[__m512i; N]; R] = std::array::from_fn(|i| {
        std::array::from_fn(|t| {
            acc[i][t][1..]
                .iter()
                .fold(acc[i][t][0], |s, v| _mm512_add_epi32(s, *v))
        })
    });
    i8_reduce_tile(
        acc,
        |v| i8_reduce4_avx512(v),
        |v| _mm512_reduce_add_epi32(v),
    )
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn i8_gemm_avx512_impl(
    w: &[i8],
    row_sums: &[i32],
    k_pad: usize,
    x: &[i8],
    n_tok: usize,
    out: &mut [i32],
) {
    // Every CPU with AVX-512 VNNI so far has VL too; without it, single tokens take the
    // interleaved 64-byte tile.
    let vl = is_x86_feature_detected!("avx512vl");
    // x ^ 0x80 = x + 128 as u8, once per call instead of once per row.
    let xf: Vec<u8> = x.iter().map(|&v| v.cast_unsigned() ^ 0x80).collect();
    let n_rows = row_sums.len();
    let bias = |r: usize| row_sums[r].wrapping_mul(128);
    let mut r = 0;
    while r < n_rows {
        let tile_rows = if n_rows - r >= I8_ROW_TILE {
            I8_ROW_TILE
        } else {
            1
        };
        let mut t = 0;
        while t < n_tok {
            let n = (n_tok - t).min(4);
            macro_rules! run {
                ($r:literal, $n:literal, $a:literal) => {{
                    let xs = i8_token_rows::<u8, $n>(&xf, k_pad, t);
                    let vals = i8_tile_avx512::<$r, $n, $a>(w, r, k_pad, xs);
                    i8_store(vals, |i| bias(r + i), out, (r, t, n_tok));
                }};
            }
            macro_rules! rows {
                ($r:literal) => {{
                    let [xt] = i8_token_rows::<u8, 1>(&xf, k_pad, t);
                    // SAFETY: the CPU supports avx512vl (checked above) besides the features of
                    // this function.
                    let vals = unsafe { i8_rows_avx512::<$r, 4>(w, r, k_pad, xt) };
                    i8_store(vals, |i| bias(r + i), out, (r, t, n_tok));
                }};
            }
            match (tile_rows, n) {
                (I8_ROW_TILE, 1) if vl => rows!(4),
                (I8_ROW_TILE, 1) => run!(4, 1, 2),
                (I8_ROW_TILE, 2) => run!(4, 2, 1),
                (I8_ROW_TILE, 3) => run!(4, 3, 1),
                (I8_ROW_TILE, _) => run!(4, 4, 1),
                (_, 1) if vl => rows!(1),
                (_, 1) => run!(1, 1, 4),
                (_, 2) => run!(1, 2, 2),
                (_, 3) => run!(1, 3, 2),
                _ => run!(1, 4, 2),
            }
            t += n;
        }
        r += tile_rows;
    }
}

pub(super) fn i8_gemm_avx512(
    w: &[i8],
    row_sums: &[i32],
    k_pad: usize,
    x: &[i8],
    n_tok: usize,
    out: &mut [i32],
) {
    assert!(
        has_avx512_vnni(),
        "AVX-512 VNNI kernel called on a CPU without it"
    );
    // SAFETY: the CPU supports avx512f, avx512bw and avx512vnni (checked above).
    unsafe { i8_gemm_avx512_impl(w, row_sums, k_pad, x, n_tok, out) }
}

// ---------------------------------------------------------------------------------------------
// Int8 × int8, AVX2: `vpmaddubsw` of an unsigned factor by a signed one, whose pairs are at most
// 2·127·127 < 2^15 (no saturation), then `vpmaddwd` with ones into i32 lanes. One token:
// |w| × sign(x, w); several tokens: |x| (once per call) × sign(w, x), so that the per-row work
// shared by the tokens is only the load.

/// One token `x` (`k_pad` bytes) × rows `r0..r0 + R` of `w`, the rows one after another (one
/// sequential stream) in 32-byte steps.
#[inline]
#[target_feature(enable = "avx2")]
fn i8_rows_avx2<const R: usize>(w: &[i8], r0: usize, k_pad: usize, x: &[i8]) -> [[i32; 1]; R] {
    // Checked once here; every load below stays inside these slices.
    let rows = &w[r0 * k_pad..(r0 + R) * k_pad];
    assert_eq!(x.len(), k_pad, "activation row is not k_pad bytes");
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 1]; R];
    for (i, acc_i) in acc.iter_mut().enumerate() {
        let row = rows[i * k_pad..].as_ptr();
        for h in 0..k_pad / 32 {
            // SAFETY: h < k_pad / 32, so bytes 32h..32h + 32 lie inside `x` and inside row i
            // of `rows` (R · k_pad bytes).
            let (xv, wv) = unsafe {
                (
                    i8_load256(x.as_ptr().add(h * 32)),
                    i8_load256(row.add(h * 32)),
                )
            };
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
            acc_i[0] = _mm256_add_epi32(acc_i[0], _mm256_madd_epi16(p, ones));
        }
    }
    i8_reduce_tile(acc, |v| i8_reduce4_avx2(v), |v| hsum256(v))
}

/// Rows `r0..r0 + R` of `w` × `N` tokens `xs` with their absolute values `xa` (each `k_pad`
/// bytes), the rows interleaved per 64-byte chunk so that each activation load serves all of
/// them, prefetching the next tile. 16 ymm registers: R·N ≤ 8 accumulators.
#[inline]
#[target_feature(enable = "avx2")]
fn i8_tile_avx2<const R: usize, const N: usize>(
    w: &[i8],
    r0: usize,
    k_pad: usize,
    (xs, xa): ([&[i8]; N], [&[u8]; N]),
) -> [[i32; N]; R] {
    // Checked once here; every load below stays inside these slices.
    let rows = &w[r0 * k_pad..(r0 + R) * k_pad];
    for (x, a) in xs.iter().zip(&xa) {
        assert!(
            x.len() == k_pad && a.len() == k_pad,
            "activation row is not k_pad bytes"
        );
    }
    let pf = I8Prefetch::new(w, r0, R, k_pad);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); N]; R];
    for c in 0..k_pad / I8_BLOCK {
        for h in 0..2 {
            let off = c * I8_BLOCK + h * 32;
            // SAFETY: c < k_pad / 64 and h < 2, so bytes off..off + 32 lie inside each token.
            let xv: [__m256i; N] =
                std::array::from_fn(|t| unsafe { i8_load256(xs[t].as_ptr().add(off)) });
            let av: [__m256i; N] =
                std::array::from_fn(|t| unsafe { i8_load256(xa[t].as_ptr().add(off)) });
            let pf_on = h == 0 && pf.covers(c * R * I8_BLOCK, R);
            for (i, acc_i) in acc.iter_mut().enumerate() {
                if pf_on {
                    pf.line((c * R + i) * I8_BLOCK);
                }
                // SAFETY: i < R and off + 32 ≤ k_pad: inside row i of `rows`.
                let wv = unsafe { i8_load256(rows.as_ptr().add(i * k_pad + off)) };
                for ((acc, x), a) in acc_i.iter_mut().zip(&xv).zip(&av) {
                    // |x| · (w · sign x) = x · w (x = 0 gives 0 either way).
                    let p = _mm256_maddubs_epi16(*a, _mm256_sign_epi8(wv, *x));
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(p, ones));
                }
            }
        }
    }
    i8_reduce_tile(acc, |v| i8_reduce4_avx2(v), |v| hsum256(v))
}

#[target_feature(enable = "avx2")]
fn i8_gemm_avx2_impl(w: &[i8], k_pad: usize, x: &[i8], n_tok: usize, out: &mut [i32]) {
    // |x| for the tiles of several tokens (a single token needs none).
    let xa: Vec<u8> = if n_tok > 1 {
        x.iter().map(|v| v.unsigned_abs()).collect()
    } else {
        Vec::new()
    };
    let n_rows = w.len() / k_pad.max(1);
    let mut r = 0;
    while r < n_rows {
        let tile_rows = if n_rows - r >= I8_ROW_TILE {
            I8_ROW_TILE
        } else {
            1
        };
        let mut t = 0;
        while t < n_tok {
            // 4 rows × up to 2 tokens (8 accumulators); a single row takes up to 4 tokens.
            let n = (n_tok - t).min(if tile_rows == I8_ROW_TILE { 2 } else { 4 });
            macro_rules! run {
                ($r:literal, $n:literal) => {{
                    let xs = i8_token_rows::<i8, $n>(x, k_pad, t);
                    let xas = i8_token_rows::<u8, $n>(&xa, k_pad, t);
                    let vals = i8_tile_avx2::<$r, $n>(w, r, k_pad, (xs, xas));
                    i8_store(vals, |_| 0, out, (r, t, n_tok));
                }};
            }
            macro_rules! rows {
                ($r:literal) => {{
                    let [xt] = i8_token_rows::<i8, 1>(x, k_pad, t);
                    let vals = i8_rows_avx2::<$r>(w, r, k_pad, xt);
                    i8_store(vals, |_| 0, out, (r, t, n_tok));
                }};
            }
            match (tile_rows, n) {
                (I8_ROW_TILE, 1) => rows!(4),
                (I8_ROW_TILE, _) => run!(4, 2),
                (_, 1) => rows!(1),
                (_, 2) => run!(1, 2),
                (_, 3) => run!(1, 3),
                _ => run!(1, 4),
            }
            t += n;
        }
        r += tile_rows;
    }
}

pub(super) fn i8_gemm_avx2(w: &[i8], k_pad: usize, x: &[i8], n_tok: usize, out: &mut [i32]) {
    assert!(has_avx2(), "AVX2 kernel called on a CPU without it");
    // SAFETY: the CPU supports avx2 (checked above).
    unsafe { i8_gemm_avx2_impl(w, k_pad, x, n_tok, out) }
}
