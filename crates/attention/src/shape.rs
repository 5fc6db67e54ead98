//! A typed description of a call's inputs, so that batch and n cannot be swapped silently and a
//! model can pass its projections as they come, `[batch, n, heads, h]`, without writing head
//! split and merge loops.

use faer::Par;
use polysketch_core::Scalar;

use crate::checks::{check_len, check_positive, elements};
use crate::{Attention, Grads, Result, Saved};

/// Where the heads sit in the memory of `q`, `k`, `v`, the output and their gradients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum HeadLayout {
    /// `[batch, heads, n, h]`: each head's tokens contiguous (the layer computes in it).
    #[default]
    HeadsFirst,
    /// `[batch, n, heads, h]`: each token's heads contiguous, the form of a `[batch, n, d]`
    /// projection with \\(d = \mathrm{heads} \cdot h\\).
    TokensFirst,
}

/// The inputs of one call: `batch` sequences of `n` tokens each, laid out as `layout` (the
/// number of heads and the head size are the layer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub n: usize,
    /// Memory layout.
    pub layout: HeadLayout,
}

/// `[batch, a, b, h]` → `[batch, b, a, h]` (the same function swaps back with `a` and `b`
/// exchanged).
pub(crate) fn swap_middle<T: Copy>(
    x: &[T], (batch, a, b, h): (usize, usize, usize, usize),
) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len());
    for s in 0..batch {
        for j in 0..b {
            for i in 0..a {
                let start = ((s * a + i) * b + j) * h;
                out.extend_from_slice(&x[start..start + h]);
            }
        }
    }
    out
}

impl<T: Scalar> Attention<T> {
    /// [`forward`](Self::forward) with the inputs described by `shape`: in
    /// [`HeadLayout::TokensFirst`] `q`, `k`, `v` and the output are `[batch, n, heads, h]`, and the
    /// returned state makes [`backward`](Self::backward) take and give that layout too.
    ///
    /// # Errors
    /// As [`forward`](Self::forward); lengths are checked against `shape` (naming the input
    /// and the layout) before anything is copied.
    ///
    /// ```
    /// use faer::Par;
    /// use polysketch_attention::{Attention, AttentionConfig, AttentionError, HeadLayout, Shape};
    ///
    /// let kind = "random+local:r=8,block=4".parse()?;
    /// let layer = Attention::<f32>::new(AttentionConfig::new(2, 4, kind))?;
    /// // a [batch = 1, n = 6, d = 8] projection, as a model has it
    /// let x: Vec<f32> = (0..6 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
    /// let shape = Shape { batch: 1, n: 6, layout: HeadLayout::TokensFirst };
    /// let (out, mut saved) = layer.forward_shaped(&x, &x, &x, shape, Par::Seq)?;
    /// let grads = layer.backward(&mut saved, &out, Par::Seq)?; // dq, dk, dv: [1, 6, 2, 4]
    /// assert_eq!(grads.dq.len(), 6 * 8);
    /// # Ok::<(), AttentionError>(())
    /// ```
    pub fn forward_shaped(
        &self, q: &[T], k: &[T], v: &[T], shape: Shape, par: Par,
    ) -> Result<(Vec<T>, Saved<T>)> {
        const OP: &str = "Attention::forward_shaped";
        let Shape { batch, n, layout } = shape;
        if layout == HeadLayout::HeadsFirst {
            return self.forward(q, k, v, batch, n, par);
        }
        let (heads, h) = (self.config.heads, self.config.head_dim);
        check_positive(OP, batch, n)?;
        let total = elements::<T>(OP, &self.config, batch, n)?;
        let described = || format!("[batch {batch}, n {n}, heads {heads}, h {h}] (tokens first)");
        for (name, x) in [("q", q), ("k", k), ("v", v)] {
            check_len(OP, name, x, total, described())?;
        }
        let dims = (batch, n, heads, h);
        let (qh, kh, vh) = (swap_middle(q, dims), swap_middle(k, dims), swap_middle(v, dims));
        let (out, mut saved) = self.forward(&qh, &kh, &vh, batch, n, par)?;
        saved.layout = HeadLayout::TokensFirst;
        Ok((swap_middle(&out, (batch, heads, n, h)), saved))
    }

    /// The backward of a tokens-first forward: `d_out` and the input gradients in
    /// `[batch, n, heads, h]`.
    pub(crate) fn backward_tokens_first(
        &self, saved: &mut Saved<T>, d_out: &[T], grads: &mut Grads<T>, par: Par,
    ) -> Result<()> {
        let (heads, h, batch, n) = (self.config.heads, self.config.head_dim, saved.batch, saved.n);
        let total = elements::<T>("Attention::backward", &self.config, batch, n)?;
        let described = format!("[batch {batch}, n {n}, heads {heads}, h {h}] (tokens first)");
        check_len("Attention::backward", "d_out", d_out, total, described)?;
        let d = swap_middle(d_out, (batch, n, heads, h));
        saved.layout = HeadLayout::HeadsFirst;
        let result = self.backward_into(saved, &d, grads, par);
        saved.layout = HeadLayout::TokensFirst;
        result?;
        for g in [&mut grads.dq, &mut grads.dk, &mut grads.dv] {
            *g = swap_middle(g, (batch, heads, n, h));
        }
        Ok(())
    }
}
