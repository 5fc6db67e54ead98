//! The numeric base every polysketch crate stands on.
//!
//! Nothing here is specific to sketching or attention: it is what the sketch, tensoring,
//! lowtri, kernel, attention and gpt crates share, so that each of them is written once.
//!
//! | module | what it holds |
//! |---|---|
//! | [`Scalar`] | the float trait (`f32` for speed, `f64` for references) |
//! | [`linalg`] | thin wrappers on faer: `gemm`, `dot`, `sum`, `ipow`, row blocks, and the [`multiversion!`] macro that compiles a slice kernel for AVX-512, AVX2 and baseline |
//! | [`math`] | vectorised `exp` and `tanh` for `f32` |
//! | [`bf16`] | matrix products with bf16 inputs and `f32` sums (AVX-512 BF16 kernel, portable fallback) |
//! | [`check_shape`] and siblings | argument checks returning the shared [`Error`] |
//! | [`seeded_rng`], [`split_seed`], [`normal`] | seeded randomness (ChaCha8 from a `u64`) |
//! | [`for_each_row_chunk`] | row chunks of [`CHUNK_ROWS`] whatever the thread count |
//! | [`io::write_atomic`] | crash-safe file writes |
//! | [`tree`] | the binary tree of a learned sketch, shared with the GPU crate |
//! | [`collective`] | the fixed-order sums of data-parallel jobs (one process, or MPI ranks) |
//!
//! # Example
//!
//! ```
//! use polysketch_core::{check_shape, faer::Mat, linalg::gemm, Error};
//!
//! // C = A B through `gemm`, and the check every public entry point makes first.
//! let a = Mat::<f64>::from_fn(2, 3, |i, j| (i + j) as f64);
//! let b = Mat::<f64>::from_fn(3, 2, |i, j| (i * j) as f64);
//! let mut c = Mat::<f64>::zeros(2, 2);
//! gemm(c.as_mut(), a.as_ref(), b.as_ref(), 1.0, false, polysketch_core::faer::Par::Seq);
//! assert_eq!(c[(1, 1)], 1.0 * 0.0 + 2.0 * 1.0 + 3.0 * 2.0); // row 1 of A times column 1 of B
//! assert!(matches!(
//!     check_shape("demo", "c", c.as_ref(), (3, 3)),
//!     Err(Error::ShapeMismatch { expected: (3, 3), got: (2, 2), .. })
//! ));
//! ```

/// The faer version every crate computes with: use it instead of pinning faer by hand.
pub use faer;

pub mod bf16;
mod check;
pub mod collective;
mod error;
pub mod io;
pub mod linalg;
pub mod math;
mod parallel;
mod rng;
mod scalar;
pub mod tree;

pub use check::{
    MAX_PARAMETER_BYTES, all_finite, all_finite_par, check_cols, check_finite, check_nonempty,
    check_nonzero, check_overflow, check_param_bytes, check_shape, check_sketch_sizes,
    saturating_product,
};
pub use error::{Error, Result};
pub use parallel::{CHUNK_ROWS, for_each_row_chunk};
pub use rng::{SketchRng, normal, seeded_rng, split_seed};
pub use scalar::Scalar;

/// Largest degree any sketch or polynomial kernel here accepts. Degrees beyond it are
/// numerically meaningless in `f32`/`f64` (\\(\langle x,y\rangle^{p}\\) under- or overflows for
/// unremarkable inputs).
pub const MAX_DEGREE: usize = 64;
