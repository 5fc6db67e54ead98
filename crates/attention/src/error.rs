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
    /// An argument of a call is out of range (`n = 0`, `batch = 0`, offsets that do not rise).
    #[error("{op}: `{argument}` must be {expected}, got {got}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// Which argument.
        argument: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What came.
        got: String,
    },
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
    /// A parameter of the layer holds a NaN or an infinity (a diverged update, an edited file).
    #[error("{op}: parameter `{name}` has a non-finite value at flat index {index}")]
    NonFiniteParameter {
        /// The operation.
        op: &'static str,
        /// The parameter's name, as listed by [`crate::Attention::parameters`].
        name: String,
        /// Index of the first bad value.
        index: usize,
    },
    /// Finite inputs and parameters whose scores leave the range of the number format: the
    /// result is not returned. Scale the inputs or the parameters down, or compute in `f64`.
    #[error(
        "{op}: `{output}` is not finite although every input and parameter is: the attention \
         scores of these values overflow {precision} ({magnitudes}); scale the inputs or the \
         layer-norm gain down, or compute in f64"
    )]
    Overflow {
        /// The operation.
        op: &'static str,
        /// The result that overflowed.
        output: &'static str,
        /// The number format (`f32`, `f64`).
        precision: &'static str,
        /// The largest magnitudes of the inputs and parameters, spelled out.
        magnitudes: String,
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
