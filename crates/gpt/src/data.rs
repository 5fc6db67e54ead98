//! Tokenizers, text corpus, deterministic split and batches.

use std::path::Path;

use polysketch_core::{seeded_rng, split_seed};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder,
};

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
        let bytes: Vec<u8> = tokens.iter().filter_map(|&t| u8::try_from(t).ok()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Which tokenizer a run uses (stored in its checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TokenizerSpec {
    /// [`ByteTokenizer`].
    #[default]
    Bytes,
    /// Byte-level BPE (GPT-2 style) trained with the `tokenizers` crate on the training text,
    /// with at most `vocab` tokens (the 256 bytes and the merges).
    Bpe {
        /// Largest vocabulary.
        vocab: usize,
    },
}

/// A tokenizer: bytes, or a trained byte-level BPE.
#[derive(Debug, Clone)]
pub enum Tokenizer {
    /// One token per byte.
    Bytes,
    /// A byte-level BPE of the `tokenizers` crate.
    Bpe(Box<tokenizers::Tokenizer>),
}

fn tok_err(e: impl std::fmt::Display) -> GptError {
    GptError::Data(format!("tokenizer: {e}"))
}

impl Tokenizer {
    /// Trains a byte-level BPE with at most `vocab` tokens on `text` (its lines).
    ///
    /// # Errors
    /// [`GptError::InvalidConfig`] for `vocab` outside 257 ..= 65536; training errors.
    pub fn train_bpe(text: &str, vocab: usize) -> Result<Self> {
        if !(257..=65536).contains(&vocab) {
            return Err(GptError::InvalidConfig(format!(
                "BPE vocabulary {vocab} must be in 257 ..= 65536"
            )));
        }
        let byte_level = ByteLevel::new(false, true, true);
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tok = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(byte_level)))
        .with_decoder(Some(DecoderWrapper::ByteLevel(byte_level)))
        .build()
        .map_err(tok_err)?;
        tok.train(&mut trainer, text.split_inclusive('\n')).map_err(tok_err)?;
        Ok(Tokenizer::Bpe(Box::new(tokenizers::Tokenizer::from(tok))))
    }

    /// Builds the tokenizer a spec names, training a BPE on `text`.
    ///
    /// # Errors
    /// As [`train_bpe`](Self::train_bpe).
    pub fn from_spec(spec: TokenizerSpec, text: &str) -> Result<Self> {
        match spec {
            TokenizerSpec::Bytes => Ok(Tokenizer::Bytes),
            TokenizerSpec::Bpe { vocab } => Self::train_bpe(text, vocab),
        }
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        match self {
            Tokenizer::Bytes => ByteTokenizer::VOCAB,
            Tokenizer::Bpe(t) => t.get_vocab_size(true),
        }
    }

    /// Token ids of `text`.
    ///
    /// # Errors
    /// The BPE's encoding errors.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Bytes => Ok(ByteTokenizer.encode(text)),
            Tokenizer::Bpe(t) => Ok(t.encode(text, false).map_err(tok_err)?.get_ids().to_vec()),
        }
    }

    /// Text of `ids` (invalid UTF-8 becomes U+FFFD; unknown ids are skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Tokenizer::Bytes => ByteTokenizer.decode(ids),
            Tokenizer::Bpe(t) => t.decode(ids, false).unwrap_or_default(),
        }
    }

    /// The BPE as the `tokenizers` crate's JSON (None for bytes).
    ///
    /// # Errors
    /// Serialisation errors.
    pub fn to_json(&self) -> Result<Option<String>> {
        match self {
            Tokenizer::Bytes => Ok(None),
            Tokenizer::Bpe(t) => Ok(Some(t.to_string(false).map_err(tok_err)?)),
        }
    }

    /// A BPE from the `tokenizers` crate's JSON.
    ///
    /// # Errors
    /// [`GptError::Data`] if it does not parse.
    pub fn from_json(json: &str) -> Result<Self> {
        let t: tokenizers::Tokenizer = json.parse().map_err(tok_err)?;
        Ok(Tokenizer::Bpe(Box::new(t)))
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
    let bytes = std::fs::read(path)
        .map_err(|e| GptError::File { path: path.display().to_string(), reason: e.to_string() })?;
    String::from_utf8(bytes).map_err(|e| GptError::File {
        path: path.display().to_string(),
        reason: format!("not UTF-8 text ({e})"),
    })
}

impl Corpus {
    /// The text's last `val_fraction` (by bytes, at a character boundary) as validation text.
    ///
    /// # Errors
    /// [`GptError::Data`] if `val_fraction` is not in (0, 1).
    pub fn split_text(text: &str, val_fraction: f64) -> Result<(&str, &str)> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(GptError::Data(format!(
                "validation fraction {val_fraction} must be in (0, 1)"
            )));
        }
        let mut cut = text.len() - (text.len() as f64 * val_fraction).round() as usize;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        Ok(text.split_at(cut))
    }

    /// Splits `text` (see [`split_text`](Self::split_text)) and tokenises both parts.
    ///
    /// # Errors
    /// [`GptError::Data`] if `val_fraction` is not in (0, 1) or either part has fewer than
    /// `context + 1` tokens.
    pub fn from_text(
        text: &str, tokenizer: &Tokenizer, val_fraction: f64, context: usize,
    ) -> Result<Self> {
        let (train_text, val_text) = Self::split_text(text, val_fraction)?;
        let (train, val) = (tokenizer.encode(train_text)?, tokenizer.encode(val_text)?);
        let tokens = train.len() + val.len();
        if train.len() <= context || val.len() <= context {
            return Err(GptError::Data(format!(
                "{tokens} tokens are too few for a context of {context} with a validation fraction of {val_fraction} (need {} at least)",
                ((context as f64 + 1.0) / val_fraction.min(1.0 - val_fraction)).ceil()
            )));
        }
        Ok(Self { train, val })
    }

    /// The training batch of step `step`: `batch` windows of `n + 1` tokens at offsets drawn
    /// from `split_seed(seed, step)`, as (inputs, targets), each `[batch, n]`. A function of
    /// `(seed, step)` only, so a resumed run sees the same batches.
    pub fn train_batch(
        &self, seed: u64, step: usize, batch: usize, n: usize,
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
        &self, batch: usize, n: usize, max_batches: usize,
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
