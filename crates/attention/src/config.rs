//! Layer configurations, validated once into a layer.

use crate::{AttentionError, AttentionKind, Result};

/// How the polynomial and PolySketch kinds prepare \\(q\\) and \\(k\\) before their scores
/// \\(\langle\tilde q_i, \tilde k_j\rangle^p\\) (softmax ignores it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum QkNorm {
    /// \\(\tilde x = \mathrm{LN}(x)/h^{1/4}\\), one gain and one bias of size \\(h\\) shared by
    /// \\(q\\), \\(k\\) and the heads (parameters `ln.gain`, `ln.bias`), as in the authors'
    /// code: \\(\langle\tilde q, \tilde k\rangle = \langle\mathrm{LN}(q),
    /// \mathrm{LN}(k)\rangle/\sqrt h\\), which bounds the weights (see [`crate::Attention`]).
    #[default]
    LayerNorm,
    /// The raw vectors, \\(\tilde x = x\\): the formula of the paper's Section 2.1,
    /// \\(\mathrm{out}_i = \sum_{j \le i} \langle q_i, k_j\rangle^p v_j / (1 + \sum_{j \le i}
    /// \langle q_i, k_j\rangle^p)\\). No parameters; the scale of \\(q\\) and \\(k\\) is the
    /// caller's (large inputs overflow sooner: see the book's Errors chapter).
    None,
}

/// A multi-head causal attention layer.
///
/// # Shapes
/// `q`, `k`, `v`, output: `[batch, heads, n, head_dim]`, row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttentionConfig {
    /// Number of heads.
    pub heads: usize,
    /// Size \\(h\\) of each head.
    pub head_dim: usize,
    /// The kind of attention.
    pub kind: AttentionKind,
    /// How \\(q\\) and \\(k\\) are normalised (polynomial and PolySketch kinds; default: a
    /// layer norm).
    pub qk_norm: QkNorm,
}

impl AttentionConfig {
    /// Checks the configuration.
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`]: zero heads or head size, and what
    /// [`AttentionKind::validate`] refuses.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(AttentionError::InvalidConfig(msg));
        if self.heads == 0 || self.head_dim == 0 {
            return bad(format!(
                "heads ({}) and head_dim ({}) must be at least 1",
                self.heads, self.head_dim
            ));
        }
        self.kind.validate()
    }
}
