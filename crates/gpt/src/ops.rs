//! The model's layers as forward/backward function pairs, side by side (as llm.c has them),
//! on row-major buffers. Rows are independent in every elementwise layer, so the rayon
//! parallelism here never changes a result; reductions over rows run in row order.
//!
//! These are low-level kernels: they assume the shapes the model checked (`# Panics` on a
//! mismatch) and do no input validation.

use faer::{MatMut, MatRef, Par};
use polysketch_core::{Scalar, linalg::gemm};
use rayon::prelude::*;

/// Rows per rayon task in the elementwise layers.
const ROWS: usize = 64;

fn mat<T: Scalar>(x: &[T], rows: usize, cols: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(&x[..rows * cols], rows, cols)
}

fn mat_mut<T: Scalar>(x: &mut [T], rows: usize, cols: usize) -> MatMut<'_, T> {
    MatMut::from_row_major_slice_mut(&mut x[..rows * cols], rows, cols)
}

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
/// \\(\sqrt C\,W_{te}[\text{tok}_{b,t}] + e_{\text{pos0}+t}\\). `wte`: `[V, C]`.
pub fn embed_forward<T: Scalar>(
    tokens: &[u32], n: usize, pos0: usize, wte: &[T], c: usize, out: &mut [T],
) {
    let scale = T::of((c as f64).sqrt());
    out.par_chunks_mut(c).zip(tokens.par_iter()).enumerate().for_each(|(row, (o, &tok))| {
        sinusoid(pos0 + row % n, c, o);
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

/// Dense layer without bias: `out [rows, o] = x [rows, i] · Wᵀ`, `w: [o, i]` (PyTorch layout).
pub fn linear_forward<T: Scalar>(
    x: &[T], w: &[T], rows: usize, i: usize, o: usize, out: &mut [T], par: Par,
) {
    gemm(mat_mut(out, rows, o), mat(x, rows, i), mat(w, o, i).transpose(), T::one(), false, par);
}

/// Backward of [`linear_forward`]: `dx (+)= dout · W` (added when `accumulate_dx`) and
/// `dw += doutᵀ · x`.
pub fn linear_backward<T: Scalar>(
    dout: &[T], x: &[T], w: &[T], rows: usize, i: usize, o: usize, dx: &mut [T],
    accumulate_dx: bool, dw: &mut [T], par: Par,
) {
    gemm(mat_mut(dx, rows, i), mat(dout, rows, o), mat(w, o, i), T::one(), accumulate_dx, par);
    gemm(mat_mut(dw, o, i), mat(dout, rows, o).transpose(), mat(x, rows, i), T::one(), true, par);
}

/// The RoPE angles' cosines and sines for positions `pos0 .. pos0 + n` and head size `h`:
/// `[n, h/2]` pairs, pair \\(i\\) of position \\(t\\) at angle \\(t\,\theta^{-2i/h}\\),
/// \\(\theta = 10000\\).
pub fn rope_table<T: Scalar>(pos0: usize, n: usize, h: usize) -> Vec<(T, T)> {
    let half = h / 2;
    let freq: Vec<f64> = (0..half).map(|i| 10000f64.powf(-2.0 * i as f64 / h as f64)).collect();
    let mut table = vec![(T::zero(), T::zero()); n * half];
    table.par_chunks_mut(half.max(1)).enumerate().for_each(|(t, row)| {
        for (r, w) in row.iter_mut().zip(&freq) {
            let (s, c) = ((pos0 + t) as f64 * w).sin_cos();
            *r = (T::of(c), T::of(s));
        }
    });
    table
}

/// RoPE rotation of one head row `x` (`[h]`) by the angles `cs` (`[h/2]` cosine–sine pairs),
/// forward (`inverse` false) or back (the backward: the transpose, i.e. the inverse rotation):
/// pairs \\((x_i, x_{i+h/2})\\) turn.
fn rotate<T: Scalar>(x: &mut [T], cs: &[(T, T)], inverse: bool) {
    let half = x.len() / 2;
    let (lo, hi) = x.split_at_mut(half);
    for ((a, b), &(c, s)) in lo.iter_mut().zip(hi.iter_mut()).zip(cs) {
        let s = if inverse { -s } else { s };
        let (x0, x1) = (*a, *b);
        *a = c * x0 - s * x1;
        *b = s * x0 + c * x1;
    }
}

/// Splits `qkv` (`[batch, n, 3C]`: q, then k, then v) into heads `[batch, heads, n, h]` and
/// applies RoPE at positions `pos0 + t` to q and k.
pub fn split_heads_forward<T: Scalar>(
    qkv: &[T], batch: usize, n: usize, heads: usize, h: usize, pos0: usize, q: &mut [T],
    k: &mut [T], v: &mut [T],
) {
    let c = heads * h;
    let per = n * h;
    let table = rope_table::<T>(pos0, n, h);
    for (which, dst) in [q, k, v].into_iter().enumerate() {
        dst.par_chunks_mut(per).enumerate().for_each(|(bh, dst)| {
            let (b, hd) = (bh / heads, bh % heads);
            for t in 0..n {
                let src = &qkv[(b * n + t) * 3 * c + which * c + hd * h..][..h];
                let row = &mut dst[t * h..(t + 1) * h];
                row.copy_from_slice(src);
                if which < 2 {
                    rotate(row, &table[t * (h / 2)..(t + 1) * (h / 2)], false);
                }
            }
        });
    }
    debug_assert_eq!(batch * heads * per, qkv.len() / 3);
}

/// Backward of [`split_heads_forward`]: gathers `dq`, `dk` (rotated back) and `dv` into
/// `dqkv` (`[batch, n, 3C]`). `dq` and `dk` are overwritten (rotated in place).
pub fn split_heads_backward<T: Scalar>(
    dq: &mut [T], dk: &mut [T], dv: &[T], batch: usize, n: usize, heads: usize, h: usize,
    pos0: usize, dqkv: &mut [T],
) {
    let c = heads * h;
    let table = rope_table::<T>(pos0, n, h);
    let half = h / 2;
    for d in [&mut *dq, &mut *dk] {
        d.par_chunks_mut(h).enumerate().for_each(|(row, x)| {
            let t = row % n;
            rotate(x, &table[t * half..(t + 1) * half], true);
        });
    }
    dqkv.par_chunks_mut(3 * c).enumerate().for_each(|(bt, dst)| {
        let (b, t) = (bt / n, bt % n);
        for (which, src) in [&*dq, &*dk, dv].into_iter().enumerate() {
            for hd in 0..heads {
                let s = &src[((b * heads + hd) * n + t) * h..][..h];
                dst[which * c + hd * h..][..h].copy_from_slice(s);
            }
        }
    });
    debug_assert_eq!(dqkv.len(), batch * n * 3 * c);
}

/// Merges heads: `y [batch, n, C]` from `att [batch, heads, n, h]`.
pub fn merge_heads<T: Scalar>(
    att: &[T], batch: usize, n: usize, heads: usize, h: usize, y: &mut [T],
) {
    let c = heads * h;
    y.par_chunks_mut(c).enumerate().for_each(|(bt, dst)| {
        let (b, t) = (bt / n, bt % n);
        for hd in 0..heads {
            dst[hd * h..(hd + 1) * h].copy_from_slice(&att[((b * heads + hd) * n + t) * h..][..h]);
        }
    });
    debug_assert_eq!(y.len(), batch * n * c);
}

/// The inverse of [`merge_heads`] (its backward): `att [batch, heads, n, h]` from `y [batch, n, C]`.
pub fn unmerge_heads<T: Scalar>(
    y: &[T], batch: usize, n: usize, heads: usize, h: usize, att: &mut [T],
) {
    let c = heads * h;
    att.par_chunks_mut(n * h).enumerate().for_each(|(bh, dst)| {
        let (b, hd) = (bh / heads, bh % heads);
        for t in 0..n {
            dst[t * h..(t + 1) * h].copy_from_slice(&y[(b * n + t) * c + hd * h..][..h]);
        }
    });
    debug_assert_eq!(att.len(), batch * n * c);
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
