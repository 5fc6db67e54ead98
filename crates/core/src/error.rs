//! The argument errors every crate shares: shapes, degrees, sizes, finiteness.

/// Everything that can be wrong with the arguments of a sketch, a product or a kernel: the
/// error of every check in [`crate::check_shape`] and its siblings. The sketch crate names it
/// `SketchError`.
///
/// Every variant names the operation (`op`) or sketch that refused the input, so a message read
/// out of context still says where it came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The degree `p` is outside what the sketch supports.
    #[error("{sketch}: degree p = {degree} is not supported: {requirement}")]
    InvalidDegree {
        /// The sketch or operation.
        sketch: &'static str,
        /// The degree that was asked for.
        degree: usize,
        /// What the degree must satisfy.
        requirement: &'static str,
    },
    /// A dimension (input dimension `h`, sketch size `r`, ...) is zero.
    #[error("{sketch}: {what} must be at least 1, got 0")]
    ZeroDimension {
        /// The sketch or operation.
        sketch: &'static str,
        /// Which dimension.
        what: &'static str,
    },
    /// A matrix has the wrong shape.
    #[error("{op}: `{input}` must be a {}x{} matrix, got {}x{}", expected.0, expected.1, got.0, got.1)]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// Which input (or output buffer).
        input: &'static str,
        /// The shape it needed, `(rows, cols)`.
        expected: (usize, usize),
        /// The shape it got.
        got: (usize, usize),
    },
    /// The ranks of a data-parallel job could not combine their numbers.
    #[error("{op}: {reason}")]
    Collective {
        /// The operation.
        op: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// An input holds a NaN or an infinity.
    #[error("{op}: input `{input}` has a non-finite value at row {row}, column {col}")]
    NonFinite {
        /// The operation.
        op: &'static str,
        /// Which input.
        input: &'static str,
        /// Row of the first non-finite entry.
        row: usize,
        /// Column of the first non-finite entry.
        col: usize,
    },
    /// Finite inputs gave a result that the number format cannot hold (an infinity, or a NaN
    /// from one): the inputs are too large in magnitude for the precision. The result is not
    /// returned; scale the inputs down or compute in `f64`.
    #[error(
        "{op}: the result `{output}` overflows the number format (finite inputs, non-finite \
         result at row {row}, column {col}): the values of `{input}` are too large in magnitude \
         for this precision; scale them down or use f64"
    )]
    Overflow {
        /// The operation.
        op: &'static str,
        /// The input whose magnitude is at fault.
        input: &'static str,
        /// The result that overflowed.
        output: &'static str,
        /// Row of the first non-finite entry of the result.
        row: usize,
        /// Column of the first non-finite entry of the result.
        col: usize,
    },
    /// An input has no rows.
    #[error("{op}: input `{input}` has no rows")]
    EmptyInput {
        /// The operation.
        op: &'static str,
        /// Which input.
        input: &'static str,
    },
    /// The sketch's parameters would not fit in memory.
    #[error("{sketch}: its parameters would take {bytes} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The sketch.
        sketch: &'static str,
        /// Estimated size of the parameters.
        bytes: u128,
        /// The limit ([`crate::MAX_PARAMETER_BYTES`]).
        limit: u128,
    },
    /// An argument of a statistics utility is out of range.
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of the base crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;
