//! One transformer block: its parameters' places, what its forward saves, forward beside
//! backward.

use faer::{MatRef, Par};
use polysketch_attention::layernorm::{LnSaved, layernorm_backward, layernorm_forward};
use polysketch_attention::{Grads, Saved, State};
use polysketch_core::Scalar;

use crate::model::ParamInfo;
use crate::{Gpt, Result, ops};

/// Table indices of one block's tensors.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) ln1_gain: usize,
    pub(crate) ln1_bias: usize,
    pub(crate) wqkv: usize,
    pub(crate) wo: usize,
    pub(crate) ln2_gain: usize,
    pub(crate) ln2_bias: usize,
    pub(crate) wgate: usize,
    pub(crate) wup: usize,
    pub(crate) wdown: usize,
    /// The attention layer's own parameters, in the order of `Attention::parameters`.
    pub(crate) attn: Vec<usize>,
}

/// What the backward needs from one block.
#[derive(Debug, Default)]
pub(crate) struct BlockActs<T: Scalar> {
    /// The first layer norm's state, and its output `[rows, C]`.
    pub(crate) ln1: LnSaved<T>,
    pub(crate) ln1_out: Vec<T>,
    /// The attention layer's own saved state.
    pub(crate) attn: Saved<T>,
    /// `[rows, C]`: the attention output, heads merged (the input of `W_o`).
    pub(crate) y: Vec<T>,
    /// The second layer norm's state, and its output `[rows, C]`.
    pub(crate) ln2: LnSaved<T>,
    pub(crate) ln2_out: Vec<T>,
    /// `[rows, F]` each: the up projection `u`, gelu of the gate `ga` and its derivative
    /// `dga`, and the GLU output `g = ga ∘ u` (the input of `W_d`).
    pub(crate) u: Vec<T>,
    pub(crate) ga: Vec<T>,
    pub(crate) dga: Vec<T>,
    pub(crate) g: Vec<T>,
}

/// The blocks' scratch buffers, reused across blocks and steps.
#[derive(Debug, Default)]
pub(crate) struct Scratch<T: Scalar> {
    /// `[rows, 3C]`: the fused q, k, v projection; then `[batch, heads, n, h]` each, RoPE
    /// applied to q and k; and the attention output in that layout.
    pub(crate) qkv: Vec<T>,
    pub(crate) q: Vec<T>,
    pub(crate) k: Vec<T>,
    pub(crate) v: Vec<T>,
    pub(crate) att: Vec<T>,
    /// `[rows, C]`: a projection's output before it is added to the residual stream.
    pub(crate) tmp: Vec<T>,
    /// `[rows, F]`: the gate before gelu (forward), the GLU output's gradient (backward).
    pub(crate) a: Vec<T>,
    /// The attention layer's gradients.
    pub(crate) grads: Grads<T>,
    /// Backward: `[rows, C]` a layer norm output's gradient, `[rows, F]` the gate's and the up
    /// projection's, `[rows, 3C]` the fused projection's.
    pub(crate) dln: Vec<T>,
    pub(crate) da: Vec<T>,
    pub(crate) du: Vec<T>,
    pub(crate) dqkv: Vec<T>,
}

/// Attention mode of a block's forward.
pub(crate) enum Mode<'a, T: Scalar> {
    Train(&'a mut Saved<T>),
    Infer(&'a mut State<T>),
}

pub(crate) fn resize<T: Scalar>(v: &mut Vec<T>, len: usize) {
    v.resize(len, T::zero());
}

/// Two disjoint tensors of a flat buffer, mutably (`a` before `b`).
pub(crate) fn two_mut<'a, T>(
    flat: &'a mut [T], a: &ParamInfo, b: &ParamInfo,
) -> (&'a mut [T], &'a mut [T]) {
    debug_assert!(a.offset + a.len() <= b.offset);
    let (lo, hi) = flat.split_at_mut(b.offset);
    (&mut lo[a.offset..a.offset + a.len()], &mut hi[..b.len()])
}

impl<T: Scalar> Gpt<T> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block_forward(
        &self, l: usize, x: &mut [T], batch: usize, n: usize, pos0: usize, ba: &mut BlockActs<T>,
        mode: Mode<'_, T>, s: &mut Scratch<T>, par: Par,
    ) -> Result<()> {
        let (c, f, heads, h) =
            (self.config.d_model, self.config.hidden(), self.config.heads, self.config.head_dim());
        let rows = batch * n;
        let b = &self.blocks[l];
        let p = |id: usize| self.table[id].of(&self.params);
        resize(&mut ba.ln1_out, rows * c);
        layernorm_forward(
            MatRef::from_row_major_slice(x, rows, c),
            p(b.ln1_gain),
            p(b.ln1_bias),
            T::one(),
            &mut ba.ln1_out,
            &mut ba.ln1,
        );
        resize(&mut s.qkv, rows * 3 * c);
        ops::linear_forward(&ba.ln1_out, p(b.wqkv), rows, c, 3 * c, &mut s.qkv, par);
        for buf in [&mut s.q, &mut s.k, &mut s.v, &mut s.att] {
            resize(buf, rows * c);
        }
        ops::split_heads_forward(&s.qkv, batch, n, heads, h, pos0, &mut s.q, &mut s.k, &mut s.v);
        match mode {
            Mode::Train(saved) => {
                self.attn[l].forward_into(&s.q, &s.k, &s.v, batch, n, &mut s.att, saved, par)?
            }
            Mode::Infer(state) => {
                self.attn[l].forward_chunk(&s.q, &s.k, &s.v, batch, n, &mut s.att, state, par)?
            }
        }
        resize(&mut ba.y, rows * c);
        ops::merge_heads(&s.att, batch, n, heads, h, &mut ba.y);
        resize(&mut s.tmp, rows * c);
        ops::linear_forward(&ba.y, p(b.wo), rows, c, c, &mut s.tmp, par);
        ops::add_assign(x, &s.tmp);
        resize(&mut ba.ln2_out, rows * c);
        layernorm_forward(
            MatRef::from_row_major_slice(x, rows, c),
            p(b.ln2_gain),
            p(b.ln2_bias),
            T::one(),
            &mut ba.ln2_out,
            &mut ba.ln2,
        );
        for buf in [&mut s.a, &mut ba.u, &mut ba.ga, &mut ba.dga, &mut ba.g] {
            resize(buf, rows * f);
        }
        ops::linear_forward(&ba.ln2_out, p(b.wgate), rows, c, f, &mut s.a, par);
        ops::linear_forward(&ba.ln2_out, p(b.wup), rows, c, f, &mut ba.u, par);
        ops::glu_forward(&s.a, &ba.u, &mut ba.ga, &mut ba.dga, &mut ba.g, f);
        ops::linear_forward(&ba.g, p(b.wdown), rows, f, c, &mut s.tmp, par);
        ops::add_assign(x, &s.tmp);
        Ok(())
    }

    /// Backward of block `l`: `dx` holds \\(\partial L/\partial x''\\) on entry and
    /// \\(\partial L/\partial x\\) on return; the parameter gradients are **added** into
    /// `grads`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block_backward(
        &self, l: usize, batch: usize, n: usize, ba: &mut BlockActs<T>, dx: &mut [T],
        s: &mut Scratch<T>, grads: &mut [T], par: Par,
    ) -> Result<()> {
        let (c, heads, h) = (self.config.d_model, self.config.heads, self.config.head_dim());
        let rows = batch * n;
        let p = |id: usize| self.table[id].of(&self.params);
        let b = &self.blocks[l];
        // x'' = x' + g·W_dᵀ
        let mut dg = core::mem::take(&mut s.a);
        self.dense_backward(b.wdown, dx, &ba.g, &mut dg, false, grads, par);
        ops::glu_backward(&dg, &ba.u, &ba.ga, &ba.dga, &mut s.da, &mut s.du);
        s.a = dg;
        self.dense_backward(b.wgate, &s.da, &ba.ln2_out, &mut s.dln, false, grads, par);
        self.dense_backward(b.wup, &s.du, &ba.ln2_out, &mut s.dln, true, grads, par);
        {
            let (dgain, dbias) = two_mut(grads, &self.table[b.ln2_gain], &self.table[b.ln2_bias]);
            layernorm_backward(&s.dln, &ba.ln2, p(b.ln2_gain), T::one(), &mut s.tmp, dgain, dbias);
        }
        ops::add_assign(dx, &s.tmp);
        // x' = x + y·W_oᵀ
        self.dense_backward(b.wo, dx, &ba.y, &mut s.dln, false, grads, par);
        resize(&mut s.att, rows * c);
        ops::unmerge_heads(&s.dln, batch, n, heads, h, &mut s.att);
        self.attn[l].backward_into(&mut ba.attn, &s.att, &mut s.grads, par)?;
        for ((_, g), &id) in s.grads.params.iter().zip(&b.attn) {
            self.table[id].of_mut(grads).iter_mut().zip(g).for_each(|(d, g)| *d += *g);
        }
        let Grads { dq, dk, dv, .. } = &mut s.grads;
        ops::split_heads_backward(dq, dk, dv, batch, n, heads, h, 0, &mut s.dqkv);
        self.dense_backward(b.wqkv, &s.dqkv, &ba.ln1_out, &mut s.dln, false, grads, par);
        {
            let (dgain, dbias) = two_mut(grads, &self.table[b.ln1_gain], &self.table[b.ln1_bias]);
            layernorm_backward(&s.dln, &ba.ln1, p(b.ln1_gain), T::one(), &mut s.tmp, dgain, dbias);
        }
        ops::add_assign(dx, &s.tmp);
        Ok(())
    }

    /// Backward of the dense layer `id` (`out = x · Wᵀ`, `x: [rows, i]`, `W: [o, i]`):
    /// `dx (+)= dy · W` (added when `accumulate`) and `∂W += dyᵀ · x` into `grads`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dense_backward(
        &self, id: usize, dy: &[T], x: &[T], dx: &mut [T], accumulate: bool, grads: &mut [T],
        par: Par,
    ) {
        let info = &self.table[id];
        let (o, i) = (info.shape[0], info.shape[1]);
        let w = info.of(&self.params);
        ops::linear_backward(dy, x, w, dy.len() / o, i, o, dx, accumulate, info.of_mut(grads), par);
    }
}
