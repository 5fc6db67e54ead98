//! Errors of the GPU crate.

/// What can go wrong on the device path.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// A buffer's length differs from what its shape requires.
    #[error("{op}: `{input}` has {got} elements, expected {expected}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// The offending input.
        input: &'static str,
        /// The required length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// An argument out of range (a degree, a sketch size, a block size, zero sizes).
    #[error("{0}")]
    InvalidArgument(String),
    /// A size past what the kernels index (32-bit) or launch.
    #[error("{op}: too large: {reason}")]
    TooLarge {
        /// The operation.
        op: &'static str,
        /// What is too large.
        reason: String,
    },
    /// A NaN or infinity in an input.
    #[error("{op}: `{input}` holds a non-finite value at index {index}")]
    NonFinite {
        /// The operation.
        op: &'static str,
        /// The offending input.
        input: &'static str,
        /// The first bad index.
        index: usize,
    },
    /// The device cannot do what was asked (an element type it lacks).
    #[error("{op}: not supported: {what}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// What the device lacks.
        what: String,
    },
    /// The runtime has no such device (no adapter, no driver).
    #[error("no {runtime} device: {reason}")]
    NoDevice {
        /// The runtime (`wgpu`, `cuda`).
        runtime: &'static str,
        /// What the runtime said.
        reason: String,
    },
    /// The device reported an error (a failed launch or read, a lost device).
    #[error("device error: {0}")]
    Device(String),
}

/// `Result` with [`GpuError`].
pub type Result<T> = core::result::Result<T, GpuError>;
