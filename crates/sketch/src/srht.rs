//! The subsampled randomised Hadamard projection used by TensorSRHT tree nodes.

use faer::prelude::ReborrowMut;
use faer::{Mat, MatMut, MatRef, unzip, zip};
use rand::RngExt;

use crate::{Scalar, SketchRng};

/// \\(x \mapsto (H D x)_{\iota}\\): random signs \\(D\\), the unnormalised \\(\pm 1\\) Walsh–Hadamard
/// transform \\(H\\) of size \\(d' = 2^{\lceil \log_2 d \rceil}\\) (input zero-padded), then `r`
/// coordinates \\(\iota_1..\iota_r\\) sampled uniformly with replacement.
///
/// Each output coordinate satisfies \\(\mathbb{E}[(HDx)_i (HDy)_i] = \langle x, y\rangle\\), the
/// same second moment as a column of a standard Gaussian matrix, which is why it can replace
/// the Gaussian projection in a tree node with the same \\(1/\sqrt r\\) scale (Ahle et al. 2020,
/// TensorSRHT).
#[derive(Debug, Clone)]
pub(crate) struct Srht<T: Scalar> {
    /// `[d]`: the diagonal of `D`, ±1.
    signs: Vec<T>,
    /// `d'`: power of two ≥ d.
    padded: usize,
    /// `[r]`: sampled coordinates of `HDx`.
    idx: Vec<u32>,
}

impl<T: Scalar> Srht<T> {
    pub(crate) fn draw(d: usize, r: usize, rng: &mut SketchRng) -> Self {
        let padded = d.next_power_of_two();
        let signs =
            (0..d).map(|_| if rng.random_bool(0.5) { T::one() } else { -T::one() }).collect();
        let idx = (0..r).map(|_| rng.random_range(0..padded as u64) as u32).collect();
        Self { signs, padded, idx }
    }

    /// In-place unnormalised Walsh–Hadamard transform of every row of `w` (`[rows, d']`),
    /// butterflies on whole columns so the inner loop runs down contiguous memory.
    fn fwht_rows(w: &mut Mat<T>) {
        let n = w.ncols();
        let mut len = 1;
        while len < n {
            for start in (0..n).step_by(2 * len) {
                for j in start..start + len {
                    let (left, right) = w.as_mut().split_at_col_mut(j + len);
                    zip!(left.col_mut(j), right.col_mut(0)).for_each(|unzip!(x, y)| {
                        let (a, b) = (*x, *y);
                        *x = a + b;
                        *y = a - b;
                    });
                }
            }
            len *= 2;
        }
    }

    /// `out = (H D m)[:, ι]` for a chunk `m: [rows, d]`, `out: [rows, r]`.
    pub(crate) fn forward(&self, m: MatRef<'_, T>, mut out: MatMut<'_, T>) {
        let mut w = Mat::<T>::zeros(m.nrows(), self.padded);
        for (j, &s) in self.signs.iter().enumerate() {
            zip!(w.as_mut().col_mut(j), m.col(j)).for_each(|unzip!(o, x)| *o = s * *x);
        }
        Self::fwht_rows(&mut w);
        for (c, &i) in self.idx.iter().enumerate() {
            out.rb_mut().col_mut(c).copy_from(w.col(i as usize));
        }
    }

    /// The transpose: `out (+)= dp Pᵀ H D`, i.e. scatter the `r` columns back to their
    /// coordinates, transform (H is symmetric), and apply the signs.
    pub(crate) fn transpose(&self, dp: MatRef<'_, T>, mut out: MatMut<'_, T>, accumulate: bool) {
        let mut w = Mat::<T>::zeros(dp.nrows(), self.padded);
        for (c, &i) in self.idx.iter().enumerate() {
            zip!(w.as_mut().col_mut(i as usize), dp.col(c)).for_each(|unzip!(o, g)| *o += *g);
        }
        Self::fwht_rows(&mut w);
        for (j, &s) in self.signs.iter().enumerate() {
            if accumulate {
                zip!(out.rb_mut().col_mut(j), w.col(j)).for_each(|unzip!(o, x)| *o += s * *x);
            } else {
                zip!(out.rb_mut().col_mut(j), w.col(j)).for_each(|unzip!(o, x)| *o = s * *x);
            }
        }
    }
}
