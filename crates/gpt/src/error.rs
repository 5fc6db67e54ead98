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
    /// Training produced a non-finite loss, gradient or parameter: the learning rate (or the
    /// data) drove the model out of the number format's range. The run folder keeps its last
    /// good checkpoint and the metrics up to the step that failed.
    #[error(
        "training diverged at step {step} ({cause}); lower the learning rate (it was {lr:.3e}) \
         or the gradient clip; {checkpoint}"
    )]
    Diverged {
        /// The step that failed (1-based).
        step: usize,
        /// The learning rate of that step.
        lr: f64,
        /// What was found non-finite.
        cause: String,
        /// Where the last good checkpoint is, or that there is none.
        checkpoint: String,
    },
    /// A fresh run was asked to write into a folder that already holds a run.
    #[error(
        "{path} already holds a run ({what}): choose another folder, resume it, or remove it \
         first (the program's --force does)"
    )]
    RunExists {
        /// The folder.
        path: String,
        /// What is there.
        what: String,
    },
    /// An error of an attention layer.
    #[error(transparent)]
    Attention(#[from] AttentionError),
    /// The ranks of a data-parallel run could not combine their numbers (or another check of
    /// the numeric base refused).
    #[error(transparent)]
    Core(#[from] polysketch_core::Error),
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, GptError>;
