//! Typed errors of the attention crate.

use polysketch_sketch::SketchError;

/// Everything that can go wrong in an attention layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttentionError {
    /// A sketch or the lowtri engine refused its input.
    #[error(transparent)]
    Sketch(#[from] SketchError),
    /// The configuration is invalid (zero sizes, odd `p`, ...).
    #[error("invalid attention config: {0}")]
    InvalidConfig(String),
    /// An input has the wrong length.
    #[error("{op}: `{input}` has {got} values, expected {expected} ({shape})")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// Which input.
        input: &'static str,
        /// Expected number of values.
        expected: usize,
        /// Number of values given.
        got: usize,
        /// The expected shape, spelled out.
        shape: String,
    },
    /// An input holds a NaN or an infinity.
    #[error("{op}: `{input}` has a non-finite value at flat index {index}")]
    NonFinite {
        /// The operation.
        op: &'static str,
        /// Which input.
        input: &'static str,
        /// Index of the first bad value in the flat array.
        index: usize,
    },
    /// The work would need more memory than allowed.
    #[error("{op}: needs about {bytes} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The operation.
        op: &'static str,
        /// Estimated bytes.
        bytes: u128,
        /// The limit.
        limit: u128,
    },
    /// A backward was called without a matching forward state.
    #[error("{op}: {reason}")]
    InvalidState {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The device path refused its input or the device failed (feature `gpu`).
    #[cfg(feature = "gpu")]
    #[error(transparent)]
    Gpu(#[from] polysketch_gpu::GpuError),
    /// A parameter file could not be written or read, or does not fit the model.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Result alias of the attention crate.
pub type Result<T, E = AttentionError> = core::result::Result<T, E>;
