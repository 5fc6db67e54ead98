//! The GPT model: parameters in one flat buffer with a table of named tensors, the forward pass
//! (training, with what the backward needs; or inference over a chunk, with a recurrent
//! [`InferState`]), and the backward pass.

use faer::{MatRef, Par};
use polysketch_attention::layernorm::{LnSaved, layernorm_backward, layernorm_forward};
use polysketch_attention::{MultiHeadCore, Param, ParamMut, State};
use polysketch_core::{Scalar, normal, seeded_rng, split_seed};

use crate::block::{Block, BlockActs, Scratch, resize, two_mut};
use crate::ops::{self, IGNORE};
use crate::{GptConfig, GptError, Result};

/// Activations of one training forward may not pass this many bytes (estimated first).
pub const MAX_ACTIVATION_BYTES: u128 = 16 << 30;

/// Where one named tensor lives in the flat parameter buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Its name, e.g. `wte`, `h0.attn.wqkv`, `h1.attn.sketch.node0.f1.w1`, `lnf.gain`.
    pub name: String,
    /// Its shape (`[out, in]` for dense layers, which compute \\(y = xW^\top\\)).
    pub shape: Vec<usize>,
    /// Offset of its first value in [`Gpt::params`].
    pub offset: usize,
    /// Whether AdamW decays it (matrices: yes; gains, biases: no).
    pub decay: bool,
}

impl ParamInfo {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its values within a flat buffer laid out like [`Gpt::params`].
    pub fn of<'a, T>(&self, flat: &'a [T]) -> &'a [T] {
        &flat[self.offset..self.offset + self.len()]
    }

    /// Mutable [`of`](Self::of).
    pub fn of_mut<'a, T>(&self, flat: &'a mut [T]) -> &'a mut [T] {
        &mut flat[self.offset..self.offset + self.len()]
    }
}

/// A decoder-only transformer (pre-LayerNorm, Transformer++ recipe of the paper's Appendix I):
///
/// \\[ x^{(0)}_t = \sqrt C\,W_{te}[\text{tok}_t] + e_t, \quad
///     x' = x + \mathrm{Attn}(\mathrm{LN}_1(x))\,W_o^\top, \quad
///     x'' = x' + \big(\mathrm{gelu}(\mathrm{LN}_2(x')W_g^\top)\circ \mathrm{LN}_2(x')W_u^\top\big)W_d^\top, \\]
/// and logits \\(\mathrm{LN}_f(x^{(L)})\,W_{te}^\top\\) (tied embeddings), where \\(e_t\\) is the
/// sinusoidal embedding and Attn projects \\(q, k, v = \mathrm{LN}_1(x)W_{qkv}^\top\\), applies
/// RoPE (\\(\theta = 10000\\)) to \\(q\\) and \\(k\\) per head and runs the configured attention kind
/// (which, for polynomial and PolySketch, applies its layer norm to \\(q, k\\) after RoPE). Dense
/// layers have no bias; the GLU width is \\(8C/3\\) rounded up to a multiple of 8.
#[derive(Debug)]
pub struct Gpt<T: Scalar> {
    pub(crate) config: GptConfig,
    pub(crate) params: Vec<T>,
    pub(crate) table: Vec<ParamInfo>,
    pub(crate) blocks: Vec<Block>,
    /// The multi-head blocks (their attention layers keep a copy of the attention
    /// parameters, passed on by [`update_params`](Self::update_params)).
    pub(crate) attn: Vec<MultiHeadCore<T>>,
    wte: usize,
    lnf_gain: usize,
    lnf_bias: usize,
}

/// What a training forward saves for the backward, and scratch; reused across steps (buffers
/// keep their size while the shapes do).
#[derive(Debug, Default)]
pub struct Activations<T: Scalar> {
    batch: usize,
    n: usize,
    tokens: Vec<u32>,
    targets: Vec<u32>,
    count: usize,
    blocks: Vec<BlockActs<T>>,
    lnf: LnSaved<T>,
    lnf_out: Vec<T>,
    probs: Vec<T>,
    // the residual stream and its gradient, and the blocks' scratch
    x: Vec<T>,
    dx: Vec<T>,
    scratch: Scratch<T>,
    ready: bool,
}

impl<T: Scalar> Activations<T> {
    /// Empty; the first forward sizes it.
    pub fn new() -> Self {
        Self::default()
    }

    /// The probabilities of the last forward, `[batch, n, V]` row-major.
    pub fn probs(&self) -> &[T] {
        &self.probs
    }
}

/// The recurrent state of every layer for generation (see [`Gpt::forward_chunk`]).
#[derive(Debug)]
pub struct InferState<T: Scalar> {
    layers: Vec<State<T>>,
    position: usize,
    batch: usize,
}

impl<T: Scalar> InferState<T> {
    /// Tokens seen so far per sequence.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Bytes held by the attention states (constant in the position for PolySketch).
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|s| s.bytes()).sum()
    }
}

impl<T: Scalar> Gpt<T> {
    /// A model with fresh parameters: dense weights \\(\mathcal N(0, 0.02^2)\\) (output
    /// projections \\(W_o, W_d\\) scaled by \\(1/\sqrt{2L}\\)), embeddings
    /// \\(\mathcal N(0, 1/C)\\), layer-norm gains 1 and biases 0, attention parameters as their
    /// layers initialise them. Deterministic in `config.seed`.
    ///
    /// # Errors
    /// [`GptError::InvalidConfig`] (see [`GptConfig::validate`]) or an attention layer's
    /// configuration error.
    pub fn new(config: GptConfig) -> Result<Self> {
        config.validate()?;
        let (c, f, v) = (config.d_model, config.hidden(), config.vocab);
        let mut table = Vec::new();
        let mut push = |name: String, shape: Vec<usize>, decay: bool| {
            let offset = table.last().map_or(0, |p: &ParamInfo| p.offset + p.len());
            table.push(ParamInfo { name, shape, offset, decay });
            table.len() - 1
        };
        let wte = push("wte".into(), vec![v, c], true);
        let mut attn = Vec::with_capacity(config.layers);
        let mut blocks = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let layer = MultiHeadCore::<T>::new(config.block_config(l))?;
            let pre = format!("h{l}.");
            let ln1_gain = push(format!("{pre}ln1.gain"), vec![c], false);
            let ln1_bias = push(format!("{pre}ln1.bias"), vec![c], false);
            let wqkv = push(format!("{pre}attn.wqkv"), vec![3 * c, c], true);
            let wo = push(format!("{pre}attn.wo"), vec![c, c], true);
            let attn_ids = layer
                .attention()
                .parameters()
                .iter()
                .map(|p| push(format!("{pre}attn.{}", p.name), p.shape.clone(), p.shape.len() > 1))
                .collect();
            let ln2_gain = push(format!("{pre}ln2.gain"), vec![c], false);
            let ln2_bias = push(format!("{pre}ln2.bias"), vec![c], false);
            let wgate = push(format!("{pre}mlp.wgate"), vec![f, c], true);
            let wup = push(format!("{pre}mlp.wup"), vec![f, c], true);
            let wdown = push(format!("{pre}mlp.wdown"), vec![c, f], true);
            blocks.push(Block {
                ln1_gain,
                ln1_bias,
                wqkv,
                wo,
                ln2_gain,
                ln2_bias,
                wgate,
                wup,
                wdown,
                attn: attn_ids,
            });
            attn.push(layer);
        }
        let lnf_gain = push("lnf.gain".into(), vec![c], false);
        let lnf_bias = push("lnf.bias".into(), vec![c], false);
        let total = table.last().map_or(0, |p| p.offset + p.len());
        let mut params = vec![T::zero(); total];
        let mut rng = seeded_rng(split_seed(config.seed, 0));
        let out_scale = 1.0 / (2.0 * config.layers as f64).sqrt();
        for (i, info) in table.iter().enumerate() {
            let name = info.name.as_str();
            let std = if i == wte {
                1.0 / (c as f64).sqrt()
            } else if name.ends_with("attn.wo") || name.ends_with("mlp.wdown") {
                0.02 * out_scale
            } else if name.ends_with(".wqkv")
                || name.ends_with("mlp.wgate")
                || name.ends_with("mlp.wup")
            {
                0.02
            } else if name.ends_with(".gain") && !name.contains("sketch") || name == "lnf.gain" {
                params[info.offset..info.offset + info.len()].fill(T::one());
                continue;
            } else {
                continue;
            };
            for p in info.of_mut(&mut params) {
                *p = T::of(std * normal(&mut rng));
            }
        }
        // the attention layers' own parameters, as they initialised them
        for (layer, block) in attn.iter().zip(&blocks) {
            for (p, &id) in layer.attention().parameters().iter().zip(&block.attn) {
                table[id].of_mut(&mut params).copy_from_slice(p.data);
            }
        }
        Ok(Self { config, params, table, blocks, attn, wte, lnf_gain, lnf_bias })
    }

    /// Turns bf16 inputs on or off in every layer for the learned sketches' network products
    /// ([`Attention::set_bf16_products`](polysketch_attention::Attention::set_bf16_products))
    /// and the causal engine's feature products
    /// ([`Attention::set_bf16_features`](polysketch_attention::Attention::set_bf16_features));
    /// returns whether any layer has a learned sketch.
    pub fn set_bf16_products(&mut self, on: bool) -> bool {
        let mut any = false;
        for layer in &mut self.attn {
            any |= layer.attention_mut().set_bf16_products(on);
            layer.attention_mut().set_bf16_features(on);
        }
        any
    }

    /// The configuration.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// The flat parameter buffer (laid out by [`table`](Self::table)).
    pub fn params(&self) -> &[T] {
        &self.params
    }

    /// The named tensors of the flat buffer, in order.
    pub fn table(&self) -> &[ParamInfo] {
        &self.table
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// The named tensors as views (for saving).
    pub fn parameters(&self) -> Vec<Param<'_, T>> {
        views(&self.params, &self.table, "")
    }

    /// Changes the parameters through `f` (an optimiser step, loading) and passes the new values
    /// on to the attention layers.
    pub fn update_params<R>(&mut self, f: impl FnOnce(&mut [T], &[ParamInfo]) -> R) -> R {
        let r = f(&mut self.params, &self.table);
        for (layer, block) in self.attn.iter_mut().zip(&self.blocks) {
            for (p, &id) in layer.attention_mut().parameters_mut().into_iter().zip(&block.attn) {
                p.data.copy_from_slice(self.table[id].of(&self.params));
            }
        }
        r
    }

    fn check_tokens(&self, op: &'static str, tokens: &[u32], batch: usize, n: usize) -> Result<()> {
        if batch == 0 || n == 0 {
            return Err(GptError::Shape {
                op,
                what: format!("batch {batch} and n {n} must be positive"),
            });
        }
        if batch.checked_mul(n) != Some(tokens.len()) {
            return Err(GptError::Shape {
                op,
                what: format!("{} tokens for batch {batch} × n {n}", tokens.len()),
            });
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.config.vocab) {
            return Err(GptError::Token { op, token: t, vocab: self.config.vocab });
        }
        Ok(())
    }

    /// Estimated bytes of the activations of a training forward over `batch × n` tokens: per
    /// token, each block's saved values (\\(5C + 4F\\), with the block's projections and heads
    /// \\(8C\\)) and the model's own (\\(9C + V + F\\)), plus what each attention layer keeps
    /// ([`AttentionConfig::saved_bytes`](polysketch_attention::AttentionConfig::saved_bytes):
    /// a learned sketch's networks keep far more than the block around them). Saturating.
    pub fn activation_bytes(&self, batch: usize, n: usize) -> u128 {
        let (c, f, v) =
            (self.config.d_model as u128, self.config.hidden() as u128, self.config.vocab as u128);
        // saturating: batch · n alone may pass a usize
        let rows = polysketch_core::saturating_product(&[batch, n]);
        let per_row = (5 * c + 4 * f + c * 8) // a block's saved values, its q, k, v and heads
            .saturating_mul(self.config.layers as u128)
            .saturating_add(3 * c + v + 6 * c + f);
        let attention = (0..self.config.layers)
            .map(|l| self.config.attention_config(l).saved_bytes::<T>(batch, n))
            .fold(0, u128::saturating_add);
        rows.saturating_mul(per_row)
            .saturating_mul(core::mem::size_of::<T>() as u128)
            .saturating_add(attention)
    }

    /// Training forward: the mean cross-entropy of predicting `targets` (`[batch, n]`,
    /// [`IGNORE`](crate::IGNORE) where there is none) from `tokens` (`[batch, n]`), saving what
    /// [`backward`](Self::backward) needs in `acts`.
    ///
    /// # Shapes
    /// `tokens`, `targets`: `[batch, n]` row-major, `n ≤ context`; the logits' softmax is kept
    /// in `acts` as `[batch · n, vocab]` ([`Activations::probs`]).
    ///
    /// # Errors
    /// Shapes that do not match, a token outside the vocabulary, no target at all, `n` over the
    /// context, activations over [`MAX_ACTIVATION_BYTES`], a non-finite loss.
    ///
    /// ```
    /// use faer::Par;
    /// use polysketch_gpt::{Activations, Gpt, GptConfig, GptError};
    ///
    /// let config = GptConfig { context: 16, d_model: 16, layers: 1, heads: 2, ..GptConfig::default() };
    /// let model = Gpt::<f32>::new(config)?;
    /// let tokens: Vec<u32> = (0..2 * 8).map(|i| (i * 31 % 256) as u32).collect();
    /// let mut acts = Activations::new();
    /// let loss = model.forward(&tokens, &tokens, 2, 8, &mut acts, Par::Seq)?;
    /// assert!(loss.is_finite() && loss > 0.0); // mean cross-entropy, nats per token
    /// assert!(matches!(
    ///     model.forward(&tokens, &tokens, 2, 9, &mut acts, Par::Seq),
    ///     Err(GptError::Shape { .. })
    /// ));
    /// # Ok::<(), GptError>(())
    /// ```
    pub fn forward(
        &self, tokens: &[u32], targets: &[u32], batch: usize, n: usize, acts: &mut Activations<T>,
        par: Par,
    ) -> Result<f64> {
        const OP: &str = "Gpt::forward";
        self.check_tokens(OP, tokens, batch, n)?;
        if targets.len() != tokens.len() {
            return Err(GptError::Shape {
                op: OP,
                what: format!("{} targets for {} tokens", targets.len(), tokens.len()),
            });
        }
        if let Some(&t) = targets.iter().find(|&&t| t != IGNORE && t as usize >= self.config.vocab)
        {
            return Err(GptError::Token { op: OP, token: t, vocab: self.config.vocab });
        }
        if n > self.config.context {
            return Err(GptError::Shape {
                op: OP,
                what: format!("n {n} is longer than the context {}", self.config.context),
            });
        }
        let bytes = self.activation_bytes(batch, n);
        if bytes > MAX_ACTIVATION_BYTES {
            return Err(GptError::TooLarge { op: OP, bytes, limit: MAX_ACTIVATION_BYTES });
        }
        let count = targets.iter().filter(|&&t| t != IGNORE).count();
        if count == 0 {
            return Err(GptError::Shape { op: OP, what: "no position has a target".into() });
        }
        acts.batch = batch;
        acts.n = n;
        acts.tokens.clear();
        acts.tokens.extend_from_slice(tokens);
        acts.targets.clear();
        acts.targets.extend_from_slice(targets);
        acts.count = count;
        acts.blocks.resize_with(self.config.layers, Default::default);
        let mut x = core::mem::take(&mut acts.x);
        self.trunk(tokens, batch, n, 0, &mut x, acts, None, par)?;
        acts.x = x;
        let (loss, _) = ops::cross_entropy_forward(&mut acts.probs, targets, self.config.vocab);
        let loss = loss / count as f64;
        if !loss.is_finite() {
            return Err(GptError::NonFinite("loss"));
        }
        acts.ready = true;
        Ok(loss)
    }

    /// Embedding, blocks, final norm and logits (into `acts.probs`); in training mode
    /// (`states` = None) each block saves into `acts.blocks`.
    #[allow(clippy::too_many_arguments)]
    fn trunk(
        &self, tokens: &[u32], batch: usize, n: usize, pos0: usize, x: &mut Vec<T>,
        acts: &mut Activations<T>, mut states: Option<&mut [State<T>]>, par: Par,
    ) -> Result<()> {
        let (c, v) = (self.config.d_model, self.config.vocab);
        let rows = batch * n;
        resize(x, rows * c);
        ops::embed_forward(tokens, n, pos0, self.table[self.wte].of(&self.params), c, x);
        let mut blocks = core::mem::take(&mut acts.blocks);
        let mut result = Ok(());
        for l in 0..self.config.layers {
            // training saves per block; inference reuses one scratch block
            let ba = &mut blocks[if states.is_some() { 0 } else { l }];
            let state = states.as_deref_mut().map(|s| &mut s[l]);
            result = self.block_forward(l, x, batch, n, ba, state, &mut acts.scratch, par);
            if result.is_err() {
                break;
            }
        }
        acts.blocks = blocks;
        result?;
        let ln = &mut acts.lnf_out;
        resize(ln, rows * c);
        layernorm_forward(
            MatRef::from_row_major_slice(x, rows, c),
            self.table[self.lnf_gain].of(&self.params),
            self.table[self.lnf_bias].of(&self.params),
            T::one(),
            ln,
            &mut acts.lnf,
        );
        resize(&mut acts.probs, rows * v);
        ops::linear_forward(
            ln,
            self.table[self.wte].of(&self.params),
            rows,
            c,
            v,
            &mut acts.probs,
            par,
        );
        Ok(())
    }

    /// Backward of the last [`forward`](Self::forward): **adds** \\(\partial L/\partial\theta\\)
    /// of the mean loss into `grads` (laid out like [`params`](Self::params)).
    ///
    /// # Errors
    /// `grads` of the wrong length; `acts` not from a forward (or already used).
    pub fn backward(&self, acts: &mut Activations<T>, grads: &mut [T], par: Par) -> Result<()> {
        const OP: &str = "Gpt::backward";
        if grads.len() != self.params.len() {
            return Err(GptError::Shape {
                op: OP,
                what: format!("{} gradients for {} parameters", grads.len(), self.params.len()),
            });
        }
        if !acts.ready {
            return Err(GptError::Shape {
                op: OP,
                what: "the activations are not from a training forward (or were used)".into(),
            });
        }
        acts.ready = false;
        let (c, f, v) = (self.config.d_model, self.config.hidden(), self.config.vocab);
        let (batch, n) = (acts.batch, acts.n);
        let rows = batch * n;
        let p = |id: usize| self.table[id].of(&self.params);
        let a = acts;
        ops::cross_entropy_backward(&mut a.probs, &a.targets, v, T::of(1.0 / a.count as f64));
        let mut dx = core::mem::take(&mut a.dx);
        resize(&mut dx, rows * c);
        let s = &mut a.scratch;
        for (buf, len) in [
            (&mut s.dln, rows * c),
            (&mut s.tmp, rows * c),
            (&mut s.da, rows * f),
            (&mut s.du, rows * f),
            (&mut s.a, rows * f),
        ] {
            resize(buf, len);
        }
        // logits = lnf_out · wteᵀ
        self.dense_backward(self.wte, &a.probs, &a.lnf_out, &mut s.dln, false, grads, par);
        let (dg, db) = two_mut(grads, &self.table[self.lnf_gain], &self.table[self.lnf_bias]);
        layernorm_backward(&s.dln, &a.lnf, p(self.lnf_gain), T::one(), &mut dx, dg, db);
        for l in (0..self.config.layers).rev() {
            self.block_backward(
                l,
                batch,
                n,
                &mut a.blocks[l],
                &mut dx,
                &mut a.scratch,
                grads,
                par,
            )?;
        }
        ops::embed_backward(&dx, &a.tokens, c, self.table[self.wte].of_mut(grads));
        a.dx = dx;
        Ok(())
    }

    /// A fresh recurrent state for generating `batch` sequences.
    ///
    /// # Errors
    /// `batch` of 0.
    pub fn new_state(&self, batch: usize) -> Result<InferState<T>> {
        Ok(InferState {
            layers: self
                .attn
                .iter()
                .map(|a| a.attention().new_state(batch))
                .collect::<std::result::Result<_, _>>()?,
            position: 0,
            batch,
        })
    }

    /// Inference over the next `n` tokens of each of `state`'s sequences (`tokens`:
    /// `[batch, n]`), continuing from what the state has seen (prefill a prompt, then one token
    /// at a time): returns the logits of the last position of each sequence, `[batch, V]`. The
    /// result equals that of the training forward over the whole prefix (up to rounding); the
    /// work per token is constant in the position for PolySketch attention.
    ///
    /// # Errors
    /// Shapes, tokens outside the vocabulary, the attention layers' errors.
    pub fn forward_chunk(
        &self, tokens: &[u32], n: usize, state: &mut InferState<T>, scratch: &mut Activations<T>,
        par: Par,
    ) -> Result<Vec<T>> {
        let batch = state.batch;
        self.check_tokens("Gpt::forward_chunk", tokens, batch, n)?;
        let mut x = core::mem::take(&mut scratch.x);
        scratch.blocks.resize_with(1, Default::default);
        scratch.ready = false;
        let r = self.trunk(
            tokens,
            batch,
            n,
            state.position,
            &mut x,
            scratch,
            Some(&mut state.layers),
            par,
        );
        scratch.x = x;
        r?;
        state.position += n;
        let v = self.config.vocab;
        Ok((0..batch)
            .flat_map(|b| scratch.probs[((b + 1) * n - 1) * v..(b + 1) * n * v].to_vec())
            .collect())
    }
}

impl<T: Scalar> Gpt<T> {
    /// Runs `f` on the named tensors as mutable views of the flat buffer (for loaders), then
    /// passes the new values on to the attention layers.
    pub fn with_parameters_mut<R>(&mut self, f: impl FnOnce(&mut [ParamMut<'_, T>]) -> R) -> R {
        self.update_params(|flat, table| f(&mut views_mut(flat, table, "")))
    }
}

fn prefixed(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

/// The named tensors of a flat buffer laid out by `table` (as [`Gpt::params`] is, or an
/// optimiser moment), named `<prefix>.<name>` (just `<name>` for an empty prefix).
pub fn views<'a, T>(flat: &'a [T], table: &[ParamInfo], prefix: &str) -> Vec<Param<'a, T>> {
    table
        .iter()
        .map(|p| Param {
            name: prefixed(prefix, &p.name),
            shape: p.shape.clone(),
            data: p.of(flat),
        })
        .collect()
}

/// Mutable [`views`] (the table's tensors are disjoint and in offset order).
pub fn views_mut<'a, T>(
    flat: &'a mut [T], table: &[ParamInfo], prefix: &str,
) -> Vec<ParamMut<'a, T>> {
    let mut out = Vec::with_capacity(table.len());
    let (mut rest, mut at) = (flat, 0);
    for p in table {
        let (_, tail) = rest.split_at_mut(p.offset - at);
        let (mine, tail) = tail.split_at_mut(p.len());
        out.push(ParamMut { name: prefixed(prefix, &p.name), shape: p.shape.clone(), data: mine });
        rest = tail;
        at = p.offset + p.len();
    }
    out
}
