//! polysketch: sketching polynomial kernels, and linear-time causal attention built on them.
//!
//! This facade re-exports the workspace crates under short names and holds what the examples
//! and the command-line program share:
//!
//! - [`core`]: the numeric base every crate shares (float trait, faer helpers, checks, seeded
//!   randomness, crash-safe writes).
//! - [`sketch`]: oblivious polynomial sketches (Gaussian JL, CountSketch, TensorSketch, Ahle et
//!   al. trees) and the JL-moment / AMM utilities that check them against the theory.
//! - [`tensoring`]: the nonnegative self-tensoring sketch \\(\phi'(x) = (S^\top
//!   x^{\otimes p/2})^{\otimes 2}\\) of PolySketchFormer.
//! - [`lowtri`]: block lower-triangular products \\(\\mathrm{lt}(AB^\\top)C\\) in time linear in
//!   \\(n\\), forward and backward.
//! - [`attention`]: causal attention layers (PolySketch, softmax), forward and backward.
//! - [`gpt`]: the mini GPT and its training runs; [`run`]: the program's side of a run
//!   (progress, loss plot, bundled corpus); [`paper`]: the paper's comparisons at CPU scale.
//! - [`kernel`]: kernel ridge regression and kernel PCA with sketches, Nyström and the exact
//!   methods.
//! - [`io`]: crash-safe file output; [`scaling`]: timing series, their plots, faer's FLOP rate;
//!   [`memory`]: peak heap measurement.
//!
//! # Example
//! ```
//! use faer::{Mat, Par};
//! use polysketch::sketch::{PolySketch, TreeSketch};
//! use polysketch::tensoring::{Layout, SelfTensored};
//!
//! // phi' for p = 4: a degree-2 Gaussian tree of size r = 16, self-tensored.
//! let phi = SelfTensored::new(TreeSketch::<f64>::gaussian(8, 16, 2, 3)?, Layout::Symmetric);
//! let q = Mat::from_fn(4, 8, |i, j| ((i + j) as f64).sin());
//! let f = phi.apply(q.as_ref(), Par::Seq)?; // 4 x 136, and <phi'(x), phi'(y)> >= 0
//! assert_eq!(f.ncols(), 16 * 17 / 2);
//! # Ok::<(), polysketch::sketch::SketchError>(())
//! ```

/// The faer version the crates compute with: use it instead of pinning faer by hand.
pub use faer;
pub use polysketch_attention as attention;
pub use polysketch_core as core;
pub use polysketch_gpt as gpt;
pub use polysketch_kernel as kernel;
pub use polysketch_lowtri as lowtri;
pub use polysketch_sketch as sketch;
pub use polysketch_tensoring as tensoring;

#[cfg(feature = "mpi")]
pub mod distributed;
pub mod io;
pub mod paper;
pub mod run;

/// Measurement and reporting (the crate `polysketch-bench`).
pub use polysketch_bench as bench;
pub use polysketch_bench::{memory, plot, scaling};

/// The README's code runs as a doctest, so it cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Errors of the facade's experiment drivers and file output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sketch refused its input.
    #[error(transparent)]
    Sketch(#[from] sketch::SketchError),
    /// Reading or writing a file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The model, its training or a checkpoint refused.
    #[error(transparent)]
    Gpt(#[from] gpt::GptError),
    /// A kernel method refused its input or its data file.
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    /// An attention layer refused.
    #[error(transparent)]
    Attention(#[from] attention::AttentionError),
    /// A measurement or a plot failed.
    #[error(transparent)]
    Bench(#[from] polysketch_bench::Error),
    /// An experiment's configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Result alias of the facade.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `--threads`: sets the size of rayon's global pool (every parallel loop of the crates runs in
/// it); `None` leaves rayon's default (one thread per core, or `RAYON_NUM_THREADS`). Results do
/// not depend on it, only speed.
///
/// # Errors
/// [`Error::Config`] for 0 threads or a pool that was already built.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    let Some(t) = threads else { return Ok(()) };
    if t == 0 {
        return Err(Error::Config("--threads must be at least 1".into()));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build_global()
        .map_err(|e| Error::Config(format!("--threads {t}: {e}")))
}

/// Ends a command-line program as such programs end: on an error, `error: <message>` on
/// standard error and exit status 1; nothing on success. The `polysketch` program and every
/// example's `main` go through it.
pub fn exit_on_error(result: Result<()>) {
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
