//! CountSketch (degree 1), also the building block of TensorSketch.

use faer::prelude::ReborrowMut;
use faer::{MatMut, MatRef, unzip, zip};
use rand::RngExt;

use crate::{
    PolySketch, Result, Scalar, SketchRng, check_param_bytes, check_sketch_sizes, seeded_rng,
};

/// CountSketch of degree 1: coordinate \\(j\\) of the input goes to bucket
/// \\(\beta(j) \in \{0, \dots, r-1\}\\) with sign \\(\sigma(j) \in \{\pm 1\}\\):
/// \\((S^\top x)_c = \sum_{j : \beta(j) = c} \sigma(j) x_j\\).
///
/// Buckets and signs are independent and uniform, so
/// \\(\mathbb{E}\langle S^\top x, S^\top y\rangle = \langle x, y\rangle\\). A row costs
/// \\(O(h)\\) whatever \\(r\\).
///
/// # Shapes
/// `apply`: `[n, h]` → `[n, r]`.
///
/// # Example
/// ```
/// use faer::{mat, Par};
/// use polysketch_sketch::{CountSketch, PolySketch};
/// let s = CountSketch::<f64>::new(3, 2, 1)?;
/// let y = s.apply(mat![[1.0, 2.0, 3.0]].as_ref(), Par::Seq)?;
/// // Every input coordinate lands in exactly one bucket with a sign of ±1.
/// let total: f64 = (0..2).map(|c| y[(0, c)].abs()).sum();
/// assert!(total <= 6.0);
/// # Ok::<(), polysketch_sketch::SketchError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CountSketch<T: Scalar> {
    r: usize,
    /// `[h]`: bucket of each input coordinate.
    bucket: Vec<u32>,
    /// `[h]`: sign of each input coordinate, ±1.
    sign: Vec<T>,
}

impl<T: Scalar> CountSketch<T> {
    /// Draws a CountSketch from `R^h` to `R^r` from `seed`.
    ///
    /// # Errors
    /// [`ZeroDimension`](crate::SketchError::ZeroDimension) if `h` or `r` is 0,
    /// [`TooLarge`](crate::SketchError::TooLarge) if `r` exceeds `u32::MAX` or the tables would
    /// not fit.
    pub fn new(h: usize, r: usize, seed: u64) -> Result<Self> {
        Self::from_rng(h, r, &mut seeded_rng(seed))
    }

    /// Draws from an existing generator (how TensorSketch draws its `p` independent hashes).
    pub(crate) fn from_rng(h: usize, r: usize, rng: &mut SketchRng) -> Result<Self> {
        const NAME: &str = "CountSketch";
        check_sketch_sizes(NAME, (1, true, ""), h, r)?;
        if r > u32::MAX as usize {
            return Err(crate::SketchError::TooLarge {
                sketch: NAME,
                bytes: r as u128,
                limit: u32::MAX as u128,
            });
        }
        check_param_bytes(NAME, h as u128, 4 + size_of::<T>())?;
        let mut bucket = Vec::with_capacity(h);
        let mut sign = Vec::with_capacity(h);
        for _ in 0..h {
            bucket.push(rng.random_range(0..r as u32));
            sign.push(if rng.random_bool(0.5) { T::one() } else { -T::one() });
        }
        Ok(Self { r, bucket, sign })
    }

    /// Bucket \\(\beta(j)\\) of input coordinate `j`.
    pub fn bucket(&self, j: usize) -> usize {
        self.bucket[j] as usize
    }

    /// Sign \\(\sigma(j)\\) of input coordinate `j`.
    pub fn sign(&self, j: usize) -> T {
        self.sign[j]
    }

    /// `out = A S` for a chunk (column by column: `out[:, β(j)] += σ(j) a[:, j]`).
    pub(crate) fn forward(&self, a: MatRef<'_, T>, mut out: MatMut<'_, T>) {
        out.fill(T::zero());
        for (j, (&b, &s)) in self.bucket.iter().zip(&self.sign).enumerate() {
            zip!(out.rb_mut().col_mut(b as usize), a.col(j)).for_each(|unzip!(o, x)| *o += s * *x);
        }
    }

    /// `out (+)= dY Sᵀ`: `out[:, j] (+)= σ(j) dY[:, β(j)]`.
    pub(crate) fn transpose(&self, dy: MatRef<'_, T>, mut out: MatMut<'_, T>, accumulate: bool) {
        for (j, (&b, &s)) in self.bucket.iter().zip(&self.sign).enumerate() {
            let src = dy.col(b as usize);
            if accumulate {
                zip!(out.rb_mut().col_mut(j), src).for_each(|unzip!(o, g)| *o += s * *g);
            } else {
                zip!(out.rb_mut().col_mut(j), src).for_each(|unzip!(o, g)| *o = s * *g);
            }
        }
    }
}

impl<T: Scalar> PolySketch<T> for CountSketch<T> {
    fn name(&self) -> &'static str {
        "CountSketch"
    }
    fn degree(&self) -> usize {
        1
    }
    fn input_dim(&self) -> usize {
        self.bucket.len()
    }
    fn sketch_dim(&self) -> usize {
        self.r
    }
    fn apply_rows(&self, a: MatRef<'_, T>, out: MatMut<'_, T>) {
        assert_eq!((a.ncols(), out.ncols(), a.nrows()), (self.input_dim(), self.r, out.nrows()));
        self.forward(a, out);
    }
    fn vjp_rows(&self, _a: MatRef<'_, T>, grad: MatRef<'_, T>, out: MatMut<'_, T>) {
        // forward: Y = A S (S is linear), so dA = dY Sᵀ
        self.transpose(grad, out, false);
    }
}
