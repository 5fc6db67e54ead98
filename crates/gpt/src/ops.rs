//! The model's layers as forward/backward function pairs, side by side (as llm.c has them),
//! on row-major buffers. Rows are independent in every elementwise layer, so the rayon
//! parallelism here never changes a result; reductions over rows run in row order.
//!
//! These are low-level kernels: they assume the shapes the model checked (`# Panics` on a
//! mismatch) and do no input validation.

use polysketch_core::Scalar;
use rayon::prelude::*;

/// The dense layers, head split/merge and RoPE live with the multi-head block in the attention
/// crate (one implementation); re-exported here for the model's other layers.
pub use polysketch_attention::dense::{
    linear_backward, linear_forward, merge_heads, rope_table, split_heads_backward,
    split_heads_forward, unmerge_heads,
};

/// Rows per rayon task in the elementwise layers.
const ROWS: usize = 64;

/// Sinusoidal position embedding (Vaswani et al.): \\(e_{t,2i} = \sin(t\,\omega_i)\\),
/// \\(e_{t,2i+1} = \cos(t\,\omega_i)\\) with \\(\omega_i = 10000^{-2i/C}\\).
pub fn sinusoid<T: Scalar>(t: usize, c: usize, out: &mut [T]) {
    for i in 0..c / 2 {
        let w = 10000f64.powf(-2.0 * i as f64 / c as f64);
        let (s, co) = (t as f64 * w).sin_cos();
        out[2 * i] = T::of(s);
        out[2 * i + 1] = T::of(co);
    }
    if c % 2 == 1 {
        out[c - 1] = T::of((t as f64 * 10000f64.powf(-((c - 1) as f64) / c as f64)).sin());
    }
}

/// Embedding: row \\((b, t)\\) of `out` (`[batch·n, C]`) is
/// \\(\sqrt C\,W_{te}[\text{tok}_{b,t}] + e_{\text{pos0}+t}\\). `wte`: `[V, C]`. The
/// position rows \\(e\\) are made once per position (`[n, C]`), not once per row.
pub fn embed_forward<T: Scalar>(
    tokens: &[u32], n: usize, pos0: usize, wte: &[T], c: usize, out: &mut [T],
) {
    let scale = T::of((c as f64).sqrt());
    let mut table = vec![T::zero(); n * c];
    table.par_chunks_mut(c).enumerate().for_each(|(t, e)| sinusoid(pos0 + t, c, e));
    out.par_chunks_mut(c).zip(tokens.par_iter()).enumerate().for_each(|(row, (o, &tok))| {
        let t = row % n;
        o.copy_from_slice(&table[t * c..(t + 1) * c]);
        let e = &wte[tok as usize * c..(tok as usize + 1) * c];
        o.iter_mut().zip(e).for_each(|(o, e)| *o += scale * *e);
    });
}

/// Backward of [`embed_forward`]: `dwte[tok] += √C · dout[row]`, rows in order.
pub fn embed_backward<T: Scalar>(dout: &[T], tokens: &[u32], c: usize, dwte: &mut [T]) {
    let scale = T::of((c as f64).sqrt());
    for (d, &tok) in dout.chunks_exact(c).zip(tokens) {
        let g = &mut dwte[tok as usize * c..(tok as usize + 1) * c];
        g.iter_mut().zip(d).for_each(|(g, d)| *g += scale * *d);
    }
}

/// GLU with GELU: `g = gelu(a) ∘ u`, saving `gelu(a)` in `ga` and `gelu'(a)` in `dga`.
pub fn glu_forward<T: Scalar>(
    a: &[T], u: &[T], ga: &mut [T], dga: &mut [T], g: &mut [T], width: usize,
) {
    let chunk = ROWS * width;
    (g.par_chunks_mut(chunk), ga.par_chunks_mut(chunk), dga.par_chunks_mut(chunk))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, (g, ga, dga))| {
            let (a, u) = (&a[i * chunk..][..g.len()], &u[i * chunk..][..g.len()]);
            polysketch_attention::gelu_with_grad(a, ga, dga);
            g.iter_mut().zip(ga.iter().zip(u)).for_each(|(g, (x, y))| *g = *x * *y);
        });
}

/// Backward of [`glu_forward`]: `da = dg ∘ u ∘ gelu'(a)`, `du = dg ∘ gelu(a)`.
pub fn glu_backward<T: Scalar>(dg: &[T], u: &[T], ga: &[T], dga: &[T], da: &mut [T], du: &mut [T]) {
    (
        da.par_iter_mut(),
        du.par_iter_mut(),
        dg.par_iter(),
        u.par_iter(),
        ga.par_iter(),
        dga.par_iter(),
    )
        .into_par_iter()
        .with_min_len(ROWS * 64)
        .for_each(|(da, du, dg, u, ga, dga)| {
            *da = *dg * *u * *dga;
            *du = *dg * *ga;
        });
}

/// `x += y` (the residual connections; their backward is the identity).
pub fn add_assign<T: Scalar>(x: &mut [T], y: &[T]) {
    x.par_iter_mut().zip(y.par_iter()).with_min_len(ROWS * 64).for_each(|(x, y)| *x += *y);
}

/// Token id that marks a position without a target (no loss there).
pub const IGNORE: u32 = u32::MAX;

/// Softmax cross-entropy of `logits` (`[rows, V]`) against `targets` (`[rows]`, [`IGNORE`]
/// for none): returns \\(\sum_i -\log p_{i, y_i}\\) over rows with a target (summed in f64,
/// rows in order) and how many there were. `logits` is overwritten by the probabilities.
pub fn cross_entropy_forward<T: Scalar>(
    logits: &mut [T], targets: &[u32], v: usize,
) -> (f64, usize) {
    let mut losses = vec![0.0f64; targets.len()];
    logits.par_chunks_mut(v).zip(losses.par_iter_mut()).zip(targets.par_iter()).for_each(
        |((row, loss), &y)| {
            let max = row.iter().fold(T::neg_infinity(), |m, x| m.max(*x));
            let mut s = 0.0f64;
            row.iter_mut().for_each(|x| {
                *x = (*x - max).exp();
                s += x.to_f64().unwrap_or(0.0);
            });
            let inv = T::of(1.0 / s);
            row.iter_mut().for_each(|x| *x *= inv);
            if y != IGNORE {
                *loss = -(row[y as usize].to_f64().unwrap_or(0.0).max(f64::MIN_POSITIVE)).ln();
            }
        },
    );
    let count = targets.iter().filter(|&&y| y != IGNORE).count();
    (losses.iter().sum(), count)
}

/// Backward of [`cross_entropy_forward`] for the loss \\(\text{scale}\cdot\sum_i -\log p_{i,y_i}\\):
/// `probs` (its output) becomes \\(\partial L/\partial\text{logits} = \text{scale}(p - e_{y})\\),
/// zero on rows without a target.
pub fn cross_entropy_backward<T: Scalar>(probs: &mut [T], targets: &[u32], v: usize, scale: T) {
    probs.par_chunks_mut(v).zip(targets.par_iter()).for_each(|(row, &y)| {
        if y == IGNORE {
            row.iter_mut().for_each(|x| *x = T::zero());
        } else {
            row.iter_mut().for_each(|x| *x *= scale);
            row[y as usize] -= scale;
        }
    });
}
