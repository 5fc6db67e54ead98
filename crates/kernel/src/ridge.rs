//! Ridge regression in a feature space, and exact kernel ridge regression.

use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::cholesky::llt::factor::{
    LltRegularization, cholesky_in_place, cholesky_in_place_scratch,
};
use faer::linalg::cholesky::llt::solve::{solve_in_place_scratch, solve_in_place_with_conj};
use faer::linalg::matmul::triangular::{BlockStructure, matmul};
use faer::{Accum, Conj, Mat, MatMut, MatRef, Par};
use polysketch_core::collective::Collective;
use polysketch_core::linalg::gemm;

use crate::error::{KernelError, Result, enough_rows, finite, same};

/// Solves \\((M + \lambda I)X = R\\) for symmetric positive semi-definite \\(M\\) by Cholesky
/// (faer, explicit `par`), overwriting `rhs` with \\(X\\).
pub(crate) fn solve_regularised(
    op: &'static str, m: MatRef<'_, f64>, lambda: f64, rhs: &mut Mat<f64>, par: Par,
) -> Result<()> {
    let n = m.nrows();
    let mut a = m.to_owned();
    for i in 0..n {
        a[(i, i)] += lambda;
    }
    let req = StackReq::any_of(&[
        cholesky_in_place_scratch::<f64>(n, par, Default::default()),
        solve_in_place_scratch::<f64>(n, rhs.ncols(), par),
    ]);
    let mut buf = MemBuffer::new(req);
    let stack = MemStack::new(&mut buf);
    cholesky_in_place(a.as_mut(), LltRegularization::default(), par, stack, Default::default())
        .map_err(|_| KernelError::NotPositiveDefinite { op })?;
    solve_in_place_with_conj(a.as_ref(), Conj::No, rhs.as_mut(), par, stack);
    Ok(())
}

fn check_lambda(op: &'static str, lambda: f64) -> Result<()> {
    if !(lambda > 0.0 && lambda.is_finite()) {
        return Err(KernelError::InvalidParameter {
            op,
            reason: format!("lambda must be positive and finite, got {lambda}"),
        });
    }
    Ok(())
}

/// A linear model \\(\hat y = \phi(x)^\top w + \bar y\\) fitted by ridge regression in a feature
/// space: \\(\min_w \|(y - \bar y) - \Phi w\|^2 + \lambda\|w\|^2\\), i.e.
/// \\((\Phi^\top\Phi + \lambda I)w = \Phi^\top(y - \bar y)\\). With \\(\Phi\Phi^\top = K\\) this is
/// exactly [`KernelRidge`] on \\(K\\).
#[derive(Debug, Clone, PartialEq)]
pub struct Ridge {
    /// \\(w\\), one weight per feature.
    pub weights: Vec<f64>,
    /// \\(\bar y\\).
    pub intercept: f64,
    /// \\(\lambda\\).
    pub lambda: f64,
}

impl Ridge {
    /// Fits one model per \\(\lambda\\), sharing the \\(D \times D\\) product
    /// \\(\Phi^\top\Phi\\) (the expensive part, \\(O(nD^2)\\)).
    ///
    /// # Shapes
    /// `features: [n, D]`, `y: [n]`.
    ///
    /// # Errors
    /// Length mismatch, fewer than 2 rows, non-finite values, a non-positive \\(\lambda\\).
    pub fn fit_path(
        features: MatRef<'_, f64>, y: &[f64], lambdas: &[f64], par: Par,
    ) -> Result<Vec<Ridge>> {
        const OP: &str = "Ridge::fit_path";
        same(OP, "targets", features.nrows(), y.len())?;
        enough_rows(OP, 2, features.nrows())?;
        finite(OP, "features", features)?;
        finite(OP, "y", MatRef::from_column_major_slice(y, y.len(), 1))?;
        for &l in lambdas {
            check_lambda(OP, l)?;
        }
        let d = features.ncols();
        let mean = y.iter().sum::<f64>() / y.len() as f64;
        let yc = Mat::from_fn(y.len(), 1, |i, _| y[i] - mean);
        let mut gram = Mat::zeros(d, d);
        gemm(gram.as_mut(), features.transpose(), features, 1.0, false, par);
        let mut rhs = Mat::zeros(d, 1);
        gemm(rhs.as_mut(), features.transpose(), yc.as_ref(), 1.0, false, par);
        solve_path(OP, gram.as_ref(), &rhs, mean, lambdas, par)
    }

    /// [`fit_path`](Self::fit_path) over rows spread across the ranks of `comm`: each rank
    /// passes only its rows (`features: [n_r, D]`, `y: [n_r]`, possibly none); see
    /// [`NormalEquations`], which this runs (and which takes rows in chunks, for data larger
    /// than memory).
    ///
    /// # Errors
    /// As [`fit_path`](Self::fit_path) (2 rows in all); a failed exchange.
    pub fn fit_path_distributed(
        features: MatRef<'_, f64>, y: &[f64], lambdas: &[f64], comm: &dyn Collective, par: Par,
    ) -> Result<Vec<Ridge>> {
        let mut eq = NormalEquations::new(features.ncols())?;
        eq.add_rows(features, y, par)?;
        eq.reduce(comm)?.solve(lambdas, par)
    }

    /// \\(\hat y = \Phi w + \bar y\\) for `features: [m, D]`.
    ///
    /// # Errors
    /// Width mismatch, non-finite features.
    pub fn predict(&self, features: MatRef<'_, f64>, par: Par) -> Result<Vec<f64>> {
        affine_predict(("Ridge::predict", "features"), features, &self.weights, self.intercept, par)
    }
}

/// The sums a ridge fit needs, accumulated over rows (in chunks, on one rank or many):
/// \\(G = \Phi^\top\Phi\\), \\(\Phi^\top y\\), \\(\Phi^\top 1\\), \\(\sum y\\) and the row count,
/// \\(D^2 + 2D + 2\\) values. [`reduce`](Self::reduce) adds every rank's in one fixed-order sum
/// ([`Collective::chain_sum_f64`]); [`solve`](Self::solve) centres with
/// \\(\Phi^\top(y - \bar y) = \Phi^\top y - \bar y\,\Phi^\top 1\\) and solves
/// \\((G + \lambda I)w = \Phi^\top(y - \bar y)\\) for each \\(\lambda\\).
///
/// Over the same rows this equals [`Ridge::fit_path`] to rounding (the chunks' and ranks'
/// partial sums are added in order, and the centring comes after the products); the same
/// chunks on the same rank count always give the same numbers.
///
/// # Example
/// ```
/// use polysketch_core::collective::SingleProcess;
/// use polysketch_kernel::{NormalEquations, Ridge, faer::{Mat, Par}};
/// let x = Mat::from_fn(40, 3, |i, j| ((i * 7 + j * 3) % 11) as f64 / 11.0);
/// let y: Vec<f64> = (0..40).map(|i| x[(i, 0)] - 2.0 * x[(i, 2)] + 0.5).collect();
/// let mut eq = NormalEquations::new(3)?;
/// eq.add_rows(x.as_ref().subrows(0, 25), &y[..25], Par::Seq)?; // two chunks
/// eq.add_rows(x.as_ref().subrows(25, 15), &y[25..], Par::Seq)?;
/// let fit = eq.reduce(&SingleProcess)?.solve(&[1e-6], Par::Seq)?;
/// let whole = Ridge::fit_path(x.as_ref(), &y, &[1e-6], Par::Seq)?;
/// for (a, b) in fit[0].weights.iter().zip(&whole[0].weights) {
///     assert!((a - b).abs() < 1e-8);
/// }
/// # Ok::<(), polysketch_kernel::KernelError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NormalEquations {
    d: usize,
    /// `[G (column-major, lower triangle only; the rest stays 0), Φᵀy, Φᵀ1, Σy, n]`.
    sums: Vec<f64>,
}

impl NormalEquations {
    /// Zero sums for `d` features.
    ///
    /// # Errors
    /// [`KernelError::InvalidParameter`] if `d` is 0 or \\(D^2\\) values would not fit in
    /// memory's address range.
    pub fn new(d: usize) -> Result<Self> {
        let len = d.checked_mul(d).and_then(|x| x.checked_add(2 * d + 2));
        match len {
            Some(len) if d > 0 && len <= isize::MAX as usize / 8 => {
                Ok(Self { d, sums: vec![0.0; len] })
            }
            _ => Err(KernelError::InvalidParameter {
                op: "NormalEquations::new",
                reason: format!("{d} features: need 1 ≤ D with D² values addressable"),
            }),
        }
    }

    /// Adds rows: `features: [m, D]`, `y: [m]` (m may be 0).
    ///
    /// # Errors
    /// Width or length mismatch, non-finite values.
    pub fn add_rows(&mut self, features: MatRef<'_, f64>, y: &[f64], par: Par) -> Result<()> {
        const OP: &str = "NormalEquations::add_rows";
        let d = self.d;
        same(OP, "targets", features.nrows(), y.len())?;
        same(OP, "features", features.ncols(), d)?;
        finite(OP, "features", features)?;
        finite(OP, "y", MatRef::from_column_major_slice(y, y.len(), 1))?;
        let (gram, rest) = self.sums.split_at_mut(d * d);
        let gram = MatMut::from_column_major_slice_mut(gram, d, d);
        // G is symmetric: only its lower triangle is formed (half the product's work)
        matmul(
            gram,
            BlockStructure::TriangularLower,
            Accum::Add,
            features.transpose(),
            BlockStructure::Rectangular,
            features,
            BlockStructure::Rectangular,
            1.0,
            par,
        );
        let ones = vec![1.0; y.len()];
        let (fy, rest) = rest.split_at_mut(d);
        let (f1, rest) = rest.split_at_mut(d);
        for (out, v) in [(fy, y), (f1, &ones[..])] {
            let (out, v) = (
                MatMut::from_column_major_slice_mut(out, d, 1),
                MatRef::from_column_major_slice(v, v.len(), 1),
            );
            gemm(out, features.transpose(), v, 1.0, true, par);
        }
        rest[0] += y.iter().sum::<f64>();
        rest[1] += y.len() as f64;
        Ok(())
    }

    /// The rows counted so far (on this rank, before [`reduce`](Self::reduce)).
    pub fn rows(&self) -> usize {
        self.sums[self.sums.len() - 1] as usize
    }

    /// Every rank's sums added in rank order; every rank receives them.
    ///
    /// # Errors
    /// A failed exchange.
    pub fn reduce(self, comm: &dyn Collective) -> Result<Self> {
        let mut total = vec![0.0; self.sums.len()];
        comm.chain_sum_f64(&[self.sums], &mut total)?;
        Ok(Self { d: self.d, sums: total })
    }

    /// One [`Ridge`] per \\(\lambda\\).
    ///
    /// # Errors
    /// Fewer than 2 rows; a non-positive \\(\lambda\\); a system that is not positive
    /// definite.
    pub fn solve(&self, lambdas: &[f64], par: Par) -> Result<Vec<Ridge>> {
        const OP: &str = "NormalEquations::solve";
        let d = self.d;
        enough_rows(OP, 2, self.rows())?;
        for &l in lambdas {
            check_lambda(OP, l)?;
        }
        let (lower, rest) = self.sums.split_at(d * d);
        let lower = MatRef::from_column_major_slice(lower, d, d);
        let gram = Mat::from_fn(d, d, |i, j| if i >= j { lower[(i, j)] } else { lower[(j, i)] });
        let mean = rest[2 * d] / rest[2 * d + 1];
        let rhs = Mat::from_fn(d, 1, |i, _| rest[i] - mean * rest[d + i]);
        solve_path(OP, gram.as_ref(), &rhs, mean, lambdas, par)
    }
}

/// One [`Ridge`] per \\(\lambda\\) from the normal equations \\((G + \lambda I)w = b\\).
fn solve_path(
    op: &'static str, gram: MatRef<'_, f64>, rhs: &Mat<f64>, mean: f64, lambdas: &[f64], par: Par,
) -> Result<Vec<Ridge>> {
    let d = gram.nrows();
    lambdas
        .iter()
        .map(|&lambda| {
            let mut w = rhs.clone();
            solve_regularised(op, gram, lambda, &mut w, par)?;
            Ok(Ridge { weights: (0..d).map(|i| w[(i, 0)]).collect(), intercept: mean, lambda })
        })
        .collect()
}

/// Exact kernel ridge regression: \\((K + \lambda I)\alpha = y - \bar y\\) by Cholesky,
/// \\(\hat y(x) = \sum_i \alpha_i k(x_i, x) + \bar y\\).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRidge {
    /// \\(\alpha\\), one weight per training row.
    pub alpha: Vec<f64>,
    /// \\(\bar y\\).
    pub intercept: f64,
    /// \\(\lambda\\).
    pub lambda: f64,
}

impl KernelRidge {
    /// Fits on the training kernel matrix `k: [n, n]`:
    /// \\(\alpha = (K + \lambda I)^{-1}(y - \bar y)\\).
    ///
    /// # Shapes
    /// `k: [n, n]`, `y: [n]`; [`predict`](Self::predict) takes `[m, n]` test-against-train
    /// kernel rows.
    ///
    /// # Errors
    /// Shape mismatch, non-finite values, a non-positive \\(\lambda\\),
    /// [`KernelError::NotPositiveDefinite`].
    ///
    /// ```
    /// use faer::{Mat, Par};
    /// use polysketch_kernel::{KernelError, KernelRidge, PolyKernel};
    ///
    /// let x = Mat::from_fn(30, 2, |i, j| ((i * 7 + j * 3) % 10) as f64 / 10.0);
    /// let y: Vec<f64> = (0..30).map(|i| (x[(i, 0)] + x[(i, 1)]).powi(2)).collect();
    /// let kernel = PolyKernel::new(2, 1.0, 1.0)?;
    /// let k = kernel.gram(x.as_ref(), x.as_ref(), Par::Seq)?;
    /// let model = KernelRidge::fit(k.as_ref(), &y, 1e-6, Par::Seq)?;
    /// let fitted = model.predict(k.as_ref(), Par::Seq)?;
    /// assert!((fitted[3] - y[3]).abs() < 1e-3);
    /// assert!(KernelRidge::fit(k.as_ref(), &y[..29], 1e-6, Par::Seq).is_err());
    /// # Ok::<(), KernelError>(())
    /// ```
    pub fn fit(k: MatRef<'_, f64>, y: &[f64], lambda: f64, par: Par) -> Result<Self> {
        const OP: &str = "KernelRidge::fit";
        same(OP, "kernel columns", k.nrows(), k.ncols())?;
        same(OP, "targets", k.nrows(), y.len())?;
        enough_rows(OP, 2, y.len())?;
        check_lambda(OP, lambda)?;
        finite(OP, "k", k)?;
        finite(OP, "y", MatRef::from_column_major_slice(y, y.len(), 1))?;
        let mean = y.iter().sum::<f64>() / y.len() as f64;
        let mut alpha = Mat::from_fn(y.len(), 1, |i, _| y[i] - mean);
        solve_regularised(OP, k, lambda, &mut alpha, par)?;
        Ok(Self { alpha: (0..y.len()).map(|i| alpha[(i, 0)]).collect(), intercept: mean, lambda })
    }

    /// \\(\hat y = K_\text{test,train}\,\alpha + \bar y\\) for `k_test: [m, n]`.
    ///
    /// # Errors
    /// Width mismatch, non-finite values.
    pub fn predict(&self, k_test: MatRef<'_, f64>, par: Par) -> Result<Vec<f64>> {
        affine_predict(("KernelRidge::predict", "k_test"), k_test, &self.alpha, self.intercept, par)
    }
}

/// `x · w + intercept` for the rows of `x: [m, d]`, `w: [d]`: the predictions of both ridge
/// forms (features against weights, or test-against-train kernel rows against \\(\alpha\\)).
fn affine_predict(
    (op, input): (&'static str, &'static str), x: MatRef<'_, f64>, w: &[f64], intercept: f64,
    par: Par,
) -> Result<Vec<f64>> {
    same(op, input, w.len(), x.ncols())?;
    finite(op, input, x)?;
    let w = MatRef::from_column_major_slice(w, w.len(), 1);
    let mut out = Mat::zeros(x.nrows(), 1);
    gemm(out.as_mut(), x, w, 1.0, false, par);
    let pred: Vec<f64> = (0..x.nrows()).map(|i| out[(i, 0)] + intercept).collect();
    let column = MatRef::from_column_major_slice(&pred, pred.len(), 1);
    polysketch_core::check_overflow(op, input, "predictions", column)?;
    Ok(pred)
}

/// Checks that every value of each named slice is finite (a NaN in a prediction would make a
/// score that looks like a number).
fn finite_values<const N: usize>(
    op: &'static str, inputs: [(&'static str, &[f64]); N],
) -> Result<()> {
    for (input, x) in inputs {
        finite(op, input, MatRef::from_column_major_slice(x, x.len(), 1))?;
    }
    Ok(())
}

/// Root mean squared error.
///
/// # Errors
/// [`KernelError::Mismatch`] for different lengths, [`KernelError::TooFewRows`] when empty,
/// [`KernelError::NonFinite`] for a NaN or infinity in either.
pub fn rmse(pred: &[f64], y: &[f64]) -> Result<f64> {
    same("rmse", "lengths", y.len(), pred.len())?;
    enough_rows("rmse", 1, y.len())?;
    finite_values("rmse", [("pred", pred), ("y", y)])?;
    let score =
        (pred.iter().zip(y).map(|(p, t)| (p - t).powi(2)).sum::<f64>() / y.len() as f64).sqrt();
    finite_score("rmse", score)
}

/// A score of finite inputs that overflowed (squares of values near 1e155 and beyond): a typed
/// error, not an infinity or a NaN that looks like a score.
fn finite_score(op: &'static str, score: f64) -> Result<f64> {
    let cell = [score];
    polysketch_core::check_overflow(
        op,
        "pred and y",
        "score",
        MatRef::from_column_major_slice(&cell, 1, 1),
    )?;
    Ok(score)
}

/// Coefficient of determination \\(R^2 = 1 - \sum(\hat y - y)^2/\sum(y - \bar y)^2\\).
///
/// # Errors
/// As [`rmse`]; [`KernelError::InvalidParameter`] if `y` is constant.
pub fn r2(pred: &[f64], y: &[f64]) -> Result<f64> {
    same("r2", "lengths", y.len(), pred.len())?;
    enough_rows("r2", 2, y.len())?;
    finite_values("r2", [("pred", pred), ("y", y)])?;
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let tot: f64 = y.iter().map(|t| (t - mean).powi(2)).sum();
    if tot == 0.0 {
        return Err(KernelError::InvalidParameter {
            op: "r2",
            reason: "the targets are constant".into(),
        });
    }
    let res: f64 = pred.iter().zip(y).map(|(p, t)| (p - t).powi(2)).sum();
    finite_score("r2", 1.0 - res / tot)
}

/// Validation-based choice among fitted models (a λ path, or one fit per λ): the model whose
/// predictions on the validation rows score the highest \\(R^2\\) against their targets `y`
/// (the first of equals), with that score.
///
/// `predict(m)` gives model `m`'s predictions on the validation rows (clip them there if you
/// clip the test predictions). Models come as results so that fits made on the way (one per
/// λ) stop the search at their first error.
///
/// # Errors
/// [`KernelError::InvalidParameter`] when there is no model; the errors of a fit, of `predict` and
/// of [`r2`].
///
/// ```
/// use faer::{Mat, Par};
/// use polysketch_kernel::{Ridge, select_by_r2};
/// let x = Mat::from_fn(40, 2, |i, j| ((i * 3 + j * 7) % 11) as f64 - 5.0);
/// let y: Vec<f64> = (0..40).map(|i| x[(i, 0)] - 2.0 * x[(i, 1)]).collect();
/// let path = Ridge::fit_path(x.as_ref(), &y, &[1e-3, 1e3], Par::Seq)?;
/// let (best, score) = select_by_r2(path.into_iter().map(Ok), &y, |m| m.predict(x.as_ref(), Par::Seq))?;
/// assert_eq!(best.lambda, 1e-3);
/// assert!(score > 0.99);
/// # Ok::<(), polysketch_kernel::KernelError>(())
/// ```
pub fn select_by_r2<M>(
    models: impl IntoIterator<Item = Result<M>>, y: &[f64],
    mut predict: impl FnMut(&M) -> Result<Vec<f64>>,
) -> Result<(M, f64)> {
    let mut best: Option<(M, f64)> = None;
    for model in models {
        let model = model?;
        let score = r2(&predict(&model)?, y)?;
        if best.as_ref().is_none_or(|(_, b)| score > *b) {
            best = Some((model, score));
        }
    }
    best.ok_or_else(|| KernelError::InvalidParameter {
        op: "select_by_r2",
        reason: "no model to choose from".into(),
    })
}
