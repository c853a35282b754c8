//! The f32 parts of the forward pass (RMSNorm, activation quantization, attention), written
//! with the association of every sum spelled out (16 fixed partial sums), then compiled three
//! times: portable, AVX2 and AVX-512. The wider builds only put more of the same lanes in one
//! register, so all three give the same bits; the widest the CPU has is picked at run time.
//! (The crate is built for baseline x86-64, where these loops would get 128-bit SSE only.)
#![allow(unsafe_code)]

use std::sync::OnceLock;

use half::f16;

use crate::matrix::round_half_away;

/// Partial sums of the reductions.
const L: usize = 16;

/// Builds of the f32 steps, narrowest first: a CPU that runs one runs every narrower one
/// (`width()` asks for AVX2 along with AVX-512).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Width {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

fn width() -> Width {
    static W: OnceLock<Width> = OnceLock::new();
    *W.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx2")
            {
                return Width::Avx512;
            }
            if is_x86_feature_detected!("avx2") {
                return Width::Avx2;
            }
        }
        Width::Portable
    })
}

/// Every build this CPU can run (tests compare them all, not just the widest).
#[cfg(test)]
fn widths() -> Vec<Width> {
    let mut out = vec![Width::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            out.push(Width::Avx2);
        }
        if width() == Width::Avx512 {
            out.push(Width::Avx512);
        }
    }
    out
}

/// Defines `pub fn $name` that runs `$body` compiled for the widest vector ISA available, and
/// `mod $name` holding every build (`$name::at(width, ..)`, checked, in tests).
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: `width()` saw the features of the build it names.
            unsafe { $name::at_unchecked(width(), $($arg),*) }
        }

        /// The builds of the function of the same name.
        pub(crate) mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2")]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            fn avx2($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }

            /// The function as built for `w`.
            ///
            /// # Panics
            /// If `w` is wider than this CPU runs (`w > width()`).
            #[cfg(test)]
            #[allow(clippy::too_many_arguments)] // the function's own arguments plus `w`
            pub(crate) fn at(w: Width, $($arg: $ty),*) $(-> $ret)? {
                assert!(w <= width(), "{w:?} build asked for on a CPU that runs up to {:?}", width());
                // SAFETY: every build up to `width()` has its features (see `Width`).
                unsafe { at_unchecked(w, $($arg),*) }
            }

            /// # Safety
            /// The CPU must have the features of build `w` (`w <= width()`).
            #[inline]
            #[allow(clippy::too_many_arguments)] // the function's own arguments plus `w`
            pub(crate) unsafe fn at_unchecked(w: Width, $($arg: $ty),*) $(-> $ret)? {
                match w {
                    // SAFETY: the caller promises these features.
                    #[cfg(target_arch = "x86_64")]
                    Width::Avx512 => unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    #[cfg(target_arch = "x86_64")]
                    Width::Avx2 => unsafe { avx2($($arg),*) },
                    Width::Portable => portable($($arg),*),
                }
            }
        }
    };
}

/// `Σ a·b` with 16 partial sums added in a fixed order.
#[inline(always)]
fn dot16(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let n = a.len().min(b.len());
    let (ca, cb) = (a[..n].chunks_exact(L), b[..n].chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += x * y;
    }
    let mut s = 0f32;
    for v in acc {
        s += v;
    }
    s
}

multiversion! {
    /// `Σ a·b` (16 partial sums in a fixed order).
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        dot16(a, b)
    }
}

multiversion! {
    /// RMSNorm of one row: `out = x / sqrt(mean(x²) + eps) · w`.
    pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        let ms = dot16(&x[..d], &x[..d]) / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in out[..d].iter_mut().zip(&x[..d]).zip(w) {
            *o = v * inv * g;
        }
    }
}

multiversion! {
    /// Per-token int8 quantization: `q = clamp(round(x·127/g), -128, 127)` with
    /// `g = max(max|x|, 1e-5)` into `out` (`x.len()` values); returns `(Σ q, g)`.
    pub fn quantize_i8(x: &[f32], out: &mut [i8]) -> (i32, f32) {
        let mut m = [0f32; L];
        let cx = x.chunks_exact(L);
        for v in cx.remainder() {
            m[0] = m[0].max(v.abs());
        }
        for c in cx {
            for i in 0..L {
                m[i] = m[i].max(c[i].abs());
            }
        }
        let g = m.iter().fold(0f32, |a, &b| a.max(b)).max(1e-5);
        let mut s = [0i32; L];
        let (cx, co) = (x.chunks_exact(L), out[..x.len()].chunks_exact_mut(L));
        let (rx, ro) = (cx.remainder(), co.into_remainder());
        for (v, q) in rx.iter().zip(ro.iter_mut()) {
            *q = round_half_away(v * 127.0 / g).clamp(-128, 127) as i8;
            s[0] += i32::from(*q);
        }
        let (cx, co) = (x.chunks_exact(L), out[..x.len()].chunks_exact_mut(L));
        for (c, q) in cx.zip(co) {
            for i in 0..L {
                q[i] = round_half_away(c[i] * 127.0 / g).clamp(-128, 127) as i8;
                s[i] += i32::from(q[i]);
            }
        }
        (s.iter().sum(), g)
    }
}

/// Widens f16 values to f32 (`dst.len() >= src.len()`): exact, so every path gives the same
/// bits; F16C (8 values per instruction) where the CPU has it.
pub fn widen(src: &[f16], dst: &mut [f32]) {
    let dst = &mut dst[..src.len()];
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU has AVX and F16C (checked).
        unsafe { widen_f16c(src, dst) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// Rounds f32 values to f16, to nearest-even (`dst.len() >= src.len()`); F16C where the CPU has
/// it, which rounds by the same IEEE rule, so every path gives the same bits.
pub fn narrow(src: &[f32], dst: &mut [f16]) {
    let dst = &mut dst[..src.len()];
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU has AVX and F16C (checked).
        unsafe { narrow_f16c(src, dst) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(*s);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
fn narrow_f16c(src: &[f32], dst: &mut [f16]) {
    use std::arch::x86_64::{_mm256_cvtps_ph, _mm256_loadu_ps, _mm_storeu_si128};
    let n = src.len().min(dst.len());
    let whole = n / 8 * 8;
    for i in (0..whole).step_by(8) {
        // SAFETY: `i + 8 <= n`, within both slices; `loadu`/`storeu` need no alignment.
        // Immediate 0: round to nearest even, exceptions masked.
        unsafe {
            let h = _mm256_cvtps_ph::<0>(_mm256_loadu_ps(src.as_ptr().add(i)));
            _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), h);
        }
    }
    for (d, s) in dst[whole..n].iter_mut().zip(&src[whole..n]) {
        *d = f16::from_f32(*s);
    }
}

#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    static F16C: OnceLock<bool> = OnceLock::new();
    *F16C.get_or_init(|| is_x86_feature_detected!("avx") && is_x86_feature_detected!("f16c"))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
fn widen_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::{_mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    let n = src.len().min(dst.len());
    let whole = n / 8 * 8;
    for i in (0..whole).step_by(8) {
        // SAFETY: `i + 8 <= n`, within both slices; `loadu`/`storeu` need no alignment.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
    }
    for (d, s) in dst[whole..n].iter_mut().zip(&src[whole..n]) {
        *d = s.to_f32();
    }
}

multiversion! {
    /// [`attend`] over keys/values already in f32 (a prompt's attention, which widens each
    /// head's cache once for all its queries): the same arithmetic in the same order.
    pub fn attend_f32(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        hd: usize,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        scores.clear();
        let mut max = f32::NEG_INFINITY;
        for kj in k.chunks_exact(hd) {
            let s = dot16(q, kj) * scale;
            max = max.max(s);
            scores.push(s);
        }
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        out.fill(0.0);
        let inv = 1.0 / sum;
        for (p, vj) in scores.iter().zip(v.chunks_exact(hd)) {
            let w = p * inv;
            for (a, b) in out.iter_mut().zip(vj) {
                *a += w * b;
            }
        }
    }
}

/// Cache rows [`attend`] widens at a time (its `rows` scratch holds this many rows).
pub const ATTEND_ROWS: usize = 32;

multiversion! {
    /// One query over the cached keys/values of one head (`k`, `v`: positions × `hd`, f16):
    /// `out = softmax(q·k · scale) · v`. Keys and values are widened to f32 into `rows`
    /// ([`ATTEND_ROWS`] rows of `hd` at a time, L1-resident) first, so the arithmetic is the
    /// f32 arithmetic of an f32 cache holding the same values. `scratch` is `(scores, rows)`.
    pub fn attend(
        q: &[f32],
        k: &[f16],
        v: &[f16],
        hd: usize,
        scale: f32,
        scratch: (&mut Vec<f32>, &mut [f32]),
        out: &mut [f32],
    ) {
        let (scores, rows) = scratch;
        scores.clear();
        let rows = &mut rows[..ATTEND_ROWS * hd];
        let mut max = f32::NEG_INFINITY;
        for kb in k.chunks(ATTEND_ROWS * hd) {
            widen(kb, rows);
            for kj in rows[..kb.len()].chunks_exact(hd) {
                let s = dot16(q, kj) * scale;
                max = max.max(s);
                scores.push(s);
            }
        }
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        out.fill(0.0);
        let inv = 1.0 / sum;
        for (pb, vb) in scores.chunks(ATTEND_ROWS).zip(v.chunks(ATTEND_ROWS * hd)) {
            widen(vb, rows);
            for (p, vj) in pb.iter().zip(rows.chunks_exact(hd)) {
                let w = p * inv;
                for (a, b) in out.iter_mut().zip(vj) {
                    *a += w * b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_gives_the_portable_bits() {
        let x: Vec<f32> = (0..1003)
            .map(|i| ((i * 7919) % 1000) as f32 / 77.0 - 6.0)
            .collect();
        let w: Vec<f32> = (0..1003).map(|i| 0.5 + (i % 13) as f32 / 10.0).collect();
        let mut a = vec![0f32; 1003];
        let mut b = vec![0f32; 1003];
        rmsnorm(&x, &w, 1e-5, &mut a);
        rmsnorm_portable_for_test(&x, &w, 1e-5, &mut b);
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(dot(&x, &w).to_bits(), dot16(&x, &w).to_bits());
        let mut qa = vec![0i8; 1003];
        let (s, g) = quantize_i8(&x, &mut qa);
        let gmax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_eq!(g, gmax);
        let want: Vec<i8> = x
            .iter()
            .map(|v| (v * 127.0 / g).round().clamp(-128.0, 127.0) as i8)
            .collect();
        assert_eq!(qa, want);
        assert_eq!(s, want.iter().map(|&v| i32::from(v)).sum::<i32>());
    }

    fn rmsnorm_portable_for_test(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        let ms = dot16(x, x) / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
            *o = v * inv * g;
        }
    }

    /// Asking for a build wider than the CPU runs panics instead of executing it (checked on
    /// CPUs without AVX-512; there is nothing wider to ask for on the others).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_build_wider_than_the_cpu_is_refused() {
        if width() < Width::Avx512 {
            let r = std::panic::catch_unwind(|| dot::at(Width::Avx512, &[1.0; 20], &[2.0; 20]));
            assert!(r.is_err(), "the AVX-512 build ran on a CPU without it");
        }
        assert_eq!(dot::at(width(), &[1.0; 20], &[2.0; 20]), 40.0);
    }

    /// Every build (portable, AVX2, AVX-512: all this CPU runs, not only the widest) gives the
    /// same bits for every multiversioned step, on lengths that are not multiples of 16.
    #[test]
    fn every_build_gives_the_same_bits() {
        let ws = widths();
        assert_eq!(ws.last().copied(), Some(width()));
        let n = 1003;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 77.0 - 6.0)
            .collect();
        let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 13) as f32 / 10.0).collect();
        let (hd, ctx) = (72, 37);
        let k: Vec<f16> = (0..hd * ctx)
            .map(|i| f16::from_f32(((i * 31) % 97) as f32 / 50.0 - 1.0))
            .collect();
        let v: Vec<f16> = (0..hd * ctx)
            .map(|i| f16::from_f32(((i * 17) % 89) as f32 / 40.0 - 1.1))
            .collect();
        let run = |wd: Width| {
            let mut a = vec![0f32; n];
            rmsnorm::at(wd, &x, &w, 1e-5, &mut a);
            let d = dot::at(wd, &x, &w);
            let mut q = vec![0i8; n];
            let (s, g) = quantize_i8::at(wd, &x, &mut q);
            let mut o = vec![0f32; hd];
            let mut rows = vec![0f32; ATTEND_ROWS * hd];
            attend::at(
                wd,
                &x[..hd],
                &k,
                &v,
                hd,
                0.1,
                (&mut Vec::new(), &mut rows),
                &mut o,
            );
            let (kf, vf): (Vec<f32>, Vec<f32>) = (
                k.iter().map(|h| h.to_f32()).collect(),
                v.iter().map(|h| h.to_f32()).collect(),
            );
            let mut o2 = vec![0f32; hd];
            attend_f32::at(wd, &x[..hd], &kf, &vf, hd, 0.1, &mut Vec::new(), &mut o2);
            assert_eq!(bits(&o), bits(&o2), "{wd:?}: f16 and f32 attention differ");
            (bits(&a), d.to_bits(), q, s, g.to_bits(), bits(&o))
        };
        let want = run(Width::Portable);
        for wd in ws {
            assert!(run(wd) == want, "{wd:?} differs from the portable build");
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn widening_f16_is_exact_on_every_path() {
        // Every finite f16 (plus infinities), in an odd-length slice so the tail runs too.
        let src: Vec<f16> = (0..=u16::MAX)
            .map(f16::from_bits)
            .filter(|h| !h.is_nan())
            .chain([f16::ONE])
            .collect();
        let mut dst = vec![0f32; src.len()];
        widen(&src, &mut dst);
        for (h, d) in src.iter().zip(&dst) {
            assert_eq!(d.to_bits(), h.to_f32().to_bits(), "{h:?}");
            assert_eq!(f16::from_f32(*d), *h);
        }
    }

    #[test]
    fn narrowing_to_f16_matches_the_software_rounding() {
        // Ties, subnormals, overflow to infinity, signed zeros and ordinary values, in an
        // odd-length slice so the tail runs too.
        let mut src: Vec<f32> = (0..20_001)
            .map(|i| f32::from_bits((i as u32).wrapping_mul(0x9E37_79B9)))
            .filter(|v| !v.is_nan())
            .collect();
        src.extend([
            0.0,
            -0.0,
            65504.0,
            65520.0,
            1e-8,
            -6.1e-5,
            1.0 + 1.0 / 2048.0,
            1.0 + 3.0 / 2048.0,
        ]);
        let mut got = vec![f16::ZERO; src.len()];
        narrow(&src, &mut got);
        for (s, g) in src.iter().zip(&got) {
            assert_eq!(g.to_bits(), f16::from_f32(*s).to_bits(), "{s:e}");
        }
    }

    #[test]
    fn attention_is_a_softmax_average_of_values() {
        let hd = 4;
        let q = [1.0, 0.0, 0.0, 0.0];
        let k = [1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0].map(f16::from_f32);
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let vh = v.map(f16::from_f32);
        let mut out = [0f32; 4];
        let mut rows = vec![0f32; ATTEND_ROWS * hd];
        attend(&q, &k, &vh, hd, 1.0, (&mut Vec::new(), &mut rows), &mut out);
        let p0 = 1.0 / (1.0 + (-2f32).exp());
        for i in 0..4 {
            let want = p0 * v[i] + (1.0 - p0) * v[4 + i];
            assert!((out[i] - want).abs() < 1e-6, "{out:?}");
        }
        // The f32 variant on the widened values gives the same bits.
        let kf = k.map(f16::to_f32);
        let vf = vh.map(f16::to_f32);
        let mut out2 = [0f32; 4];
        attend_f32(&q, &kf, &vf, hd, 1.0, &mut Vec::new(), &mut out2);
        assert_eq!(out.map(f32::to_bits), out2.map(f32::to_bits));
    }
}
