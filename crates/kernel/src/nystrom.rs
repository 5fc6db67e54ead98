//! Nyström features: the usual alternative to sketching for kernel approximation.

use faer::{Mat, MatRef, Par};
use polysketch_core::linalg::gemm;
use rand::seq::index::sample;

use crate::PolyKernel;
use crate::error::{KernelError, Result, enough_rows, finite, same};
use crate::pca::top_eigenpairs;

/// Nyström features with \\(m\\) landmarks \\(Z\\) drawn uniformly from the training rows:
/// \\(\phi(x) = k(x, Z)\,U\Lambda^{-1/2}\\), with \\(K_{ZZ} = U\Lambda U^\top\\) (eigenvalues below
/// \\(10^{-10}\lambda_{\max}\\) dropped), so \\(\phi(x)^\top\phi(y) = k(x,Z)K_{ZZ}^{+}k(Z,y)\\).
#[derive(Debug, Clone, PartialEq)]
pub struct Nystrom {
    kernel: PolyKernel,
    landmarks: Mat<f64>,
    /// \\(U\Lambda^{-1/2}\\), `[m, m']`.
    map: Mat<f64>,
}

impl Nystrom {
    /// Draws `m` landmarks from the rows of `x` (`[n, d]`) with `seed` and factors \\(K_{ZZ}\\).
    ///
    /// # Errors
    /// [`KernelError::TooFewRows`] if `m > n`; `m = 0`; eigendecomposition failure.
    pub fn fit(
        kernel: PolyKernel, x: MatRef<'_, f64>, m: usize, seed: u64, par: Par,
    ) -> Result<Self> {
        const OP: &str = "Nystrom::fit";
        enough_rows(OP, m, x.nrows())?;
        finite(OP, "x", x)?;
        if m == 0 {
            return Err(KernelError::InvalidParameter {
                op: OP,
                reason: "needs at least one landmark".into(),
            });
        }
        let mut idx = sample(&mut polysketch_core::seeded_rng(seed), x.nrows(), m).into_vec();
        idx.sort_unstable();
        let landmarks = Mat::from_fn(m, x.ncols(), |i, j| x[(idx[i], j)]);
        let kzz = kernel.gram(landmarks.as_ref(), landmarks.as_ref(), par)?;
        let (values, vectors) = top_eigenpairs(kzz.as_ref(), m, par)?;
        let keep =
            values.iter().take_while(|&&v| v > 1e-10 * values[0].max(f64::MIN_POSITIVE)).count();
        let map = Mat::from_fn(m, keep, |i, c| vectors[(i, c)] / values[c].sqrt());
        Ok(Self { kernel, landmarks, map })
    }

    /// The number of features (landmarks kept after dropping null directions).
    pub fn dim(&self) -> usize {
        self.map.ncols()
    }

    /// \\(\phi\\) of every row: `[n, d]` → `[n, dim()]`.
    ///
    /// # Errors
    /// Width mismatch, non-finite input.
    pub fn transform(&self, x: MatRef<'_, f64>, par: Par) -> Result<Mat<f64>> {
        same("Nystrom::transform", "columns", self.landmarks.ncols(), x.ncols())?;
        let kxz = self.kernel.gram(x, self.landmarks.as_ref(), par)?;
        let mut out = Mat::zeros(x.nrows(), self.map.ncols());
        gemm(out.as_mut(), kxz.as_ref(), self.map.as_ref(), 1.0, false, par);
        Ok(out)
    }
}
