//! Hedgehog's learned feature map (Zhang et al. 2024, "The Hedgehog & the Porcupine"), the
//! paper's Table 7 baseline: \\(\phi(x) = [\mathrm{softmax}(xW + b),\ \mathrm{softmax}(-(xW +
//! b))]\\), \\(m\\) nonnegative features from \\(W\\) of shape \\([h, m/2]\\) and \\(b\\) of
//! \\(m/2\\), shared by the heads, trained with the model.
//!
//! The Hedgehog authors first fit \\(W, b\\) so that the linear attention's weights mimic a
//! softmax's (a distillation loss); here, as in the PolySketch paper's comparison, they are
//! learned end to end with the rest of the model (no distillation step). \\(W\\) starts as the
//! identity on its first \\(\min(h, m/2)\\) columns (the Hedgehog initialisation) and
//! \\(N(0, 1/h)\\) on the rest, \\(b\\) at 0.
//!
//! Backward of one softmax half \\(a = \mathrm{softmax}(z)\\): \\(dz = a \circ (da - \langle
//! da, a\rangle)\\); the negated half enters with the opposite sign; then \\(dx = dz\,W^\top\\),
//! \\(dW \mathrel{+}= x^\top dz\\), \\(db \mathrel{+}= \mathbf 1^\top dz\\).

use faer::{Mat, MatMut, MatRef, Par};
use polysketch_core::linalg::gemm;
use polysketch_core::{Scalar, normal, seeded_rng};

use crate::nn::{Param, ParamMut};
use crate::{AttentionError, Result};

/// The learned feature map of one layer.
#[derive(Debug, Clone)]
pub struct Hedgehog<T> {
    h: usize,
    half: usize,
    /// \\(W\\), `[h, m/2]` row-major.
    w: Vec<T>,
    /// \\(b\\), `[m/2]`.
    b: Vec<T>,
}

impl<T: Scalar> Hedgehog<T> {
    /// A map to `features` (even) features for head size `h`, initialised from `seed`.
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`]: `h` of 0, `features` odd or 0, or \\(hm/2\\) values
    /// past the parameter limit.
    ///
    /// ```
    /// use polysketch_attention::hedgehog::Hedgehog;
    /// let map = Hedgehog::<f32>::new(4, 8, 0)?;
    /// assert_eq!(map.parameters()[0].shape, vec![4, 4]);
    /// assert!(Hedgehog::<f32>::new(4, 7, 0).is_err());
    /// # Ok::<(), polysketch_attention::AttentionError>(())
    /// ```
    pub fn new(h: usize, features: usize, seed: u64) -> Result<Self> {
        if h == 0 || features == 0 || !features.is_multiple_of(2) {
            return Err(AttentionError::InvalidConfig(format!(
                "hedgehog needs h ≥ 1 and an even number of features ≥ 2, got h = {h}, \
                 features = {features}"
            )));
        }
        let half = features / 2;
        let count = (h as u128) * (half as u128) + half as u128;
        polysketch_core::check_param_bytes("Hedgehog::new", count, size_of::<T>())?;
        let mut rng = seeded_rng(seed);
        let sd = 1.0 / (h as f64).sqrt();
        let mut w = vec![T::zero(); h * half];
        for i in 0..h {
            for j in 0..half {
                let g = normal(&mut rng);
                w[i * half + j] =
                    if j < h { T::of(if i == j { 1.0 } else { 0.0 }) } else { T::of(sd * g) };
            }
        }
        Ok(Self { h, half, w, b: vec![T::zero(); half] })
    }

    /// Number of features \\(m\\).
    pub fn features(&self) -> usize {
        2 * self.half
    }

    /// The named parameters: `hedgehog.w [h, m/2]`, `hedgehog.b [m/2]`.
    pub fn parameters(&self) -> Vec<Param<'_, T>> {
        vec![
            Param { name: "hedgehog.w".into(), shape: vec![self.h, self.half], data: &self.w },
            Param { name: "hedgehog.b".into(), shape: vec![self.half], data: &self.b },
        ]
    }

    /// Mutable [`parameters`](Self::parameters), in the same order.
    pub fn parameters_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        let (h, half) = (self.h, self.half);
        vec![
            ParamMut { name: "hedgehog.w".into(), shape: vec![h, half], data: &mut self.w },
            ParamMut { name: "hedgehog.b".into(), shape: vec![half], data: &mut self.b },
        ]
    }

    /// Zeroed gradients, one per parameter.
    pub(crate) fn zero_grads(&self) -> Vec<Vec<T>> {
        vec![vec![T::zero(); self.w.len()], vec![T::zero(); self.half]]
    }

    /// \\(z = xW + b\\) of the rows of `x` (`[n, h]`) into `z` (`[n, m/2]`).
    fn logits(&self, x: MatRef<'_, T>, mut z: MatMut<'_, T>) {
        let w = MatRef::from_row_major_slice(&self.w, self.h, self.half);
        gemm(z.as_mut(), x, w, T::one(), false, Par::Seq);
        for i in 0..z.nrows() {
            for j in 0..self.half {
                z[(i, j)] += self.b[j];
            }
        }
    }

    /// \\(\phi\\) of every row of `x` (`[n, h]`) into `out` (`[n, m]`).
    pub(crate) fn apply(&self, x: MatRef<'_, T>, mut out: MatMut<'_, T>) {
        let (n, half) = (x.nrows(), self.half);
        let mut z = Mat::zeros(n, half);
        self.logits(x, z.as_mut());
        let mut row = vec![T::zero(); half];
        for i in 0..n {
            for (sign, offset) in [(T::one(), 0), (-T::one(), half)] {
                (0..half).for_each(|j| row[j] = sign * z[(i, j)]);
                let max = row.iter().copied().fold(T::neg_infinity(), |a, b| a.max(b));
                row.iter_mut().for_each(|v| *v -= max);
                T::exp_in_place(&mut row);
                let inv = T::one() / row.iter().fold(T::zero(), |s, v| s + *v);
                (0..half).for_each(|j| out[(i, offset + j)] = row[j] * inv);
            }
        }
    }

    /// The backward of [`apply`](Self::apply): `dx` (`[n, h]`, overwritten) from the features
    /// `phi` and their gradient `dphi` (`[n, m]`); adds into `grads` (as
    /// [`zero_grads`](Self::zero_grads)).
    pub(crate) fn backward(
        &self, x: MatRef<'_, T>, phi: MatRef<'_, T>, dphi: MatRef<'_, T>, dx: MatMut<'_, T>,
        grads: &mut [Vec<T>],
    ) {
        let (n, half) = (x.nrows(), self.half);
        // dz = a ∘ (da - ⟨da, a⟩) - c ∘ (dc - ⟨dc, c⟩)
        let mut dz = Mat::zeros(n, half);
        for i in 0..n {
            for (sign, offset) in [(T::one(), 0), (-T::one(), half)] {
                let dot = (0..half)
                    .fold(T::zero(), |s, j| s + phi[(i, offset + j)] * dphi[(i, offset + j)]);
                for j in 0..half {
                    let a = phi[(i, offset + j)];
                    dz[(i, j)] += sign * a * (dphi[(i, offset + j)] - dot);
                }
            }
        }
        let w = MatRef::from_row_major_slice(&self.w, self.h, half);
        gemm(dx, dz.as_ref(), w.transpose(), T::one(), false, Par::Seq);
        let (dw, db) = grads.split_at_mut(1);
        let dw = faer::MatMut::from_row_major_slice_mut(&mut dw[0], self.h, half);
        gemm(dw, x.transpose(), dz.as_ref(), T::one(), true, Par::Seq);
        for i in 0..n {
            db[0].iter_mut().enumerate().for_each(|(j, g)| *g += dz[(i, j)]);
        }
    }
}
