//! Packed sequences: many sequences of different lengths in one row, given by offsets (like
//! `cu_seqlens`), with no attention across their boundaries, forward and backward.

use faer::Par;
use polysketch_core::Scalar;

use crate::checks::{check_finite, check_len};
use crate::{Attention, Grads, Saved};
use crate::{AttentionError, Result};

/// What [`Attention::backward_packed`] needs from [`Attention::forward_packed`] (reusable).
#[derive(Debug, Default)]
pub struct PackedSaved<T: Scalar> {
    offsets: Vec<usize>,
    /// One state per non-empty sequence, in order.
    segments: Vec<Saved<T>>,
    /// Work buffers: one sequence's `[heads, len, h]` inputs and gradients.
    buf: [Vec<T>; 4],
    grads: Grads<T>,
}

impl<T: Scalar> PackedSaved<T> {
    /// An empty state.
    pub fn new() -> Self {
        Self {
            offsets: Vec::new(),
            segments: Vec::new(),
            buf: Default::default(),
            grads: Grads::default(),
        }
    }
}

/// Checks `offsets` against `total` tokens: `0 = o_0 ≤ o_1 ≤ … ≤ o_s = total`, `s ≥ 1`.
fn check_offsets(op: &'static str, offsets: &[usize], total: usize) -> Result<()> {
    let ok = offsets.len() >= 2
        && offsets[0] == 0
        && offsets[offsets.len() - 1] == total
        && offsets.windows(2).all(|w| w[0] <= w[1]);
    if ok {
        Ok(())
    } else {
        Err(AttentionError::InvalidArgument {
            op,
            argument: "offsets",
            expected: "rising from 0 to the number of packed tokens",
            got: format!("{offsets:?} for {total} tokens"),
        })
    }
}

/// For every head, the range of rows `start..end` in a packed `[heads, total, h]` buffer and
/// the matching range in a sequence's own `[heads, end - start, h]` buffer.
fn head_ranges(
    heads: usize, total: usize, h: usize, (start, end): (usize, usize),
) -> impl Iterator<Item = (core::ops::Range<usize>, core::ops::Range<usize>)> {
    let len = end - start;
    (0..heads).map(move |head| {
        ((head * total + start) * h..(head * total + end) * h, head * len * h..(head + 1) * len * h)
    })
}

/// One sequence's rows out of a packed buffer into `seg` (resized to fit).
fn gather<T: Scalar>(
    packed: &[T], seg: &mut Vec<T>, heads: usize, total: usize, h: usize, span: (usize, usize),
) {
    seg.resize(heads * (span.1 - span.0) * h, T::zero());
    for (p, s) in head_ranges(heads, total, h, span) {
        seg[s].copy_from_slice(&packed[p]);
    }
}

/// One sequence's rows back into a packed buffer.
fn scatter<T: Scalar>(
    seg: &[T], packed: &mut [T], heads: usize, total: usize, h: usize, span: (usize, usize),
) {
    for (p, s) in head_ranges(heads, total, h, span) {
        packed[p].copy_from_slice(&seg[s]);
    }
}

impl<T: Scalar> Attention<T> {
    /// Causal attention over packed sequences: sequence \\(s\\) is tokens
    /// `offsets[s]..offsets[s + 1]` of every head, and attends only within itself (the same as
    /// running [`forward`](Self::forward) on each alone).
    ///
    /// # Shapes
    /// `q`, `k`, `v`, `out`: `[heads, total, h]` row-major; `offsets`: `[s + 1]`, rising from 0
    /// to `total`.
    ///
    /// # Errors
    /// Offsets that do not rise from 0 to `total`; those of [`forward_into`](Self::forward_into).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_packed(
        &self, q: &[T], k: &[T], v: &[T], offsets: &[usize], out: &mut [T],
        saved: &mut PackedSaved<T>, par: Par,
    ) -> Result<()> {
        const OP: &str = "Attention::forward_packed";
        let (heads, h) = (self.config.heads, self.config.head_dim);
        // the packed length comes from q; the offsets must cover it exactly (heads · h may not
        // fit in a usize: then no buffer holds even one token)
        let width = heads.checked_mul(h).ok_or(AttentionError::TooLarge {
            op: OP,
            bytes: polysketch_core::saturating_product(&[heads, h, size_of::<T>()]),
            limit: usize::MAX as u128,
        })?;
        let total = q.len() / width;
        let len = total * width;
        check_len(OP, "q", q, len, format!("[heads {heads}, total, h {h}]"))?;
        check_offsets(OP, offsets, total)?;
        let shape = format!("[heads {heads}, total {total}, h {h}]");
        for (name, x) in [("q", q), ("k", k), ("v", v)] {
            check_len(OP, name, x, len, shape.clone())?;
            check_finite(OP, name, x, par)?;
        }
        check_len(OP, "out", out, len, shape)?;
        saved.offsets = offsets.to_vec();
        let spans: Vec<(usize, usize)> =
            offsets.windows(2).map(|w| (w[0], w[1])).filter(|(a, b)| b > a).collect();
        saved.segments.resize_with(spans.len(), Saved::new);
        let [bq, bk, bv, bo] = &mut saved.buf;
        for (&span, seg) in spans.iter().zip(saved.segments.iter_mut()) {
            gather(q, bq, heads, total, h, span);
            gather(k, bk, heads, total, h, span);
            gather(v, bv, heads, total, h, span);
            bo.resize(bq.len(), T::zero());
            self.forward_into(bq, bk, bv, 1, span.1 - span.0, bo, seg, par)?;
            scatter(bo, out, heads, total, h, span);
        }
        Ok(())
    }

    /// Gradients of [`forward_packed`](Self::forward_packed): `dq`, `dk`, `dv` as
    /// `[heads, total, h]`, and the parameters' summed over the sequences (in order).
    ///
    /// # Errors
    /// Wrong length or non-finite `d_out`; a state that is empty or used.
    pub fn backward_packed(
        &self, saved: &mut PackedSaved<T>, d_out: &[T], grads: &mut Grads<T>, par: Par,
    ) -> Result<()> {
        const OP: &str = "Attention::backward_packed";
        let (heads, h) = (self.config.heads, self.config.head_dim);
        let total = *saved.offsets.last().unwrap_or(&0);
        let len = heads.checked_mul(h).and_then(|w| w.checked_mul(total));
        let Some(len) = len.filter(|_| !saved.segments.is_empty()) else {
            return Err(AttentionError::InvalidState {
                op: OP,
                reason: "the saved state is empty (or from a layer of other sizes)".into(),
            });
        };
        check_len(OP, "d_out", d_out, len, format!("[heads {heads}, total {total}, h {h}]"))?;
        check_finite(OP, "d_out", d_out, par)?;
        for g in [&mut grads.dq, &mut grads.dk, &mut grads.dv] {
            g.clear();
            g.resize(len, T::zero());
        }
        grads.params.clear();
        let spans: Vec<(usize, usize)> =
            saved.offsets.windows(2).map(|w| (w[0], w[1])).filter(|(a, b)| b > a).collect();
        let [bd, ..] = &mut saved.buf;
        for (&span, seg) in spans.iter().zip(saved.segments.iter_mut()) {
            gather(d_out, bd, heads, total, h, span);
            let g = &mut saved.grads;
            self.backward_into(seg, bd, g, par)?;
            scatter(&g.dq, &mut grads.dq, heads, total, h, span);
            scatter(&g.dk, &mut grads.dk, heads, total, h, span);
            scatter(&g.dv, &mut grads.dv, heads, total, h, span);
            if grads.params.is_empty() {
                grads.params.clone_from(&g.params);
            } else {
                for ((_, acc), (_, p)) in grads.params.iter_mut().zip(&g.params) {
                    acc.iter_mut().zip(p).for_each(|(a, b)| *a += *b);
                }
            }
        }
        Ok(())
    }
}
