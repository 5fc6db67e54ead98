//! Measurement and reporting: what the `polysketch bench` commands, the examples and the book's
//! figures stand on.
//!
//! - [`scaling`]: timing series against a size, their log-log slope, and faer's matrix-product
//!   FLOP rate measured in the same run (the ceiling every rate is reported against).
//! - [`memory`]: a counting global allocator for peak heap, opt-in per program.
//! - [`plot`]: SVG line plots and scatter panels (plotters), written crash-safely.
//! - [`attention`]: `polysketch bench attention` (every kind against softmax, CPU or GPU).
//! - [`lowtri`]: `polysketch bench lowtri` (the block product against n, its baselines).
//! - [`products`]: `polysketch bench products` (the networks' products, f32 against bf16).
//! - [`train`]: `polysketch bench train` (GPT training throughput against context length).
//! - [`figures`]: figures of particular studies (the AMM error of Theorem 2.4).
//!
//! Speed is reported as ratios within one run, never asserted in tests.
//!
//! # Example
//! ```
//! use polysketch_bench::scaling::{Series, to_csv};
//!
//! let mut s = Series::new("quadratic");
//! for n in [100usize, 200] {
//!     s.push(n, (n * n) as f64 * 1e-9);
//! }
//! assert_eq!(to_csv(&[s]), "series,n,seconds\nquadratic,100,1.000000e-5\nquadratic,200,4.000000e-5\n");
//! ```

pub mod attention;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod device;
pub mod figures;
pub mod lowtri;
pub mod memory;
pub mod plot;
pub mod products;
pub mod scaling;
pub mod train;

/// What a measurement or a plot can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Drawing a plot failed.
    #[error("plot: {0}")]
    Plot(String),
    /// Options that cannot be measured (empty sizes, an unknown kind or device, nothing to
    /// plot).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An attention layer refused.
    #[error(transparent)]
    Attention(#[from] polysketch_attention::AttentionError),
    /// A sketch or a product refused its arguments.
    #[error(transparent)]
    Sketch(#[from] polysketch_core::Error),
    /// The model or its training refused.
    #[error(transparent)]
    Gpt(#[from] polysketch_gpt::GptError),
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
