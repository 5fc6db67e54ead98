//! Layer configurations, validated once into a layer.

use crate::{AttentionError, Result};

/// Where the sketch of a PolySketch layer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SketchKind {
    /// The Gaussian tree of degree \\(p/2\\) (Gaussian JL for \\(p = 2\\)) drawn from the seed,
    /// fixed (paper Algorithm 1).
    #[default]
    Random,
    /// Learned networks in place of the Gaussian projections (paper Algorithm 2, Appendix D).
    Learned,
}

/// Options of PolySketch attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolySketchConfig {
    /// The degree \\(p\\) (even, \\(p/2\\) a power of two). Default 4.
    pub p: usize,
    /// The base sketch size \\(r\\); \\(\phi'\\) has \\(r(r+1)/2\\) features. Default 32.
    pub r: usize,
    /// The block size \\(b\\) of the causal product. Default 256.
    pub block: usize,
    /// Random or learned sketch. Default random.
    pub sketch: SketchKind,
    /// Exact \\(\langle q, k\rangle^p\\) inside each diagonal block of \\(b\\) tokens. Default false.
    pub local: bool,
    /// Seed of the random sketch (and of the learned networks' initial weights).
    pub seed: u64,
}

impl Default for PolySketchConfig {
    fn default() -> Self {
        Self {
            p: 4,
            r: 32,
            block: 256,
            sketch: SketchKind::Random,
            local: false,
            seed: 0,
        }
    }
}

/// Which attention a layer computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttentionKind {
    /// Exact causal softmax attention, \\(\mathrm{softmax}(QK^\top/\sqrt h)\\), tiled.
    Softmax,
    /// Exact normalised polynomial attention of degree \\(p\\) (paper Section 2.1).
    Polynomial {
        /// The degree (even, so that weights are nonnegative).
        p: usize,
    },
    /// PolySketch attention: \\(\langle\phi'(q), \phi'(k)\rangle\\) for \\(\langle q, k\rangle^p\\).
    PolySketch(PolySketchConfig),
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
}

impl AttentionConfig {
    /// Checks the configuration.
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`]: zero heads, head size, `r` or block size; `p` odd,
    /// zero, above 64, or (PolySketch) with \\(p/2\\) not a power of two; a learned sketch
    /// with \\(p = 2\\).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(AttentionError::InvalidConfig(msg));
        if self.heads == 0 || self.head_dim == 0 {
            return bad(format!(
                "heads ({}) and head_dim ({}) must be at least 1",
                self.heads, self.head_dim
            ));
        }
        match self.kind {
            AttentionKind::Softmax => Ok(()),
            AttentionKind::Polynomial { p } => {
                if p == 0 || !p.is_multiple_of(2) || p > 64 {
                    return bad(format!(
                        "polynomial attention needs an even p in 2..=64, got {p}"
                    ));
                }
                Ok(())
            }
            AttentionKind::PolySketch(c) => {
                if c.p < 2 || !c.p.is_multiple_of(2) || !(c.p / 2).is_power_of_two() || c.p > 64 {
                    return bad(format!(
                        "PolySketch needs an even p with p/2 a power of two (2, 4, 8, ...), got {}",
                        c.p
                    ));
                }
                if c.sketch == SketchKind::Learned && c.p < 4 {
                    return bad(format!(
                        "a learned sketch needs p ≥ 4 (for p = 2 Algorithm 2 has no network), got {}",
                        c.p
                    ));
                }
                if c.r == 0 || c.block == 0 {
                    return bad(format!(
                        "r ({}) and block ({}) must be at least 1",
                        c.r, c.block
                    ));
                }
                Ok(())
            }
        }
    }
}
