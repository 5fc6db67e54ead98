//! Layer configurations, validated once into a layer.

use crate::tiles::{Mask, Window};
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

/// A multi-head attention layer: causal (a decoder's: token \\(i\\) sees \\(j \le i\\)) or
/// bidirectional (an encoder's: every token sees every token of its sequence).
///
/// [`AttentionConfig::new`] gives the defaults (causal, layer norm of q and k); the fields are
/// public for the rest.
///
/// # Shapes
/// `q`, `k`, `v`, output: `[batch, heads, n, head_dim]`, row-major (or tokens first, see
/// [`Shape`](crate::Shape)).
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
    /// Causal (`true`: \\(\mathrm{out}_i\\) sums over \\(j \le i\\)) or bidirectional (`false`:
    /// over every \\(j\\) of the sequence). Bidirectional PolySketch is
    /// \\(\phi'(\tilde Q)(\phi'(\tilde K)^\top[V, \mathbf 1])\\) in linear time, with the exact
    /// scores inside the block diagonal when `local` is set; decoding and the device kernels
    /// are causal only.
    pub causal: bool,
}

impl AttentionConfig {
    /// `heads` heads of size `head_dim` computing `kind`: causal, q and k through the layer norm.
    ///
    /// ```
    /// use polysketch_attention::{AttentionConfig, QkNorm};
    /// let encoder = AttentionConfig { causal: false, ..AttentionConfig::new(8, 64, "learned+local".parse()?) };
    /// assert_eq!((encoder.heads, encoder.qk_norm), (8, QkNorm::LayerNorm));
    /// # Ok::<(), polysketch_attention::AttentionError>(())
    /// ```
    pub fn new(heads: usize, head_dim: usize, kind: AttentionKind) -> Self {
        Self { heads, head_dim, kind, qk_norm: QkNorm::LayerNorm, causal: true }
    }

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
        if matches!(self.kind, AttentionKind::Performer { .. } | AttentionKind::Hedgehog { .. })
            && !self.causal
        {
            return bad(format!("{} attention is causal only here", self.kind.label()));
        }
        self.kind.validate()
    }

    /// Whether query \\(i\\) may attend to key \\(j\\) in this layer's exact kinds: \\(j \le
    /// i\\) when causal, and within the same block of \\(b\\) tokens ([`AttentionKind::Local`])
    /// or within distance \\(|i - j| < w\\) ([`AttentionKind::Sliding`]). For the other kinds
    /// causality alone (PolySketch's approximate scores reach every earlier key).
    ///
    /// ```
    /// use polysketch_attention::AttentionConfig;
    /// let sliding = AttentionConfig::new(1, 8, "sliding:window=3".parse()?);
    /// assert!(sliding.sees(5, 3) && !sliding.sees(5, 2) && !sliding.sees(3, 5));
    /// # Ok::<(), polysketch_attention::AttentionError>(())
    /// ```
    pub fn sees(&self, i: usize, j: usize) -> bool {
        self.mask().sees(i, j)
    }

    /// The mask of the exact tiled kinds (see [`sees`](Self::sees)).
    pub(crate) fn mask(&self) -> Mask {
        let window = match self.kind {
            AttentionKind::Local { block, .. } => Window::Blocks(block),
            AttentionKind::Sliding { window } => Window::Band(window),
            _ => Window::All,
        };
        Mask { causal: self.causal, window }
    }

    /// Estimated bytes of what a training forward of the layer keeps for its backward, for
    /// `batch` sequences of `n` tokens in `T`: `batch · heads · n · (per-token values of the
    /// kind) · size_of::<T>()`, saturating (the figure [`MAX_STATE_BYTES`](crate::MAX_STATE_BYTES)
    /// is checked against before anything is allocated). Learned sketches keep their networks'
    /// wide hidden layers, the most of any kind.
    ///
    /// ```
    /// use polysketch_attention::AttentionConfig;
    /// let random = AttentionConfig::new(4, 32, "random+local".parse()?);
    /// let learned = AttentionConfig::new(4, 32, "learned+local".parse()?);
    /// assert!(learned.saved_bytes::<f32>(1, 1024) > 5 * random.saved_bytes::<f32>(1, 1024));
    /// assert_eq!(random.saved_bytes::<f32>(2, 1024), 2 * random.saved_bytes::<f32>(1, 1024));
    /// # Ok::<(), polysketch_attention::AttentionError>(())
    /// ```
    pub fn saved_bytes<T>(&self, batch: usize, n: usize) -> u128 {
        crate::checks::state_bytes::<T>(self, batch, n)
    }
}
