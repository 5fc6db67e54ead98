//! polysketch: sketching polynomial kernels, and linear-time causal attention built on them.
//!
//! This facade re-exports the workspace crates under short names:
//!
//! - [`sketch`]: oblivious polynomial sketches (Gaussian JL, CountSketch, TensorSketch, Ahle et
//!   al. trees) and the JL-moment / AMM utilities that check them against the theory.
//!
//! # Example
//! ```
//! use faer::{Mat, Par};
//! use polysketch::sketch::{PolySketch, TreeSketch};
//!
//! let s = TreeSketch::<f64>::gaussian(8, 16, 2, 3)?;
//! let q = Mat::from_fn(4, 8, |i, j| ((i + j) as f64).sin());
//! assert_eq!(s.apply(q.as_ref(), Par::Seq)?.ncols(), 16);
//! # Ok::<(), polysketch::sketch::SketchError>(())
//! ```

pub use polysketch_sketch as sketch;
