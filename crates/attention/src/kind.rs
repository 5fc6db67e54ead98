//! Which attention a layer computes: the one description of an attention kind that the layer,
//! the device layer, the GPT model, its checkpoints, the CLI and the benchmarks all use.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

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
    /// Seed of the random sketch (and of the learned networks' initial weights). Not part of
    /// the kind's text or serde forms: a model derives each layer's seed from its own.
    pub seed: u64,
}

impl Default for PolySketchConfig {
    fn default() -> Self {
        Self { p: 4, r: 32, block: 256, sketch: SketchKind::Random, local: false, seed: 0 }
    }
}

/// Which attention a layer computes.
///
/// # Text form
/// [`FromStr`] reads, and [`Display`](fmt::Display) writes, a word with optional options:
///
/// | text | kind |
/// |---|---|
/// | `softmax` | [`Softmax`](Self::Softmax) |
/// | `polynomial`, `polynomial:p=8` | [`Polynomial`](Self::Polynomial) (p = 4 unless given) |
/// | `random`, `learned`, `random+local`, `learned+local` | [`PolySketch`](Self::PolySketch) with that sketch, exact local blocks with `+local` |
/// | `learned+local:p=4,r=64,block=128` | the same with options (missing ones from [`PolySketchConfig::default`]) |
/// | `local`, `local:p=4,block=256` | [`Local`](Self::Local): exact polynomial attention inside blocks only |
/// | `sliding`, `sliding:window=256` | [`Sliding`](Self::Sliding): softmax over the last `window` tokens |
/// | `performer`, `performer:features=256,block=256` | [`Performer`](Self::Performer): FAVOR+ random features of softmax |
/// | `hedgehog`, `hedgehog:features=128,block=256` | [`Hedgehog`](Self::Hedgehog): learned softmax feature maps |
///
/// `Display` writes every option, so `s.parse::<AttentionKind>()` of `k.to_string()` gives
/// `k` back (the seed aside, which neither form carries). The default is
/// [`Softmax`](Self::Softmax).
///
/// ```
/// use polysketch_attention::{AttentionKind, SketchKind};
/// let k: AttentionKind = "learned+local:r=64".parse()?;
/// let AttentionKind::PolySketch(c) = k else { unreachable!() };
/// assert_eq!((c.sketch, c.local, c.p, c.r, c.block), (SketchKind::Learned, true, 4, 64, 256));
/// assert_eq!(k.to_string(), "learned+local:p=4,r=64,block=256");
/// assert_eq!(k.to_string().parse::<AttentionKind>()?, k);
/// assert!("cosine".parse::<AttentionKind>().is_err());
/// # Ok::<(), polysketch_attention::AttentionError>(())
/// ```
///
/// # Serde
/// The form a checkpoint stores: `{"kind": "softmax"}`, `{"kind": "polynomial", "p": 4}` or
/// `{"kind": "polysketch", "p": 4, "r": 32, "block": 256, "learned": true, "local": true}`,
/// `{"kind": "local", "p": 4, "block": 256}`, `{"kind": "sliding", "window": 256}`,
/// `{"kind": "performer", "features": 256, "block": 256}`,
/// `{"kind": "hedgehog", "features": 128, "block": 256}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(into = "Wire", from = "Wire")]
pub enum AttentionKind {
    /// Exact causal softmax attention, \\(\mathrm{softmax}(QK^\top/\sqrt h)\\), tiled.
    #[default]
    Softmax,
    /// Exact normalised polynomial attention of degree \\(p\\) (paper Section 2.1).
    Polynomial {
        /// The degree (even, so that weights are nonnegative).
        p: usize,
    },
    /// PolySketch attention: \\(\langle\phi'(q), \phi'(k)\rangle\\) for \\(\langle q, k\rangle^p\\).
    PolySketch(PolySketchConfig),
    /// Local-only attention (paper Appendix J): exact normalised polynomial attention of degree
    /// \\(p\\) inside each block of `block` tokens, nothing across blocks — PolySketch with
    /// local blocks and its sketched part removed. Query \\(i\\) sees key \\(j\\) iff
    /// \\(\lfloor i/b\rfloor = \lfloor j/b\rfloor\\) (and \\(j \le i\\) when causal).
    Local {
        /// The degree (even).
        p: usize,
        /// The block size \\(b\\).
        block: usize,
    },
    /// Sliding-window softmax attention (paper Appendix J): query \\(i\\) sees the keys
    /// \\(j\\) with \\(i - w < j \le i\\) (\\(|i - j| < w\\) when bidirectional), itself
    /// included.
    Sliding {
        /// The window \\(w\\) in tokens.
        window: usize,
    },
    /// Performer (FAVOR+, Choromanski et al. 2020; the paper's baseline): softmax's
    /// \\(e^{\langle q, k\rangle/\sqrt h}\\) replaced by \\(\langle\phi(q), \phi(k)\rangle\\) with
    /// positive orthogonal random features ([`Favor`](crate::performer::Favor)), fixed by the
    /// seed, computed causally by the lowtri engine in blocks of `block` tokens (as the paper
    /// runs it): \\(\mathrm{out}_i = \sum_{j \le i} s_{ij}v_j / \sum_{j \le i} s_{ij}\\). Causal
    /// only.
    Performer {
        /// The number of random features \\(m\\).
        features: usize,
        /// The block size of the causal product.
        block: usize,
        /// Seed of the features (not part of the text or serde forms, like PolySketch's).
        seed: u64,
    },
    /// Hedgehog (Zhang et al. 2024; the paper's Table 7 baseline): learned feature maps
    /// \\(\phi(x) = [\mathrm{softmax}(xW + b), \mathrm{softmax}(-xW - b)]\\)
    /// ([`Hedgehog`](crate::hedgehog::Hedgehog), parameters `hedgehog.w`, `hedgehog.b`, trained
    /// with the model), \\(\mathrm{out}_i = \sum_{j \le i} s_{ij}v_j / \sum_{j \le i}
    /// s_{ij}\\) with \\(s_{ij} = \langle\phi(q_i), \phi(k_j)\rangle\\), by the lowtri engine in
    /// blocks of `block` tokens. Causal only.
    Hedgehog {
        /// The number of features \\(m\\) (even).
        features: usize,
        /// The block size of the causal product.
        block: usize,
        /// Seed of the initial map (not part of the text or serde forms).
        seed: u64,
    },
}

/// The serde form of [`AttentionKind`] (the checkpoint format since version 1).
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Wire {
    Softmax,
    Polynomial { p: usize },
    Polysketch { p: usize, r: usize, block: usize, learned: bool, local: bool },
    Local { p: usize, block: usize },
    Sliding { window: usize },
    Performer { features: usize, block: usize },
    Hedgehog { features: usize, block: usize },
}

impl From<AttentionKind> for Wire {
    fn from(k: AttentionKind) -> Self {
        match k {
            AttentionKind::Softmax => Wire::Softmax,
            AttentionKind::Polynomial { p } => Wire::Polynomial { p },
            AttentionKind::PolySketch(c) => Wire::Polysketch {
                p: c.p,
                r: c.r,
                block: c.block,
                learned: c.sketch == SketchKind::Learned,
                local: c.local,
            },
            AttentionKind::Local { p, block } => Wire::Local { p, block },
            AttentionKind::Sliding { window } => Wire::Sliding { window },
            AttentionKind::Performer { features, block, .. } => Wire::Performer { features, block },
            AttentionKind::Hedgehog { features, block, .. } => Wire::Hedgehog { features, block },
        }
    }
}

impl From<Wire> for AttentionKind {
    fn from(w: Wire) -> Self {
        match w {
            Wire::Softmax => AttentionKind::Softmax,
            Wire::Polynomial { p } => AttentionKind::Polynomial { p },
            Wire::Polysketch { p, r, block, learned, local } => {
                AttentionKind::PolySketch(PolySketchConfig {
                    p,
                    r,
                    block,
                    local,
                    sketch: if learned { SketchKind::Learned } else { SketchKind::Random },
                    seed: 0,
                })
            }
            Wire::Local { p, block } => AttentionKind::Local { p, block },
            Wire::Sliding { window } => AttentionKind::Sliding { window },
            Wire::Performer { features, block } => {
                AttentionKind::Performer { features, block, seed: 0 }
            }
            Wire::Hedgehog { features, block } => {
                AttentionKind::Hedgehog { features, block, seed: 0 }
            }
        }
    }
}

/// Performer's default number of features (the FAVOR+ authors' default; the paper's
/// comparison used 2048 at GPT-2-small scale).
pub const PERFORMER_FEATURES: usize = 256;

/// Hedgehog's default number of features: \\(2h\\) for \\(h = 64\\), the Hedgehog authors'
/// dimension (the paper's Table 7 also tries 1024).
pub const HEDGEHOG_FEATURES: usize = 128;

/// The words of the text form, for messages.
const WORDS: &str = "softmax, polynomial, random, learned, random+local, learned+local, local, sliding, performer, hedgehog";

impl AttentionKind {
    /// PolySketch with the given sketch and local blocks, other options at their defaults
    /// (p = 4, r = 32, b = 256, seed 0).
    pub fn polysketch(sketch: SketchKind, local: bool) -> Self {
        AttentionKind::PolySketch(PolySketchConfig { sketch, local, ..PolySketchConfig::default() })
    }

    /// Whether q and k go through the layer norm (with [`QkNorm::LayerNorm`](crate::QkNorm)):
    /// the kinds whose scores are \\(\langle\tilde q, \tilde k\rangle^p\\) or a sketch of it
    /// (polynomial, local, PolySketch).
    pub fn normalises_qk(&self) -> bool {
        matches!(
            self,
            AttentionKind::Polynomial { .. }
                | AttentionKind::Local { .. }
                | AttentionKind::PolySketch(_)
        )
    }

    /// Whether the weights are a softmax of \\(\langle q, k\rangle/\sqrt h\\) (softmax,
    /// sliding window): no layer norm of q and k, no parameters.
    pub fn is_softmax(&self) -> bool {
        matches!(self, AttentionKind::Softmax | AttentionKind::Sliding { .. })
    }

    /// The same kind with the PolySketch, Performer or Hedgehog seed set to `seed` (other kinds have
    /// none).
    pub fn with_seed(self, seed: u64) -> Self {
        match self {
            AttentionKind::PolySketch(c) => {
                AttentionKind::PolySketch(PolySketchConfig { seed, ..c })
            }
            AttentionKind::Performer { features, block, .. } => {
                AttentionKind::Performer { features, block, seed }
            }
            AttentionKind::Hedgehog { features, block, .. } => {
                AttentionKind::Hedgehog { features, block, seed }
            }
            other => other,
        }
    }

    /// Checks the kind's options.
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`]: `p` odd, zero, above 64, or (PolySketch) with
    /// \\(p/2\\) not a power of two; a learned sketch with \\(p = 2\\); zero `r`, block size or
    /// window.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(AttentionError::InvalidConfig(msg));
        let even_p = |p: usize, what: &str| {
            if p == 0 || !p.is_multiple_of(2) || p > 64 {
                return bad(format!("{what} attention needs an even p in 2..=64, got {p}"));
            }
            Ok(())
        };
        match *self {
            AttentionKind::Softmax => Ok(()),
            AttentionKind::Polynomial { p } => even_p(p, "polynomial"),
            AttentionKind::Local { p, block } => {
                even_p(p, "local")?;
                if block == 0 {
                    return bad("local attention needs a block of at least 1 token".into());
                }
                Ok(())
            }
            AttentionKind::Sliding { window } => {
                if window == 0 {
                    return bad("sliding-window attention needs a window of at least 1".into());
                }
                Ok(())
            }
            AttentionKind::Performer { features, block, .. } => {
                if features == 0 || block == 0 {
                    return bad(format!(
                        "performer needs features ({features}) and block ({block}) of at least 1"
                    ));
                }
                Ok(())
            }
            AttentionKind::Hedgehog { features, block, .. } => {
                if features < 2 || !features.is_multiple_of(2) || block == 0 {
                    return bad(format!(
                        "hedgehog needs an even number of features ≥ 2 ({features}) and a block \
                         of at least 1 ({block})"
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
                    return bad(format!("r ({}) and block ({}) must be at least 1", c.r, c.block));
                }
                Ok(())
            }
        }
    }

    /// A short name for files and series: `softmax`, `polynomial-p4`,
    /// `polysketch-learned-local-r32`, `local-p4-b256`, `sliding-w256`, ...
    pub fn name(&self) -> String {
        match *self {
            AttentionKind::Softmax => "softmax".into(),
            AttentionKind::Polynomial { p } => format!("polynomial-p{p}"),
            AttentionKind::Local { p, block } => format!("local-p{p}-b{block}"),
            AttentionKind::Sliding { window } => format!("sliding-w{window}"),
            AttentionKind::Performer { features, .. } => format!("performer-m{features}"),
            AttentionKind::Hedgehog { features, .. } => format!("hedgehog-m{features}"),
            AttentionKind::PolySketch(c) => format!(
                "polysketch-{}{}-r{}",
                word(c.sketch),
                if c.local { "-local" } else { "" },
                c.r
            ),
        }
    }

    /// A label for tables: `softmax`, `polynomial p=4`, `polysketch learned+local`, ...
    pub fn label(&self) -> String {
        match *self {
            AttentionKind::Softmax => "softmax".into(),
            AttentionKind::Polynomial { p } => format!("polynomial p={p}"),
            AttentionKind::Local { p, .. } => format!("local p={p}"),
            AttentionKind::Sliding { window } => format!("sliding w={window}"),
            AttentionKind::Performer { features, .. } => format!("performer m={features}"),
            AttentionKind::Hedgehog { features, .. } => format!("hedgehog m={features}"),
            AttentionKind::PolySketch(c) => {
                format!("polysketch {}{}", word(c.sketch), if c.local { "+local" } else { "" })
            }
        }
    }

    /// Forward FLOPs of one head over a sequence of `n` tokens of head size `h`: the products
    /// of the algorithm as it runs (see the book's attention chapter).
    ///
    /// - softmax: \\(2n^2h\\) (\\(QK^\top\\) and \\(PV\\) over the causal triangle);
    /// - polynomial: \\(n^2(2h + 1)\\) (\\(QK^\top\\) and \\(S[V, 1]\\) over the triangle);
    /// - local: \\(nb(2h + 1)\\) (the same over the blocks' triangles);
    /// - sliding: \\(4hP\\) over the \\(P = nw - w(w-1)/2\\) pairs in the band (\\(n \ge w\\));
    /// - performer, hedgehog: \\(n(4mk + b(m + k) + 4mh)\\) (the lowtri product with \\(m\\)
    ///   features and the two feature maps, \\(hm\\) multiply-adds each);
    /// - PolySketch: \\(n(4mk + \text{diag} + 2s)\\) with \\(m = r(r+1)/2\\) features,
    ///   \\(k = h + 1\\), the diagonal blocks' \\(b(h + k)\\) (local) or \\(b(r + k)\\), and
    ///   \\(s\\) the sketch of one row.
    pub fn forward_flops(&self, n: usize, h: usize) -> f64 {
        let (n, h) = (n as f64, h as f64);
        match self {
            AttentionKind::Softmax => 2.0 * n * n * h,
            AttentionKind::Polynomial { .. } => n * n * (2.0 * h + 1.0),
            AttentionKind::Local { block, .. } => n * (*block as f64).min(n) * (2.0 * h + 1.0),
            AttentionKind::Sliding { window } => {
                let w = (*window as f64).min(n);
                4.0 * h * (n * w - w * (w - 1.0) / 2.0)
            }
            AttentionKind::Performer { features, block, .. }
            | AttentionKind::Hedgehog { features, block, .. } => {
                let (m, b, k) = (*features as f64, *block as f64, h + 1.0);
                n * (4.0 * m * k + b * (m + k) + 4.0 * m * h)
            }
            AttentionKind::PolySketch(c) => {
                let (r, b, k) = (c.r as f64, c.block as f64, h + 1.0);
                let m = r * (r + 1.0) / 2.0;
                let diag = if c.local { b * (h + k) } else { b * (r + k) };
                // the sketch of one row of q̃ or k̃, degree d = p/2: the Gaussian tree's d/2
                // bottom nodes multiply by two h×r matrices, its d/2 - 1 upper ones by two r×r;
                // the learned tree's d networks on h and d - 2 on r are dense [·, 8r, r, 8r, r]
                let d = (c.p / 2) as f64;
                let sketch = match c.sketch {
                    SketchKind::Random if c.p == 2 => 2.0 * h * r,
                    SketchKind::Random => 2.0 * d * h * r + (2.0 * d - 4.0) * r * r,
                    SketchKind::Learned => {
                        2.0 * (d * (8.0 * h * r + 24.0 * r * r) + (d - 2.0) * 32.0 * r * r)
                    }
                };
                n * (4.0 * m * k + diag + 2.0 * sketch)
            }
        }
    }

    /// Reads the text form with the options not given taken from `defaults` (its `p` serves
    /// the polynomial and local kinds too, its `block` the local kind's block and the sliding
    /// window; the word chooses the sketch, and `+local` turns local blocks on, which are
    /// otherwise as in `defaults`). [`FromStr`] is this with
    /// [`PolySketchConfig::default`].
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`] naming the unknown word, option or value.
    pub fn parse_with(s: &str, defaults: PolySketchConfig) -> Result<Self> {
        let bad = |msg: String| AttentionError::InvalidConfig(msg);
        let (head, opts) = s.trim().split_once(':').unwrap_or((s.trim(), ""));
        let (word, local) = match head.strip_suffix("+local") {
            Some(w) => (w, true),
            None => (head, defaults.local),
        };
        let mut c = PolySketchConfig { local, ..defaults };
        let mut poly_p = defaults.p;
        let (mut block, mut window) = (defaults.block, defaults.block);
        let (mut features, mut hedgehog) = (PERFORMER_FEATURES, HEDGEHOG_FEATURES);
        for opt in opts.split(',').filter(|o| !o.trim().is_empty()) {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| bad(format!("attention option {opt:?} is not key=value")))?;
            let value: usize = value.trim().parse().map_err(|_| {
                bad(format!("attention option {key}: {value:?} is not a whole number"))
            })?;
            match (word, key.trim()) {
                ("polynomial" | "local", "p") => poly_p = value,
                ("local", "block") => block = value,
                ("sliding", "window") => window = value,
                ("performer", "features") => features = value,
                ("performer", "block") => block = value,
                ("hedgehog", "features") => hedgehog = value,
                ("hedgehog", "block") => block = value,
                ("random" | "learned", "p") => c.p = value,
                ("random" | "learned", "r") => c.r = value,
                ("random" | "learned", "block") => c.block = value,
                _ => return Err(bad(format!("attention {word:?} has no option {key:?}"))),
            }
        }
        let kind = match (word, head.ends_with("+local")) {
            ("softmax", false) => AttentionKind::Softmax,
            ("polynomial", false) => AttentionKind::Polynomial { p: poly_p },
            ("local", false) => AttentionKind::Local { p: poly_p, block },
            ("sliding", false) => AttentionKind::Sliding { window },
            ("performer", false) => {
                AttentionKind::Performer { features, block, seed: defaults.seed }
            }
            ("hedgehog", false) => {
                AttentionKind::Hedgehog { features: hedgehog, block, seed: defaults.seed }
            }
            ("random", _) => {
                AttentionKind::PolySketch(PolySketchConfig { sketch: SketchKind::Random, ..c })
            }
            ("learned", _) => {
                AttentionKind::PolySketch(PolySketchConfig { sketch: SketchKind::Learned, ..c })
            }
            _ => {
                return Err(bad(format!(
                    "unknown attention kind {head:?} (one of: {WORDS}, with options as in \
                     learned+local:p=4,r=32,block=256)"
                )));
            }
        };
        Ok(kind)
    }
}

fn word(s: SketchKind) -> &'static str {
    match s {
        SketchKind::Random => "random",
        SketchKind::Learned => "learned",
    }
}

impl FromStr for AttentionKind {
    type Err = AttentionError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse_with(s, PolySketchConfig::default())
    }
}

impl fmt::Display for AttentionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AttentionKind::Softmax => f.write_str("softmax"),
            AttentionKind::Polynomial { p } => write!(f, "polynomial:p={p}"),
            AttentionKind::Local { p, block } => write!(f, "local:p={p},block={block}"),
            AttentionKind::Sliding { window } => write!(f, "sliding:window={window}"),
            AttentionKind::Performer { features, block, .. } => {
                write!(f, "performer:features={features},block={block}")
            }
            AttentionKind::Hedgehog { features, block, .. } => {
                write!(f, "hedgehog:features={features},block={block}")
            }
            AttentionKind::PolySketch(c) => write!(
                f,
                "{}{}:p={},r={},block={}",
                word(c.sketch),
                if c.local { "+local" } else { "" },
                c.p,
                c.r,
                c.block
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_serde_forms_round_trip() {
        let kinds = [
            AttentionKind::Softmax,
            AttentionKind::Polynomial { p: 8 },
            AttentionKind::Local { p: 4, block: 64 },
            AttentionKind::Sliding { window: 100 },
            AttentionKind::Performer { features: 64, block: 32, seed: 0 },
            AttentionKind::Hedgehog { features: 16, block: 32, seed: 0 },
            AttentionKind::polysketch(SketchKind::Random, false),
            AttentionKind::PolySketch(PolySketchConfig {
                p: 8,
                r: 16,
                block: 64,
                sketch: SketchKind::Learned,
                local: true,
                seed: 0,
            }),
        ];
        for k in kinds {
            assert_eq!(k.to_string().parse::<AttentionKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<AttentionKind>(&json).unwrap(), k);
        }
        let json = r#"{"kind":"polysketch","p":4,"r":32,"block":64,"learned":true,"local":true}"#;
        let k: AttentionKind = serde_json::from_str(json).unwrap();
        assert_eq!(k.name(), "polysketch-learned-local-r32");
        assert_eq!(serde_json::to_string(&k).unwrap(), json);
    }

    #[test]
    fn local_and_sliding_take_the_block_by_default() {
        let local: AttentionKind = "local".parse().unwrap();
        assert_eq!(local, AttentionKind::Local { p: 4, block: 256 });
        assert_eq!(
            "sliding".parse::<AttentionKind>().unwrap(),
            AttentionKind::Sliding { window: 256 }
        );
        let k: AttentionKind = "local:p=8,block=32".parse().unwrap();
        assert_eq!(k, AttentionKind::Local { p: 8, block: 32 });
        assert!(AttentionKind::Sliding { window: 0 }.validate().is_err());
        assert!(AttentionKind::Local { p: 3, block: 8 }.validate().is_err());
    }

    #[test]
    fn bad_text_is_refused_with_the_reason() {
        for (s, says) in [
            ("cosine", "unknown attention kind"),
            ("softmax+local", "unknown attention kind"),
            ("softmax:p=4", "no option"),
            ("learned:q=4", "no option"),
            ("learned:r", "key=value"),
            ("learned:r=x", "whole number"),
            ("local+local", "unknown attention kind"),
            ("sliding:p=4", "no option"),
        ] {
            let e = s.parse::<AttentionKind>().unwrap_err().to_string();
            assert!(e.contains(says), "{s}: {e}");
        }
    }
}
