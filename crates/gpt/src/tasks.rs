//! The synthetic tasks of the paper's Appendix F, as generators with exact accuracy.

use polysketch_core::{Scalar, SketchRng};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::IGNORE;

/// A synthetic task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Induction heads (Appendix F.2, Olsson et al.): tokens from a vocabulary of 16, a special
    /// token at one random position (not among the last three) and again second to last; the
    /// answer is the token that followed the first special token.
    Induction,
    /// Selective copying (Gu & Dao): `colors` coloured tokens scattered among noise tokens, then
    /// as many marker tokens; the answers, at the markers, are the colours in order.
    Copying,
}

/// Colours to copy in [`Task::Copying`].
pub const COPY_COUNT: usize = 8;
/// Distinct colours in [`Task::Copying`] (tokens 1..=COPY_COLORS; 0 is noise).
pub const COPY_COLORS: usize = 8;

/// A batch of examples: `tokens` and `targets` `[batch, n]` ([`IGNORE`] where there is no
/// answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskBatch {
    /// Inputs.
    pub tokens: Vec<u32>,
    /// Answers at the answer positions, [`IGNORE`] elsewhere.
    pub targets: Vec<u32>,
    /// Examples.
    pub batch: usize,
    /// Sequence length of an input.
    pub n: usize,
}

impl Task {
    /// Vocabulary size: 17 for induction (16 tokens and the special one), `COPY_COLORS + 2`
    /// for copying (noise, colours, marker).
    pub fn vocab(&self) -> usize {
        match self {
            Task::Induction => 17,
            Task::Copying => COPY_COLORS + 2,
        }
    }

    /// Shortest input length the task is defined for.
    pub fn min_len(&self) -> usize {
        match self {
            Task::Induction => 4,
            Task::Copying => 2 * COPY_COUNT,
        }
    }

    /// `batch` examples with inputs of length `n` (at least [`min_len`](Self::min_len)).
    ///
    /// # Panics
    /// If `n` is below `min_len` (the callers check).
    pub fn generate(&self, rng: &mut SketchRng, batch: usize, n: usize) -> TaskBatch {
        assert!(n >= self.min_len(), "Task::generate: n {n} below {}", self.min_len());
        let (mut tokens, mut targets) =
            (Vec::with_capacity(batch * n), Vec::with_capacity(batch * n));
        for _ in 0..batch {
            match self {
                Task::Induction => {
                    // a sequence of n + 1 tokens: the input is its first n, the answer its last
                    let special = 16u32;
                    let len = n + 1;
                    let mut s: Vec<u32> = (0..len).map(|_| rng.random_range(0..16u32)).collect();
                    let at = rng.random_range(0..len - 3);
                    s[at] = special;
                    s[len - 2] = special;
                    s[len - 1] = s[at + 1];
                    tokens.extend_from_slice(&s[..n]);
                    targets.extend(core::iter::repeat_n(IGNORE, n - 1));
                    targets.push(s[n]);
                }
                Task::Copying => {
                    let memory = n - COPY_COUNT;
                    let marker = (COPY_COLORS + 1) as u32;
                    let mut s = vec![0u32; n];
                    let mut places = rand::seq::index::sample(rng, memory, COPY_COUNT).into_vec();
                    places.sort_unstable();
                    let colors: Vec<u32> =
                        (0..COPY_COUNT).map(|_| rng.random_range(1..=COPY_COLORS as u32)).collect();
                    for (p, c) in places.iter().zip(&colors) {
                        s[*p] = *c;
                    }
                    s[memory..].fill(marker);
                    tokens.extend_from_slice(&s);
                    targets.extend(core::iter::repeat_n(IGNORE, memory));
                    targets.extend_from_slice(&colors);
                }
            }
        }
        TaskBatch { tokens, targets, batch, n }
    }
}

/// Fraction of examples whose every answer is the arg-max of `probs` (`[batch, n, V]`): the
/// exact accuracy of the task.
pub fn exact_accuracy<T: Scalar>(probs: &[T], b: &TaskBatch, vocab: usize) -> f64 {
    let mut solved = 0usize;
    for e in 0..b.batch {
        let ok = (0..b.n).all(|t| {
            let y = b.targets[e * b.n + t];
            if y == IGNORE {
                return true;
            }
            let row = &probs[(e * b.n + t) * vocab..(e * b.n + t + 1) * vocab];
            let arg = (0..vocab).fold(0, |best, i| if row[i] > row[best] { i } else { best });
            arg as u32 == y
        });
        solved += usize::from(ok);
    }
    solved as f64 / b.batch as f64
}
