//! The polynomial kernel and its sketched feature maps.

use faer::{Mat, MatRef, Par};
use polysketch_core::{MAX_DEGREE, linalg::gemm};
use polysketch_sketch::{PolySketch, TensorSketch, TreeSketch};
use polysketch_tensoring::{Layout, SelfTensored};

use crate::error::{KernelError, Result, finite, same};

/// The polynomial kernel \\(k(x, y) = (\gamma\langle x, y\rangle + c)^p\\).
///
/// It is the homogeneous kernel \\(\langle\tilde x, \tilde y\rangle^p\\) of the lifted vectors
/// \\(\tilde x = [\sqrt\gamma\, x, \sqrt c]\\) ([`homogenize`](Self::homogenize)), which is what
/// lets the degree-\\(p\\) sketches of the sketch crate approximate it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolyKernel {
    degree: usize,
    gamma: f64,
    coef0: f64,
}

impl PolyKernel {
    /// \\((\gamma\langle x, y\rangle + c)^p\\).
    ///
    /// # Errors
    /// [`KernelError::InvalidParameter`] unless `1 <= p <= 64`, `gamma > 0` and `coef0 >= 0`,
    /// both finite.
    pub fn new(degree: usize, gamma: f64, coef0: f64) -> Result<Self> {
        let bad =
            |reason: String| Err(KernelError::InvalidParameter { op: "PolyKernel::new", reason });
        if degree == 0 || degree > MAX_DEGREE {
            return bad(format!("degree must be in 1..=64, got {degree}"));
        }
        if !(gamma > 0.0 && gamma.is_finite() && coef0 >= 0.0 && coef0.is_finite()) {
            return bad(format!(
                "need gamma > 0 and coef0 >= 0, got gamma = {gamma}, coef0 = {coef0}"
            ));
        }
        Ok(Self { degree, gamma, coef0 })
    }

    /// The default of the examples for `d` standardised features: \\(p = 4\\), \\(\gamma = 1/d\\),
    /// \\(c = 1\\).
    ///
    /// # Errors
    /// [`KernelError::InvalidParameter`] if `d` is 0.
    pub fn standard(d: usize) -> Result<Self> {
        if d == 0 {
            return Err(KernelError::InvalidParameter {
                op: "PolyKernel::standard",
                reason: "d must be at least 1".into(),
            });
        }
        Self::new(4, 1.0 / d as f64, 1.0)
    }

    /// The degree \\(p\\).
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// \\(\gamma\\).
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// \\(c\\).
    pub fn coef0(&self) -> f64 {
        self.coef0
    }

    /// \\(\tilde X = [\sqrt\gamma\, X, \sqrt c\,\mathbf 1]\\): `[n, d]` → `[n, d + 1]`, so that
    /// \\(\langle\tilde x, \tilde y\rangle^p = k(x, y)\\).
    ///
    /// # Errors
    /// [`KernelError::NonFinite`].
    pub fn homogenize(&self, x: MatRef<'_, f64>) -> Result<Mat<f64>> {
        finite("PolyKernel::homogenize", "x", x)?;
        let (sg, sc) = (self.gamma.sqrt(), self.coef0.sqrt());
        Ok(Mat::from_fn(
            x.nrows(),
            x.ncols() + 1,
            |i, j| {
                if j < x.ncols() { sg * x[(i, j)] } else { sc }
            },
        ))
    }

    /// The kernel matrix \\(K_{ij} = k(a_i, b_j)\\), `[n, m]`, from one product \\(AB^\top\\).
    ///
    /// # Shapes
    /// `a: [n, d]`, `b: [m, d]` → `[n, m]`.
    ///
    /// # Errors
    /// [`KernelError::Mismatch`] if the widths differ; [`KernelError::NonFinite`].
    ///
    /// ```
    /// use faer::{Mat, Par};
    /// use polysketch_kernel::{KernelError, PolyKernel};
    ///
    /// // k(x, y) = (γ⟨x, y⟩ + c)^p with p = 2, γ = 1, c = 1
    /// let kernel = PolyKernel::new(2, 1.0, 1.0)?;
    /// let a = Mat::from_fn(2, 3, |i, j| (i + j) as f64);
    /// let k = kernel.gram(a.as_ref(), a.as_ref(), Par::Seq)?;
    /// assert_eq!(k[(0, 1)], (0.0 * 1.0 + 1.0 * 2.0 + 2.0 * 3.0 + 1.0f64).powi(2));
    /// let narrow = Mat::<f64>::zeros(2, 2);
    /// assert!(matches!(kernel.gram(a.as_ref(), narrow.as_ref(), Par::Seq), Err(KernelError::Mismatch { .. })));
    /// # Ok::<(), KernelError>(())
    /// ```
    pub fn gram(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>, par: Par) -> Result<Mat<f64>> {
        const OP: &str = "PolyKernel::gram";
        same(OP, "columns of b", a.ncols(), b.ncols())?;
        finite(OP, "a", a)?;
        finite(OP, "b", b)?;
        let mut k = Mat::zeros(a.nrows(), b.nrows());
        gemm(k.as_mut(), a, b.transpose(), self.gamma, false, par);
        let (c, p) = (self.coef0, self.degree as i32);
        faer::zip!(k.as_mut()).for_each(|faer::unzip!(v)| *v = (*v + c).powi(p));
        // (γ⟨a, b⟩ + c)^p past f64's range (|⟨a, b⟩| ≈ 1e200 squared): a typed error
        polysketch_core::check_overflow(OP, "a and b", "k", k.as_ref())?;
        Ok(k)
    }
}

/// Which sketch turns rows into kernel features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureKind {
    /// The degree-\\(p\\) Gaussian tree (Ahle et al.), `D` features.
    Tree,
    /// The degree-\\(p\\) TensorSketch, `D` features.
    TensorSketch,
    /// The nonnegative self-tensored sketch over the degree-\\(p/2\\) Gaussian tree in the
    /// symmetric layout: base size \\(s\\), the largest with \\(s(s+1)/2 \le D\\).
    SelfTensored,
}

impl FeatureKind {
    /// All kinds, in table order.
    pub const ALL: [FeatureKind; 3] =
        [FeatureKind::Tree, FeatureKind::TensorSketch, FeatureKind::SelfTensored];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            FeatureKind::Tree => "tree",
            FeatureKind::TensorSketch => "tensorsketch",
            FeatureKind::SelfTensored => "self-tensored",
        }
    }
}

/// Random features \\(\phi(x) = S^\top \tilde x^{\otimes p}\\) with \\(\langle\phi(x),
/// \phi(y)\rangle \approx k(x, y)\\).
pub struct SketchFeatures {
    kernel: PolyKernel,
    kind: FeatureKind,
    sketch: Box<dyn PolySketch<f64>>,
}

impl core::fmt::Debug for SketchFeatures {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SketchFeatures")
            .field("kernel", &self.kernel)
            .field("kind", &self.kind)
            .field("dim", &self.dim())
            .finish()
    }
}

impl SketchFeatures {
    /// Features of `kind` for `d`-dimensional inputs, about `target_dim` of them (exactly
    /// `target_dim` for the tree and TensorSketch), drawn from `seed`.
    ///
    /// # Errors
    /// [`KernelError::InvalidParameter`] for a zero dimension, a tree with \\(p\\) not a power of
    /// two, or a self-tensored map with odd \\(p\\); sketch errors.
    pub fn new(
        kernel: PolyKernel, d: usize, kind: FeatureKind, target_dim: usize, seed: u64,
    ) -> Result<Self> {
        let p = kernel.degree();
        if d == 0 || target_dim == 0 {
            return Err(KernelError::InvalidParameter {
                op: "SketchFeatures::new",
                reason: "d and the feature count must be at least 1".into(),
            });
        }
        // the homogenised rows carry one more coordinate (the constant)
        let h = d.checked_add(1).ok_or_else(|| KernelError::InvalidParameter {
            op: "SketchFeatures::new",
            reason: format!("d = {d} has no room for the constant coordinate"),
        })?;
        let sketch: Box<dyn PolySketch<f64>> = match kind {
            FeatureKind::Tree => Box::new(TreeSketch::gaussian(h, target_dim, p, seed)?),
            FeatureKind::TensorSketch => Box::new(TensorSketch::new(h, target_dim, p, seed)?),
            FeatureKind::SelfTensored => {
                let s = symmetric_base_size(target_dim);
                Box::new(SelfTensored::<Box<dyn PolySketch<f64>>>::random(
                    h,
                    s,
                    p,
                    Layout::Symmetric,
                    seed,
                )?)
            }
        };
        Ok(Self { kernel, kind, sketch })
    }

    /// The number of features.
    pub fn dim(&self) -> usize {
        self.sketch.sketch_dim()
    }

    /// The feature kind.
    pub fn kind(&self) -> FeatureKind {
        self.kind
    }

    /// \\(\phi\\) of every row: `[n, d]` → `[n, dim()]`.
    ///
    /// # Errors
    /// Width mismatch, non-finite input.
    pub fn transform(&self, x: MatRef<'_, f64>, par: Par) -> Result<Mat<f64>> {
        same("SketchFeatures::transform", "columns", self.sketch.input_dim() - 1, x.ncols())?;
        let lifted = self.kernel.homogenize(x)?;
        Ok(self.sketch.apply(lifted.as_ref(), par)?)
    }
}

/// The largest \\(s\\) with \\(s(s+1)/2 \le D\\) (at least 1): the base size of a symmetric
/// self-tensored map with about \\(D\\) features.
pub fn symmetric_base_size(target_dim: usize) -> usize {
    // in u128: s(s + 1)/2 for s near √(2·usize::MAX) does not fit in a usize
    let (d, pairs) = (target_dim as u128, |s: u128| s * (s + 1) / 2);
    let mut s = ((2.0 * target_dim as f64).sqrt() as u128).max(1);
    while pairs(s) > d && s > 1 {
        s -= 1;
    }
    while pairs(s + 1) <= d {
        s += 1;
    }
    s as usize
}
