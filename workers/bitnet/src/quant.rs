//! BitNet b1.58 quantizers, on tensors (training forward) and on plain slices (export).
//!
//! Shared format with workers/infer: weight scale `s = max(mean|W|, 1e-5)` per tensor,
//! `Wq = clamp(round(W / s), -1, 1)` with round half away from zero (as `f32::round`); activations
//! per row: `g = max(max|x|, 1e-5)`, `xq = clamp(round(x * 127 / g), -128, 127)`.

use burn::tensor::Tensor;

/// Smallest weight / activation scale: keeps all-zero tensors finite.
pub const MIN_SCALE: f32 = 1e-5;

/// Round half away from zero, elementwise (burn's `round` is half-to-even; the format needs
/// `f32::round`). `x - trunc(x)` is exact in floating point, so this matches `f32::round` bit for bit.
pub fn round_half_away<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let t = x.clone().trunc();
    let frac = (x.clone() - t.clone()).abs();
    let bump = frac.greater_equal_elem(0.5).float() * x.sign();
    t + bump
}

/// Absmean scale of a weight matrix, as a `[1, 1]` tensor.
pub fn weight_scale(w: &Tensor<2>) -> Tensor<2> {
    w.clone().abs().mean().clamp_min(MIN_SCALE).reshape([1, 1])
}

/// Ternary codes `clamp(round(W / s), -1, 1)` (values in {-1, 0, 1}) and the scale `s`.
pub fn ternary_codes(w: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let s = weight_scale(&w);
    let q = round_half_away(w / s.clone()).clamp(-1.0, 1.0);
    (q, s)
}

/// Fake-quantized weight `Wq * s`, with a straight-through gradient to the latent `W`.
///
/// # Shapes
/// - w: `[out, in]` → `[out, in]`
pub fn ternary_ste(w: Tensor<2>) -> Tensor<2> {
    let (q, s) = ternary_codes(w.clone().detach());
    let wq = q * s;
    w.clone() + (wq - w).detach()
}

/// Per-row int8 codes `clamp(round(x * 127 / g), -128, 127)` and the row scales `g`.
///
/// # Shapes
/// - x: `[rows, in]` → codes `[rows, in]`, g `[rows, 1]`
pub fn activation_codes(x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let g = x.clone().abs().max_dim(1).clamp_min(MIN_SCALE);
    let q = round_half_away(x * 127.0 / g.clone()).clamp(-128.0, 127.0);
    (q, g)
}

/// Fake-quantized activations `xq * g / 127`, with a straight-through gradient to `x`.
pub fn activation_ste(x: Tensor<2>) -> Tensor<2> {
    let (q, g) = activation_codes(x.clone().detach());
    let xq = q * g / 127.0;
    x.clone() + (xq - x).detach()
}

/// Absmean scale of a weight slice (export side, same formula as [`weight_scale`]).
pub fn weight_scale_slice(w: &[f32]) -> f32 {
    if w.is_empty() {
        return MIN_SCALE;
    }
    // Sum in f64: the mean of millions of f32 must not drift with summation order.
    let sum: f64 = w.iter().map(|x| f64::from(x.abs())).sum();
    ((sum / w.len() as f64) as f32).max(MIN_SCALE)
}

/// Ternary code of one weight given the tensor scale.
pub fn ternary_code(w: f32, scale: f32) -> i8 {
    (w / scale).round().clamp(-1.0, 1.0) as i8
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn dev() -> Device {
        Device::flex()
    }

    fn t2(v: Vec<f32>, r: usize, c: usize, d: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, [r, c]), d)
    }

    fn vec_of(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32 data")
    }

    #[test]
    fn round_is_half_away_from_zero() {
        let d = dev();
        let xs = vec![-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, -0.7, 3.2, 0.0];
        let got = vec_of(round_half_away(t2(xs.clone(), 1, xs.len(), &d)));
        let want: Vec<f32> = xs.iter().map(|x| x.round()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn ternary_weights_take_three_values_times_the_absmean_scale() {
        let d = dev();
        let mut rng = crate::rng::SplitMix64::new(3);
        let w = rng.normal_vec(64 * 48, 0.3);
        let scale = w.iter().map(|x| x.abs()).sum::<f32>() / w.len() as f32;
        let fq = vec_of(ternary_ste(t2(w.clone(), 64, 48, &d)));
        let (_, s) = ternary_codes(t2(w.clone(), 64, 48, &d));
        let s = vec_of(s)[0];
        assert!((s - scale).abs() <= 1e-6 * scale, "scale {s} vs {scale}");
        let mut seen = [false; 3];
        for (x, y) in w.iter().zip(&fq) {
            let code = (x / s).round().clamp(-1.0, 1.0);
            assert!(
                (y - code * s).abs() <= 1e-6 * s,
                "w {x} -> {y}, want {}",
                code * s
            );
            seen[(code + 1.0) as usize] = true;
        }
        assert_eq!(seen, [true; 3], "all of -1, 0, +1 appear");
        // All-zero weights stay finite.
        let z = vec_of(ternary_ste(t2(vec![0.0; 6], 2, 3, &d)));
        assert!(z.iter().all(|x| *x == 0.0));
    }

    #[test]
    fn activation_quant_is_exact_int8_per_row() {
        let d = dev();
        let x = vec![
            0.5, -1.0, 0.25, 0.0, 3.0, 2.0, -0.001, 1.5, 0.0, 0.0, 0.0, 0.0,
        ];
        let (q, g) = activation_codes(t2(x.clone(), 3, 4, &d));
        let (q, g) = (vec_of(q), vec_of(g));
        assert_eq!(g, vec![1.0, 3.0, 1e-5]);
        for r in 0..3 {
            for c in 0..4 {
                let v = q[r * 4 + c];
                assert_eq!(v, v.trunc(), "integer code");
                assert!((-128.0..=127.0).contains(&v));
                let want = (x[r * 4 + c] * 127.0 / g[r]).round().clamp(-128.0, 127.0);
                assert_eq!(v, want);
            }
        }
        assert_eq!(&q[0..4], &[64.0, -127.0, 32.0, 0.0]);
        // The row max maps to ±127 exactly.
        assert_eq!(q[4], 127.0);
    }

    #[test]
    fn straight_through_estimator_passes_gradients() {
        let d = dev().autodiff();
        let w = t2(vec![0.3, -0.7, 0.05, 1.2, -0.2, 0.9], 2, 3, &d).require_grad();
        let x = t2(vec![0.1, 0.4, -0.8], 1, 3, &d).require_grad();
        // y = sum(xq · wq^T); with STE, dy/dw[o, i] = xq[i] and dy/dx[i] = Σ_o wq[o, i].
        let y = activation_ste(x.clone())
            .matmul(ternary_ste(w.clone()).transpose())
            .sum();
        let grads = y.backward();
        let gw = w
            .grad(&grads)
            .expect("grad w")
            .into_data()
            .try_to_vec::<f32>();
        let gx = x
            .grad(&grads)
            .expect("grad x")
            .into_data()
            .try_to_vec::<f32>();
        let (gw, gx) = (gw.expect("f32"), gx.expect("f32"));
        let g = 0.8f32;
        let xq: Vec<f32> = [0.1f32, 0.4, -0.8]
            .iter()
            .map(|v| (v * 127.0 / g).round() * g / 127.0)
            .collect();
        for o in 0..2 {
            for i in 0..3 {
                assert!((gw[o * 3 + i] - xq[i]).abs() < 1e-6, "{gw:?}");
            }
        }
        let s = (0.3 + 0.7 + 0.05 + 1.2 + 0.2 + 0.9) / 6.0f32;
        let wv = [0.3f32, -0.7, 0.05, 1.2, -0.2, 0.9];
        for i in 0..3 {
            let want: f32 = (0..2)
                .map(|o| (wv[o * 3 + i] / s).round().clamp(-1.0, 1.0) * s)
                .sum();
            assert!((gx[i] - want).abs() < 1e-5, "{gx:?}");
        }
        assert!(gw.iter().any(|v| *v != 0.0) && gx.iter().any(|v| *v != 0.0));
    }
}
