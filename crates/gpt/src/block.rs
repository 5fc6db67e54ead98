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
    pub(crate) ln1: LnSaved<T>,
    pub(crate) ln1_out: Vec<T>,
    pub(crate) attn: Saved<T>,
    pub(crate) y: Vec<T>,
    pub(crate) ln2: LnSaved<T>,
    pub(crate) ln2_out: Vec<T>,
    pub(crate) u: Vec<T>,
    pub(crate) ga: Vec<T>,
    pub(crate) dga: Vec<T>,
    pub(crate) g: Vec<T>,
}

/// The blocks' scratch buffers, reused across blocks and steps.
#[derive(Debug, Default)]
pub(crate) struct Scratch<T: Scalar> {
    pub(crate) qkv: Vec<T>,
    pub(crate) q: Vec<T>,
    pub(crate) k: Vec<T>,
    pub(crate) v: Vec<T>,
    pub(crate) att: Vec<T>,
    pub(crate) tmp: Vec<T>,
    pub(crate) a: Vec<T>,
    pub(crate) grads: Grads<T>,
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
        let (c, f, heads, h) =
            (self.config.d_model, self.config.hidden(), self.config.heads, self.config.head_dim());
        let rows = batch * n;
        let p = |id: usize| self.table[id].of(&self.params);
        let b = &self.blocks[l];
        // x'' = x' + g·W_dᵀ
        let mut dg = core::mem::take(&mut s.a);
        ops::linear_backward(
            dx,
            &ba.g,
            p(b.wdown),
            rows,
            f,
            c,
            &mut dg,
            false,
            self.table[b.wdown].of_mut(grads),
            par,
        );
        ops::glu_backward(&dg, &ba.u, &ba.ga, &ba.dga, &mut s.da, &mut s.du);
        s.a = dg;
        ops::linear_backward(
            &s.da,
            &ba.ln2_out,
            p(b.wgate),
            rows,
            c,
            f,
            &mut s.dln,
            false,
            self.table[b.wgate].of_mut(grads),
            par,
        );
        ops::linear_backward(
            &s.du,
            &ba.ln2_out,
            p(b.wup),
            rows,
            c,
            f,
            &mut s.dln,
            true,
            self.table[b.wup].of_mut(grads),
            par,
        );
        {
            let (dgain, dbias) = two_mut(grads, &self.table[b.ln2_gain], &self.table[b.ln2_bias]);
            layernorm_backward(&s.dln, &ba.ln2, p(b.ln2_gain), T::one(), &mut s.tmp, dgain, dbias);
        }
        ops::add_assign(dx, &s.tmp);
        // x' = x + y·W_oᵀ
        ops::linear_backward(
            dx,
            &ba.y,
            p(b.wo),
            rows,
            c,
            c,
            &mut s.dln,
            false,
            self.table[b.wo].of_mut(grads),
            par,
        );
        resize(&mut s.att, rows * c);
        ops::unmerge_heads(&s.dln, batch, n, heads, h, &mut s.att);
        self.attn[l].backward_into(&mut ba.attn, &s.att, &mut s.grads, par)?;
        for ((_, g), &id) in s.grads.params.iter().zip(&b.attn) {
            self.table[id].of_mut(grads).iter_mut().zip(g).for_each(|(d, g)| *d += *g);
        }
        let Grads { dq, dk, dv, .. } = &mut s.grads;
        ops::split_heads_backward(dq, dk, dv, batch, n, heads, h, 0, &mut s.dqkv);
        ops::linear_backward(
            &s.dqkv,
            &ba.ln1_out,
            p(b.wqkv),
            rows,
            c,
            3 * c,
            &mut s.dln,
            false,
            self.table[b.wqkv].of_mut(grads),
            par,
        );
        {
            let (dgain, dbias) = two_mut(grads, &self.table[b.ln1_gain], &self.table[b.ln1_bias]);
            layernorm_backward(&s.dln, &ba.ln1, p(b.ln1_gain), T::one(), &mut s.tmp, dgain, dbias);
        }
        ops::add_assign(dx, &s.tmp);
        Ok(())
    }
}
