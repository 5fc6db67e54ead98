//! The multi-head layer: validated config, parameters, forward and backward.

use faer::{Mat, MatMut, MatRef, Par};
use polysketch_lowtri::{Features, Grads as LtGrads, LowTri, Problem, Saved as LtSaved};
use polysketch_sketch::linalg::row_blocks;
use polysketch_sketch::{GaussianJl, PolySketch, Scalar, TreeSketch};
use rayon::prelude::*;

use crate::config::{AttentionConfig, AttentionKind, PolySketchConfig, SketchKind};
use crate::layernorm::{LnSaved, layernorm_backward, layernorm_forward};
use crate::polynomial::{self, PolyViews};
use crate::softmax::{self, HeadViews, TILE};
use crate::{AttentionError, Result};

/// Upper bound on the memory a forward may plan to keep (16 GiB).
pub const MAX_STATE_BYTES: u128 = 16 << 30;

/// A multi-head causal attention layer: `AttentionConfig` validated, with its parameters.
///
/// Parameters: for polynomial and PolySketch attention a layer normalisation of \\(q\\) and
/// \\(k\\) (one gain and one bias of size \\(h\\), shared by \\(q\\), \\(k\\) and the heads, as in the
/// authors' code), named `ln.gain` and `ln.bias`; softmax has none. A random sketch is fixed by
/// the seed and is not a parameter.
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
    config: AttentionConfig,
    ln_gain: Vec<T>,
    ln_bias: Vec<T>,
    sketch: Option<Box<dyn PolySketch<T>>>,
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
pub(crate) struct Rows<T> {
    pub(crate) data: Vec<T>,
    pub(crate) cols: usize,
}

impl<T: Scalar> Rows<T> {
    pub(crate) fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            data: vec![T::zero(); rows * cols],
            cols,
        }
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

/// What one head's backward needs (PolySketch).
struct HeadSaved<T> {
    ln_q: LnSaved<T>,
    ln_k: LnSaved<T>,
    /// `[n, h]`: \\(\tilde q\\), \\(\tilde k\\).
    qt: Rows<T>,
    kt: Rows<T>,
    /// `[n, r]`: the degree-\\(p/2\\) sketches.
    l: Mat<T>,
    r: Mat<T>,
    /// `[n, h + 1]`: \\([V, \mathbf 1]\\).
    c: Rows<T>,
    /// `[n, h]`: the output.
    out: Rows<T>,
    /// `[n]`: \\(1 + \sum_{j \le i} s_{ij}\\).
    den: Vec<T>,
}

/// What [`Attention::backward`] needs from [`Attention::forward`].
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

/// The kind-specific part of [`Saved`].
enum Inner<T: Scalar> {
    /// PolySketch or exact polynomial attention: per-head state and the core's.
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
    /// The lowtri engine's prefixes, one per head.
    Sketch { lowtri: Vec<LtSaved<T>> },
    /// The exact tiled product keeps nothing but its degree; `used` once a backward ran.
    Exact { p: usize, used: bool },
}

impl<T: Scalar> Core<T> {
    fn is_ready(&self) -> bool {
        match self {
            Core::Sketch { lowtri } => lowtri.iter().all(|s| s.is_ready()),
            Core::Exact { used, .. } => !used,
        }
    }
}

/// Gradients of a layer.
#[derive(Debug, Clone, PartialEq)]
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

fn check_len<T>(
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

fn check_finite<T: Scalar>(op: &'static str, input: &'static str, x: &[T]) -> Result<()> {
    if polysketch_sketch::all_finite(x) {
        return Ok(());
    }
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(AttentionError::NonFinite { op, input, index }),
        None => Ok(()),
    }
}

impl<T: Scalar> Attention<T> {
    /// Validates `config` and initialises the parameters (unit gain, zero bias; the random
    /// sketch drawn from the seed).
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`] (see [`AttentionConfig::validate`]); a learned sketch,
    /// which this version does not have yet.
    pub fn new(config: AttentionConfig) -> Result<Self> {
        config.validate()?;
        let h = config.head_dim;
        let sketch: Option<Box<dyn PolySketch<T>>> = match config.kind {
            AttentionKind::PolySketch(c) => match c.sketch {
                SketchKind::Random if c.p == 2 => Some(Box::new(GaussianJl::new(h, c.r, c.seed)?)),
                SketchKind::Random => {
                    Some(Box::new(TreeSketch::gaussian(h, c.r, c.p / 2, c.seed)?))
                }
                SketchKind::Learned => {
                    return Err(AttentionError::InvalidConfig(
                        "learned sketches are not implemented yet: use SketchKind::Random".into(),
                    ));
                }
            },
            _ => None,
        };
        Ok(Self {
            config,
            ln_gain: vec![T::one(); h],
            ln_bias: vec![T::zero(); h],
            sketch,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AttentionConfig {
        &self.config
    }

    /// The named parameters and their shapes: `ln.gain [h]`, `ln.bias [h]` for polynomial and
    /// PolySketch attention, none for softmax.
    pub fn parameters(&self) -> Vec<(&'static str, &[T])> {
        match self.config.kind {
            AttentionKind::Softmax => vec![],
            _ => vec![("ln.gain", &self.ln_gain), ("ln.bias", &self.ln_bias)],
        }
    }

    /// Mutable access to the named parameters (for optimisers and loading).
    pub fn parameters_mut(&mut self) -> Vec<(&'static str, &mut [T])> {
        match self.config.kind {
            AttentionKind::Softmax => vec![],
            _ => vec![
                ("ln.gain", self.ln_gain.as_mut_slice()),
                ("ln.bias", self.ln_bias.as_mut_slice()),
            ],
        }
    }

    fn scale(&self) -> T {
        T::of((self.config.head_dim as f64).powf(-0.25))
    }

    /// The output of the layer and what the backward needs.
    ///
    /// # Shapes
    /// `q`, `k`, `v`: `[batch, heads, n, h]` row-major → `[batch, heads, n, h]`.
    ///
    /// # Errors
    /// Wrong lengths, `n = 0`, non-finite values, a state over [`MAX_STATE_BYTES`].
    pub fn forward(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        batch: usize,
        n: usize,
        par: Par,
    ) -> Result<(Vec<T>, Saved<T>)> {
        const OP: &str = "Attention::forward";
        let (heads, h) = (self.config.heads, self.config.head_dim);
        if batch == 0 || n == 0 {
            return Err(AttentionError::InvalidConfig(format!(
                "{OP}: batch and n must be at least 1, got {batch} and {n}"
            )));
        }
        // what the forward keeps per token and head, estimated before anything is allocated
        let per_token = match self.config.kind {
            // q̃, k̃, LN's x̂ for both (4h), L and R (2r), C (h + 1), out (h), the denominator,
            // and the lowtri prefixes (≈ m(h+1)/b)
            AttentionKind::PolySketch(c) => {
                6 * h + 2 * c.r + 2 + c.r * (c.r + 1) / 2 * (h + 1) / c.block + 1
            }
            // copies of q, k, v, the output and its log-sum-exp
            _ => 4 * h + 1,
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
        let total = batch * heads * n * h;
        let shape = format!("[batch {batch}, heads {heads}, n {n}, h {h}]");
        for (name, x) in [("q", q), ("k", k), ("v", v)] {
            check_len(OP, name, x, total, shape.clone())?;
            check_finite(OP, name, x)?;
        }
        let views: Vec<HeadViews<'_, T>> = (0..batch * heads)
            .map(|idx| HeadViews {
                q: head_matrix(q, idx, n, h),
                k: head_matrix(k, idx, n, h),
                v: head_matrix(v, idx, n, h),
            })
            .collect();
        let (out, inner) = match self.config.kind {
            AttentionKind::PolySketch(_) | AttentionKind::Polynomial { .. } => {
                self.kernel_forward(&views, par)?
            }
            AttentionKind::Softmax => {
                let (mut out, mut lse) =
                    (vec![T::zero(); total], vec![T::zero(); batch * heads * n]);
                softmax::forward(&views, &mut out, &mut lse, par);
                let inner = Inner::Softmax {
                    q: q.to_vec(),
                    k: k.to_vec(),
                    v: v.to_vec(),
                    out: out.clone(),
                    lse,
                    used: false,
                };
                (out, inner)
            }
        };
        Ok((out, Saved { batch, n, inner }))
    }

    /// Gradients with respect to `q`, `k`, `v` and the parameters, given \\(\partial
    /// L/\partial\mathrm{out}\\) = `d_out` and the forward's state (consumed).
    ///
    /// # Errors
    /// Wrong length or non-finite `d_out`; a state already used by a backward.
    pub fn backward(&self, saved: &mut Saved<T>, d_out: &[T], par: Par) -> Result<Grads<T>> {
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
            reason: "the saved state was already used by a backward".into(),
        };
        match (&mut saved.inner, self.config.kind) {
            (
                Inner::Kernel { heads, core },
                AttentionKind::PolySketch(_) | AttentionKind::Polynomial { .. },
            ) => {
                if !core.is_ready() {
                    return Err(used());
                }
                self.kernel_backward(heads, core, d_out, par)
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
                Ok(Grads {
                    dq,
                    dk,
                    dv,
                    params: vec![],
                })
            }
            _ => Err(AttentionError::InvalidState {
                op: OP,
                reason: "the saved state comes from a layer of another kind".into(),
            }),
        }
    }

    /// Kernel (PolySketch or exact polynomial) forward of every head.
    fn kernel_forward(&self, views: &[HeadViews<'_, T>], par: Par) -> Result<(Vec<T>, Inner<T>)> {
        let (h, count, n) = (self.config.head_dim, views.len(), views[0].q.nrows());
        let scale = self.scale();
        let (sketch, r) = match (self.config.kind, self.sketch.as_deref()) {
            (AttentionKind::PolySketch(c), Some(s)) => (Some(s), c.r),
            _ => (None, 0),
        };
        // 1. per head: q̃ = LN(q)/h^¼, k̃ likewise, C = [V, 1], and L = S(q̃), R = S(k̃)
        let prepare = |x: &HeadViews<'_, T>| -> HeadSaved<T> {
            let (mut qt, mut kt) = (Rows::zeros(n, h), Rows::zeros(n, h));
            let ln_q = layernorm_forward(x.q, &self.ln_gain, &self.ln_bias, scale, &mut qt.data);
            let ln_k = layernorm_forward(x.k, &self.ln_gain, &self.ln_bias, scale, &mut kt.data);
            let (mut l, mut rr) = (Mat::zeros(n, r), Mat::zeros(n, r));
            if let Some(s) = sketch {
                s.apply_rows(qt.as_ref(), l.as_mut());
                s.apply_rows(kt.as_ref(), rr.as_mut());
            }
            let mut cm = Rows::zeros(n, h + 1);
            for i in 0..n {
                let row = cm.row_mut(i);
                match x.v.row(i).try_as_row_major() {
                    Some(v) => row[..h].copy_from_slice(v.as_slice()),
                    None => row[..h]
                        .iter_mut()
                        .enumerate()
                        .for_each(|(j, c)| *c = x.v[(i, j)]),
                }
                row[h] = T::one();
            }
            HeadSaved {
                ln_q,
                ln_k,
                qt,
                kt,
                l,
                r: rr,
                c: cm,
                out: Rows::zeros(n, h),
                den: vec![T::zero(); n],
            }
        };
        let mut saved: Vec<HeadSaved<T>> = match par {
            Par::Seq => views.iter().map(prepare).collect(),
            Par::Rayon(_) => views.par_iter().map(prepare).collect(),
        };
        // 2. the causal products Σ_{j ≤ i} s_ij [v_j, 1] of every head
        let mut raw: Vec<Rows<T>> = (0..count).map(|_| Rows::zeros(n, h + 1)).collect();
        let core = match self.config.kind {
            AttentionKind::PolySketch(c) => {
                let engine = LowTri::new(c.block)?;
                let mut lt_saved: Vec<LtSaved<T>> = (0..count).map(|_| LtSaved::new()).collect();
                let problems: Vec<Problem<'_, T>> = saved.iter().map(|s| problem(&c, s)).collect();
                let outs = raw.iter_mut().map(|m| m.as_mut()).collect();
                engine.forward_batch_into(&problems, outs, &mut lt_saved, par)?;
                Core::Sketch { lowtri: lt_saved }
            }
            AttentionKind::Polynomial { p } => {
                let pv: Vec<PolyViews<'_, T>> = saved
                    .iter()
                    .map(|s| PolyViews {
                        q: s.qt.as_ref(),
                        k: s.kt.as_ref(),
                        c: s.c.as_ref(),
                    })
                    .collect();
                let mut tasks = Vec::new();
                for (idx, m) in raw.iter_mut().enumerate() {
                    for (t, block) in row_blocks(m.as_mut(), TILE).into_iter().enumerate() {
                        tasks.push((idx, t, block));
                    }
                }
                softmax::run_tasks(tasks, h + 1, par, |sc, (idx, t, block)| {
                    polynomial::forward_tile(&pv[idx], p, t, block, sc)
                });
                Core::Exact { p, used: false }
            }
            AttentionKind::Softmax => {
                return Err(AttentionError::InvalidConfig(
                    "softmax is not a kernel attention".into(),
                ));
            }
        };
        // 3. normalise: out = num / (1 + den)
        let mut out = vec![T::zero(); count * n * h];
        let finish = |(s, (raw, o)): (&mut HeadSaved<T>, (&Rows<T>, &mut [T]))| {
            for i in 0..n {
                let r = raw.row(i);
                let den = T::one() + r[h];
                s.den[i] = den;
                let inv = T::one() / den;
                let dst = &mut o[i * h..(i + 1) * h];
                dst.iter_mut().zip(&r[..h]).for_each(|(d, x)| *d = *x * inv);
                s.out.row_mut(i).copy_from_slice(dst);
            }
        };
        let chunks = saved.iter_mut().zip(raw.iter().zip(out.chunks_mut(n * h)));
        match par {
            Par::Seq => chunks.for_each(finish),
            Par::Rayon(_) => chunks.collect::<Vec<_>>().into_par_iter().for_each(finish),
        }
        Ok((out, Inner::Kernel { heads: saved, core }))
    }

    /// Kernel (PolySketch or exact polynomial) backward of every head.
    fn kernel_backward(
        &self,
        heads: &[HeadSaved<T>],
        core: &mut Core<T>,
        d_out: &[T],
        par: Par,
    ) -> Result<Grads<T>> {
        let (h, n) = (self.config.head_dim, heads[0].out.nrows());
        let total = heads.len() * n * h;
        let scale = self.scale();
        // 1. through the normalisation: out = num/den, so dnum = dout/den and
        //    dden = -Σ_c dout_c num_c / den² = -(dout · out)/den
        let draw: Vec<Rows<T>> = heads
            .iter()
            .enumerate()
            .map(|(idx, s)| {
                let mut g = Rows::zeros(n, h + 1);
                for i in 0..n {
                    let (d, o) = (
                        &d_out[(idx * n + i) * h..(idx * n + i + 1) * h],
                        s.out.row(i),
                    );
                    let inv = T::one() / s.den[i];
                    let row = g.row_mut(i);
                    row[..h].iter_mut().zip(d).for_each(|(r, d)| *r = *d * inv);
                    row[h] = -d.iter().zip(o).fold(T::zero(), |acc, (a, b)| acc + *a * *b) * inv;
                }
                g
            })
            .collect();
        // 2. through the causal products, to ∂q̃, ∂k̃ and ∂C of every head
        let core_grads: Vec<CoreGrads<T>> = match (core, self.config.kind) {
            (Core::Sketch { lowtri }, AttentionKind::PolySketch(c)) => {
                let sketch = self
                    .sketch
                    .as_deref()
                    .ok_or_else(|| AttentionError::InvalidConfig("no sketch".into()))?;
                let engine = LowTri::new(c.block)?;
                let problems: Vec<Problem<'_, T>> = heads.iter().map(|s| problem(&c, s)).collect();
                let d_refs: Vec<MatRef<'_, T>> = draw.iter().map(|m| m.as_ref()).collect();
                let lt = engine.backward_batch(&problems, lowtri, &d_refs, par)?;
                let through_sketch = |(s, g): (&HeadSaved<T>, LtGrads<T>)| -> CoreGrads<T> {
                    let (mut dqt, mut dkt, mut dc) =
                        (Rows::zeros(n, h), Rows::zeros(n, h), Rows::zeros(n, h + 1));
                    // forward: L = S(q̃), R = S(k̃)
                    sketch.vjp_rows(s.qt.as_ref(), g.d_a.as_ref(), dqt.as_mut());
                    sketch.vjp_rows(s.kt.as_ref(), g.d_b.as_ref(), dkt.as_mut());
                    if let (Some(dq), Some(dk)) = (&g.d_q, &g.d_k) {
                        // forward (local): exact ⟨q̃, k̃⟩^p inside the diagonal blocks
                        add_assign(dqt.as_mut(), dq.as_ref());
                        add_assign(dkt.as_mut(), dk.as_ref());
                    }
                    dc.as_mut().copy_from(g.d_c.as_ref());
                    (dqt, dkt, dc)
                };
                match par {
                    Par::Seq => heads.iter().zip(lt).map(through_sketch).collect(),
                    Par::Rayon(_) => heads
                        .par_iter()
                        .zip(lt.into_par_iter())
                        .map(through_sketch)
                        .collect(),
                }
            }
            (Core::Exact { p, used }, AttentionKind::Polynomial { .. }) => {
                *used = true;
                let p = *p;
                let pv: Vec<PolyViews<'_, T>> = heads
                    .iter()
                    .map(|s| PolyViews {
                        q: s.qt.as_ref(),
                        k: s.kt.as_ref(),
                        c: s.c.as_ref(),
                    })
                    .collect();
                let mut out: Vec<CoreGrads<T>> = heads
                    .iter()
                    .map(|_| (Rows::zeros(n, h), Rows::zeros(n, h), Rows::zeros(n, h + 1)))
                    .collect();
                {
                    let mut tasks = Vec::new();
                    for (idx, (_, dk, dc)) in out.iter_mut().enumerate() {
                        for (t, (k, c)) in row_blocks(dk.as_mut(), TILE)
                            .into_iter()
                            .zip(row_blocks(dc.as_mut(), TILE))
                            .enumerate()
                        {
                            tasks.push((idx, t, k, c));
                        }
                    }
                    softmax::run_tasks(tasks, h + 1, par, |sc, (idx, t, k, c)| {
                        polynomial::backward_key_tile(&pv[idx], draw[idx].as_ref(), p, t, c, k, sc)
                    });
                }
                {
                    let mut tasks = Vec::new();
                    for (idx, (dq, _, _)) in out.iter_mut().enumerate() {
                        for (t, q) in row_blocks(dq.as_mut(), TILE).into_iter().enumerate() {
                            tasks.push((idx, t, q));
                        }
                    }
                    softmax::run_tasks(tasks, h + 1, par, |sc, (idx, t, q)| {
                        polynomial::backward_query_tile(&pv[idx], draw[idx].as_ref(), p, t, q, sc)
                    });
                }
                out
            }
            _ => {
                return Err(AttentionError::InvalidState {
                    op: "Attention::backward",
                    reason: "the saved state comes from a layer of another kind".into(),
                });
            }
        };
        // 3. per head: through the layer norm, straight into the row-major gradients
        let (mut dq, mut dk, mut dv) = (
            vec![T::zero(); total],
            vec![T::zero(); total],
            vec![T::zero(); total],
        );
        let head = |(s, ((dqt, dkt, dc), ((q, k), v))): HeadBackward<'_, T>| -> (Vec<T>, Vec<T>) {
            let (mut dgain, mut dbias) = (vec![T::zero(); h], vec![T::zero(); h]);
            layernorm_backward(
                &dqt.data,
                &s.ln_q,
                &self.ln_gain,
                scale,
                q,
                &mut dgain,
                &mut dbias,
            );
            layernorm_backward(
                &dkt.data,
                &s.ln_k,
                &self.ln_gain,
                scale,
                k,
                &mut dgain,
                &mut dbias,
            );
            // forward: C = [V, 1], so dV is dC without its last column
            for i in 0..n {
                v[i * h..(i + 1) * h].copy_from_slice(&dc.row(i)[..h]);
            }
            (dgain, dbias)
        };
        let parts = heads.iter().zip(
            core_grads.iter().zip(
                dq.chunks_mut(n * h)
                    .zip(dk.chunks_mut(n * h))
                    .zip(dv.chunks_mut(n * h)),
            ),
        );
        let per_head: Vec<(Vec<T>, Vec<T>)> = match par {
            Par::Seq => parts.map(head).collect(),
            Par::Rayon(_) => parts
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(head)
                .collect(),
        };
        let (mut dgain, mut dbias) = (vec![T::zero(); h], vec![T::zero(); h]);
        // summed in head order: the same numbers whatever the thread count
        for (g_, b_) in per_head {
            dgain.iter_mut().zip(g_).for_each(|(a, b)| *a += b);
            dbias.iter_mut().zip(b_).for_each(|(a, b)| *a += b);
        }
        Ok(Grads {
            dq,
            dk,
            dv,
            params: vec![("ln.gain".into(), dgain), ("ln.bias".into(), dbias)],
        })
    }
}

/// One head's state, core gradients and output slices (`dq`, `dk`, `dv`) in the last backward
/// step.
type HeadBackward<'a, T> = (
    &'a HeadSaved<T>,
    (&'a CoreGrads<T>, ((&'a mut [T], &'a mut [T]), &'a mut [T])),
);

/// One head's gradients out of the causal product: `∂q̃`, `∂k̃` (`[n, h]`), `∂C` (`[n, h+1]`).
type CoreGrads<T> = (Rows<T>, Rows<T>, Rows<T>);

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

/// Head `idx` of a row-major `[.., n, h]` array as an `[n, h]` view.
fn head_matrix<T>(x: &[T], idx: usize, n: usize, h: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(&x[idx * n * h..(idx + 1) * n * h], n, h)
}

fn add_assign<T: Scalar>(dst: MatMut<'_, T>, src: MatRef<'_, T>) {
    faer::zip!(dst, src).for_each(|faer::unzip!(d, s)| *d += *s);
}
