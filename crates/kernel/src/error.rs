//! Typed errors of the kernel crate.

use polysketch_sketch::SketchError;

/// Everything that can go wrong in the kernel methods.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A sketch refused its input or parameters.
    #[error(transparent)]
    Sketch(#[from] SketchError),
    /// Two inputs that must match in length or width do not.
    #[error("{op}: {what}: expected {expected}, got {got}")]
    Mismatch {
        /// The operation.
        op: &'static str,
        /// What was compared.
        what: &'static str,
        /// The expected size.
        expected: usize,
        /// The size found.
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error("{op}: `{input}` has a non-finite value at row {row}, column {col}")]
    NonFinite {
        /// The operation.
        op: &'static str,
        /// Which input.
        input: &'static str,
        /// Row of the first bad value.
        row: usize,
        /// Column of the first bad value.
        col: usize,
    },
    /// Fewer rows than the method needs (e.g. than components asked for).
    #[error("{op}: needs at least {needed} rows, got {got}")]
    TooFewRows {
        /// The operation.
        op: &'static str,
        /// Rows needed.
        needed: usize,
        /// Rows given.
        got: usize,
    },
    /// A parameter is out of range.
    #[error("{op}: {reason}")]
    InvalidParameter {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A matrix that must be positive definite is not (numerically).
    #[error("{op}: the matrix is not positive definite (increase the regularisation)")]
    NotPositiveDefinite {
        /// The operation.
        op: &'static str,
    },
    /// An eigen- or singular-value decomposition did not converge.
    #[error("{op}: the decomposition did not converge")]
    NoConvergence {
        /// The operation.
        op: &'static str,
    },
    /// A data file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A data file is malformed.
    #[error("{path}, line {line}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of the kernel crate.
pub type Result<T, E = KernelError> = core::result::Result<T, E>;

/// Checks that every entry of `m` is finite.
pub(crate) fn finite(
    op: &'static str, input: &'static str, m: faer::MatRef<'_, f64>,
) -> Result<()> {
    for col in 0..m.ncols() {
        for row in 0..m.nrows() {
            if !m[(row, col)].is_finite() {
                return Err(KernelError::NonFinite { op, input, row, col });
            }
        }
    }
    Ok(())
}

/// Checks `got == expected`.
pub(crate) fn same(
    op: &'static str, what: &'static str, expected: usize, got: usize,
) -> Result<()> {
    if expected != got {
        return Err(KernelError::Mismatch { op, what, expected, got });
    }
    Ok(())
}

/// Checks `got >= needed`.
pub(crate) fn enough_rows(op: &'static str, needed: usize, got: usize) -> Result<()> {
    if got < needed {
        return Err(KernelError::TooFewRows { op, needed, got });
    }
    Ok(())
}
