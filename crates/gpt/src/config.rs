//! Model configuration (serialisable, stored with every checkpoint).

use polysketch_attention::{AttentionConfig, AttentionKind, PolySketchConfig, SketchKind};
use serde::{Deserialize, Serialize};

use crate::{GptError, Result};

/// The shape of a GPT model (decoder-only, pre-LayerNorm, Transformer++ recipe).
///
/// The [`Default`] is `polysketch train`'s model: byte vocabulary (256), context 256, width
/// 128, 4 blocks of 4 heads, PolySketch attention with learned sketches and exact local blocks
/// (p = 4, r = 32, b = 64), seed 0. [`GptConfig::task`] gives `polysketch task`'s.
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
    /// The attention of every block. A PolySketch kind's own seed is not used: block `l`
    /// draws its sketch from `split_seed(seed, 1000 + l)`.
    pub attention: AttentionKind,
    /// Seed of the initialisation.
    pub seed: u64,
}

impl Default for GptConfig {
    fn default() -> Self {
        Self {
            vocab: 256,
            context: 256,
            d_model: 128,
            layers: 4,
            heads: 4,
            attention: AttentionKind::PolySketch(PolySketchConfig {
                p: 4,
                r: 32,
                block: 64,
                sketch: SketchKind::Learned,
                local: true,
                seed: 0,
            }),
            seed: 0,
        }
    }
}

impl GptConfig {
    /// `polysketch task`'s model for a task of vocabulary `vocab`: context 128, width 64, 2
    /// blocks of 2 heads, learned sketches with local blocks at r = 16, b = 32.
    pub fn task(vocab: usize) -> Self {
        Self {
            vocab,
            context: 128,
            d_model: 64,
            layers: 2,
            heads: 2,
            attention: AttentionKind::PolySketch(PolySketchConfig {
                p: 4,
                r: 16,
                block: 32,
                sketch: SketchKind::Learned,
                local: true,
                seed: 0,
            }),
            seed: 0,
        }
    }

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
        let kind =
            self.attention.with_seed(polysketch_core::split_seed(self.seed, 1000 + layer as u64));
        AttentionConfig::new(self.heads, self.head_dim(), kind)
    }

    /// The multi-head block of block `layer`: width \\(C\\), RoPE, [`attention_config`](Self::attention_config).
    pub fn block_config(&self, layer: usize) -> polysketch_attention::MultiHeadConfig {
        polysketch_attention::MultiHeadConfig {
            d_model: self.d_model,
            attention: self.attention_config(layer),
            rope: true,
        }
    }

    /// Checks the sizes (the attention layers check their own options when built).
    ///
    /// # Errors
    /// [`GptError::InvalidConfig`] for a zero size, a width not divisible by the heads, an odd
    /// head size, a vocabulary over \\(2^{24}\\) or a context over \\(2^{24}\\), parameters over
    /// [`MAX_PARAMETER_BYTES`](polysketch_core::MAX_PARAMETER_BYTES) in `f32` (a billion).
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
            return bad(format!("head size {} must be even (RoPE rotates pairs)", self.head_dim()));
        }
        // the parameters before they are allocated (each size is in range, their products
        // need not be): the embedding, and per block the projections, the GLU and the norms
        let (c, f) = (self.d_model as u128, self.hidden() as u128);
        let per_block = 4 * c * c + 3 * c * f + 4 * c;
        let count = self.vocab as u128 * c + self.layers as u128 * per_block + 2 * c;
        let bytes = count * 4;
        if bytes > polysketch_core::MAX_PARAMETER_BYTES {
            return bad(format!(
                "the model's {count} parameters would take {bytes} bytes in f32, over the limit \
                 of {} bytes",
                polysketch_core::MAX_PARAMETER_BYTES
            ));
        }
        Ok(())
    }
}
