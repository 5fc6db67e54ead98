//! [`SelfTensored`]: a degree-p/2 sketch made into a nonnegative degree-p one.

use faer::{Mat, MatMut, MatRef, Par};
use polysketch_core::Scalar;
use polysketch_sketch::{GaussianJl, PolySketch, Result, SketchError, TreeSketch};

use crate::{Layout, feature_dim, gram_block, tensor_square, tensor_square_vjp};

/// \\(\phi'(x) = (S^\top x^{\otimes p/2})^{\otimes 2}\\): the tensor square of a degree-\\(p/2\\)
/// base sketch \\(S\\), itself a degree-\\(p\\) [`PolySketch`] whose inner products are
/// \\(\langle \phi'(x), \phi'(y)\rangle = \langle S^\top x^{\otimes p/2}, S^\top y^{\otimes
/// p/2}\rangle^2 \ge 0\\).
///
/// This is POLYSKETCHNONNEGATIVE of the paper's Algorithm 1 when the base is the Gaussian tree
/// of degree \\(p/2\\). [`PolySketch::gram`] is overridden by the identity
/// \\(\phi'(A)\phi'(B)^\top = (LR^\top)^{\circ 2}\\), so Gram matrices and AMM errors never form
/// the \\(r^2\\) features.
///
/// # Shapes
/// `apply`: `[n, h]` → `[n, feature_dim(r, layout)]` with `r = base.sketch_dim()`.
///
/// # Example
/// ```
/// use faer::{Mat, Par};
/// use polysketch_sketch::PolySketch;
/// use polysketch_tensoring::{Layout, SelfTensored};
/// let phi = SelfTensored::<Box<dyn PolySketch<f32>>>::random(64, 32, 4, Layout::Symmetric, 0)?;
/// let x = Mat::<f32>::from_fn(3, 64, |i, j| ((i * j) as f32).sin());
/// assert_eq!(phi.apply(x.as_ref(), Par::Seq)?.ncols(), 528);
/// # Ok::<(), polysketch_sketch::SketchError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SelfTensored<S> {
    base: S,
    layout: Layout,
}

impl<S> SelfTensored<S> {
    /// Self-tensors `base` (any sketch, of degree \\(p/2\\)) in `layout`.
    pub fn new(base: S, layout: Layout) -> Self {
        Self { base, layout }
    }

    /// The degree-\\(p/2\\) base sketch \\(S\\).
    pub fn base(&self) -> &S {
        &self.base
    }

    /// The feature layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
}

impl<T: Scalar> SelfTensored<Box<dyn PolySketch<T>>> {
    /// The random sketch of the paper for even `p`: the Gaussian tree of degree `p/2`
    /// ([`TreeSketch::gaussian`]), or the Gaussian JL sketch ([`GaussianJl`]) when `p = 2`,
    /// self-tensored. `r` is the base sketch size; there are [`feature_dim`]`(r, layout)`
    /// features.
    ///
    /// # Errors
    /// [`InvalidDegree`](SketchError::InvalidDegree) unless `p` is 2 or `p/2` is a power of
    /// two up to the tree's limit; the base constructors' errors for `h`, `r`.
    pub fn random(h: usize, r: usize, p: usize, layout: Layout, seed: u64) -> Result<Self> {
        if !p.is_multiple_of(2) || p == 0 {
            return Err(SketchError::InvalidDegree {
                sketch: "SelfTensored",
                degree: p,
                requirement: "p must be even (p/2 = 1 or a power of two for the random sketch)",
            });
        }
        let base: Box<dyn PolySketch<T>> = if p == 2 {
            Box::new(GaussianJl::new(h, r, seed)?)
        } else {
            Box::new(TreeSketch::gaussian(h, r, p / 2, seed)?)
        };
        Ok(Self::new(base, layout))
    }
}

impl<T: Scalar, S: PolySketch<T>> PolySketch<T> for SelfTensored<S> {
    fn name(&self) -> &'static str {
        "SelfTensored"
    }
    fn degree(&self) -> usize {
        2 * self.base.degree()
    }
    fn input_dim(&self) -> usize {
        self.base.input_dim()
    }
    fn sketch_dim(&self) -> usize {
        feature_dim(self.base.sketch_dim(), self.layout)
    }

    fn apply_rows(&self, a: MatRef<'_, T>, out: MatMut<'_, T>) {
        let mut l = Mat::zeros(a.nrows(), self.base.sketch_dim());
        self.base.apply_rows(a, l.as_mut());
        tensor_square(l.as_ref(), self.layout, out);
    }

    fn vjp_rows(&self, a: MatRef<'_, T>, grad: MatRef<'_, T>, out: MatMut<'_, T>) {
        // forward: φ' = l ⊗ l with l = S(a), so dl = tensor_square_vjp(l, dφ'), then da = S.vjp(dl)
        let mut l = Mat::zeros(a.nrows(), self.base.sketch_dim());
        self.base.apply_rows(a, l.as_mut());
        let mut dl = Mat::zeros(a.nrows(), self.base.sketch_dim());
        tensor_square_vjp(l.as_ref(), grad, self.layout, dl.as_mut());
        self.base.vjp_rows(a, dl.as_ref(), out);
    }

    /// \\((LR^\top)^{\circ 2}\\) with \\(L = S(A)\\), \\(R = S(B)\\): never forms features.
    fn gram(&self, a: MatRef<'_, T>, b: MatRef<'_, T>, par: Par) -> Result<Mat<T>> {
        // both applies validate their input
        let l = self.base.apply(a, par)?;
        let r = self.base.apply(b, par)?;
        let mut g = Mat::zeros(l.nrows(), r.nrows());
        gram_block(l.as_ref(), r.as_ref(), g.as_mut(), par);
        polysketch_core::check_overflow("SelfTensored::gram", "a and b", "gram", g.as_ref())?;
        Ok(g)
    }
}
