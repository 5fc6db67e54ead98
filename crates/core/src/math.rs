//! Fast elementwise math for `f32`: `exp` and `tanh` by polynomials that vectorise, each
//! compiled for the widest vector extension the CPU has.

/// `exp(x)` for `f32` by range reduction and a degree-6 polynomial (Cephes' `expf`: relative
/// error below 2 ulp on the normal range), written so that loops over it vectorise; arguments
/// below -87.3 give 0, and the result saturates at `exp(88.37)` ≈ 2.4e38 above.
#[inline(always)]
pub fn fast_exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.3, 88.37);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * C1 - n * C2;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    let scaled = y * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.3 { 0.0 } else { scaled }
}

crate::multiversion! {
    /// The body of [`exp_shifted_f32`].
    fn exp_shifted_f32_impl(v: &mut [f32], shift: f32) {
        for x in v.iter_mut() {
            *x = fast_exp_f32(*x - shift);
        }
    }
}

/// `v[i] = exp(v[i] - shift)` with [`fast_exp_f32`], vectorised to the widest extension the CPU
/// has.
pub fn exp_shifted_f32(v: &mut [f32], shift: f32) {
    exp_shifted_f32_impl(v, shift)
}

/// `tanh(x)` for `f32` as a rational function of degrees 13/6 on `[-7.9, 7.9]` and ±1 beyond
/// (the minimax-style approximation Eigen's `ptanh` uses), written so that loops over it
/// vectorise; absolute error below `1e-6`.
#[inline(always)]
pub fn fast_tanh_f32(x: f32) -> f32 {
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16_f32;
    p = p * x2 + 2.000_188e-13;
    p = p * x2 - 8.604_672e-11;
    p = p * x2 + 5.122_297e-8;
    p = p * x2 + 1.485_722_4e-5;
    p = p * x2 + 6.372_619_3e-4;
    p = p * x2 + 4.893_524_6e-3;
    let mut q = 1.198_258_4e-6_f32;
    q = q * x2 + 1.185_347e-4;
    q = q * x2 + 2.268_434_6e-3;
    q = q * x2 + 4.893_525e-3;
    x * p / q
}

crate::multiversion! {
    /// The body of [`tanh_f32`].
    fn tanh_f32_impl(v: &mut [f32]) {
        for x in v.iter_mut() {
            *x = fast_tanh_f32(*x);
        }
    }
}

/// `v[i] = tanh(v[i])` with [`fast_tanh_f32`], vectorised to the widest extension the CPU has.
pub fn tanh_f32(v: &mut [f32]) {
    tanh_f32_impl(v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_tanh_is_accurate() {
        let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.01).collect();
        let mut v = xs.clone();
        super::tanh_f32(&mut v);
        for (x, t) in xs.iter().zip(&v) {
            let exact = (*x as f64).tanh();
            assert!((*t as f64 - exact).abs() < 1e-6, "tanh({x}) = {t}, exact {exact}");
        }
        let mut big = vec![100.0f32, -100.0, 0.0];
        super::tanh_f32(&mut big);
        assert_eq!(big, vec![1.0, -1.0, 0.0]);
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in -8700..8837 {
            let x = i as f32 * 0.01;
            let (fast, exact) = (super::fast_exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max((fast - exact).abs() / exact);
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(super::fast_exp_f32(-100.0), 0.0);
        let mut v = vec![0.0f32, 1.0, -1.0, 2.5];
        super::exp_shifted_f32(&mut v, 1.0);
        for (x, e) in v.iter().zip([(-1.0f32).exp(), 1.0, (-2.0f32).exp(), 1.5f32.exp()]) {
            assert!((x - e).abs() <= 3e-7 * e);
        }
    }
}
