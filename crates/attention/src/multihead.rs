//! The multi-head block a transformer swaps in: projections, optional RoPE, the attention
//! kind, and the output projection, forward and backward, with named parameters.
//!
//! \\[ [Q, K, V] = X W_{qkv}^\top, \quad \mathrm{out} = \mathrm{Attn}(\mathrm{RoPE}(Q),
//!     \mathrm{RoPE}(K), V)\,W_o^\top, \\]
//! with \\(X\\): `[batch, n, C]`, \\(W_{qkv}\\): `[3I, C]` (the rows of \\(W_q\\), then \\(W_k\\),
//! then \\(W_v\\)), \\(W_o\\): `[C, I]`, \\(I\\) = heads · head size, heads split from the columns
//! (head \\(j\\) is columns \\(jh .. (j+1)h\\) of each of \\(Q, K, V\\)), RoPE with \\(\theta =
//! 10000\\) on the pairs \\((x_i, x_{i+h/2})\\) of every head. No biases.
//!
//! [`MultiHead`] owns its weights. [`MultiHeadCore`] is the same computation over weights kept
//! elsewhere — a model with one flat parameter buffer (the gpt crate) passes slices of it —
//! so both run one implementation.

use faer::Par;
use polysketch_core::{Scalar, normal, seeded_rng};

use crate::checks::{check_finite, check_len, check_positive};
use crate::dense::{
    linear_backward, linear_forward, merge_heads, rope_table, split_heads_backward,
    split_heads_forward, unmerge_heads,
};
use crate::{
    Attention, AttentionConfig, AttentionError, AttentionKind, Grads, Param, ParamMut, Result,
    Saved, State,
};

/// A multi-head block: model width, the attention inside, RoPE or not.
///
/// ```
/// use polysketch_attention::{MultiHeadConfig, AttentionConfig};
/// let softmax = MultiHeadConfig::new(64, 4, "softmax".parse()?);
/// // the one change that swaps in PolySketch
/// let polysketch = MultiHeadConfig::new(64, 4, "learned+local".parse()?);
/// assert_eq!(polysketch.attention.head_dim, 16);
/// // an encoder's block: bidirectional, no RoPE
/// let encoder = MultiHeadConfig {
///     rope: false,
///     attention: AttentionConfig { causal: false, ..softmax.attention },
///     ..softmax
/// };
/// assert!(encoder.validate().is_ok());
/// # Ok::<(), polysketch_attention::AttentionError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MultiHeadConfig {
    /// The model width \\(C\\): size of the block's input and output rows.
    pub d_model: usize,
    /// The attention inside (heads, head size, kind, q/k normalisation, causal).
    pub attention: AttentionConfig,
    /// Rotary position embeddings on \\(q\\) and \\(k\\) (before the attention's own
    /// normalisation).
    pub rope: bool,
}

impl MultiHeadConfig {
    /// `heads` heads of size `d_model / heads` computing `kind`, causal, with RoPE and the
    /// default q/k layer norm.
    pub fn new(d_model: usize, heads: usize, kind: AttentionKind) -> Self {
        let head_dim = d_model.checked_div(heads).unwrap_or(0);
        Self { d_model, attention: AttentionConfig::new(heads, head_dim, kind), rope: true }
    }

    /// \\(I\\) = heads · head size, the width of the projections.
    pub fn inner(&self) -> usize {
        self.attention.heads.saturating_mul(self.attention.head_dim)
    }

    /// Checks the sizes and the attention's configuration.
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`]: `d_model` of 0, and what
    /// [`AttentionConfig::validate`] refuses; [`AttentionError::TooLarge`] for weights past
    /// the parameter limit.
    pub fn validate(&self) -> Result<()> {
        if self.d_model == 0 {
            return Err(AttentionError::InvalidConfig("d_model must be at least 1, got 0".into()));
        }
        self.attention.validate()?;
        let weights = 4u128 * self.d_model as u128 * self.inner() as u128;
        polysketch_core::check_param_bytes("MultiHeadConfig::validate", weights, 8)?;
        Ok(())
    }
}

/// The projection weights of a block, borrowed: \\(W_{qkv}\\) `[3I, C]` and \\(W_o\\) `[C, I]`,
/// row-major.
#[derive(Debug, Clone, Copy)]
pub struct Projections<'a, T> {
    /// \\(W_{qkv}\\), `[3I, C]`.
    pub wqkv: &'a [T],
    /// \\(W_o\\), `[C, I]`.
    pub wo: &'a [T],
}

/// Gradients of the projection weights, **added into** (shapes of [`Projections`]).
#[derive(Debug)]
pub struct ProjectionGrads<'a, T> {
    /// \\(\partial L/\partial W_{qkv}\\), `[3I, C]`.
    pub wqkv: &'a mut [T],
    /// \\(\partial L/\partial W_o\\), `[C, I]`.
    pub wo: &'a mut [T],
}

/// What a block's forward keeps for its backward, and its scratch; reusable across steps.
#[derive(Debug, Default)]
pub struct MultiHeadSaved<T: Scalar> {
    batch: usize,
    n: usize,
    /// The input \\(X\\) (kept by [`MultiHead::forward`]; a [`MultiHeadCore`] caller keeps its own).
    x: Vec<T>,
    /// The attention's own state.
    attn: Saved<T>,
    /// `[batch, n, I]`: the attention output, heads merged (the input of \\(W_o\\)).
    y: Vec<T>,
    /// Scratch: `[batch, n, 3I]` projections; `[batch, heads, n, h]` q, k, v and the output.
    qkv: Vec<T>,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    att: Vec<T>,
    /// The attention's gradients (its parameters' in `grads.params`).
    grads: Grads<T>,
    /// The last RoPE table: training steps of one length reuse it.
    rope: RopeCache<T>,
    ready: bool,
}

/// The last [`rope_table`] made and its `(pos0, n, h)`, so that calls of one length reuse it
/// instead of recomputing `n · h/2` sines and cosines per layer and pass.
#[derive(Debug, Default)]
struct RopeCache<T> {
    table: Vec<(T, T)>,
    at: Option<(usize, usize, usize)>,
}

impl<T: Scalar> RopeCache<T> {
    /// [`rope_table`]`(pos0, n, h)`, computed only when the last call asked for another one.
    fn get(&mut self, pos0: usize, n: usize, h: usize) -> &[(T, T)] {
        if self.at != Some((pos0, n, h)) {
            self.table = rope_table(pos0, n, h);
            self.at = Some((pos0, n, h));
        }
        &self.table
    }
}

impl<T: Scalar> MultiHeadSaved<T> {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The gradients of the attention's own parameters from the last backward, by name
    /// (`ln.gain`, `sketch.node0.f1.w1`, …), in the order of [`Attention::parameters`].
    pub fn attention_grads(&self) -> &[(String, Vec<T>)] {
        &self.grads.params
    }
}

fn resize<T: Scalar>(v: &mut Vec<T>, len: usize) {
    v.resize(len, T::zero());
}

/// The computation of a multi-head block over borrowed weights (see [`MultiHead`] for one that
/// owns them). Holds the attention layer, whose parameters it owns.
#[derive(Debug)]
pub struct MultiHeadCore<T: Scalar> {
    config: MultiHeadConfig,
    attention: Attention<T>,
}

impl<T: Scalar> MultiHeadCore<T> {
    /// Validates `config` and builds the attention layer (its parameters initialised as
    /// [`Attention::new`] does).
    ///
    /// # Errors
    /// As [`MultiHeadConfig::validate`].
    pub fn new(config: MultiHeadConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, attention: Attention::new(config.attention)? })
    }

    /// The configuration.
    pub fn config(&self) -> &MultiHeadConfig {
        &self.config
    }

    /// The attention layer (its parameters: [`Attention::parameters`]).
    pub fn attention(&self) -> &Attention<T> {
        &self.attention
    }

    /// The attention layer, mutably (to set its parameters).
    pub fn attention_mut(&mut self) -> &mut Attention<T> {
        &mut self.attention
    }

    /// Checks the weights' lengths, `x`'s length and finiteness; returns the number of rows.
    fn check(
        &self, op: &'static str, w: &Projections<'_, T>, x: &[T], batch: usize, n: usize,
        out: &[T], par: Par,
    ) -> Result<usize> {
        let (c, i) = (self.config.d_model, self.config.inner());
        check_positive(op, batch, n)?;
        check_len(op, "wqkv", w.wqkv, 3 * i * c, format!("[3·{i}, {c}]"))?;
        check_len(op, "wo", w.wo, c * i, format!("[{c}, {i}]"))?;
        let rows = batch.checked_mul(n).ok_or(AttentionError::TooLarge {
            op,
            bytes: polysketch_core::saturating_product(&[batch, n, c, size_of::<T>()]),
            limit: usize::MAX as u128,
        })?;
        let len = rows.checked_mul(c).ok_or(AttentionError::TooLarge {
            op,
            bytes: polysketch_core::saturating_product(&[rows, c, size_of::<T>()]),
            limit: usize::MAX as u128,
        })?;
        let shape = format!("[batch {batch}, n {n}, C {c}]");
        check_len(op, "x", x, len, shape.clone())?;
        check_len(op, "out", out, len, shape)?;
        check_finite(op, "x", x, par)?;
        check_finite(op, "wqkv", w.wqkv, par)?;
        check_finite(op, "wo", w.wo, par)?;
        Ok(rows)
    }

    /// `x` → q, k, v heads in `s` (RoPE at `pos0 + t`).
    fn project_in(
        &self, w: &Projections<'_, T>, x: &[T], batch: usize, n: usize, pos0: usize,
        s: &mut MultiHeadSaved<T>, par: Par,
    ) {
        let (c, i) = (self.config.d_model, self.config.inner());
        let (heads, h) = (self.config.attention.heads, self.config.attention.head_dim);
        let rows = batch * n;
        resize(&mut s.qkv, rows * 3 * i);
        linear_forward(x, w.wqkv, rows, c, 3 * i, &mut s.qkv, par);
        for buf in [&mut s.q, &mut s.k, &mut s.v, &mut s.att] {
            resize(buf, rows * i);
        }
        let rope = if self.config.rope { Some(s.rope.get(pos0, n, h)) } else { None };
        split_heads_forward(&s.qkv, batch, n, heads, h, rope, &mut s.q, &mut s.k, &mut s.v);
    }

    /// The attention output in `s.att` → merged into `s.y` → `out = y W_oᵀ`.
    fn project_out(
        &self, w: &Projections<'_, T>, batch: usize, n: usize, out: &mut [T],
        s: &mut MultiHeadSaved<T>, par: Par,
    ) {
        let (c, i) = (self.config.d_model, self.config.inner());
        let (heads, h) = (self.config.attention.heads, self.config.attention.head_dim);
        resize(&mut s.y, batch * n * i);
        merge_heads(&s.att, batch, n, heads, h, &mut s.y);
        linear_forward(&s.y, w.wo, batch * n, i, c, out, par);
    }

    /// Training forward: `out` (`[batch, n, C]`) of `x` (`[batch, n, C]`), keeping in `saved`
    /// what [`backward_with`](Self::backward_with) needs (but not `x`: the caller keeps it).
    ///
    /// # Errors
    /// Wrong lengths of `x`, `out` or the weights, non-finite inputs or weights, `batch` or `n`
    /// of 0, and the attention layer's errors.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with(
        &self, w: Projections<'_, T>, x: &[T], batch: usize, n: usize, out: &mut [T],
        saved: &mut MultiHeadSaved<T>, par: Par,
    ) -> Result<()> {
        const OP: &str = "MultiHead::forward";
        self.check(OP, &w, x, batch, n, out, par)?;
        saved.ready = false;
        self.project_in(&w, x, batch, n, 0, saved, par);
        let s = &mut *saved;
        self.attention.forward_into(&s.q, &s.k, &s.v, batch, n, &mut s.att, &mut s.attn, par)?;
        self.project_out(&w, batch, n, out, saved, par);
        (saved.batch, saved.n, saved.ready) = (batch, n, true);
        Ok(())
    }

    /// Backward of [`forward_with`](Self::forward_with): `dx` (`[batch, n, C]`, overwritten)
    /// from `d_out`, the projections' gradients **added** into `dw`, the attention's
    /// parameters' in `saved` ([`MultiHeadSaved::attention_grads`]). `x` is the forward's input.
    ///
    /// # Errors
    /// A state that is empty or used; wrong lengths; non-finite `d_out`; the attention's errors.
    pub fn backward_with(
        &self, w: Projections<'_, T>, x: &[T], saved: &mut MultiHeadSaved<T>, d_out: &[T],
        dx: &mut [T], dw: ProjectionGrads<'_, T>, par: Par,
    ) -> Result<()> {
        const OP: &str = "MultiHead::backward";
        if !saved.ready {
            return Err(AttentionError::InvalidState {
                op: OP,
                reason: "the saved state is empty or was already used by a backward".into(),
            });
        }
        let (batch, n) = (saved.batch, saved.n);
        self.check(OP, &w, x, batch, n, dx, par)?;
        let (c, i) = (self.config.d_model, self.config.inner());
        check_len(OP, "d_out", d_out, batch * n * c, format!("[batch {batch}, n {n}, C {c}]"))?;
        check_finite(OP, "d_out", d_out, par)?;
        check_len(OP, "dw.wqkv", dw.wqkv, 3 * i * c, format!("[3·{i}, {c}]"))?;
        check_len(OP, "dw.wo", dw.wo, c * i, format!("[{c}, {i}]"))?;
        let (heads, h) = (self.config.attention.heads, self.config.attention.head_dim);
        let rows = batch * n;
        saved.ready = false;
        let s = saved;
        // out = y W_oᵀ: dy = d_out W_o (into qkv's memory, reused), dW_o += d_outᵀ y
        resize(&mut s.qkv, rows * 3 * i);
        let dy = &mut s.qkv[..rows * i];
        linear_backward(d_out, &s.y, w.wo, rows, i, c, dy, false, dw.wo, par);
        unmerge_heads(dy, batch, n, heads, h, &mut s.att);
        self.attention.backward_into(&mut s.attn, &s.att, &mut s.grads, par)?;
        let Grads { dq, dk, dv, .. } = &mut s.grads;
        let rope = if self.config.rope { Some(s.rope.get(0, n, h)) } else { None };
        split_heads_backward(dq, dk, dv, batch, n, heads, h, rope, &mut s.qkv);
        // qkv = x W_qkvᵀ
        linear_backward(&s.qkv, x, w.wqkv, rows, c, 3 * i, dx, false, dw.wqkv, par);
        Ok(())
    }

    /// Inference over the next `n` tokens of each of `state`'s sequences, RoPE at their
    /// positions: `out` for `x` (`[batch, n, C]` each), as the training forward over the whole
    /// prefix gives them (up to rounding). Causal layers only.
    ///
    /// # Errors
    /// As [`forward_with`](Self::forward_with) and [`Attention::forward_chunk`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_chunk_with(
        &self, w: Projections<'_, T>, x: &[T], n: usize, state: &mut State<T>, out: &mut [T],
        scratch: &mut MultiHeadSaved<T>, par: Par,
    ) -> Result<()> {
        const OP: &str = "MultiHead::forward_chunk";
        let batch = state.batch();
        self.check(OP, &w, x, batch, n, out, par)?;
        scratch.ready = false;
        self.project_in(&w, x, batch, n, state.position(), scratch, par);
        let s = &mut *scratch;
        self.attention.forward_chunk(&s.q, &s.k, &s.v, batch, n, &mut s.att, state, par)?;
        self.project_out(&w, batch, n, out, scratch, par);
        Ok(())
    }
}

/// A multi-head block with its weights: what one swaps into a transformer.
///
/// Parameters (named, row-major): `wqkv [3I, C]`, `wo [C, I]`, then the attention's own
/// (`ln.gain`, `ln.bias`, a learned sketch's `sketch.*`; see [`Attention::parameters`]).
/// [`save_safetensors`](crate::save_safetensors) and [`load_safetensors`](crate::load_safetensors)
/// take [`parameters`](Self::parameters) / [`parameters_mut`](Self::parameters_mut).
///
/// ```
/// use faer::Par;
/// use polysketch_attention::{MultiHead, MultiHeadConfig};
///
/// let (batch, n, c) = (2, 50, 32);
/// let block = MultiHead::<f32>::new(MultiHeadConfig::new(c, 4, "random+local:r=8,block=16".parse()?), 7)?;
/// let x: Vec<f32> = (0..batch * n * c).map(|i| (i as f32 * 0.1).sin()).collect();
/// let (out, mut saved) = block.forward(&x, batch, n, Par::Seq)?;
/// let grads = block.backward(&mut saved, &out, Par::Seq)?; // of ‖out‖²/2
/// assert_eq!((grads.dx.len(), grads.param("wo").unwrap().len()), (x.len(), c * c));
/// assert!(grads.param("ln.gain").is_some());
/// # Ok::<(), polysketch_attention::AttentionError>(())
/// ```
#[derive(Debug)]
pub struct MultiHead<T: Scalar> {
    core: MultiHeadCore<T>,
    wqkv: Vec<T>,
    wo: Vec<T>,
}

/// Gradients of a [`MultiHead`]: the input's and every parameter's, by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BlockGrads<T> {
    /// \\(\partial L/\partial X\\), `[batch, n, C]`.
    pub dx: Vec<T>,
    /// The parameters' gradients, in the order of [`MultiHead::parameters`].
    pub params: Vec<(String, Vec<T>)>,
}

impl<T> BlockGrads<T> {
    /// The gradient of the parameter `name`, or `None` if the block has none of that name.
    pub fn param(&self, name: &str) -> Option<&[T]> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, g)| g.as_slice())
    }
}

impl<T: Scalar> MultiHead<T> {
    /// Validates `config`, draws \\(W_{qkv} \sim \mathcal N(0, 1/C)\\) and \\(W_o \sim \mathcal
    /// N(0, 1/I)\\) from `seed` (unit-variance outputs for unit-variance inputs), and builds the
    /// attention (its own parameters and sketch seeded by its config).
    ///
    /// # Errors
    /// As [`MultiHeadConfig::validate`].
    pub fn new(config: MultiHeadConfig, seed: u64) -> Result<Self> {
        let core = MultiHeadCore::new(config)?;
        let (c, i) = (config.d_model, config.inner());
        let mut rng = seeded_rng(seed);
        let mut draw = |len: usize, fan_in: usize| -> Vec<T> {
            let std = 1.0 / (fan_in as f64).sqrt();
            (0..len).map(|_| T::of(std * normal(&mut rng))).collect()
        };
        let wqkv = draw(3 * i * c, c);
        let wo = draw(c * i, i);
        Ok(Self { core, wqkv, wo })
    }

    /// The configuration.
    pub fn config(&self) -> &MultiHeadConfig {
        &self.core.config
    }

    /// The computation, over this block's attention (for [`MultiHeadCore`] callers).
    pub fn core(&self) -> &MultiHeadCore<T> {
        &self.core
    }

    fn weights(&self) -> Projections<'_, T> {
        Projections { wqkv: &self.wqkv, wo: &self.wo }
    }

    /// The named parameters: `wqkv [3I, C]`, `wo [C, I]`, then the attention's.
    pub fn parameters(&self) -> Vec<Param<'_, T>> {
        let (c, i) = (self.core.config.d_model, self.core.config.inner());
        let mut out = vec![
            Param { name: "wqkv".into(), shape: vec![3 * i, c], data: &self.wqkv },
            Param { name: "wo".into(), shape: vec![c, i], data: &self.wo },
        ];
        out.extend(self.core.attention.parameters());
        out
    }

    /// Mutable [`parameters`](Self::parameters), in the same order.
    pub fn parameters_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        let (c, i) = (self.core.config.d_model, self.core.config.inner());
        let mut out = vec![
            ParamMut { name: "wqkv".into(), shape: vec![3 * i, c], data: &mut self.wqkv },
            ParamMut { name: "wo".into(), shape: vec![c, i], data: &mut self.wo },
        ];
        out.extend(self.core.attention.parameters_mut());
        out
    }

    /// The block's output for `x` (`[batch, n, C]` → `[batch, n, C]`) and its saved state.
    ///
    /// # Errors
    /// As [`MultiHeadCore::forward_with`].
    pub fn forward(
        &self, x: &[T], batch: usize, n: usize, par: Par,
    ) -> Result<(Vec<T>, MultiHeadSaved<T>)> {
        let mut saved = MultiHeadSaved::new();
        let mut out = vec![T::zero(); x.len()];
        self.forward_into(x, batch, n, &mut out, &mut saved, par)?;
        Ok((out, saved))
    }

    /// Like [`forward`](Self::forward), into `out` and a reused `saved`.
    ///
    /// # Errors
    /// As [`MultiHeadCore::forward_with`].
    pub fn forward_into(
        &self, x: &[T], batch: usize, n: usize, out: &mut [T], saved: &mut MultiHeadSaved<T>,
        par: Par,
    ) -> Result<()> {
        self.core.forward_with(self.weights(), x, batch, n, out, saved, par)?;
        saved.x.clear();
        saved.x.extend_from_slice(x);
        Ok(())
    }

    /// Gradients of the input and of every parameter given \\(\partial L/\partial\mathrm{out}\\)
    /// = `d_out` (`[batch, n, C]`).
    ///
    /// # Errors
    /// As [`MultiHeadCore::backward_with`].
    pub fn backward(
        &self, saved: &mut MultiHeadSaved<T>, d_out: &[T], par: Par,
    ) -> Result<BlockGrads<T>> {
        let (c, i) = (self.core.config.d_model, self.core.config.inner());
        let (mut dwqkv, mut dwo) = (vec![T::zero(); 3 * i * c], vec![T::zero(); c * i]);
        let x = core::mem::take(&mut saved.x);
        let mut dx = vec![T::zero(); x.len()];
        let dw = ProjectionGrads { wqkv: &mut dwqkv, wo: &mut dwo };
        let result = self.core.backward_with(self.weights(), &x, saved, d_out, &mut dx, dw, par);
        saved.x = x;
        result?;
        let mut params = vec![("wqkv".to_string(), dwqkv), ("wo".to_string(), dwo)];
        params.extend(saved.grads.params.iter().cloned());
        Ok(BlockGrads { dx, params })
    }

    /// A fresh decoding state for `batch` sequences (see [`Attention::new_state`]).
    ///
    /// # Errors
    /// As [`Attention::new_state`].
    pub fn new_state(&self, batch: usize) -> Result<State<T>> {
        self.core.attention.new_state(batch)
    }

    /// The next `n` tokens of every sequence (`x`, `out`: `[batch, n, C]`), continuing `state`.
    ///
    /// # Errors
    /// As [`MultiHeadCore::forward_chunk_with`].
    pub fn forward_chunk(
        &self, x: &[T], n: usize, state: &mut State<T>, out: &mut [T],
        scratch: &mut MultiHeadSaved<T>, par: Par,
    ) -> Result<()> {
        self.core.forward_chunk_with(self.weights(), x, n, state, out, scratch, par)
    }
}
