//! Block lower-triangular products \\(\mathrm{lt}(AB^\top)\,C\\) in time linear in \\(n\\): the
//! causal-mask engine of every kernel-based causal attention (paper Section 3).
//!
//! For \\(A, B \in \mathbb R^{n \times m}\\) and \\(C \in \mathbb R^{n \times k}\\),
//! \\(\mathrm{lt}(AB^\top)\,C\\) keeps only \\(j \le i\\) of \\(AB^\top\\): row \\(i\\) of the
//! result is \\(\sum_{j \le i}\langle a_i, b_j\rangle c_j\\). Forming the \\(n \times n\\) matrix
//! costs \\(O(n^2)\\); cutting the rows into blocks of \\(b\\),
//! \\[ H_l = B_l^\top C_l,\quad Z_l = \sum_{j<l} H_j,\quad \mathrm{out}_l = A_l Z_l +
//!   \mathrm{lt}(A_l B_l^\top)\,C_l , \\]
//! costs \\(O(nb(m + k) + nmk)\\) with only \\(\lceil n/b\rceil\\) sequential steps, all of them
//! dense products ([`LowTri`]).
//!
//! Three forms ([`Problem`]):
//! - **general**: explicit \\(A, B\\);
//! - **self-tensored**: \\(A = L^{\otimes 2}\\), \\(B = R^{\otimes 2}\\) from \\(L, R \in
//!   \mathbb R^{n \times r}\\): diagonal blocks as \\((L_lR_l^\top)^{\circ 2}\\) in \\(O(b^2 r)\\),
//!   off-diagonal ones with the \\(r(r+1)/2\\) symmetric features of the tensoring crate, built
//!   per block in scratch;
//! - **local exact**: diagonal blocks \\((Q_lK_l^\top)^{\circ p}\\) from the raw vectors, the
//!   rest from either kind of features.
//!
//! Every form has a backward ([`LowTri::backward`]) giving the gradients with respect to every
//! input, checked against [`reference`](mod@reference) (the \\(O(n^2)\\) sum in `f64` and its hand-derived
//! gradients) and finite differences. [`baseline`] has the naive masked product and the
//! cumulative-sum algorithm.
//!
//! # Example
//! ```
//! use faer::{Mat, Par};
//! use polysketch_lowtri::{reference, LowTri, Problem};
//!
//! let (n, m, k) = (1000, 8, 3);
//! let a = Mat::<f64>::from_fn(n, m, |i, j| ((i * m + j) as f64 * 0.37).sin());
//! let b = Mat::<f64>::from_fn(n, m, |i, j| ((i + 5 * j) as f64 * 0.11).cos());
//! let c = Mat::<f64>::from_fn(n, k, |i, j| ((i * k + j) as f64 * 0.7).sin());
//! let problem = Problem::general(a.as_ref(), b.as_ref(), c.as_ref());
//!
//! let engine = LowTri::new(64)?;
//! let (out, mut saved) = engine.forward(&problem, Par::rayon(0))?;
//! let expected = reference::forward_reference(&problem, 64);
//! assert!((&out - &expected).norm_max() < 1e-10 * expected.norm_max());
//!
//! // gradients of <G, out> with respect to A, B and C
//! let g = Mat::<f64>::ones(n, k);
//! let grads = engine.backward(&problem, &mut saved, g.as_ref(), Par::rayon(0))?;
//! assert_eq!((grads.d_a.nrows(), grads.d_a.ncols()), (n, m));
//! # Ok::<(), polysketch_lowtri::SketchError>(())
//! ```

/// The faer version this crate computes with (its matrices and `Par` in the signatures): use
/// it instead of pinning faer by hand.
pub use faer;

pub mod baseline;
mod engine;
mod prefix;
mod problem;
pub mod reference;
mod saved;

pub use engine::LowTri;
pub use polysketch_core::{Error as SketchError, Result, Scalar};
pub use problem::{Diagonal, Features, Problem};
pub use saved::{Grads, Saved};
