//! FAVOR+ features (Performer, Choromanski et al. 2020): positive orthogonal random features
//! of the softmax kernel, the paper's linear-attention baseline.
//!
//! With \\(x = q/h^{1/4}\\) and \\(y = k/h^{1/4}\\) (so that \\(\langle x, y\rangle = \langle q,
//! k\rangle/\sqrt h\\), softmax's score) and \\(\Omega\\) of \\(m\\) rows \\(\omega_f \in
//! \mathbb R^h\\),
//! \\[ \phi(x)_f = \frac{1}{\sqrt m}\exp\left(\langle\omega_f, x\rangle - \tfrac12\|x\|^2 -
//!     c\right), \qquad \mathbb E_\omega\,\langle\phi(x), \phi(y)\rangle = e^{\langle x,
//!     y\rangle - c_x - c_y} \\]
//! for \\(\omega \sim N(0, I_h)\\). The rows of \\(\Omega\\) come in blocks of \\(h\\) that are
//! orthogonal to each other (Gram–Schmidt of a Gaussian matrix), each row rescaled to the
//! length of an independent \\(N(0, I_h)\\) vector, so each row is still \\(N(0, I_h)\\)
//! (FAVOR+'s orthogonal random features, which lower the estimator's variance).
//!
//! The shift \\(c\\) keeps the exponentials in range and cancels in the attention's ratio
//! \\(\sum_j\langle\phi(x_i), \phi(y_j)\rangle v_j / \sum_j\langle\phi(x_i), \phi(y_j)\rangle\\):
//! for queries the row's own maximum (one factor per query row), for keys the constant
//! \\(\max_f\|\omega_f\|^2/2\\), the supremum of \\(\langle\omega_f, y\rangle - \|y\|^2/2\\) over
//! \\(y\\) (one factor for every key; it does not depend on the data, so decoding token by token
//! gives the same features). Every key feature lies in \\((0, 1/\sqrt m]\\) and the largest
//! query feature of each row is \\(1/\sqrt m\\). Since the output does not depend on the
//! shifts, the backward treats them as constants:
//! \\(\partial\phi_f/\partial x = \phi_f(\omega_f - x)\\), so
//! \\(dx = \Omega^\top(d\phi \circ \phi) - x\sum_f d\phi_f\phi_f\\).

use faer::{Mat, MatMut, MatRef};
use polysketch_core::{Scalar, normal, seeded_rng};

use crate::{AttentionError, Result};

/// Which shift the features take (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Each row's own maximum (queries).
    Query,
    /// The data-independent \\(\max_f\|\omega_f\|^2/2\\) (keys).
    Key,
}

/// The random features of one layer: \\(\Omega\\), `[m, h]`, shared by the heads.
#[derive(Debug, Clone)]
pub struct Favor<T> {
    omega: Mat<T>,
    /// \\(\max_f\|\omega_f\|^2/2\\), the keys' shift.
    key_shift: T,
}

impl<T: Scalar> Favor<T> {
    /// \\(m\\) orthogonal random features for head size \\(h\\), drawn from `seed`.
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`] if `h` or `m` is 0 or \\(mh\\) values would not be
    /// addressable.
    ///
    /// ```
    /// use polysketch_attention::performer::Favor;
    /// let favor = Favor::<f64>::new(8, 20, 1)?;
    /// let w = favor.omega();
    /// // rows within a block of h = 8 are orthogonal
    /// let dot: f64 = (0..8).map(|c| w[(0, c)] * w[(3, c)]).sum();
    /// assert!(dot.abs() < 1e-12);
    /// # Ok::<(), polysketch_attention::AttentionError>(())
    /// ```
    pub fn new(h: usize, m: usize, seed: u64) -> Result<Self> {
        let size = h.checked_mul(m).filter(|&s| s > 0 && s <= isize::MAX as usize / 16);
        if size.is_none() {
            return Err(AttentionError::InvalidConfig(format!(
                "performer needs h ≥ 1 and features ≥ 1 with h·features addressable, got h = \
                 {h}, features = {m}"
            )));
        }
        let mut rng = seeded_rng(seed);
        let mut omega = Mat::<f64>::zeros(m, h);
        for start in (0..m).step_by(h) {
            // a Gaussian h×h block, its rows made orthonormal (modified Gram–Schmidt)
            let mut block: Vec<Vec<f64>> =
                (0..h).map(|_| (0..h).map(|_| normal(&mut rng)).collect()).collect();
            for i in 0..h {
                for j in 0..i {
                    let d: f64 = (0..h).map(|c| block[i][c] * block[j][c]).sum();
                    for c in 0..h {
                        block[i][c] -= d * block[j][c];
                    }
                }
                let norm = block[i].iter().map(|x| x * x).sum::<f64>().sqrt();
                block[i].iter_mut().for_each(|x| *x /= norm);
            }
            for (i, row) in block.iter().enumerate().take(m - start) {
                // the length of an independent N(0, I_h) vector
                let len = (0..h).map(|_| normal(&mut rng).powi(2)).sum::<f64>().sqrt();
                for c in 0..h {
                    omega[(start + i, c)] = len * row[c];
                }
            }
        }
        let omega = Mat::from_fn(m, h, |i, j| T::of(omega[(i, j)]));
        let key_shift = (0..m)
            .map(|f| (0..h).map(|c| omega[(f, c)].as_f64().powi(2)).sum::<f64>() / 2.0)
            .fold(0.0, f64::max);
        Ok(Self { omega, key_shift: T::of(key_shift) })
    }

    /// \\(\Omega\\), `[m, h]`.
    pub fn omega(&self) -> MatRef<'_, T> {
        self.omega.as_ref()
    }

    /// The keys' shift \\(\max_f\|\omega_f\|^2/2\\).
    pub fn key_shift(&self) -> T {
        self.key_shift
    }

    /// Number of features \\(m\\).
    pub fn features(&self) -> usize {
        self.omega.nrows()
    }

    /// \\(\phi\\) of every row of `x` (`[n, h]`, already scaled by \\(h^{-1/4}\\)) into
    /// `out` (`[n, m]`), shifted for `side`.
    pub(crate) fn apply(&self, x: MatRef<'_, T>, side: Side, mut out: MatMut<'_, T>) {
        let (n, m) = (x.nrows(), self.features());
        polysketch_core::linalg::gemm(
            out.as_mut(),
            x,
            self.omega.as_ref().transpose(),
            T::one(),
            false,
            faer::Par::Seq,
        );
        let inv_sqrt_m = T::of(1.0 / (m as f64).sqrt());
        let mut row = vec![T::zero(); m];
        for i in 0..n {
            let half_sq =
                (0..x.ncols()).fold(T::zero(), |s, c| s + x[(i, c)] * x[(i, c)]) * T::of(0.5);
            (0..m).for_each(|f| row[f] = out[(i, f)] - half_sq);
            let shift = match side {
                Side::Query => row.iter().copied().fold(T::neg_infinity(), |a, b| a.max(b)),
                Side::Key => self.key_shift,
            };
            row.iter_mut().for_each(|z| *z -= shift);
            T::exp_in_place(&mut row);
            (0..m).for_each(|f| out[(i, f)] = row[f] * inv_sqrt_m);
        }
    }

    /// The backward of [`apply`](Self::apply): `dx` (`[n, h]`) from the features `phi` and
    /// their gradient `dphi` (`[n, m]`), overwriting `dx`:
    /// \\(dx = (d\phi\circ\phi)\,\Omega - x \circ \mathrm{rowsum}(d\phi\circ\phi)\\).
    pub(crate) fn backward(
        &self, x: MatRef<'_, T>, phi: MatRef<'_, T>, dphi: MatRef<'_, T>, mut dx: MatMut<'_, T>,
    ) {
        let (n, m) = (x.nrows(), self.features());
        let d = Mat::from_fn(n, m, |i, f| dphi[(i, f)] * phi[(i, f)]);
        polysketch_core::linalg::gemm(
            dx.as_mut(),
            d.as_ref(),
            self.omega.as_ref(),
            T::one(),
            false,
            faer::Par::Seq,
        );
        for i in 0..n {
            let total = (0..m).fold(T::zero(), |s, f| s + d[(i, f)]);
            for c in 0..x.ncols() {
                dx[(i, c)] -= x[(i, c)] * total;
            }
        }
    }
}
