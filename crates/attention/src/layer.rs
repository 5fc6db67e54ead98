//! The multi-head layer: validated config, parameters, forward and backward.

use faer::{Mat, MatMut, MatRef, Par};
use polysketch_core::Scalar;
use polysketch_core::linalg::row_blocks;
use polysketch_lowtri::{Features, Grads as LtGrads, LowTri, Problem, Saved as LtSaved};
use polysketch_sketch::{GaussianJl, PolySketch, TreeSketch};
use rayon::prelude::*;

use crate::layernorm::{LnSaved, layernorm_backward, layernorm_forward};
use crate::learned::{LearnedSaved, LearnedSketch, Param, ParamMut, WIDE};
use crate::polynomial::{self, PolyViews};
use crate::softmax::{self, HeadViews, TILE};
use crate::{AttentionConfig, AttentionKind, PolySketchConfig, SketchKind};
use crate::{AttentionError, Result};

/// Upper bound on the memory a forward may plan to keep (16 GiB).
pub const MAX_STATE_BYTES: u128 = 16 << 30;

/// A multi-head causal attention layer: `AttentionConfig` validated, with its parameters.
///
/// Parameters: for polynomial and PolySketch attention a layer normalisation of \\(q\\) and
/// \\(k\\) (one gain and one bias of size \\(h\\), shared by \\(q\\), \\(k\\) and the heads, as in the
/// authors' code), named `ln.gain` and `ln.bias`; softmax has none. A random sketch is fixed by
/// the seed and is not a parameter; a learned sketch's networks are (`sketch.node{i}.f{1,2}.*`,
/// see [`LearnedSketch::parameters`]), shared by the heads, their gradients summed over them.
///
/// # Normalisation
/// Polynomial and PolySketch score \\(\langle\tilde q, \tilde k\rangle^p\\) with \\(\tilde x =
/// \mathrm{LN}(x)/h^{1/4}\\), so \\(\langle\tilde q, \tilde k\rangle = \langle\mathrm{LN}(q),
/// \mathrm{LN}(k)\rangle/\sqrt h\\) — the scaling of softmax attention. With unit gain and zero
/// bias \\(|\langle\tilde q, \tilde k\rangle| \le \sqrt h\\), so each weight is at most
/// \\(h^{p/2}\\) (4096 for \\(h = 64\\), \\(p = 4\\)) and a row's sum over \\(n\\) tokens at most
/// \\(n h^{p/2}\\) (\\(4.3 \cdot 10^9\\) at \\(n = 2^{20}\\)): finite in f32, whose range ends at
/// \\(3.4 \cdot 10^{38}\\).
///
/// # Shapes
/// `q`, `k`, `v`, output: `[batch, heads, n, head_dim]`, row-major `&[T]`.
pub struct Attention<T: Scalar> {
    pub(crate) config: AttentionConfig,
    pub(crate) ln_gain: Vec<T>,
    pub(crate) ln_bias: Vec<T>,
    /// The random sketch (PolySketch with `SketchKind::Random`).
    pub(crate) sketch: Option<Box<dyn PolySketch<T>>>,
    /// The learned sketch (PolySketch with `SketchKind::Learned`), shared by the heads.
    pub(crate) learned: Option<LearnedSketch<T>>,
}

impl<T: Scalar> core::fmt::Debug for Attention<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Attention")
            .field("config", &self.config)
            .finish()
    }
}

/// A row-major matrix: rows are contiguous slices, which the layer norm and the normalisation
/// loops read and write, while faer sees it through [`Rows::as_ref`] / [`Rows::as_mut`] views.
#[derive(Default)]
pub(crate) struct Rows<T> {
    pub(crate) data: Vec<T>,
    pub(crate) cols: usize,
}

impl<T: Scalar> Rows<T> {
    /// Makes it `[rows, cols]`, keeping the memory when the size is unchanged (contents are then
    /// stale: callers overwrite them).
    fn reshape(&mut self, rows: usize, cols: usize) {
        self.data.resize(rows * cols, T::zero());
        self.cols = cols;
    }
    pub(crate) fn nrows(&self) -> usize {
        self.data.len().checked_div(self.cols).unwrap_or(0)
    }
    pub(crate) fn as_ref(&self) -> MatRef<'_, T> {
        MatRef::from_row_major_slice(&self.data, self.nrows(), self.cols)
    }
    pub(crate) fn as_mut(&mut self) -> MatMut<'_, T> {
        let rows = self.nrows();
        MatMut::from_row_major_slice_mut(&mut self.data, rows, self.cols)
    }
    pub(crate) fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
    pub(crate) fn row_mut(&mut self, i: usize) -> &mut [T] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// A column-major `[rows, cols]` buffer, reusing `m`'s memory when the shape is unchanged.
fn reshape_mat<T: Scalar>(m: &mut Mat<T>, rows: usize, cols: usize) {
    if (m.nrows(), m.ncols()) != (rows, cols) {
        *m = Mat::zeros(rows, cols);
    }
}

/// What one head's backward needs (PolySketch and polynomial attention).
struct HeadSaved<T: Scalar> {
    ln_q: LnSaved<T>,
    ln_k: LnSaved<T>,
    /// `[n, h]`: \\(\tilde q\\), \\(\tilde k\\).
    qt: Rows<T>,
    kt: Rows<T>,
    /// `[n, r]`: the degree-\\(p/2\\) sketches (empty for exact polynomial attention).
    l: Mat<T>,
    r: Mat<T>,
    /// `[n, h + 1]`: \\([V, \mathbf 1]\\).
    c: Rows<T>,
    /// `[n, h + 1]`: the causal product \\(\sum_{j \le i} s_{ij}[v_j, 1]\\).
    raw: Rows<T>,
    /// `[n, h]`: the output.
    out: Rows<T>,
    /// `[n]`: \\(1 + \sum_{j \le i} s_{ij}\\).
    den: Vec<T>,
    /// Backward buffers: `[n, h + 1]` gradient of `raw`; `∂q̃`, `∂k̃` (`[n, h]`); `∂C`.
    draw: Rows<T>,
    dqt: Rows<T>,
    dkt: Rows<T>,
    dc: Rows<T>,
    /// A learned sketch's state for \(\tilde q\) and \(\tilde k\), and this head's share of
    /// its parameter gradients.
    learned_q: LearnedSaved<T>,
    learned_k: LearnedSaved<T>,
    d_learned: Vec<Vec<T>>,
}

impl<T: Scalar> Default for HeadSaved<T> {
    fn default() -> Self {
        Self {
            ln_q: LnSaved::default(),
            ln_k: LnSaved::default(),
            qt: Rows::default(),
            kt: Rows::default(),
            l: Mat::zeros(0, 0),
            r: Mat::zeros(0, 0),
            c: Rows::default(),
            raw: Rows::default(),
            out: Rows::default(),
            den: Vec::new(),
            draw: Rows::default(),
            dqt: Rows::default(),
            dkt: Rows::default(),
            dc: Rows::default(),
            learned_q: LearnedSaved::default(),
            learned_k: LearnedSaved::default(),
            d_learned: Vec::new(),
        }
    }
}

/// What [`Attention::backward`] needs from [`Attention::forward`]; reusable: a training loop
/// that keeps one `Saved` (and one [`Grads`]) per layer allocates nothing after its first step
/// ([`Attention::forward_into`], [`Attention::backward_into`]).
pub struct Saved<T: Scalar> {
    batch: usize,
    n: usize,
    inner: Inner<T>,
}

impl<T: Scalar> core::fmt::Debug for Saved<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Saved")
            .field("batch", &self.batch)
            .field("n", &self.n)
            .finish()
    }
}

impl<T: Scalar> Default for Saved<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Scalar> Saved<T> {
    /// An empty state, to be filled by a forward.
    pub fn new() -> Self {
        Self {
            batch: 0,
            n: 0,
            inner: Inner::Empty,
        }
    }
}

/// The kind-specific part of [`Saved`].
enum Inner<T: Scalar> {
    Empty,
    /// PolySketch or exact polynomial attention: per-head state and the causal product's.
    Kernel {
        heads: Vec<HeadSaved<T>>,
        core: Core<T>,
    },
    /// The inputs (row-major, as given), the output, and its log-sum-exp per row; `used` once a
    /// backward consumed it.
    Softmax {
        q: Vec<T>,
        k: Vec<T>,
        v: Vec<T>,
        out: Vec<T>,
        lse: Vec<T>,
        used: bool,
    },
}

/// The causal product's own state.
enum Core<T: Scalar> {
    /// The lowtri engine's prefixes and gradients, one per head.
    Sketch {
        lowtri: Vec<LtSaved<T>>,
        grads: Vec<LtGrads<T>>,
    },
    /// The exact tiled product keeps nothing but its degree; `used` once a backward ran.
    Exact { p: usize, used: bool },
}

impl<T: Scalar> Core<T> {
    fn is_ready(&self) -> bool {
        match self {
            Core::Sketch { lowtri, .. } => lowtri.iter().all(|s| s.is_ready()),
            Core::Exact { used, .. } => !used,
        }
    }
}

/// Gradients of a layer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Grads<T> {
    /// \\(\partial L/\partial q\\), `[batch, heads, n, h]`.
    pub dq: Vec<T>,
    /// \\(\partial L/\partial k\\), same shape.
    pub dk: Vec<T>,
    /// \\(\partial L/\partial v\\), same shape.
    pub dv: Vec<T>,
    /// Gradients of the named parameters, in the order of [`Attention::parameters`].
    pub params: Vec<(String, Vec<T>)>,
}

/// `batch` and `n` must be at least 1.
pub(crate) fn check_positive(op: &'static str, batch: usize, n: usize) -> Result<()> {
    if batch == 0 || n == 0 {
        return Err(AttentionError::InvalidConfig(format!(
            "{op}: batch and n must be at least 1, got {batch} and {n}"
        )));
    }
    Ok(())
}

/// `[batch, heads, n, h]` spelled out for error messages.
pub(crate) fn shape_of(config: &AttentionConfig, batch: usize, n: usize) -> String {
    let (heads, h) = (config.heads, config.head_dim);
    format!("[batch {batch}, heads {heads}, n {n}, h {h}]")
}

/// Checks that `q`, `k`, `v` are `[batch, heads, n, h]` and finite; returns their length.
pub(crate) fn check_qkv<T: Scalar>(
    op: &'static str,
    config: &AttentionConfig,
    [q, k, v]: [&[T]; 3],
    batch: usize,
    n: usize,
) -> Result<usize> {
    let total = batch * config.heads * n * config.head_dim;
    for (name, x) in [("q", q), ("k", k), ("v", v)] {
        check_len(op, name, x, total, shape_of(config, batch, n))?;
        check_finite(op, name, x)?;
    }
    Ok(total)
}

pub(crate) fn check_len<T>(
    op: &'static str,
    input: &'static str,
    x: &[T],
    expected: usize,
    shape: String,
) -> Result<()> {
    if x.len() != expected {
        return Err(AttentionError::ShapeMismatch {
            op,
            input,
            expected,
            got: x.len(),
            shape,
        });
    }
    Ok(())
}

pub(crate) fn check_finite<T: Scalar>(
    op: &'static str,
    input: &'static str,
    x: &[T],
) -> Result<()> {
    if polysketch_core::all_finite(x) {
        return Ok(());
    }
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(AttentionError::NonFinite { op, input, index }),
        None => Ok(()),
    }
}

/// Head `idx` of a row-major `[.., n, h]` array as an `[n, h]` view.
pub(crate) fn head_matrix<T>(x: &[T], idx: usize, n: usize, h: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(&x[idx * n * h..(idx + 1) * n * h], n, h)
}

fn add_assign<T: Scalar>(dst: MatMut<'_, T>, src: MatRef<'_, T>) {
    faer::zip!(dst, src).for_each(|faer::unzip!(d, s)| *d += *s);
}

/// The lowtri problem of one head: self-tensored features, exact local blocks if asked.
fn problem<'a, T: Scalar>(c: &PolySketchConfig, s: &'a HeadSaved<T>) -> Problem<'a, T> {
    if c.local {
        let features = Features::SelfTensored {
            l: s.l.as_ref(),
            r: s.r.as_ref(),
        };
        Problem::local_exact(features, s.qt.as_ref(), s.kt.as_ref(), c.p, s.c.as_ref())
    } else {
        Problem::self_tensored(s.l.as_ref(), s.r.as_ref(), s.c.as_ref())
    }
}

/// Runs `f` on every head, in parallel under `Par::Rayon`.
fn each_head<T: Scalar, R: Send>(
    heads: &mut [HeadSaved<T>],
    par: Par,
    f: impl Fn(usize, &mut HeadSaved<T>) -> R + Sync + Send,
) -> Vec<R> {
    match par {
        Par::Seq => heads.iter_mut().enumerate().map(|(i, s)| f(i, s)).collect(),
        Par::Rayon(_) => heads
            .par_iter_mut()
            .enumerate()
            .map(|(i, s)| f(i, s))
            .collect(),
    }
}

impl<T: Scalar> Attention<T> {
    /// Validates `config` and initialises the parameters (unit gain, zero bias; the random
    /// sketch, or the learned sketch's initial weights, drawn from the seed).
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`] (see [`AttentionConfig::validate`]).
    pub fn new(config: AttentionConfig) -> Result<Self> {
        config.validate()?;
        let h = config.head_dim;
        let (mut sketch, mut learned) = (None, None);
        if let AttentionKind::PolySketch(c) = config.kind {
            match c.sketch {
                SketchKind::Random if c.p == 2 => {
                    sketch =
                        Some(Box::new(GaussianJl::new(h, c.r, c.seed)?) as Box<dyn PolySketch<T>>)
                }
                SketchKind::Random => {
                    sketch = Some(Box::new(TreeSketch::gaussian(h, c.r, c.p / 2, c.seed)?))
                }
                SketchKind::Learned => learned = Some(LearnedSketch::new(h, c.r, c.p / 2, c.seed)?),
            }
        }
        Ok(Self {
            config,
            ln_gain: vec![T::one(); h],
            ln_bias: vec![T::zero(); h],
            sketch,
            learned,
        })
    }

    /// The learned sketch, if the layer has one (its parameters are also listed by
    /// [`parameters`](Self::parameters)).
    pub fn learned_sketch(&self) -> Option<&LearnedSketch<T>> {
        self.learned.as_ref()
    }

    /// The random sketch, if the layer has one (fixed by the seed; not a parameter).
    pub fn random_sketch(&self) -> Option<&dyn PolySketch<T>> {
        self.sketch.as_deref()
    }

    /// The configuration.
    pub fn config(&self) -> &AttentionConfig {
        &self.config
    }

    /// The named parameters with their shapes (row-major): `ln.gain [h]`, `ln.bias [h]` for
    /// polynomial and PolySketch attention, then, with a learned sketch, its networks'
    /// parameters (see [`LearnedSketch::parameters`]); none for softmax. [`Grads::params`]
    /// lists the gradients in the same order.
    pub fn parameters(&self) -> Vec<Param<'_, T>> {
        if self.config.kind == AttentionKind::Softmax {
            return vec![];
        }
        let h = self.config.head_dim;
        let mut out = vec![
            Param {
                name: "ln.gain".into(),
                shape: vec![h],
                data: &self.ln_gain,
            },
            Param {
                name: "ln.bias".into(),
                shape: vec![h],
                data: &self.ln_bias,
            },
        ];
        if let Some(l) = &self.learned {
            out.extend(l.parameters());
        }
        out
    }

    /// Mutable access to the named parameters, in the order of
    /// [`parameters`](Self::parameters) (for optimisers and loading).
    pub fn parameters_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        if self.config.kind == AttentionKind::Softmax {
            return vec![];
        }
        let h = self.config.head_dim;
        let mut out = vec![
            ParamMut {
                name: "ln.gain".into(),
                shape: vec![h],
                data: self.ln_gain.as_mut_slice(),
            },
            ParamMut {
                name: "ln.bias".into(),
                shape: vec![h],
                data: self.ln_bias.as_mut_slice(),
            },
        ];
        if let Some(l) = &mut self.learned {
            out.extend(l.parameters_mut());
        }
        out
    }

    pub(crate) fn scale(&self) -> T {
        T::of((self.config.head_dim as f64).powf(-0.25))
    }

    /// The output of the layer and what the backward needs (fresh buffers; see
    /// [`forward_into`](Self::forward_into) to reuse them).
    ///
    /// # Shapes
    /// `q`, `k`, `v`: `[batch, heads, n, h]` row-major → `[batch, heads, n, h]`.
    ///
    /// # Errors
    /// As [`forward_into`](Self::forward_into).
    pub fn forward(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        batch: usize,
        n: usize,
        par: Par,
    ) -> Result<(Vec<T>, Saved<T>)> {
        let mut out = vec![T::zero(); q.len()];
        let mut saved = Saved::new();
        self.forward_into(q, k, v, batch, n, &mut out, &mut saved, par)?;
        Ok((out, saved))
    }

    /// The output of the layer into `out` (`[batch, heads, n, h]`) and the state for the backward
    /// into `saved`, whose buffers are reused when the shapes are unchanged.
    ///
    /// # Errors
    /// Wrong lengths, `batch` or `n` of 0, non-finite values, a state over
    /// [`MAX_STATE_BYTES`] (estimated before anything is allocated).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_into(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        batch: usize,
        n: usize,
        out: &mut [T],
        saved: &mut Saved<T>,
        par: Par,
    ) -> Result<()> {
        const OP: &str = "Attention::forward";
        let (heads, h) = (self.config.heads, self.config.head_dim);
        check_positive(OP, batch, n)?;
        // what the forward keeps per token and head, estimated before anything is allocated
        let per_token = match self.config.kind {
            // q̃, k̃, LN's x̂ for both (4h), L and R (2r), C, the product and its gradient
            // (3(h + 1)), the output and ∂q̃, ∂k̃ (3h), the denominator, the lowtri prefixes
            // (≈ m(h+1)/b)
            AttentionKind::PolySketch(c) => {
                let learned = match c.sketch {
                    // per q̃ and k̃: each of the p - 2 networks keeps ≤ h + 18r, each of the
                    // p/2 - 1 nodes 2r, and the work buffers ≈ 2·8r + 4r + 3h
                    SketchKind::Learned => {
                        2 * ((c.p - 2) * (h + (2 * WIDE + 2) * c.r)
                            + (c.p / 2 - 1) * 2 * c.r
                            + (2 * WIDE + 4) * c.r
                            + 3 * h)
                    }
                    SketchKind::Random => 0,
                };
                10 * h + 2 * c.r + 5 + c.r * (c.r + 1) / 2 * (h + 1) / c.block + learned
            }
            AttentionKind::Polynomial { .. } => 10 * h + 5,
            // copies of q, k, v, the output and its log-sum-exp
            AttentionKind::Softmax => 4 * h + 1,
        };
        let bytes =
            (batch * heads) as u128 * n as u128 * per_token as u128 * size_of::<T>() as u128;
        if bytes > MAX_STATE_BYTES {
            return Err(AttentionError::TooLarge {
                op: OP,
                bytes,
                limit: MAX_STATE_BYTES,
            });
        }
        let total = check_qkv(OP, &self.config, [q, k, v], batch, n)?;
        check_len(OP, "out", out, total, shape_of(&self.config, batch, n))?;
        let views: Vec<HeadViews<'_, T>> = (0..batch * heads)
            .map(|idx| HeadViews {
                q: head_matrix(q, idx, n, h),
                k: head_matrix(k, idx, n, h),
                v: head_matrix(v, idx, n, h),
            })
            .collect();
        saved.batch = batch;
        saved.n = n;
        match self.config.kind {
            AttentionKind::Softmax => {
                let lse_len = batch * heads * n;
                if !matches!(saved.inner, Inner::Softmax { .. }) {
                    saved.inner = Inner::Softmax {
                        q: vec![],
                        k: vec![],
                        v: vec![],
                        out: vec![],
                        lse: vec![],
                        used: true,
                    };
                }
                if let Inner::Softmax {
                    q: sq,
                    k: sk,
                    v: sv,
                    out: so,
                    lse,
                    used,
                } = &mut saved.inner
                {
                    lse.resize(lse_len, T::zero());
                    softmax::forward(&views, out, lse, par);
                    for (dst, src) in [(sq, q), (sk, k), (sv, v), (so, &*out)] {
                        dst.clear();
                        dst.extend_from_slice(src);
                    }
                    *used = false;
                }
                Ok(())
            }
            AttentionKind::PolySketch(_) | AttentionKind::Polynomial { .. } => {
                self.kernel_forward(&views, out, saved, par)
            }
        }
    }

    /// Kernel (PolySketch or exact polynomial) forward of every head.
    fn kernel_forward(
        &self,
        views: &[HeadViews<'_, T>],
        out: &mut [T],
        saved: &mut Saved<T>,
        par: Par,
    ) -> Result<()> {
        let (h, count, n) = (self.config.head_dim, views.len(), views[0].q.nrows());
        let scale = self.scale();
        let (sketch, r) = match self.config.kind {
            AttentionKind::PolySketch(c) => (self.sketch.as_deref(), c.r),
            _ => (None, 0),
        };
        let fresh_core = || match self.config.kind {
            AttentionKind::PolySketch(_) => Core::Sketch {
                lowtri: (0..count).map(|_| LtSaved::new()).collect(),
                grads: (0..count).map(|_| LtGrads::new()).collect(),
            },
            AttentionKind::Polynomial { p } => Core::Exact { p, used: true },
            AttentionKind::Softmax => Core::Exact { p: 0, used: true },
        };
        let reusable = matches!(&saved.inner, Inner::Kernel { heads, core } if heads.len() == count && matches!((core, self.config.kind), (Core::Sketch { .. }, AttentionKind::PolySketch(_)) | (Core::Exact { .. }, AttentionKind::Polynomial { .. })));
        if !reusable {
            saved.inner = Inner::Kernel {
                heads: (0..count).map(|_| HeadSaved::default()).collect(),
                core: fresh_core(),
            };
        }
        let Inner::Kernel { heads, core } = &mut saved.inner else {
            return Err(AttentionError::InvalidState {
                op: "Attention::forward",
                reason: "internal: kernel state expected".into(),
            });
        };
        // 1. per head: q̃ = LN(q)/h^¼, k̃ likewise, C = [V, 1], and L = S(q̃), R = S(k̃)
        let prepared: Vec<Result<()>> = each_head(heads, par, |idx, s| {
            let x = &views[idx];
            s.qt.reshape(n, h);
            s.kt.reshape(n, h);
            layernorm_forward(
                x.q,
                &self.ln_gain,
                &self.ln_bias,
                scale,
                &mut s.qt.data,
                &mut s.ln_q,
            );
            layernorm_forward(
                x.k,
                &self.ln_gain,
                &self.ln_bias,
                scale,
                &mut s.kt.data,
                &mut s.ln_k,
            );
            reshape_mat(&mut s.l, n, r);
            reshape_mat(&mut s.r, n, r);
            if let Some(ls) = &self.learned {
                ls.forward(s.qt.as_ref(), s.l.as_mut(), &mut s.learned_q);
                ls.forward(s.kt.as_ref(), s.r.as_mut(), &mut s.learned_k);
            } else if let Some(sk) = sketch {
                sk.apply_into(s.qt.as_ref(), s.l.as_mut(), Par::Seq)?;
                sk.apply_into(s.kt.as_ref(), s.r.as_mut(), Par::Seq)?;
            }
            s.c.reshape(n, h + 1);
            for i in 0..n {
                let row = s.c.row_mut(i);
                match x.v.row(i).try_as_row_major() {
                    Some(v) => row[..h].copy_from_slice(v.as_slice()),
                    None => row[..h]
                        .iter_mut()
                        .enumerate()
                        .for_each(|(j, c)| *c = x.v[(i, j)]),
                }
                row[h] = T::one();
            }
            s.raw.reshape(n, h + 1);
            s.out.reshape(n, h);
            s.den.resize(n, T::zero());
            Ok(())
        });
        prepared.into_iter().collect::<Result<Vec<()>>>()?;
        // 2. the causal products Σ_{j ≤ i} s_ij [v_j, 1] of every head
        match (&mut *core, self.config.kind) {
            (Core::Sketch { lowtri, .. }, AttentionKind::PolySketch(c)) => {
                let engine = LowTri::new(c.block)?;
                let (problems, outs): (Vec<Problem<'_, T>>, Vec<MatMut<'_, T>>) = heads
                    .iter_mut()
                    .map(|s| {
                        let HeadSaved {
                            l,
                            r,
                            qt,
                            kt,
                            c: cm,
                            raw,
                            ..
                        } = s;
                        let problem = if c.local {
                            Problem::local_exact(
                                Features::SelfTensored {
                                    l: l.as_ref(),
                                    r: r.as_ref(),
                                },
                                qt.as_ref(),
                                kt.as_ref(),
                                c.p,
                                cm.as_ref(),
                            )
                        } else {
                            Problem::self_tensored(l.as_ref(), r.as_ref(), cm.as_ref())
                        };
                        (problem, raw.as_mut())
                    })
                    .unzip();
                engine.forward_batch_into(&problems, outs, lowtri, par)?;
            }
            (Core::Exact { p, used }, AttentionKind::Polynomial { .. }) => {
                let p = *p;
                let mut tasks = Vec::new();
                let mut raws: Vec<MatMut<'_, T>> = Vec::with_capacity(count);
                let mut pv = Vec::with_capacity(count);
                for s in heads.iter_mut() {
                    let HeadSaved {
                        qt, kt, c: cm, raw, ..
                    } = s;
                    pv.push(PolyViews {
                        q: qt.as_ref(),
                        k: kt.as_ref(),
                        c: cm.as_ref(),
                    });
                    raws.push(raw.as_mut());
                }
                for (idx, m) in raws.into_iter().enumerate() {
                    for (t, block) in row_blocks(m, TILE).into_iter().enumerate() {
                        tasks.push((idx, t, block));
                    }
                }
                softmax::run_tasks(tasks, h + 1, par, |sc, (idx, t, block)| {
                    polynomial::forward_tile(&pv[idx], p, t, block, sc)
                });
                *used = false;
            }
            _ => {
                return Err(AttentionError::InvalidState {
                    op: "Attention::forward",
                    reason: "internal: core of another kind".into(),
                });
            }
        }
        // 3. normalise: out = num / (1 + den)
        let chunks: Vec<(&mut HeadSaved<T>, &mut [T])> =
            heads.iter_mut().zip(out.chunks_mut(n * h)).collect();
        let finish = |(s, o): (&mut HeadSaved<T>, &mut [T])| {
            for i in 0..n {
                let r = s.raw.row(i);
                let den = T::one() + r[h];
                let inv = T::one() / den;
                let dst = &mut o[i * h..(i + 1) * h];
                dst.iter_mut().zip(&r[..h]).for_each(|(d, x)| *d = *x * inv);
                s.den[i] = den;
                s.out.row_mut(i).copy_from_slice(dst);
            }
        };
        match par {
            Par::Seq => chunks.into_iter().for_each(finish),
            Par::Rayon(_) => chunks.into_par_iter().for_each(finish),
        }
        Ok(())
    }

    /// Gradients with respect to `q`, `k`, `v` and the parameters, given \\(\partial
    /// L/\partial\mathrm{out}\\) = `d_out` and the forward's state (consumed).
    ///
    /// # Errors
    /// As [`backward_into`](Self::backward_into).
    pub fn backward(&self, saved: &mut Saved<T>, d_out: &[T], par: Par) -> Result<Grads<T>> {
        let mut grads = Grads::default();
        self.backward_into(saved, d_out, &mut grads, par)?;
        Ok(grads)
    }

    /// Like [`backward`](Self::backward), writing into `grads` (memory reused when the shapes
    /// are unchanged).
    ///
    /// # Errors
    /// Wrong length or non-finite `d_out`; a state that is empty, already used by a backward, or
    /// from a layer of another kind.
    pub fn backward_into(
        &self,
        saved: &mut Saved<T>,
        d_out: &[T],
        grads: &mut Grads<T>,
        par: Par,
    ) -> Result<()> {
        const OP: &str = "Attention::backward";
        let (heads, h, n) = (self.config.heads, self.config.head_dim, saved.n);
        let total = saved.batch * heads * n * h;
        check_len(
            OP,
            "d_out",
            d_out,
            total,
            format!("[batch {}, heads {heads}, n {n}, h {h}]", saved.batch),
        )?;
        check_finite(OP, "d_out", d_out)?;
        let used = || AttentionError::InvalidState {
            op: OP,
            reason: "the saved state is empty or was already used by a backward".into(),
        };
        for g in [&mut grads.dq, &mut grads.dk, &mut grads.dv] {
            g.resize(total, T::zero());
        }
        match (&mut saved.inner, self.config.kind) {
            (
                Inner::Kernel { heads, core },
                AttentionKind::PolySketch(_) | AttentionKind::Polynomial { .. },
            ) => {
                if !core.is_ready() {
                    return Err(used());
                }
                self.kernel_backward(heads, core, d_out, grads, par)
            }
            (
                Inner::Softmax {
                    q,
                    k,
                    v,
                    out,
                    lse,
                    used: consumed,
                },
                AttentionKind::Softmax,
            ) => {
                if *consumed {
                    return Err(used());
                }
                *consumed = true;
                let views: Vec<HeadViews<'_, T>> = (0..total / (n * h))
                    .map(|idx| HeadViews {
                        q: head_matrix(q, idx, n, h),
                        k: head_matrix(k, idx, n, h),
                        v: head_matrix(v, idx, n, h),
                    })
                    .collect();
                let (dq, dk, dv) = softmax::backward(&views, out, lse, d_out, par);
                grads.dq = dq;
                grads.dk = dk;
                grads.dv = dv;
                grads.params.clear();
                Ok(())
            }
            (Inner::Empty, _) => Err(used()),
            _ => Err(AttentionError::InvalidState {
                op: OP,
                reason: "the saved state comes from a layer of another kind".into(),
            }),
        }
    }

    /// Kernel (PolySketch or exact polynomial) backward of every head.
    fn kernel_backward(
        &self,
        heads: &mut [HeadSaved<T>],
        core: &mut Core<T>,
        d_out: &[T],
        grads: &mut Grads<T>,
        par: Par,
    ) -> Result<()> {
        let (h, n) = (self.config.head_dim, heads[0].out.nrows());
        let scale = self.scale();
        // 1. through the normalisation: out = num/den, so dnum = dout/den and
        //    dden = -Σ_c dout_c num_c / den² = -(dout · out)/den
        each_head(heads, par, |idx, s| {
            s.draw.reshape(n, h + 1);
            for i in 0..n {
                let d = &d_out[(idx * n + i) * h..(idx * n + i + 1) * h];
                let inv = T::one() / s.den[i];
                let dden = -d
                    .iter()
                    .zip(s.out.row(i))
                    .fold(T::zero(), |acc, (a, b)| acc + *a * *b)
                    * inv;
                let row = s.draw.row_mut(i);
                row[..h].iter_mut().zip(d).for_each(|(r, d)| *r = *d * inv);
                row[h] = dden;
            }
            s.dqt.reshape(n, h);
            s.dkt.reshape(n, h);
            s.dc.reshape(n, h + 1);
        });
        // 2. through the causal products, to ∂q̃, ∂k̃ and ∂C of every head
        match (core, self.config.kind) {
            (Core::Sketch { lowtri, grads: lt }, AttentionKind::PolySketch(c)) => {
                let sketch = self.sketch.as_deref();
                let engine = LowTri::new(c.block)?;
                {
                    let problems: Vec<Problem<'_, T>> =
                        heads.iter().map(|s| problem(&c, s)).collect();
                    let d_refs: Vec<MatRef<'_, T>> =
                        heads.iter().map(|s| s.draw.as_ref()).collect();
                    engine.backward_batch_into(&problems, lowtri, &d_refs, lt, par)?;
                }
                let lt = &*lt;
                let done: Vec<Result<()>> = each_head(heads, par, |idx, s| {
                    let g = &lt[idx];
                    // forward: L = S(q̃), R = S(k̃)
                    match (&self.learned, sketch) {
                        (Some(ls), _) => {
                            if s.d_learned.len() != ls.parameters().len() {
                                s.d_learned = ls.zero_grads();
                            }
                            s.d_learned.iter_mut().for_each(|g| g.fill(T::zero()));
                            let (d_learned, dqt, dkt) =
                                (&mut s.d_learned, s.dqt.as_mut(), s.dkt.as_mut());
                            ls.backward(&mut s.learned_q, g.d_a.as_ref(), dqt, d_learned);
                            ls.backward(&mut s.learned_k, g.d_b.as_ref(), dkt, d_learned);
                        }
                        (None, Some(sk)) => {
                            sk.vjp_into(s.qt.as_ref(), g.d_a.as_ref(), s.dqt.as_mut(), Par::Seq)?;
                            sk.vjp_into(s.kt.as_ref(), g.d_b.as_ref(), s.dkt.as_mut(), Par::Seq)?;
                        }
                        (None, None) => {
                            return Err(AttentionError::InvalidState {
                                op: "Attention::backward",
                                reason: "internal: a PolySketch layer without a sketch".into(),
                            });
                        }
                    }
                    if let (Some(dq), Some(dk)) = (&g.d_q, &g.d_k) {
                        // forward (local): exact ⟨q̃, k̃⟩^p inside the diagonal blocks
                        add_assign(s.dqt.as_mut(), dq.as_ref());
                        add_assign(s.dkt.as_mut(), dk.as_ref());
                    }
                    s.dc.as_mut().copy_from(g.d_c.as_ref());
                    Ok(())
                });
                done.into_iter().collect::<Result<Vec<()>>>()?;
            }
            (Core::Exact { p, used }, AttentionKind::Polynomial { .. }) => {
                *used = true;
                let p = *p;
                let mut views = Vec::with_capacity(heads.len());
                let mut key_tasks = Vec::new();
                let mut query_tasks = Vec::new();
                for (idx, s) in heads.iter_mut().enumerate() {
                    let HeadSaved {
                        qt,
                        kt,
                        c: cm,
                        draw,
                        dqt,
                        dkt,
                        dc,
                        ..
                    } = s;
                    views.push((
                        PolyViews {
                            q: qt.as_ref(),
                            k: kt.as_ref(),
                            c: cm.as_ref(),
                        },
                        draw.as_ref(),
                    ));
                    for (t, (k, c)) in row_blocks(dkt.as_mut(), TILE)
                        .into_iter()
                        .zip(row_blocks(dc.as_mut(), TILE))
                        .enumerate()
                    {
                        key_tasks.push((idx, t, k, c));
                    }
                    for (t, q) in row_blocks(dqt.as_mut(), TILE).into_iter().enumerate() {
                        query_tasks.push((idx, t, q));
                    }
                }
                softmax::run_tasks(key_tasks, h + 1, par, |sc, (idx, t, k, c)| {
                    polynomial::backward_key_tile(&views[idx].0, views[idx].1, p, t, c, k, sc)
                });
                softmax::run_tasks(query_tasks, h + 1, par, |sc, (idx, t, q)| {
                    polynomial::backward_query_tile(&views[idx].0, views[idx].1, p, t, q, sc)
                });
            }
            _ => {
                return Err(AttentionError::InvalidState {
                    op: "Attention::backward",
                    reason: "the saved state comes from a layer of another kind".into(),
                });
            }
        }
        // 3. per head: through the layer norm, straight into the row-major gradients
        let slices = grads
            .dq
            .chunks_mut(n * h)
            .zip(grads.dk.chunks_mut(n * h))
            .zip(grads.dv.chunks_mut(n * h));
        let parts: Vec<_> = heads.iter().zip(slices).collect();
        /// One head's state and its `(∂q, ∂k)`, `∂v` output slices.
        type HeadGrads<'a, T> = (&'a HeadSaved<T>, ((&'a mut [T], &'a mut [T]), &'a mut [T]));
        let head = |(s, ((q, k), v)): HeadGrads<'_, T>| -> (Vec<T>, Vec<T>) {
            let (mut dgain, mut dbias) = (vec![T::zero(); h], vec![T::zero(); h]);
            layernorm_backward(
                &s.dqt.data,
                &s.ln_q,
                &self.ln_gain,
                scale,
                q,
                &mut dgain,
                &mut dbias,
            );
            layernorm_backward(
                &s.dkt.data,
                &s.ln_k,
                &self.ln_gain,
                scale,
                k,
                &mut dgain,
                &mut dbias,
            );
            // forward: C = [V, 1], so dV is dC without its last column
            for i in 0..n {
                v[i * h..(i + 1) * h].copy_from_slice(&s.dc.row(i)[..h]);
            }
            (dgain, dbias)
        };
        let per_head: Vec<(Vec<T>, Vec<T>)> = match par {
            Par::Seq => parts.into_iter().map(head).collect(),
            Par::Rayon(_) => parts.into_par_iter().map(head).collect(),
        };
        let (mut dgain, mut dbias) = (vec![T::zero(); h], vec![T::zero(); h]);
        // summed in head order: the same numbers whatever the thread count
        for (g_, b_) in per_head {
            dgain.iter_mut().zip(g_).for_each(|(a, b)| *a += b);
            dbias.iter_mut().zip(b_).for_each(|(a, b)| *a += b);
        }
        grads.params = vec![("ln.gain".into(), dgain), ("ln.bias".into(), dbias)];
        if let Some(ls) = &self.learned {
            // the heads' shares, summed in head order
            let mut total = ls.zero_grads();
            for s in heads.iter() {
                for (t, g) in total.iter_mut().zip(&s.d_learned) {
                    t.iter_mut().zip(g).for_each(|(a, b)| *a += *b);
                }
            }
            grads.params.extend(
                ls.parameters()
                    .into_iter()
                    .zip(total)
                    .map(|(p, g)| (p.name, g)),
            );
        }
        Ok(())
    }
}
