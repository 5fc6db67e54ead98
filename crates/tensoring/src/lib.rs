//! The nonnegative self-tensoring sketch of PolySketchFormer (paper Section 2.2, Theorem 2.4,
//! Algorithm 1 POLYSKETCHNONNEGATIVE).
//!
//! A degree-\\(p/2\\) sketch \\(S\\) gives \\(l = S^\top x^{\otimes p/2} \in \mathbb{R}^r\\).
//! Its tensor square
//! \\[ \phi'(x) = l \otimes l \in \mathbb{R}^{r^2}, \qquad
//!    \langle \phi'(x), \phi'(y)\rangle = \langle l_x, l_y\rangle^2 \ge 0, \\]
//! is a degree-\\(p\\) sketch whose inner products are never negative, which is what lets
//! PolySketch attention normalise its weights. Theorem 2.4 bounds its AMM error by
//! \\(\sqrt5\,\varepsilon\\) when \\(S\\) has the \\((\varepsilon, \delta, t)\\)- and
//! \\((\varepsilon, \delta, 2t)\\)-JL moment properties.
//!
//! - [`SelfTensored`] wraps any degree-\\(p/2\\) [`PolySketch`] into a degree-\\(p\\) one, in
//!   the [`Layout::Full`] (\\(r^2\\) features) or the [`Layout::Symmetric`] layout
//!   (\\(r(r+1)/2\\) features, same inner products: 528 instead of 1024 for \\(r = 32\\)).
//! - [`gram_block`] computes \\(\phi'(Q)\phi'(K)^\top = (LR^\top)^{\circ 2}\\) in \\(O(b^2 r)\\)
//!   without ever forming features.
//! - [`tensor_square`] / [`tensor_square_vjp`] are the feature map on given sketches and its
//!   vector-Jacobian product, which the lowtri and attention crates build on.
//!
//! \\(\phi'\\) is **not** unbiased: \\(\mathbb{E}\langle\phi'(x),\phi'(y)\rangle = \langle x,
//! y\rangle^p + \operatorname{Var}\langle S^\top x^{\otimes p/2}, S^\top y^{\otimes p/2}\rangle\\)
//! (a nonnegative estimator of 0 cannot be). The bias is nonnegative and falls as \\(O(1/r)\\).
//!
//! # Example
//! ```
//! use faer::{Mat, Par};
//! use polysketch_sketch::{PolySketch, TreeSketch};
//! use polysketch_tensoring::{gram_block, Layout, SelfTensored};
//!
//! // phi' for p = 4 over a degree-2 Gaussian tree with r = 32: 528 symmetric features.
//! let phi = SelfTensored::new(TreeSketch::<f64>::gaussian(16, 32, 2, 1)?, Layout::Symmetric);
//! assert_eq!((phi.degree(), phi.sketch_dim()), (4, 528));
//! let q = Mat::from_fn(5, 16, |i, j| ((3 * i + j) as f64).sin());
//! let k = Mat::from_fn(7, 16, |i, j| ((i + 2 * j) as f64).cos());
//!
//! // The Gram matrix from the features equals (L Rᵀ)^∘2 from the degree-2 sketches.
//! let (fq, fk) = (phi.apply(q.as_ref(), Par::Seq)?, phi.apply(k.as_ref(), Par::Seq)?);
//! let (l, r) = (phi.base().apply(q.as_ref(), Par::Seq)?, phi.base().apply(k.as_ref(), Par::Seq)?);
//! let mut g = Mat::zeros(5, 7);
//! gram_block(l.as_ref(), r.as_ref(), g.as_mut(), Par::Seq);
//! let explicit = &fq * fk.transpose();
//! assert!((&g - &explicit).norm_max() < 1e-9 * explicit.norm_max());
//! assert!((0..5).all(|i| (0..7).all(|j| g[(i, j)] >= 0.0)));
//! # Ok::<(), polysketch_sketch::SketchError>(())
//! ```

/// The faer version this crate computes with (its matrices and `Par` in the signatures): use
/// it instead of pinning faer by hand.
pub use faer;

pub mod amm;
mod features;
mod selftensored;

pub use features::{
    Layout, feature_dim, feature_pairs, gram_block, tensor_square, tensor_square_vjp,
};
pub use polysketch_sketch::{PolySketch, Result, Scalar, SketchError};
pub use selftensored::SelfTensored;
