//! Tokenizer, text corpus, deterministic split and batches.

use std::path::Path;

use polysketch_sketch::{seeded_rng, split_seed};
use rand::RngExt;

use crate::{GptError, Result};

/// The byte-level tokenizer: a token per UTF-8 byte, vocabulary 256.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// Vocabulary size (256).
    pub const VOCAB: usize = 256;

    /// The bytes of `text` as tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    /// Tokens back to text (invalid UTF-8, e.g. a cut multi-byte character, becomes U+FFFD;
    /// tokens ≥ 256 are skipped).
    pub fn decode(&self, tokens: &[u32]) -> String {
        let bytes: Vec<u8> = tokens
            .iter()
            .filter_map(|&t| u8::try_from(t).ok())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A tokenised text split into training and validation parts: the last `val_fraction` of the
/// tokens is the validation part (a contiguous tail, so no window straddles the two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    /// Training tokens.
    pub train: Vec<u32>,
    /// Validation tokens.
    pub val: Vec<u32>,
}

/// Reads a UTF-8 text file.
///
/// # Errors
/// [`GptError::File`] if it cannot be read or is not UTF-8.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| GptError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|e| GptError::File {
        path: path.display().to_string(),
        reason: format!("not UTF-8 text ({e})"),
    })
}

impl Corpus {
    /// Tokenises `text` with the byte tokenizer and splits it.
    ///
    /// # Errors
    /// [`GptError::Data`] if `val_fraction` is not in (0, 1) or either part has fewer than
    /// `context + 1` tokens.
    pub fn from_text(text: &str, val_fraction: f64, context: usize) -> Result<Self> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(GptError::Data(format!(
                "validation fraction {val_fraction} must be in (0, 1)"
            )));
        }
        let tokens = ByteTokenizer.encode(text);
        let cut = tokens.len() - (tokens.len() as f64 * val_fraction).round() as usize;
        let (train, val) = tokens.split_at(cut);
        if train.len() <= context || val.len() <= context {
            return Err(GptError::Data(format!(
                "{} tokens are too few for a context of {context} with a validation fraction of {val_fraction} (need {} at least)",
                tokens.len(),
                ((context + 1) as f64 / val_fraction.min(1.0 - val_fraction)).ceil()
            )));
        }
        Ok(Self {
            train: train.to_vec(),
            val: val.to_vec(),
        })
    }

    /// The training batch of step `step`: `batch` windows of `n + 1` tokens at offsets drawn
    /// from `split_seed(seed, step)`, as (inputs, targets), each `[batch, n]`. A function of
    /// `(seed, step)` only, so a resumed run sees the same batches.
    pub fn train_batch(
        &self,
        seed: u64,
        step: usize,
        batch: usize,
        n: usize,
    ) -> (Vec<u32>, Vec<u32>) {
        let mut rng = seeded_rng(split_seed(seed, step as u64));
        let hi = self.train.len() - n;
        let (mut x, mut y) = (Vec::with_capacity(batch * n), Vec::with_capacity(batch * n));
        for _ in 0..batch {
            let at = rng.random_range(0..hi);
            x.extend_from_slice(&self.train[at..at + n]);
            y.extend_from_slice(&self.train[at + 1..at + n + 1]);
        }
        (x, y)
    }

    /// Validation batches: consecutive windows of `n + 1` tokens from the start of the
    /// validation part, `batch` per batch, at most `max_batches` batches (at least one).
    pub fn val_batches(
        &self,
        batch: usize,
        n: usize,
        max_batches: usize,
    ) -> Vec<(Vec<u32>, Vec<u32>)> {
        let windows = ((self.val.len() - 1) / n).max(1);
        let count = (windows / batch).clamp(1, max_batches.max(1));
        (0..count)
            .map(|b| {
                let (mut x, mut y) = (Vec::new(), Vec::new());
                for w in 0..batch {
                    let at = ((b * batch + w) % windows) * n;
                    x.extend_from_slice(&self.val[at..at + n]);
                    y.extend_from_slice(&self.val[at + 1..at + n + 1]);
                }
                (x, y)
            })
            .collect()
    }
}
