//! One transformer block: its parameters' places, what its forward saves, forward beside
//! backward.

use faer::{MatRef, Par};
use polysketch_attention::layernorm::{LnSaved, layernorm_backward, layernorm_forward};
use polysketch_attention::{MultiHeadSaved, ProjectionGrads, Projections, State};
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
    /// The multi-head block's saved state (its attention's, the merged heads, its scratch).
    pub(crate) mh: MultiHeadSaved<T>,
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
    /// `[rows, C]`: a projection's output before it is added to the residual stream.
    pub(crate) tmp: Vec<T>,
    /// `[rows, F]`: the gate before gelu (forward), the GLU output's gradient (backward).
    pub(crate) a: Vec<T>,
    /// Backward: `[rows, C]` a layer norm output's gradient, `[rows, F]` the gate's and the up
    /// projection's.
    pub(crate) dln: Vec<T>,
    pub(crate) da: Vec<T>,
    pub(crate) du: Vec<T>,
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
    /// Forward of block `l` on the residual stream `x`: training (saving into `ba`) or, with a
    /// decoding `state`, inference (RoPE at the state's positions).
    pub(crate) fn block_forward(
        &self, l: usize, x: &mut [T], batch: usize, n: usize, ba: &mut BlockActs<T>,
        state: Option<&mut State<T>>, s: &mut Scratch<T>, par: Par,
    ) -> Result<()> {
        let (c, f) = (self.config.d_model, self.config.hidden());
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
        resize(&mut s.tmp, rows * c);
        let w = Projections { wqkv: p(b.wqkv), wo: p(b.wo) };
        let mh = &self.attn[l];
        match state {
            None => mh.forward_with(w, &ba.ln1_out, batch, n, &mut s.tmp, &mut ba.mh, par)?,
            Some(st) => {
                mh.forward_chunk_with(w, &ba.ln1_out, n, st, &mut s.tmp, &mut ba.mh, par)?
            }
        }
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
        let c = self.config.d_model;
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
        // x' = x + MultiHead(ln1_out): its input gradient into dln, its weights' into grads
        let w = Projections { wqkv: p(b.wqkv), wo: p(b.wo) };
        {
            let (dwqkv, dwo) = two_mut(grads, &self.table[b.wqkv], &self.table[b.wo]);
            let dw = ProjectionGrads { wqkv: dwqkv, wo: dwo };
            resize(&mut s.dln, rows * c);
            let mh = &self.attn[l];
            mh.backward_with(w, &ba.ln1_out, &mut ba.mh, dx, &mut s.dln, dw, par)?;
        }
        for ((_, g), &id) in ba.mh.attention_grads().iter().zip(&b.attn) {
            self.table[id].of_mut(grads).iter_mut().zip(g).for_each(|(d, g)| *d += *g);
        }
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
