//! Model configuration (serialisable, stored with every checkpoint).

use polysketch_attention::{AttentionConfig, AttentionKind, PolySketchConfig, SketchKind};
use serde::{Deserialize, Serialize};

use crate::{GptError, Result};

/// The attention kind of every layer, in a form that goes into a checkpoint's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttentionSpec {
    /// Exact causal softmax attention.
    Softmax,
    /// Exact normalised polynomial attention of degree `p` (with layer norm on q and k).
    Polynomial {
        /// The degree (even).
        p: usize,
    },
    /// PolySketch attention: sketch size `r`, block size `block`, random or learned sketches,
    /// with or without exact local blocks.
    Polysketch {
        /// The degree (even, p/2 a power of two).
        p: usize,
        /// Sketch size.
        r: usize,
        /// Block size of the lower-triangular product.
        block: usize,
        /// Learned sketches (paper Algorithm 2) instead of random ones.
        learned: bool,
        /// Exact polynomial weights inside the diagonal blocks.
        local: bool,
    },
}

impl AttentionSpec {
    /// The attention crate's kind for layer `layer` of a model seeded with `seed` (each layer
    /// draws its own random sketch or learned-sketch initialisation).
    pub fn kind(&self, seed: u64, layer: usize) -> AttentionKind {
        let seed = polysketch_core::split_seed(seed, 1000 + layer as u64);
        match *self {
            AttentionSpec::Softmax => AttentionKind::Softmax,
            AttentionSpec::Polynomial { p } => AttentionKind::Polynomial { p },
            AttentionSpec::Polysketch {
                p,
                r,
                block,
                learned,
                local,
            } => AttentionKind::PolySketch(PolySketchConfig {
                p,
                r,
                block,
                local,
                seed,
                sketch: if learned {
                    SketchKind::Learned
                } else {
                    SketchKind::Random
                },
            }),
        }
    }

    /// A short name: `softmax`, `polynomial-p4`, `polysketch-learned-local-r32`, ...
    pub fn name(&self) -> String {
        match *self {
            AttentionSpec::Softmax => "softmax".into(),
            AttentionSpec::Polynomial { p } => format!("polynomial-p{p}"),
            AttentionSpec::Polysketch {
                r, learned, local, ..
            } => format!(
                "polysketch-{}{}-r{r}",
                if learned { "learned" } else { "random" },
                if local { "-local" } else { "" }
            ),
        }
    }
}

/// The shape of a GPT model (decoder-only, pre-LayerNorm, Transformer++ recipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Vocabulary size \\(V\\).
    pub vocab: usize,
    /// Longest sequence the model is trained on (and the sinusoidal table's length for
    /// training; decoding may go further).
    pub context: usize,
    /// Model width \\(C\\).
    pub d_model: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Attention heads per block (head size \\(h = C/\\text{heads}\\), even for RoPE).
    pub heads: usize,
    /// The attention of every block.
    pub attention: AttentionSpec,
    /// Seed of the initialisation.
    pub seed: u64,
}

impl GptConfig {
    /// The head size \\(h = C/\\text{heads}\\).
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads.max(1)
    }

    /// The GLU hidden width: \\(8C/3\\) rounded up to a multiple of 8.
    pub fn hidden(&self) -> usize {
        (8 * self.d_model).div_ceil(3).div_ceil(8) * 8
    }

    /// The attention layer configuration of block `layer`.
    pub fn attention_config(&self, layer: usize) -> AttentionConfig {
        AttentionConfig {
            heads: self.heads,
            head_dim: self.head_dim(),
            kind: self.attention.kind(self.seed, layer),
        }
    }

    /// Checks the sizes (the attention layers check their own options when built).
    ///
    /// # Errors
    /// [`GptError::InvalidConfig`] for a zero size, a width not divisible by the heads, an odd
    /// head size, a vocabulary over \\(2^{24}\\) or a context over \\(2^{24}\\).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GptError::InvalidConfig(m));
        if self.vocab == 0
            || self.context == 0
            || self.d_model == 0
            || self.layers == 0
            || self.heads == 0
        {
            return bad(format!(
                "vocab, context, d_model, layers and heads must be positive: {self:?}"
            ));
        }
        if self.vocab > 1 << 24
            || self.context > 1 << 24
            || self.d_model > 1 << 16
            || self.layers > 1024
        {
            return bad(format!("sizes out of range: {self:?}"));
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return bad(format!(
                "d_model {} is not a multiple of heads {}",
                self.d_model, self.heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head size {} must be even (RoPE rotates pairs)",
                self.head_dim()
            ));
        }
        Ok(())
    }
}
