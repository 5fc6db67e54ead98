//! TensorSketch (Pham & Pagh 2013): `p` CountSketches combined by FFT, for any degree.

use std::sync::Arc;

use faer::prelude::ReborrowMut;
use faer::{Mat, MatMut, MatRef};
use rustfft::{Fft, FftPlanner, num_complex::Complex};

use crate::{
    CountSketch, MAX_DEGREE, PolySketch, Result, Scalar, check_param_bytes, check_sketch_sizes,
    seeded_rng,
};

/// TensorSketch of degree \\(p \ge 1\\): with independent CountSketches \\(C_1, \dots, C_p\\)
/// from \\(\mathbb{R}^h\\) to \\(\mathbb{R}^r\\),
/// \\[ S^\top x^{\otimes p} = C_1 x \circledast C_2 x \circledast \dots \circledast C_p x
///   = \mathcal F^{-1}\Big(\prod_{k=1}^p \mathcal F(C_k x)\Big), \\]
/// the circular convolution computed with length-`r` FFTs (rustfft, planned once).
///
/// This equals a CountSketch of \\(x^{\otimes p}\\) with bucket \\(\sum_k \beta_k(i_k) \bmod r\\)
/// and sign \\(\prod_k \sigma_k(i_k)\\) for the index \\((i_1, \dots, i_p)\\), so it is unbiased
/// for \\(\langle x, y\rangle^p\\). A row costs \\(O(p(h + r \log r))\\).
///
/// # Shapes
/// `apply`: `[n, h]` → `[n, r]`.
///
/// # Example
/// ```
/// use faer::{Mat, Par};
/// use polysketch_sketch::{PolySketch, TensorSketch};
/// let s = TensorSketch::<f64>::new(4, 32, 3, 11)?;
/// let y = s.apply(Mat::from_fn(2, 4, |i, j| (i + j) as f64).as_ref(), Par::Seq)?;
/// assert_eq!((y.nrows(), y.ncols()), (2, 32));
/// # Ok::<(), polysketch_sketch::SketchError>(())
/// ```
#[derive(Clone)]
pub struct TensorSketch<T: Scalar> {
    r: usize,
    /// The `p` independent CountSketches, `C_1 .. C_p`.
    hashes: Vec<CountSketch<T>>,
    fft: Arc<dyn Fft<T>>,
    ifft: Arc<dyn Fft<T>>,
}

impl<T: Scalar> core::fmt::Debug for TensorSketch<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TensorSketch")
            .field("h", &self.input_dim())
            .field("r", &self.r)
            .field("p", &self.hashes.len())
            .finish()
    }
}

impl<T: Scalar> TensorSketch<T> {
    /// Draws a degree-`p` TensorSketch from `R^{h^p}` to `R^r` from `seed`.
    ///
    /// # Errors
    /// [`InvalidDegree`](crate::SketchError::InvalidDegree) unless `1 <= p <= MAX_DEGREE`,
    /// [`ZeroDimension`](crate::SketchError::ZeroDimension) if `h` or `r` is 0,
    /// [`TooLarge`](crate::SketchError::TooLarge) if the tables would not fit.
    pub fn new(h: usize, r: usize, p: usize, seed: u64) -> Result<Self> {
        const NAME: &str = "TensorSketch";
        let degree = (p, (1..=MAX_DEGREE).contains(&p), "1 <= p <= 64");
        check_sketch_sizes(NAME, degree, h, r)?;
        // the p hash tables (a bucket and a sign per input coordinate) and the two FFT plans of
        // length r (twiddles and scratch, complex), estimated before anything is allocated
        let sz = size_of::<T>() as u128;
        let tables = (p as u128 * h as u128).saturating_mul(4 + sz);
        check_param_bytes(NAME, tables.saturating_add((r as u128).saturating_mul(8 * sz)), 1)?;
        let mut rng = seeded_rng(seed);
        let hashes =
            (0..p).map(|_| CountSketch::from_rng(h, r, &mut rng)).collect::<Result<Vec<_>>>()?;
        let mut planner = FftPlanner::new();
        Ok(Self { r, hashes, fft: planner.plan_fft_forward(r), ifft: planner.plan_fft_inverse(r) })
    }

    /// The `k`-th CountSketch \\(C_{k+1}\\).
    pub fn count_sketch(&self, k: usize) -> &CountSketch<T> {
        &self.hashes[k]
    }

    /// `C_k A` for every `k`: `p` matrices `[rows, r]`.
    fn count_sketches(&self, a: MatRef<'_, T>) -> Vec<Mat<T>> {
        self.hashes
            .iter()
            .map(|c| {
                let mut m = Mat::zeros(a.nrows(), self.r);
                c.forward(a, m.as_mut());
                m
            })
            .collect()
    }

    fn scratch(&self) -> Vec<Complex<T>> {
        let len = self.fft.get_inplace_scratch_len().max(self.ifft.get_inplace_scratch_len());
        vec![Complex::default(); len]
    }

    /// Loads row `i` of `m` into `buf` and transforms it.
    fn load_fft(
        &self, m: MatRef<'_, T>, i: usize, buf: &mut [Complex<T>], scratch: &mut [Complex<T>],
    ) {
        for (c, z) in buf.iter_mut().enumerate() {
            *z = Complex::new(m[(i, c)], T::zero());
        }
        self.fft.process_with_scratch(buf, scratch);
    }
}

impl<T: Scalar> PolySketch<T> for TensorSketch<T> {
    fn name(&self) -> &'static str {
        "TensorSketch"
    }
    fn degree(&self) -> usize {
        self.hashes.len()
    }
    fn input_dim(&self) -> usize {
        self.hashes[0].input_dim()
    }
    fn sketch_dim(&self) -> usize {
        self.r
    }

    fn apply_rows(&self, a: MatRef<'_, T>, mut out: MatMut<'_, T>) {
        assert_eq!((a.ncols(), out.ncols(), a.nrows()), (self.input_dim(), self.r, out.nrows()));
        if self.hashes.len() == 1 {
            self.hashes[0].forward(a, out);
            return;
        }
        let cs = self.count_sketches(a);
        let r = self.r;
        let inv_r = T::of(1.0 / r as f64);
        let mut acc = vec![Complex::<T>::default(); r];
        let mut buf = vec![Complex::<T>::default(); r];
        let mut scratch = self.scratch();
        for i in 0..a.nrows() {
            self.load_fft(cs[0].as_ref(), i, &mut acc, &mut scratch);
            for m in &cs[1..] {
                self.load_fft(m.as_ref(), i, &mut buf, &mut scratch);
                for (x, y) in acc.iter_mut().zip(&buf) {
                    *x *= *y;
                }
            }
            // rustfft's inverse is unnormalised: F⁻¹F = r·I
            self.ifft.process_with_scratch(&mut acc, &mut scratch);
            for (c, z) in acc.iter().enumerate() {
                out[(i, c)] = z.re * inv_r;
            }
        }
    }

    fn vjp_rows(&self, a: MatRef<'_, T>, grad: MatRef<'_, T>, mut out: MatMut<'_, T>) {
        assert_eq!(
            (grad.ncols(), grad.nrows(), out.ncols()),
            (self.r, a.nrows(), self.input_dim())
        );
        let p = self.hashes.len();
        if p == 1 {
            self.hashes[0].transpose(grad, out, false);
            return;
        }
        // forward: y = c_1 ⊛ … ⊛ c_p with c_k = C_k a, so
        // dc_k = dy ⋆ (⊛_{l≠k} c_l) (circular cross-correlation) = F⁻¹(F(dy) · conj(Π_{l≠k} F(c_l))) / r
        let cs = self.count_sketches(a);
        let r = self.r;
        let inv_r = T::of(1.0 / r as f64);
        let mut dcs: Vec<Mat<T>> = (0..p).map(|_| Mat::zeros(a.nrows(), r)).collect();
        let mut f = vec![vec![Complex::<T>::default(); r]; p];
        let mut suffix = vec![vec![Complex::<T>::default(); r]; p];
        let mut prefix = vec![Complex::<T>::default(); r];
        let mut g = vec![Complex::<T>::default(); r];
        let mut d = vec![Complex::<T>::default(); r];
        let mut scratch = self.scratch();
        let one = Complex::new(T::one(), T::zero());
        for i in 0..a.nrows() {
            for (m, fk) in cs.iter().zip(f.iter_mut()) {
                self.load_fft(m.as_ref(), i, fk, &mut scratch);
            }
            self.load_fft(grad, i, &mut g, &mut scratch);
            // suffix[k] = Π_{l>k} F_l
            suffix[p - 1].fill(one);
            for k in (0..p - 1).rev() {
                let (lo, hi) = suffix.split_at_mut(k + 1);
                for ((s, s1), fl) in lo[k].iter_mut().zip(&hi[0]).zip(&f[k + 1]) {
                    *s = *s1 * *fl;
                }
            }
            prefix.fill(one);
            for k in 0..p {
                for (((dz, gz), pz), sz) in d.iter_mut().zip(&g).zip(&prefix).zip(&suffix[k]) {
                    *dz = *gz * (*pz * *sz).conj();
                }
                self.ifft.process_with_scratch(&mut d, &mut scratch);
                for (c, z) in d.iter().enumerate() {
                    dcs[k][(i, c)] = z.re * inv_r;
                }
                for (pz, fz) in prefix.iter_mut().zip(&f[k]) {
                    *pz *= *fz;
                }
            }
        }
        for (k, (hash, dc)) in self.hashes.iter().zip(&dcs).enumerate() {
            hash.transpose(dc.as_ref(), out.rb_mut(), k > 0);
        }
    }
}
