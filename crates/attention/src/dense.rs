//! The dense layers, head split/merge and RoPE of the multi-head block ([`crate::MultiHead`]),
//! as forward/backward function pairs on row-major buffers (as llm.c has them). Rows are
//! independent, so the rayon parallelism never changes a result.
//!
//! These are low-level kernels: they assume the shapes the block checked (`# Panics` on a
//! mismatch: a slice index out of range) and do no input validation.

use faer::{MatMut, MatRef, Par};
use polysketch_core::Scalar;
use polysketch_core::linalg::{copy_slice, gemm};
use rayon::prelude::*;

pub(crate) fn mat<T: Scalar>(x: &[T], rows: usize, cols: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(&x[..rows * cols], rows, cols)
}

pub(crate) fn mat_mut<T: Scalar>(x: &mut [T], rows: usize, cols: usize) -> MatMut<'_, T> {
    MatMut::from_row_major_slice_mut(&mut x[..rows * cols], rows, cols)
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

/// Splits `qkv` (`[batch, n, 3C]`: q, then k, then v) into heads `[batch, heads, n, h]` and,
/// with `rope = Some(table)` (`[n, h/2]`, [`rope_table`] of positions `pos0 .. pos0 + n`),
/// applies RoPE at positions `pos0 + t` to q and k.
///
/// # Panics
/// A table shorter than `[n, h/2]`.
#[allow(clippy::too_many_arguments)]
pub fn split_heads_forward<T: Scalar>(
    qkv: &[T], batch: usize, n: usize, heads: usize, h: usize, rope: Option<&[(T, T)]>,
    q: &mut [T], k: &mut [T], v: &mut [T],
) {
    let c = heads * h;
    let per = n * h;
    for (which, dst) in [q, k, v].into_iter().enumerate() {
        dst.par_chunks_mut(per).enumerate().for_each(|(bh, dst)| {
            let (b, hd) = (bh / heads, bh % heads);
            for t in 0..n {
                let src = &qkv[(b * n + t) * 3 * c + which * c + hd * h..][..h];
                let row = &mut dst[t * h..(t + 1) * h];
                copy_slice(row, src);
                if let (true, Some(table)) = (which < 2, rope) {
                    rotate(row, &table[t * (h / 2)..(t + 1) * (h / 2)], false);
                }
            }
        });
    }
    debug_assert_eq!(batch * heads * per, qkv.len() / 3);
}

/// Backward of [`split_heads_forward`]: gathers `dq`, `dk` (rotated back with the forward's
/// table `rope`) and `dv` into `dqkv` (`[batch, n, 3C]`). `dq` and `dk` are overwritten
/// (rotated in place).
///
/// # Panics
/// A table shorter than `[n, h/2]`.
pub fn split_heads_backward<T: Scalar>(
    dq: &mut [T], dk: &mut [T], dv: &[T], batch: usize, n: usize, heads: usize, h: usize,
    rope: Option<&[(T, T)]>, dqkv: &mut [T],
) {
    let c = heads * h;
    let half = h / 2;
    if let Some(table) = rope {
        for d in [&mut *dq, &mut *dk] {
            d.par_chunks_mut(h).enumerate().for_each(|(row, x)| {
                let t = row % n;
                rotate(x, &table[t * half..(t + 1) * half], true);
            });
        }
    }
    dqkv.par_chunks_mut(3 * c).enumerate().for_each(|(bt, dst)| {
        let (b, t) = (bt / n, bt % n);
        for (which, src) in [&*dq, &*dk, dv].into_iter().enumerate() {
            for hd in 0..heads {
                let s = &src[((b * heads + hd) * n + t) * h..][..h];
                copy_slice(&mut dst[which * c + hd * h..][..h], s);
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
            copy_slice(&mut dst[hd * h..(hd + 1) * h], &att[((b * heads + hd) * n + t) * h..][..h]);
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
            copy_slice(&mut dst[t * h..(t + 1) * h], &y[(b * n + t) * c + hd * h..][..h]);
        }
    });
    debug_assert_eq!(att.len(), batch * n * c);
}
