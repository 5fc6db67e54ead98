//! The multi-head layer: validated config, parameters, forward and backward.

use faer::{MatRef, Par};
use polysketch_core::Scalar;
use polysketch_sketch::{GaussianJl, PolySketch, TreeSketch};

use crate::checks::{
    check_finite, check_len, check_positive, check_qkv, check_state_bytes, head_matrix, shape_of,
};
use crate::hedgehog::Hedgehog;
use crate::layernorm::{LnSaved, copy_row, layernorm_backward, layernorm_rows_forward};
use crate::learned::LearnedSketch;
use crate::nn::{Param, ParamMut};
use crate::performer::Favor;
use crate::saved::{Grads, Inner, Saved};
use crate::softmax;
use crate::tiles::HeadViews;
use crate::{AttentionConfig, AttentionError, AttentionKind, QkNorm, Result, SketchKind};

/// Upper bound on the memory a forward may plan to keep (16 GiB).
pub const MAX_STATE_BYTES: u128 = 16 << 30;

/// A multi-head attention layer (causal or bidirectional): `AttentionConfig` validated, with its
/// parameters.
///
/// Parameters: for polynomial and PolySketch attention a layer normalisation of \\(q\\) and
/// \\(k\\) (one gain and one bias of size \\(h\\), shared by \\(q\\), \\(k\\) and the heads, as in the
/// authors' code), named `ln.gain` and `ln.bias`; softmax has none. A random sketch is fixed by
/// the seed and is not a parameter; a learned sketch's networks are (`sketch.node{i}.f{1,2}.*`,
/// see [`LearnedSketch::parameters`]), shared by the heads, their gradients summed over them.
///
/// # Normalisation
/// By default ([`QkNorm::LayerNorm`]) polynomial and PolySketch score \\(\langle\tilde q, \tilde k\rangle^p\\) with \\(\tilde x =
/// \mathrm{LN}(x)/h^{1/4}\\), so \\(\langle\tilde q, \tilde k\rangle = \langle\mathrm{LN}(q),
/// \mathrm{LN}(k)\rangle/\sqrt h\\) — the scaling of softmax attention. With unit gain and zero
/// bias \\(|\langle\tilde q, \tilde k\rangle| \le \sqrt h\\), so each weight is at most
/// \\(h^{p/2}\\) (4096 for \\(h = 64\\), \\(p = 4\\)) and a row's sum over \\(n\\) tokens at most
/// \\(n h^{p/2}\\) (\\(4.3 \cdot 10^9\\) at \\(n = 2^{20}\\)): finite in f32, whose range ends at
/// \\(3.4 \cdot 10^{38}\\). With [`QkNorm::None`] the scores are \\(\langle q, k\rangle^p\\) of the
/// raw vectors (paper Section 2.1) and the layer has no layer-norm parameters.
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
    /// Performer's random features, shared by the heads.
    pub(crate) favor: Option<Favor<T>>,
    /// Hedgehog's learned feature map, shared by the heads.
    pub(crate) hedgehog: Option<Hedgehog<T>>,
    /// Whether the causal engine's feature products take bf16 inputs
    /// ([`set_bf16_features`](Self::set_bf16_features)).
    pub(crate) bf16_features: bool,
}

impl<T: Scalar> core::fmt::Debug for Attention<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Attention").field("config", &self.config).finish()
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
        // the layer norm's gain and bias, before they are allocated (the sketches check theirs)
        polysketch_core::check_param_bytes("Attention::new", 2 * h as u128, size_of::<T>())?;
        let (mut sketch, mut learned, mut favor, mut hedgehog) = (None, None, None, None);
        match config.kind {
            AttentionKind::Performer { features, seed, .. } => {
                favor = Some(Favor::new(h, features, seed)?)
            }
            AttentionKind::Hedgehog { features, seed, .. } => {
                hedgehog = Some(Hedgehog::new(h, features, seed)?)
            }
            _ => {}
        }
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
        let ln = if config.qk_norm == QkNorm::LayerNorm { h } else { 0 };
        Ok(Self {
            config,
            ln_gain: vec![T::one(); ln],
            ln_bias: vec![T::zero(); ln],
            sketch,
            learned,
            favor,
            hedgehog,
            bf16_features: false,
        })
    }

    /// The learned sketch, if the layer has one (its parameters are also listed by
    /// [`parameters`](Self::parameters)).
    pub fn learned_sketch(&self) -> Option<&LearnedSketch<T>> {
        self.learned.as_ref()
    }

    /// Rounds the inputs of the learned sketch's network products to bfloat16 (or stops), see
    /// [`LearnedSketch::set_bf16_products`]: for `f32` on a CPU with AVX-512 BF16 the networks'
    /// products run about 1.6× faster; the rest of the layer is unchanged. Returns whether the
    /// layer has a learned sketch (for every other kind the call changes nothing). Not saved
    /// with the weights.
    ///
    /// ```
    /// use polysketch_attention::{Attention, AttentionConfig};
    /// let mut layer = Attention::<f32>::new(AttentionConfig::new(2, 16, "learned+local".parse()?))?;
    /// assert!(layer.set_bf16_products(true));
    /// assert!(layer.learned_sketch().is_some_and(|s| s.bf16_products()));
    /// let mut softmax = Attention::<f32>::new(AttentionConfig::new(2, 16, "softmax".parse()?))?;
    /// assert!(!softmax.set_bf16_products(true));
    /// # Ok::<(), polysketch_attention::AttentionError>(())
    /// ```
    pub fn set_bf16_products(&mut self, on: bool) -> bool {
        self.learned.as_mut().map(|l| l.set_bf16_products(on)).is_some()
    }

    /// Rounds the inputs of the two feature products of the causal forward to bfloat16 (or
    /// stops): \\(H_l = \phi(K_l)^\top C_l\\) and \\(\phi(Q_l) Z_l\\), which are most of a
    /// PolySketch forward's arithmetic (see
    /// [`LowTri::with_bf16_products`](polysketch_lowtri::LowTri::with_bf16_products): for `f32`
    /// on a CPU with AVX-512 BF16 they run 1.3–1.5× faster, sums in `f32`, prefixes in `f64`;
    /// the output stays within about \\(2 \cdot 10^{-3}\\) of the `f64` result, relative). The exact local
    /// blocks, the sketches (see [`set_bf16_products`](Self::set_bf16_products) for the learned
    /// networks) and the backward are unchanged. Returns whether the layer's forward has such
    /// products (causal PolySketch, Performer and Hedgehog); for every other kind the call
    /// changes nothing. Not saved with the weights.
    ///
    /// ```
    /// use polysketch_attention::{Attention, AttentionConfig};
    /// let mut layer = Attention::<f32>::new(AttentionConfig::new(2, 16, "random+local".parse()?))?;
    /// assert!(layer.set_bf16_features(true) && layer.bf16_features());
    /// let mut softmax = Attention::<f32>::new(AttentionConfig::new(2, 16, "softmax".parse()?))?;
    /// assert!(!softmax.set_bf16_features(true) && !softmax.bf16_features());
    /// # Ok::<(), polysketch_attention::AttentionError>(())
    /// ```
    pub fn set_bf16_features(&mut self, on: bool) -> bool {
        let has = self.config.causal
            && matches!(
                self.config.kind,
                AttentionKind::PolySketch(_)
                    | AttentionKind::Performer { .. }
                    | AttentionKind::Hedgehog { .. }
            );
        self.bf16_features = on && has;
        has
    }

    /// Whether the causal forward's feature products take bf16 inputs
    /// ([`set_bf16_features`](Self::set_bf16_features)).
    pub fn bf16_features(&self) -> bool {
        self.bf16_features
    }

    /// Performer's random features, if the layer has them (fixed by the seed; not a
    /// parameter).
    pub fn performer_features(&self) -> Option<&Favor<T>> {
        self.favor.as_ref()
    }

    /// Hedgehog's feature map, if the layer has one (its parameters are also listed by
    /// [`parameters`](Self::parameters)).
    pub fn hedgehog_features(&self) -> Option<&Hedgehog<T>> {
        self.hedgehog.as_ref()
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
        let mut out = vec![];
        if self.has_layernorm() {
            let h = self.config.head_dim;
            out.push(Param { name: "ln.gain".into(), shape: vec![h], data: &self.ln_gain });
            out.push(Param { name: "ln.bias".into(), shape: vec![h], data: &self.ln_bias });
        }
        if let Some(l) = &self.learned {
            out.extend(l.parameters());
        }
        if let Some(m) = &self.hedgehog {
            out.extend(m.parameters());
        }
        out
    }

    /// Mutable access to the named parameters, in the order of
    /// [`parameters`](Self::parameters) (for optimisers and loading).
    pub fn parameters_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        let mut out = vec![];
        if self.has_layernorm() {
            let h = self.config.head_dim;
            let (gain, bias) = (self.ln_gain.as_mut_slice(), self.ln_bias.as_mut_slice());
            out.push(ParamMut { name: "ln.gain".into(), shape: vec![h], data: gain });
            out.push(ParamMut { name: "ln.bias".into(), shape: vec![h], data: bias });
        }
        if let Some(l) = &mut self.learned {
            out.extend(l.parameters_mut());
        }
        if let Some(m) = &mut self.hedgehog {
            out.extend(m.parameters_mut());
        }
        out
    }

    /// Whether q and k go through the layer norm (a kernel kind with [`QkNorm::LayerNorm`]).
    pub(crate) fn has_layernorm(&self) -> bool {
        self.config.kind.normalises_qk() && self.config.qk_norm == QkNorm::LayerNorm
    }

    /// \\(\tilde x\\) of every row of `x` into `out` (row-major `[n, h]`): the layer norm
    /// scaled by \\(h^{-1/4}\\), keeping what its backward needs in `saved`, or a copy of `x`.
    pub(crate) fn qk_forward(&self, x: MatRef<'_, T>, out: &mut [T], saved: &mut LnSaved<T>) {
        if self.has_layernorm() {
            saved.resize(x.nrows(), x.ncols());
        }
        self.qk_forward_rows(x, out, saved, 0);
    }

    /// [`qk_forward`](Self::qk_forward) of rows `r0..r0 + x.nrows()` of a sequence: `x` and
    /// `out` hold those rows, `saved` every row of the sequence (sized by the caller), of which
    /// these rows are written.
    pub(crate) fn qk_forward_rows(
        &self, x: MatRef<'_, T>, out: &mut [T], saved: &mut LnSaved<T>, r0: usize,
    ) {
        let (n, h) = (x.nrows(), x.ncols());
        if self.has_layernorm() {
            let rows = saved.rows_mut(r0, r0 + n, h);
            layernorm_rows_forward(x, &self.ln_gain, &self.ln_bias, self.scale(), out, rows);
        } else {
            for (i, row) in out.chunks_exact_mut(h).enumerate() {
                copy_row(x, i, row);
            }
        }
    }

    /// The backward of [`qk_forward`](Self::qk_forward): `dx` from `d` = \\(\partial
    /// L/\partial\tilde x\\), adding into `dgain`, `dbias` (empty without a layer norm).
    pub(crate) fn qk_backward(
        &self, d: &[T], saved: &LnSaved<T>, dx: &mut [T], dgain: &mut [T], dbias: &mut [T],
    ) {
        if self.has_layernorm() {
            layernorm_backward(
                d,
                saved.rows(0, saved.rstd.len(), self.ln_gain.len()),
                &self.ln_gain,
                self.scale(),
                dx,
                dgain,
                dbias,
            );
        } else {
            dx.copy_from_slice(d);
        }
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
    ///
    /// ```
    /// use faer::Par;
    /// use polysketch_attention::{Attention, AttentionConfig, AttentionError, QkNorm};
    ///
    /// let (batch, heads, n, h) = (1, 2, 16, 8);
    /// let kind = "random+local:r=8,block=4".parse()?;
    /// let config = AttentionConfig { heads, head_dim: h, kind, qk_norm: QkNorm::LayerNorm, causal: true };
    /// let layer = Attention::<f32>::new(config)?;
    /// let x: Vec<f32> = (0..batch * heads * n * h).map(|i| (i as f32 * 0.37).sin()).collect();
    /// let (out, mut saved) = layer.forward(&x, &x, &x, batch, n, Par::Seq)?;
    /// assert_eq!(out.len(), batch * heads * n * h);
    /// let grads = layer.backward(&mut saved, &out, Par::Seq)?; // ∂⟨out, out⟩/2
    /// assert_eq!(grads.params[0].0, "ln.gain");
    /// // q of another length is refused, naming it
    /// let err = layer.forward(&x[1..], &x, &x, batch, n, Par::Seq).unwrap_err();
    /// assert!(matches!(err, AttentionError::ShapeMismatch { input: "q", .. }));
    /// # Ok::<(), AttentionError>(())
    /// ```
    pub fn forward(
        &self, q: &[T], k: &[T], v: &[T], batch: usize, n: usize, par: Par,
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
    /// Wrong lengths, `batch` or `n` of 0, non-finite values in the inputs or the parameters,
    /// a state over [`MAX_STATE_BYTES`] (estimated before anything is allocated),
    /// [`AttentionError::Overflow`] when finite values give scores past the number format's
    /// range (the output is then not usable; see the book's "Errors" chapter).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_into(
        &self, q: &[T], k: &[T], v: &[T], batch: usize, n: usize, out: &mut [T],
        saved: &mut Saved<T>, par: Par,
    ) -> Result<()> {
        const OP: &str = "Attention::forward";
        check_positive(OP, batch, n)?;
        check_state_bytes::<T>(OP, &self.config, batch, n)?;
        let total = check_qkv(OP, &self.config, [q, k, v], batch, n, par)?;
        check_len(OP, "out", out, total, shape_of(&self.config, batch, n))?;
        self.check_parameters(OP)?;
        let result = self.forward_unchecked(q, k, v, batch, n, out, saved, par);
        self.blame_overflow(OP, result, &[("q", q), ("k", k)], &[("out", out)], par)
    }

    /// The forward once the arguments are checked (sizes, finiteness, parameters).
    #[allow(clippy::too_many_arguments)]
    fn forward_unchecked(
        &self, q: &[T], k: &[T], v: &[T], batch: usize, n: usize, out: &mut [T],
        saved: &mut Saved<T>, par: Par,
    ) -> Result<()> {
        let (heads, h) = (self.config.heads, self.config.head_dim);
        let views: Vec<HeadViews<'_, T>> = (0..batch * heads)
            .map(|idx| HeadViews {
                q: head_matrix(q, idx, n, h),
                k: head_matrix(k, idx, n, h),
                v: head_matrix(v, idx, n, h),
                mask: self.config.mask(),
            })
            .collect();
        (saved.batch, saved.n, saved.layer) = (batch, n, (heads, h));
        saved.layout = crate::HeadLayout::HeadsFirst;
        match self.config.kind {
            AttentionKind::Softmax | AttentionKind::Sliding { .. } => {
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
                if let Inner::Softmax { q: sq, k: sk, v: sv, out: so, lse, used } = &mut saved.inner
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
            AttentionKind::PolySketch(_)
            | AttentionKind::Polynomial { .. }
            | AttentionKind::Local { .. }
            | AttentionKind::Performer { .. }
            | AttentionKind::Hedgehog { .. } => self.kernel_forward(&views, out, saved, par),
        }
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
        &self, saved: &mut Saved<T>, d_out: &[T], grads: &mut Grads<T>, par: Par,
    ) -> Result<()> {
        const OP: &str = "Attention::backward";
        let (heads, h, n) = (self.config.heads, self.config.head_dim, saved.n);
        self.check_saved(OP, saved)?;
        if saved.layout == crate::HeadLayout::TokensFirst {
            return self.backward_tokens_first(saved, d_out, grads, par);
        }
        let total = saved.batch * heads * n * h;
        check_len(
            OP,
            "d_out",
            d_out,
            total,
            format!("[batch {}, heads {heads}, n {n}, h {h}]", saved.batch),
        )?;
        check_finite(OP, "d_out", d_out, par)?;
        self.check_parameters(OP)?;
        let result = self.backward_unchecked(saved, d_out, grads, par);
        let inputs = [("d_out", d_out)];
        let outputs = [("dq", &grads.dq[..]), ("dk", &grads.dk[..]), ("dv", &grads.dv[..])];
        self.blame_overflow(OP, result, &inputs, &outputs, par)?;
        match grads.params.iter().any(|(_, g)| !polysketch_core::all_finite_par(g, par)) {
            true => Err(self.overflow(OP, "the parameters' gradients", &inputs)),
            false => Ok(()),
        }
    }

    /// The backward once the arguments are checked.
    fn backward_unchecked(
        &self, saved: &mut Saved<T>, d_out: &[T], grads: &mut Grads<T>, par: Par,
    ) -> Result<()> {
        const OP: &str = "Attention::backward";
        let (heads, h, n) = (self.config.heads, self.config.head_dim, saved.n);
        let total = saved.batch * heads * n * h;
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
                AttentionKind::PolySketch(_)
                | AttentionKind::Polynomial { .. }
                | AttentionKind::Local { .. }
                | AttentionKind::Performer { .. }
                | AttentionKind::Hedgehog { .. },
            ) => {
                if !core.is_ready() {
                    return Err(used());
                }
                self.kernel_backward(heads, core, d_out, grads, par)
            }
            (
                Inner::Softmax { q, k, v, out, lse, used: consumed },
                AttentionKind::Softmax | AttentionKind::Sliding { .. },
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
                        mask: self.config.mask(),
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

    /// Checks that every parameter is finite (a NaN gain would make every output NaN).
    pub(crate) fn check_parameters(&self, op: &'static str) -> Result<()> {
        for p in self.parameters() {
            if let Some(index) = p.data.iter().position(|x| !x.is_finite()) {
                return Err(AttentionError::NonFiniteParameter { op, name: p.name, index });
            }
        }
        Ok(())
    }

    /// [`AttentionError::Overflow`] for `output`, with the largest magnitudes of `inputs` and of
    /// the layer-norm gain.
    pub(crate) fn overflow(
        &self, op: &'static str, output: &'static str, inputs: &[(&'static str, &[T])],
    ) -> AttentionError {
        let gain = [("ln.gain", &self.ln_gain[..])];
        let has_gain = self.has_layernorm();
        let named: Vec<_> =
            inputs.iter().chain(gain.iter().filter(|_| has_gain)).copied().collect();
        crate::checks::overflow(op, output, &named)
    }

    /// What checked, finite inputs and parameters can still produce, turned into
    /// [`AttentionError::Overflow`]: an internal product that a sketch or the lowtri engine
    /// found non-finite, or a non-finite value in one of `outputs`. `inputs` are the call's
    /// inputs, whose magnitudes the message reports.
    pub(crate) fn blame_overflow(
        &self, op: &'static str, result: Result<()>, inputs: &[(&'static str, &[T])],
        outputs: &[(&'static str, &[T])], par: Par,
    ) -> Result<()> {
        let overflow = |output| self.overflow(op, output, inputs);
        match result {
            // the layer checked its own inputs: a non-finite internal value is an overflow
            Err(AttentionError::Sketch(
                polysketch_sketch::SketchError::Overflow { .. }
                | polysketch_sketch::SketchError::NonFinite { .. },
            )) => Err(overflow("the scores")),
            Err(e) => Err(e),
            Ok(()) => {
                match outputs.iter().find(|(_, x)| !polysketch_core::all_finite_par(x, par)) {
                    Some((name, _)) => Err(overflow(name)),
                    None => Ok(()),
                }
            }
        }
    }

    /// Checks that `saved` was filled by a forward of a layer of this kind and these sizes
    /// (a state from another layer would index past its buffers).
    fn check_saved(&self, op: &'static str, saved: &Saved<T>) -> Result<()> {
        let bad = |reason: String| Err(AttentionError::InvalidState { op, reason });
        let (heads, h) = (self.config.heads, self.config.head_dim);
        // products in checked arithmetic: the state may come from a layer of other sizes
        let count = |sizes: &[usize]| sizes.iter().try_fold(1usize, |a, &x| a.checked_mul(x));
        if !matches!(saved.inner, Inner::Empty) && saved.layer != (heads, h) {
            let (their_heads, their_h) = saved.layer;
            return bad(format!(
                "the saved state comes from a layer with {their_heads} heads of {their_h}, \
                 this layer has {heads} heads of {h}"
            ));
        }
        let fits = match &saved.inner {
            Inner::Empty => return bad("the saved state is empty: run a forward first".into()),
            Inner::Softmax { q, .. } => count(&[saved.batch, saved.n, heads, h]) == Some(q.len()),
            Inner::Kernel { heads: per_head, .. } => {
                count(&[saved.batch, heads]) == Some(per_head.len())
                    && per_head.iter().all(|s| s.qt.nrows() == saved.n && s.qt.cols == h)
            }
        };
        if !fits {
            return bad(format!(
                "the saved state comes from a layer of other sizes than this one's {heads} \
                 heads of {h}"
            ));
        }
        Ok(())
    }
}
