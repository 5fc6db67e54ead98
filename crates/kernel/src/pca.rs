//! Centring, top eigenpairs, kernel PCA (exact and on features), and principal angles.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{ComputeEigenvectors, self_adjoint_evd, self_adjoint_evd_scratch};
use faer::{Mat, MatRef, Par};
use polysketch_core::linalg::gemm;

use crate::error::{KernelError, Result, enough_rows, finite, same};

/// Subtracts each column's mean: returns the centred copy and the means.
pub fn center_columns(m: MatRef<'_, f64>) -> (Mat<f64>, Vec<f64>) {
    let n = m.nrows().max(1) as f64;
    let means: Vec<f64> = (0..m.ncols()).map(|j| m.col(j).iter().sum::<f64>() / n).collect();
    (Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)] - means[j]), means)
}

/// The doubly centred kernel matrix \\(HKH\\), \\(H = I - \frac1n\mathbf 1\mathbf 1^\top\\): the
/// Gram matrix of the centred (implicit) features.
///
/// # Errors
/// [`KernelError::Mismatch`] if `k` is not square, [`KernelError::NonFinite`] for a NaN or an
/// infinity, an overflow error when the sums leave f64's range.
pub fn center_gram(k: MatRef<'_, f64>) -> Result<Mat<f64>> {
    same("center_gram", "columns", k.nrows(), k.ncols())?;
    finite("center_gram", "k", k)?;
    let n = k.nrows().max(1) as f64;
    let row: Vec<f64> = (0..k.nrows()).map(|i| k.row(i).iter().sum::<f64>() / n).collect();
    let col: Vec<f64> = (0..k.ncols()).map(|j| k.col(j).iter().sum::<f64>() / n).collect();
    let all = row.iter().sum::<f64>() / n;
    let centred = Mat::from_fn(k.nrows(), k.ncols(), |i, j| k[(i, j)] - row[i] - col[j] + all);
    polysketch_core::check_overflow("center_gram", "k", "centred", centred.as_ref())?;
    Ok(centred)
}

/// The `k` largest eigenvalues (descending) and their eigenvectors (`[n, k]`) of a symmetric
/// matrix, by faer's self-adjoint eigendecomposition under `par`.
///
/// # Errors
/// Not square, `k` larger than the size, non-finite values, no convergence.
pub fn top_eigenpairs(sym: MatRef<'_, f64>, k: usize, par: Par) -> Result<(Vec<f64>, Mat<f64>)> {
    const OP: &str = "top_eigenpairs";
    same(OP, "columns", sym.nrows(), sym.ncols())?;
    // an empty matrix has no eigenpairs (and faer's decomposition needs one row)
    enough_rows(OP, k.max(1), sym.nrows())?;
    finite(OP, "matrix", sym)?;
    let n = sym.nrows();
    let mut s = faer::diag::Diag::<f64>::zeros(n);
    let mut u = Mat::<f64>::zeros(n, n);
    let req = self_adjoint_evd_scratch::<f64>(n, ComputeEigenvectors::Yes, par, Default::default());
    let mut buf = MemBuffer::new(req);
    self_adjoint_evd(
        sym,
        s.as_mut(),
        Some(u.as_mut()),
        par,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|_| KernelError::NoConvergence { op: OP })?;
    // faer returns ascending eigenvalues: take the last k, largest first
    let values: Vec<f64> = (0..k).map(|i| s[n - 1 - i]).collect();
    let vectors = Mat::from_fn(n, k, |r, c| u[(r, n - 1 - c)]);
    Ok((values, vectors))
}

/// The result of a kernel PCA on `n` points.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelPca {
    /// The top eigenvalues of the centred kernel matrix divided by \\(n\\) (the variances along
    /// the principal components), descending.
    pub values: Vec<f64>,
    /// Their fractions of the total variance \\(\operatorname{tr}(HKH)/n\\).
    pub explained: Vec<f64>,
    /// The principal component scores of the points, `[n, k]`.
    pub scores: Mat<f64>,
}

/// Exact kernel PCA from the kernel matrix `k: [n, n]`: eigenpairs \\((\lambda_i, u_i)\\) of
/// \\(HKH\\), variances \\(\lambda_i/n\\), scores \\(u_i\sqrt{\lambda_i}\\).
///
/// # Errors
/// As [`top_eigenpairs`]; [`KernelError::TooFewRows`] with fewer than `k + 1` points;
/// [`KernelError::NonFinite`]; [`KernelError::InvalidParameter`] if `k` is not symmetric (to
/// `1e-10` of its largest entry: the eigensolver would read one triangle only).
pub fn kernel_pca_exact(k: MatRef<'_, f64>, components: usize, par: Par) -> Result<KernelPca> {
    const OP: &str = "kernel_pca_exact";
    enough_rows(OP, components.saturating_add(1), k.nrows())?;
    same(OP, "columns", k.nrows(), k.ncols())?;
    finite(OP, "k", k)?;
    // the eigensolver reads one triangle: an asymmetric matrix would be used silently
    let scale = k.norm_max();
    for j in 0..k.ncols() {
        for i in j + 1..k.nrows() {
            if (k[(i, j)] - k[(j, i)]).abs() > 1e-10 * scale {
                return Err(KernelError::InvalidParameter {
                    op: OP,
                    reason: format!(
                        "k is not symmetric: k[{i}, {j}] = {} but k[{j}, {i}] = {}",
                        k[(i, j)],
                        k[(j, i)]
                    ),
                });
            }
        }
    }
    let kc = center_gram(k)?;
    let (values, vectors) = top_eigenpairs(kc.as_ref(), components, par)?;
    let n = k.nrows() as f64;
    let total: f64 = (0..kc.nrows()).map(|i| kc[(i, i)]).sum();
    let scores = Mat::from_fn(vectors.nrows(), components, |i, c| {
        vectors[(i, c)] * values[c].max(0.0).sqrt()
    });
    Ok(KernelPca {
        explained: values.iter().map(|v| v / total).collect(),
        values: values.iter().map(|v| v / n).collect(),
        scores,
    })
}

/// Kernel PCA on explicit features `phi: [n, D]` (sketched or Nyström): PCA of the centred
/// features \\(\Phi_c\\) through the \\(D \times D\\) matrix \\(\Phi_c^\top\Phi_c\\), whose nonzero
/// eigenvalues are those of \\(\Phi_c\Phi_c^\top \approx HKH\\); scores \\(\Phi_c v_i\\).
///
/// # Errors
/// As [`kernel_pca_exact`]; more components than features.
pub fn kernel_pca_features(phi: MatRef<'_, f64>, components: usize, par: Par) -> Result<KernelPca> {
    const OP: &str = "kernel_pca_features";
    enough_rows(OP, components.saturating_add(1), phi.nrows())?;
    if components > phi.ncols() {
        return Err(KernelError::InvalidParameter {
            op: OP,
            reason: format!("{components} components from {} features", phi.ncols()),
        });
    }
    finite(OP, "phi", phi)?;
    let (pc, _) = center_columns(phi);
    let mut cov = Mat::zeros(phi.ncols(), phi.ncols());
    gemm(cov.as_mut(), pc.transpose(), pc.as_ref(), 1.0, false, par);
    let (values, vectors) = top_eigenpairs(cov.as_ref(), components, par)?;
    let mut scores = Mat::zeros(phi.nrows(), components);
    gemm(scores.as_mut(), pc.as_ref(), vectors.as_ref(), 1.0, false, par);
    let n = phi.nrows() as f64;
    let total: f64 = (0..cov.nrows()).map(|i| cov[(i, i)]).sum();
    Ok(KernelPca {
        explained: values.iter().map(|v| v / total).collect(),
        values: values.iter().map(|v| v / n).collect(),
        scores,
    })
}

/// Orthonormal basis of the columns of `a` by modified Gram–Schmidt (twice, for stability).
fn orthonormal(op: &'static str, a: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let mut q = a.to_owned();
    for j in 0..q.ncols() {
        for _ in 0..2 {
            for i in 0..j {
                let d: f64 = (0..q.nrows()).map(|r| q[(r, i)] * q[(r, j)]).sum();
                for r in 0..q.nrows() {
                    q[(r, j)] -= d * q[(r, i)];
                }
            }
        }
        let norm = (0..q.nrows()).map(|r| q[(r, j)].powi(2)).sum::<f64>().sqrt();
        let scale = (0..a.nrows()).map(|r| a[(r, j)].powi(2)).sum::<f64>().sqrt();
        if norm.is_nan() || norm <= 1e-12 * scale.max(f64::MIN_POSITIVE) {
            return Err(KernelError::InvalidParameter {
                op,
                reason: format!("column {j} is linearly dependent on the previous ones"),
            });
        }
        for r in 0..q.nrows() {
            q[(r, j)] /= norm;
        }
    }
    Ok(q)
}

/// The principal angles (radians, ascending) between the column spaces of `a: [n, k1]` and
/// `b: [n, k2]`: \\(\theta_i = \arccos\sigma_i(Q_a^\top Q_b)\\) with \\(Q_a, Q_b\\) orthonormal
/// bases. There are \\(\min(k_1, k_2)\\) of them; the last is the largest.
///
/// # Errors
/// Row mismatch, fewer rows than columns, linearly dependent columns, non-finite values.
pub fn principal_angles(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<Vec<f64>> {
    const OP: &str = "principal_angles";
    same(OP, "rows", a.nrows(), b.nrows())?;
    enough_rows(OP, a.ncols().max(b.ncols()), a.nrows())?;
    finite(OP, "a", a)?;
    finite(OP, "b", b)?;
    let (qa, qb) = (orthonormal(OP, a)?, orthonormal(OP, b)?);
    let mut m = Mat::zeros(qa.ncols(), qb.ncols());
    gemm(m.as_mut(), qa.transpose(), qb.as_ref(), 1.0, false, Par::Seq);
    // singular values of m: square roots of the eigenvalues of the smaller of m mᵀ, mᵀ m
    let mut g = Mat::zeros(m.nrows().min(m.ncols()), m.nrows().min(m.ncols()));
    if m.nrows() <= m.ncols() {
        gemm(g.as_mut(), m.as_ref(), m.transpose(), 1.0, false, Par::Seq);
    } else {
        gemm(g.as_mut(), m.transpose(), m.as_ref(), 1.0, false, Par::Seq);
    }
    let (values, _) = top_eigenpairs(g.as_ref(), g.nrows(), Par::Seq)?;
    // descending singular values give ascending angles
    Ok(values.iter().map(|v| v.max(0.0).sqrt().min(1.0).acos()).collect())
}
