//! Layer normalisation of rows, forward and backward side by side, on row-major data.

use faer::MatRef;
use polysketch_core::{
    Scalar,
    linalg::{copy_slice, dot, sum},
};

/// \\(\epsilon\\) inside the square root of the variance.
pub const LN_EPS: f64 = 1e-5;

/// What the backward of [`layernorm_forward`] needs (its buffers are reused across calls).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LnSaved<T> {
    /// Row-major `[n, h]`: the normalised rows \\(\hat x = (x - \mu)/\sigma\\), before gain and
    /// bias.
    pub xhat: Vec<T>,
    /// `[n]`: \\(1/\sigma\\) of each row.
    pub rstd: Vec<T>,
}

/// \\(y = s\,(g \circ \hat x + \beta)\\) with \\(\hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}\\) per
/// row, where \\(s\\) = `scale` (the attention layers fold their \\(h^{-1/4}\\) in here); the
/// normalised rows and inverse deviations go into `saved` for the backward.
///
/// # Shapes
/// `x: [n, h]` (any strides; contiguous rows are read as slices), `gain`, `bias`: `[h]`,
/// `out`: row-major `[n, h]`.
///
/// # Panics
/// If the shapes differ (an unchecked kernel: the layers validate).
pub fn layernorm_forward<T: Scalar>(
    x: MatRef<'_, T>, gain: &[T], bias: &[T], scale: T, out: &mut [T], saved: &mut LnSaved<T>,
) {
    saved.resize(x.nrows(), x.ncols());
    let rows = LnRowsMut { xhat: &mut saved.xhat, rstd: &mut saved.rstd };
    layernorm_rows_forward(x, gain, bias, scale, out, rows);
}

/// The saved rows of a layer norm, borrowed: `xhat: [n, h]` row-major, `rstd: [n]` (a range of
/// rows of an [`LnSaved`], or buffers the caller keeps).
#[derive(Debug, Clone, Copy)]
pub struct LnRows<'a, T> {
    /// \(\hat x\), row-major `[n, h]`.
    pub xhat: &'a [T],
    /// \(1/\sigma\) per row, `[n]`.
    pub rstd: &'a [T],
}

impl<'a, T> From<&'a LnSaved<T>> for LnRows<'a, T> {
    /// Every row saved.
    fn from(s: &'a LnSaved<T>) -> Self {
        LnRows { xhat: &s.xhat, rstd: &s.rstd }
    }
}

/// [`LnRows`], mutable: where [`layernorm_rows_forward`] writes.
#[derive(Debug)]
pub struct LnRowsMut<'a, T> {
    /// \(\hat x\), row-major `[n, h]`.
    pub xhat: &'a mut [T],
    /// \(1/\sigma\) per row, `[n]`.
    pub rstd: &'a mut [T],
}

impl<T: Scalar> LnSaved<T> {
    /// Sizes it for `n` rows of `h` values (the contents are written by the forward).
    pub fn resize(&mut self, n: usize, h: usize) {
        self.xhat.resize(n * h, T::zero());
        self.rstd.resize(n, T::zero());
    }
}

impl<T> LnSaved<T> {
    /// Rows `r0..r1` of the saved state (rows of `h` values).
    ///
    /// # Panics
    /// If the range is past the rows saved.
    pub fn rows(&self, r0: usize, r1: usize, h: usize) -> LnRows<'_, T> {
        LnRows { xhat: &self.xhat[r0 * h..r1 * h], rstd: &self.rstd[r0..r1] }
    }

    /// Rows `r0..r1`, mutable.
    ///
    /// # Panics
    /// If the range is past the rows held.
    pub fn rows_mut(&mut self, r0: usize, r1: usize, h: usize) -> LnRowsMut<'_, T> {
        LnRowsMut { xhat: &mut self.xhat[r0 * h..r1 * h], rstd: &mut self.rstd[r0..r1] }
    }
}

/// [`layernorm_forward`] into borrowed buffers: `saved` must hold exactly `n` rows of `h`.
///
/// # Panics
/// If the shapes differ.
pub fn layernorm_rows_forward<T: Scalar>(
    x: MatRef<'_, T>, gain: &[T], bias: &[T], scale: T, out: &mut [T], saved: LnRowsMut<'_, T>,
) {
    let (n, h) = (x.nrows(), x.ncols());
    assert!(
        gain.len() == h
            && bias.len() == h
            && out.len() == n * h
            && saved.xhat.len() == n * h
            && saved.rstd.len() == n,
        "layernorm_forward: shapes"
    );
    // by chunks of rows, each copied and then normalised while it is still in cache
    const CHUNK: usize = 64;
    let chunks = saved.xhat.chunks_mut(CHUNK * h).zip(saved.rstd.chunks_mut(CHUNK));
    for (c, ((xhat, rstd), out)) in chunks.zip(out.chunks_mut(CHUNK * h)).enumerate() {
        for (i, xh) in (c * CHUNK..).zip(xhat.chunks_exact_mut(h)) {
            copy_row(x, i, xh);
        }
        normalise_rows(xhat, rstd, gain, bias, scale, out);
    }
}

/// Row `i` of `x` (any strides; a contiguous row is copied as a slice) into `dst` (`[x.ncols()]`).
///
/// # Panics
/// If `i` is past the rows of `x` or `dst` has another length.
pub(crate) fn copy_row<T: Scalar>(x: MatRef<'_, T>, i: usize, dst: &mut [T]) {
    match x.row(i).try_as_row_major() {
        Some(r) => copy_slice(dst, r.as_slice()),
        None => dst.iter_mut().enumerate().for_each(|(j, v)| *v = x[(i, j)]),
    }
}

polysketch_core::multiversion! {
    /// The rows of `xh` (`[n, h]`, holding \(x\)) become \(\hat x\), `rstd` their
    /// \(1/\sigma\), and `out` \(s(g \circ \hat x + \beta)\).
    fn normalise_rows<T: Scalar>(
        xh: &mut [T],
        rstd: &mut [T],
        gain: &[T],
        bias: &[T],
        scale: T,
        out: &mut [T]
    ) {
        let h = gain.len();
        let hf = T::of(h as f64);
        for ((xh, o), rs) in xh.chunks_exact_mut(h).zip(out.chunks_exact_mut(h)).zip(rstd.iter_mut()) {
            let mean = sum(xh) / hf;
            xh.iter_mut().for_each(|v| *v -= mean);
            let r = T::one() / (dot(xh, xh) / hf + T::of(LN_EPS)).sqrt();
            *rs = r;
            for ((o, xh), (g, b)) in o.iter_mut().zip(xh.iter_mut()).zip(gain.iter().zip(bias)) {
                *xh *= r;
                *o = scale * (*g * *xh + *b);
            }
        }
    }
}

/// Backward of [`layernorm_forward`] (`saved`: an [`LnSaved`], or some of its rows, [`LnSaved::rows`]): given \\(\partial L/\partial y\\) = `dy` (row-major),
/// writes \\(\partial L/\partial x\\) into `dx` (row-major) and adds \\(\partial L/\partial g\\),
/// \\(\partial L/\partial\beta\\) into `dgain`, `dbias`.
///
/// With \\(d\hat x = s\, g \circ dy\\):
/// \\(dx = \frac{1}{\sigma}\big(d\hat x - \overline{d\hat x} - \hat x\,\overline{d\hat x \circ \hat
/// x}\big)\\) (bars are means over the row).
///
/// # Panics
/// If the shapes differ.
pub fn layernorm_backward<'a, T: Scalar>(
    dy: &[T], saved: impl Into<LnRows<'a, T>>, gain: &[T], scale: T, dx: &mut [T], dgain: &mut [T],
    dbias: &mut [T],
) {
    let saved = saved.into();
    let (n, h) = (saved.rstd.len(), gain.len());
    assert!(
        dy.len() == n * h && dx.len() == n * h && saved.xhat.len() == n * h,
        "layernorm_backward: shapes"
    );
    assert!(dgain.len() == h && dbias.len() == h, "layernorm_backward: parameter shapes");
    let mut work = vec![T::zero(); 2 * h];
    let (d, dxhat) = work.split_at_mut(h);
    backward_rows(dy, saved.xhat, saved.rstd, gain, scale, dx, dgain, dbias, d, dxhat);
}

polysketch_core::multiversion! {
    /// The rows of [`layernorm_backward`] (shapes checked there), one after the other; `d`,
    /// `dxhat`: work rows of `h`.
    #[allow(clippy::too_many_arguments)]
    fn backward_rows<T: Scalar>(
        dy: &[T],
        xhat: &[T],
        rstd: &[T],
        gain: &[T],
        scale: T,
        dx: &mut [T],
        dgain: &mut [T],
        dbias: &mut [T],
        d: &mut [T],
        dxhat: &mut [T]
    ) {
        let h = gain.len();
        let hf = T::of(h as f64);
        let rows = dy.chunks_exact(h).zip(xhat.chunks_exact(h)).zip(dx.chunks_exact_mut(h));
        for (((dyr, xh), dxr), &r) in rows.zip(rstd) {
            // in the forward pass y = s (g x̂ + β), so dβ += s dy, dg += s dy x̂, dx̂ = s g dy
            d.iter_mut().zip(dyr).for_each(|(a, b)| *a = scale * *b);
            dbias.iter_mut().zip(&*d).for_each(|(a, b)| *a += *b);
            dgain.iter_mut().zip(d.iter().zip(xh)).for_each(|(a, (b, x))| *a += *b * *x);
            dxhat.iter_mut().zip(d.iter().zip(gain)).for_each(|(a, (b, g))| *a = *b * *g);
            let mean_d = dxhat.iter().fold(T::zero(), |s, v| s + *v) / hf;
            let mean_dx = dot(dxhat, xh) / hf;
            dxr.iter_mut()
                .zip(dxhat.iter().zip(xh))
                .for_each(|(o, (a, x))| *o = r * (*a - mean_d - *x * mean_dx));
        }
    }
}
