//! Typed errors of the model, the optimiser, the data and the checkpoints.

use polysketch_attention::AttentionError;

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// A model or training configuration out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Inputs whose shape does not match the model or each other.
    #[error("{op}: {what}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        what: String,
    },
    /// A token id at or past the vocabulary size.
    #[error("{op}: token {token} is outside the vocabulary of {vocab}")]
    Token {
        /// The operation.
        op: &'static str,
        /// The token.
        token: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A loss or gradient that is not finite (diverged training, bad input).
    #[error("{0} is not finite")]
    NonFinite(&'static str),
    /// Activations that would not fit in memory (estimated before allocating).
    #[error("{op} would need about {bytes} bytes of activations, more than the limit of {limit}")]
    TooLarge {
        /// The operation.
        op: &'static str,
        /// The estimate.
        bytes: u128,
        /// The limit.
        limit: u128,
    },
    /// Training or evaluation text too short or not usable.
    #[error("data: {0}")]
    Data(String),
    /// A file that cannot be read, written or parsed (missing, corrupt, another model's).
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An error of an attention layer.
    #[error(transparent)]
    Attention(#[from] AttentionError),
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, GptError>;
