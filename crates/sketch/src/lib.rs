//! Oblivious sketches of polynomial kernels.
//!
//! A degree-`p` sketch is a random matrix \\(S \in \mathbb{R}^{h^p \times r}\\) that is never
//! formed. Given \\(A \in \mathbb{R}^{n \times h}\\) with rows \\(a_i\\), [`PolySketch::apply`]
//! returns \\(A^{\otimes p} S \in \mathbb{R}^{n \times r}\\), whose row \\(i\\) is
//! \\(S^\top a_i^{\otimes p}\\), computed from \\(a_i\\) directly. Every sketch here is unbiased:
//! \\(\mathbb{E}\langle S^\top x^{\otimes p}, S^\top y^{\otimes p}\rangle = \langle x, y\rangle^p\\),
//! so \\((A^{\otimes p}S)(B^{\otimes p}S)^\top\\) approximates the polynomial-kernel matrix
//! \\((AB^\top)^{\circ p}\\).
//!
//! | sketch | degree | cost per row | notes |
//! |---|---|---|---|
//! | [`GaussianJl`] | 1 | \\(O(hr)\\) | \\(S = G/\sqrt r\\), \\(G\\) standard Gaussian |
//! | [`CountSketch`] | 1 | \\(O(h)\\) | one random bucket and sign per input coordinate |
//! | [`TensorSketch`] | any \\(p \ge 1\\) | \\(O(p(h + r\log r))\\) | Pham–Pagh: \\(p\\) CountSketches convolved by FFT |
//! | [`TreeSketch`] | \\(2, 4, 8, \dots\\) | \\(O(phr + pr^2)\\) | Ahle et al. tree, paper Algorithm 1, Gaussian or TensorSRHT nodes |
//!
//! Every sketch is built once from its dimensions and a `u64` seed (through `rand_chacha`), and
//! applied to any number of matrices, with rows processed in parallel under an explicit
//! [`faer::Par`]. Results do not depend on the number of threads: rows are cut into chunks of
//! [`polysketch_core::CHUNK_ROWS`] whatever the parallelism. [`PolySketch::vjp`] gives the vector-Jacobian product
//! with respect to the input, which training through a sketch needs.
//!
//! The [`jl`] module measures what the theory promises: the JL moments of Definition 2.3 of the
//! paper with confidence intervals, and the AMM error of Definition 2.1.
//!
//! # Example
//!
//! ```
//! use faer::{Mat, Par};
//! use polysketch_sketch::{PolySketch, TreeSketch};
//!
//! // A degree-4 Gaussian tree sketch from R^{8^4} to R^{256}.
//! let sketch = TreeSketch::<f64>::gaussian(8, 256, 4, 42)?;
//! let a = Mat::from_fn(3, 8, |i, j| ((i * 8 + j) as f64).sin());
//! let sa = sketch.apply(a.as_ref(), Par::Seq)?; // 3 x 256
//! assert_eq!((sa.nrows(), sa.ncols()), (3, 256));
//!
//! // <S^T a_0^{(x)4}, S^T a_1^{(x)4}> estimates <a_0, a_1>^4.
//! let exact: f64 = (0..8).map(|j| a[(0, j)] * a[(1, j)]).sum::<f64>().powi(4);
//! let approx: f64 = (0..256).map(|c| sa[(0, c)] * sa[(1, c)]).sum();
//! let scale = (0..8).map(|j| a[(0, j)].powi(2)).sum::<f64>().powi(2);
//! assert!((approx - exact).abs() < scale);
//! # Ok::<(), polysketch_sketch::SketchError>(())
//! ```

/// The float trait of every signature here, from the base crate.
pub use polysketch_core::Scalar;
/// The faer version this crate computes with (its matrices and `Par` in the signatures): use
/// it instead of pinning faer by hand.
pub use polysketch_core::faer;
/// The sketches' errors are the base crate's argument errors.
pub use polysketch_core::{Error as SketchError, MAX_DEGREE, Result};

// the base crate's helpers under the paths the modules here use
pub(crate) use polysketch_core::{
    SketchRng, check_cols, check_finite, check_nonempty, check_overflow, check_param_bytes,
    check_shape, check_sketch_sizes, for_each_row_chunk, linalg, normal, seeded_rng, split_seed,
};

mod countsketch;
mod gaussian;
pub mod jl;
#[cfg(feature = "nalgebra")]
pub mod nalgebra_views;
pub mod reference;
mod srht;
mod tensorsketch;
mod traits;
mod tree;

pub use countsketch::CountSketch;
pub use gaussian::GaussianJl;
pub use tensorsketch::TensorSketch;
pub use traits::PolySketch;
pub use tree::{NodeKind, TreeSketch};
