//! Layer normalisation of rows, forward and backward side by side.

use faer::{Mat, MatMut, MatRef};
use polysketch_sketch::Scalar;

/// \\(\epsilon\\) inside the square root of the variance.
pub const LN_EPS: f64 = 1e-5;

/// What the backward of [`layernorm_forward`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct LnSaved<T> {
    /// `[n, h]`: the normalised rows \\(\hat x = (x - \mu)/\sigma\\), before gain and bias.
    pub xhat: Mat<T>,
    /// `[n]`: \\(1/\sigma\\) of each row.
    pub rstd: Vec<T>,
}

/// \\(y = g \circ \hat x + \beta\\) with \\(\hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}\\) per row,
/// times `scale` (the attention layers fold their \\(h^{-1/4}\\) in here).
///
/// # Shapes
/// `x: [n, h]`, `gain`, `bias`: `[h]`, `out: [n, h]`.
///
/// # Panics
/// If the shapes differ (an unchecked kernel: the layers validate).
pub fn layernorm_forward<T: Scalar>(
    x: MatRef<'_, T>,
    gain: &[T],
    bias: &[T],
    scale: T,
    mut out: MatMut<'_, T>,
) -> LnSaved<T> {
    let (n, h) = (x.nrows(), x.ncols());
    assert!(
        gain.len() == h && bias.len() == h && out.nrows() == n && out.ncols() == h,
        "layernorm_forward: shapes"
    );
    let mut xhat = Mat::zeros(n, h);
    let mut rstd = vec![T::zero(); n];
    let hf = T::of(h as f64);
    for i in 0..n {
        let mean = (0..h).fold(T::zero(), |s, j| s + x[(i, j)]) / hf;
        let var = (0..h).fold(T::zero(), |s, j| {
            s + (x[(i, j)] - mean) * (x[(i, j)] - mean)
        }) / hf;
        let r = T::one() / (var + T::of(LN_EPS)).sqrt();
        rstd[i] = r;
        for j in 0..h {
            let xh = (x[(i, j)] - mean) * r;
            xhat[(i, j)] = xh;
            out[(i, j)] = scale * (gain[j] * xh + bias[j]);
        }
    }
    LnSaved { xhat, rstd }
}

/// Backward of [`layernorm_forward`]: given \\(\partial L/\partial y\\) = `dy`, writes
/// \\(\partial L/\partial x\\) into `dx` and adds \\(\partial L/\partial g\\), \\(\partial
/// L/\partial\beta\\) into `dgain`, `dbias`.
///
/// With \\(d\hat x = s\, g \circ dy\\):
/// \\(dx = \frac{1}{\sigma}\big(d\hat x - \overline{d\hat x} - \hat x\,\overline{d\hat x \circ \hat
/// x}\big)\\) (bars are means over the row).
///
/// # Panics
/// If the shapes differ.
pub fn layernorm_backward<T: Scalar>(
    dy: MatRef<'_, T>,
    saved: &LnSaved<T>,
    gain: &[T],
    scale: T,
    mut dx: MatMut<'_, T>,
    dgain: &mut [T],
    dbias: &mut [T],
) {
    let (n, h) = (saved.xhat.nrows(), saved.xhat.ncols());
    assert!(
        dy.nrows() == n && dy.ncols() == h && dx.nrows() == n && dx.ncols() == h,
        "layernorm_backward: shapes"
    );
    assert!(
        gain.len() == h && dgain.len() == h && dbias.len() == h,
        "layernorm_backward: parameter shapes"
    );
    let hf = T::of(h as f64);
    let mut dxhat = vec![T::zero(); h];
    for i in 0..n {
        let (mut mean_d, mut mean_dx) = (T::zero(), T::zero());
        for j in 0..h {
            // in the forward pass y = s (g x̂ + β), so dg += s dy x̂, dβ += s dy, dx̂ = s g dy
            let d = scale * dy[(i, j)];
            dgain[j] += d * saved.xhat[(i, j)];
            dbias[j] += d;
            dxhat[j] = d * gain[j];
            mean_d += dxhat[j];
            mean_dx += dxhat[j] * saved.xhat[(i, j)];
        }
        mean_d /= hf;
        mean_dx /= hf;
        for j in 0..h {
            dx[(i, j)] = saved.rstd[i] * (dxhat[j] - mean_d - saved.xhat[(i, j)] * mean_dx);
        }
    }
}
