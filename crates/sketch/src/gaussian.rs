//! The Gaussian Johnson–Lindenstrauss sketch (degree 1).

use faer::{Mat, MatMut, MatRef, Par};

use crate::{
    PolySketch, Result, Scalar, SketchRng, check_param_bytes, check_sketch_sizes, linalg::gemm,
    normal, seeded_rng,
};

/// Draws a `rows x cols` matrix of independent \\(\mathcal N(0, 1)\\) entries times `scale`,
/// column by column (the order in which the stream of `rng` is consumed).
pub(crate) fn gaussian_matrix<T: Scalar>(
    rng: &mut SketchRng, rows: usize, cols: usize, scale: f64,
) -> Mat<T> {
    let mut g = Mat::zeros(rows, cols);
    for j in 0..cols {
        for i in 0..rows {
            g[(i, j)] = T::of(scale * normal(rng));
        }
    }
    g
}

/// Gaussian JL sketch of degree 1: \\(S = G/\sqrt r\\) with \\(G \in \mathbb{R}^{h \times r}\\)
/// of independent standard Gaussians, so \\(S^\top x = G^\top x/\sqrt r\\) and
/// \\(\mathbb{E}\langle S^\top x, S^\top y\rangle = \langle x, y\rangle\\).
///
/// Its JL moments are known exactly: \\(\|S^\top x\|^2\\) is \\(\chi^2_r/r\\) for unit \\(x\\),
/// with variance \\(2/r\\). It is the base of the self-tensored sketch for \\(p = 2\\).
///
/// # Shapes
/// `apply`: `[n, h]` → `[n, r]`.
///
/// # Example
/// ```
/// use faer::{Mat, Par};
/// use polysketch_sketch::{GaussianJl, PolySketch};
/// let s = GaussianJl::<f32>::new(16, 64, 7)?;
/// let y = s.apply(Mat::<f32>::identity(16, 16).as_ref(), Par::Seq)?;
/// assert_eq!((y.nrows(), y.ncols()), (16, 64));
/// # Ok::<(), polysketch_sketch::SketchError>(())
/// ```
#[derive(Debug, Clone)]
pub struct GaussianJl<T: Scalar> {
    /// `[h, r]`: \\(G/\sqrt r\\).
    s: Mat<T>,
}

impl<T: Scalar> GaussianJl<T> {
    /// Draws the sketch for input dimension `h` and sketch size `r` from `seed`.
    ///
    /// # Errors
    /// [`ZeroDimension`](crate::SketchError::ZeroDimension) if `h` or `r` is 0,
    /// [`TooLarge`](crate::SketchError::TooLarge) if `h * r` values would not fit.
    pub fn new(h: usize, r: usize, seed: u64) -> Result<Self> {
        const NAME: &str = "GaussianJl";
        check_sketch_sizes(NAME, (1, true, ""), h, r)?;
        check_param_bytes(NAME, h as u128 * r as u128, size_of::<T>())?;
        let mut rng = seeded_rng(seed);
        let s = gaussian_matrix(&mut rng, h, r, 1.0 / (r as f64).sqrt());
        Ok(Self { s })
    }

    /// The matrix \\(S = G/\sqrt r\\), `[h, r]`.
    pub fn matrix(&self) -> MatRef<'_, T> {
        self.s.as_ref()
    }
}

impl<T: Scalar> PolySketch<T> for GaussianJl<T> {
    fn name(&self) -> &'static str {
        "GaussianJl"
    }
    fn degree(&self) -> usize {
        1
    }
    fn input_dim(&self) -> usize {
        self.s.nrows()
    }
    fn sketch_dim(&self) -> usize {
        self.s.ncols()
    }
    fn apply_rows(&self, a: MatRef<'_, T>, out: MatMut<'_, T>) {
        // out = A S
        gemm(out, a, self.s.as_ref(), T::one(), false, Par::Seq);
    }
    fn vjp_rows(&self, _a: MatRef<'_, T>, grad: MatRef<'_, T>, out: MatMut<'_, T>) {
        // forward: Y = A S, so dA = dY Sᵀ
        gemm(out, grad, self.s.transpose(), T::one(), false, Par::Seq);
    }
    fn dense_levels(&self) -> Option<Vec<Mat<f64>>> {
        let s = self.s.as_ref();
        Some(vec![Mat::from_fn(s.nrows(), s.ncols(), |i, j| s[(i, j)].as_f64())])
    }
}
