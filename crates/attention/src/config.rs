//! Layer configurations, validated once into a layer.

use crate::{AttentionError, AttentionKind, Result};

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
