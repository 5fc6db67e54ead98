//! Exact softmax attention (causal or bidirectional), tiled with an online softmax (flash-attention style): no
//! \\(n \times n\\) matrix is ever stored, extra memory is \\(O(n)\\) per head (the output's
//! log-sum-exp), and the work is two faer products per pair of tiles.
//!
//! Forward, per tile of query rows \\(I\\), over key tiles \\(J \le I\\) (every \\(J\\) when
//! bidirectional):
//! \\(S = Q_IK_J^\top/\sqrt h\\) (masked on the diagonal tile), running row maxima \\(m\\),
//! \\(P = e^{S - m}\\), running sums \\(\ell \leftarrow \ell e^{m_\text{old} - m} + P\mathbf 1\\)
//! and \\(O \leftarrow O e^{m_\text{old} - m} + PV_J\\); finally \\(O/\ell\\) and
//! \\(\mathrm{lse} = m + \ln\ell\\).
//!
//! Backward with \\(D_i = \langle dO_i, O_i\rangle\\), \\(P = e^{S - \mathrm{lse}}\\),
//! \\(dP = dO\,V^\top\\), \\(dS = P \circ (dP - D)\\): \\(dV_J = \sum_I P^\top dO_I\\),
//! \\(dK_J = \sum_I dS^\top Q_I/\sqrt h\\) in one pass over key tiles, \\(dQ_I = \sum_J dS\,K_J/\sqrt
//! h\\) in a second pass over query tiles — two passes instead of atomic additions, so results do
//! not depend on the thread count.

use faer::prelude::ReborrowMut;
use faer::{Mat, MatMut, MatRef, Par};
use polysketch_core::{Scalar, linalg::gemm};

use crate::tiles::{HeadViews, TILE, TileScratch, run_tasks};

/// `S = scale · Q_I K_Jᵀ` into the top-left `[bi, bj]` of `s`, with `-∞` where the mask hides
/// the key.
fn scores<T: Scalar>(
    x: &HeadViews<'_, T>, i: usize, j: usize, scale: T, s: &mut Mat<T>,
) -> (usize, usize) {
    let n = x.q.nrows();
    let (i0, j0) = (i * TILE, j * TILE);
    let (bi, bj) = (TILE.min(n - i0), TILE.min(n - j0));
    let mut st = s.as_mut().submatrix_mut(0, 0, bi, bj);
    gemm(st.rb_mut(), x.q.subrows(i0, bi), x.k.subrows(j0, bj).transpose(), scale, false, Par::Seq);
    x.mask.apply(i0, j0, st, T::neg_infinity());
    (bi, bj)
}

/// `P = exp(S - shift_row)` in place on the `[bi, bj]` top-left of `s`; a shift of `-∞` (a row
/// whose keys are all hidden so far, all its scores `-∞`) counts as 0, so its weights are 0.
fn exp_rows<T: Scalar>(s: &mut Mat<T>, bi: usize, bj: usize, shift: &[T]) {
    let ninf = T::neg_infinity();
    for c in 0..bj {
        let col = &mut s.col_as_slice_mut(c)[..bi];
        col.iter_mut().zip(shift).for_each(|(x, m)| *x -= if *m == ninf { T::zero() } else { *m });
        T::exp_in_place(col);
    }
}

/// Forward of query tile `i` of one head into `out` (`[bi, h]`) and `lse` (`[bi]`).
pub(crate) fn forward_tile<T: Scalar>(
    x: &HeadViews<'_, T>, i: usize, scale: T, mut out: MatMut<'_, T>, lse: &mut [T],
    sc: &mut TileScratch<T>,
) {
    let h = x.q.ncols();
    let bi = out.nrows();
    let TileScratch { s, acc, m, l, tmp, .. } = sc;
    let mut acc = acc.as_mut().submatrix_mut(0, 0, bi, h);
    acc.fill(T::zero());
    m[..bi].fill(T::neg_infinity());
    l[..bi].fill(T::zero());
    for j in x.mask.key_tiles(i, x.q.nrows()) {
        let (_, bj) = scores(x, i, j, scale, s);
        // new running maxima (tmp), then alpha = exp(m_old - m_new) into m
        tmp[..bi].copy_from_slice(&m[..bi]);
        for c in 0..bj {
            let col = &s.col_as_slice(c)[..bi];
            tmp[..bi].iter_mut().zip(col).for_each(|(t, v)| *t = if *v > *t { *v } else { *t });
        }
        // a row that has seen no key yet (at a window's edge) keeps the maximum -∞, and its
        // alpha and weights are 0 (not e^{-∞ + ∞} = NaN; see `exp_rows`)
        for r in 0..bi {
            m[r] = if tmp[r] == T::neg_infinity() { tmp[r] } else { m[r] - tmp[r] };
        }
        T::exp_in_place(&mut m[..bi]);
        exp_rows(s, bi, bj, &tmp[..bi]);
        // l = l·alpha + rowsum(P); acc = acc·alpha + P V_J
        for r in 0..bi {
            l[r] *= m[r];
        }
        for c in 0..bj {
            let col = &s.col_as_slice(c)[..bi];
            l[..bi].iter_mut().zip(col).for_each(|(a, p)| *a += *p);
        }
        for c in 0..h {
            let mut col = acc.rb_mut().col_mut(c);
            for r in 0..bi {
                col[r] *= m[r];
            }
        }
        let (j0, v) = (j * TILE, x.v);
        gemm(
            acc.rb_mut(),
            s.as_ref().submatrix(0, 0, bi, bj),
            v.subrows(j0, bj),
            T::one(),
            true,
            Par::Seq,
        );
        m[..bi].copy_from_slice(&tmp[..bi]);
    }
    for r in 0..bi {
        let inv = T::one() / l[r];
        for c in 0..h {
            out[(r, c)] = acc[(r, c)] * inv;
        }
        lse[r] = m[r] + l[r].ln();
    }
}

/// Backward pass A for key tile `j`: `dK_J` and `dV_J` (`[bj, h]` each).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_key_tile<T: Scalar>(
    x: &HeadViews<'_, T>, d_out: MatRef<'_, T>, lse: &[T], dsum: &[T], j: usize, scale: T,
    mut dk: MatMut<'_, T>, mut dv: MatMut<'_, T>, sc: &mut TileScratch<T>,
) {
    let n = x.q.nrows();
    dk.fill(T::zero());
    dv.fill(T::zero());
    for i in x.mask.query_tiles(j, n) {
        let i0 = i * TILE;
        let (bi, bj) = scores(x, i, j, scale, &mut sc.s);
        exp_rows(&mut sc.s, bi, bj, &lse[i0..i0 + bi]);
        let p = sc.s.as_ref().submatrix(0, 0, bi, bj);
        let dout = d_out.subrows(i0, bi);
        // forward: O_I += P V_J, so dV_J += Pᵀ dO_I and dP = dO_I V_Jᵀ
        gemm(dv.rb_mut(), p.transpose(), dout, T::one(), true, Par::Seq);
        let mut dp = sc.dp.as_mut().submatrix_mut(0, 0, bi, bj);
        gemm(dp.rb_mut(), dout, x.v.subrows(j * TILE, bj).transpose(), T::one(), false, Par::Seq);
        // softmax: dS = P ∘ (dP - D)
        ds_in_place(dp.rb_mut(), p, &dsum[i0..i0 + bi]);
        // forward: S = scale Q_I K_Jᵀ, so dK_J += scale dSᵀ Q_I
        gemm(dk.rb_mut(), dp.as_ref().transpose(), x.q.subrows(i0, bi), scale, true, Par::Seq);
    }
}

/// Backward pass B for query tile `i`: `dQ_I` (`[bi, h]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_query_tile<T: Scalar>(
    x: &HeadViews<'_, T>, d_out: MatRef<'_, T>, lse: &[T], dsum: &[T], i: usize, scale: T,
    mut dq: MatMut<'_, T>, sc: &mut TileScratch<T>,
) {
    dq.fill(T::zero());
    let i0 = i * TILE;
    for j in x.mask.key_tiles(i, x.q.nrows()) {
        let (bi, bj) = scores(x, i, j, scale, &mut sc.s);
        exp_rows(&mut sc.s, bi, bj, &lse[i0..i0 + bi]);
        let p = sc.s.as_ref().submatrix(0, 0, bi, bj);
        let mut dp = sc.dp.as_mut().submatrix_mut(0, 0, bi, bj);
        gemm(
            dp.rb_mut(),
            d_out.subrows(i0, bi),
            x.v.subrows(j * TILE, bj).transpose(),
            T::one(),
            false,
            Par::Seq,
        );
        ds_in_place(dp.rb_mut(), p, &dsum[i0..i0 + bi]);
        // forward: S = scale Q_I K_Jᵀ, so dQ_I += scale dS K_J
        gemm(dq.rb_mut(), dp.as_ref(), x.k.subrows(j * TILE, bj), scale, true, Par::Seq);
    }
}

/// `dp ← p ∘ (dp - d_row)`.
fn ds_in_place<T: Scalar>(mut dp: MatMut<'_, T>, p: MatRef<'_, T>, d: &[T]) {
    for c in 0..dp.ncols() {
        for r in 0..dp.nrows() {
            dp[(r, c)] = p[(r, c)] * (dp[(r, c)] - d[r]);
        }
    }
}

/// Forward of every head: `views[h]` → `out` (row-major `[heads·n, h]` blocks) and
/// `lse` (`[heads·n]`), parallel over (head, tile) pairs.
pub(crate) fn forward<T: Scalar>(
    views: &[HeadViews<'_, T>], out: &mut [T], lse: &mut [T], par: Par,
) {
    let (n, h) = (views[0].q.nrows(), views[0].q.ncols());
    let scale = T::of(1.0 / (h as f64).sqrt());
    let mut tasks = Vec::new();
    for ((idx, o), l) in out.chunks_mut(n * h).enumerate().zip(lse.chunks_mut(n)) {
        for ((t, ot), lt) in o.chunks_mut(TILE * h).enumerate().zip(l.chunks_mut(TILE)) {
            tasks.push((idx, t, ot, lt));
        }
    }
    let work = |sc: &mut TileScratch<T>, (idx, t, o, l): (usize, usize, &mut [T], &mut [T])| {
        let rows = l.len();
        forward_tile(&views[idx], t, scale, MatMut::from_row_major_slice_mut(o, rows, h), l, sc);
    };
    run_tasks(tasks, h, par, work);
}

/// Backward of every head, given the forward's output and lse; returns `dq`, `dk`, `dv` (row-major
/// like the inputs).
pub(crate) fn backward<T: Scalar>(
    views: &[HeadViews<'_, T>], out: &[T], lse: &[T], d_out: &[T], par: Par,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (n, h) = (views[0].q.nrows(), views[0].q.ncols());
    let scale = T::of(1.0 / (h as f64).sqrt());
    let total = views.len() * n * h;
    // D_i = <dO_i, O_i>
    let dsum: Vec<T> = out
        .chunks(h)
        .zip(d_out.chunks(h))
        .map(|(o, d)| o.iter().zip(d).fold(T::zero(), |s, (a, b)| s + *a * *b))
        .collect();
    let (mut dq, mut dk, mut dv) =
        (vec![T::zero(); total], vec![T::zero(); total], vec![T::zero(); total]);
    let dview =
        |idx: usize| MatRef::from_row_major_slice(&d_out[idx * n * h..(idx + 1) * n * h], n, h);
    {
        let mut tasks = Vec::new();
        for (idx, (k, v)) in dk.chunks_mut(n * h).zip(dv.chunks_mut(n * h)).enumerate() {
            for (t, (kt, vt)) in k.chunks_mut(TILE * h).zip(v.chunks_mut(TILE * h)).enumerate() {
                tasks.push((idx, t, kt, vt));
            }
        }
        let work = |sc: &mut TileScratch<T>,
                    (idx, t, kt, vt): (usize, usize, &mut [T], &mut [T])| {
            let rows = kt.len() / h;
            let (lse_h, d_h) = (&lse[idx * n..(idx + 1) * n], &dsum[idx * n..(idx + 1) * n]);
            let (kv, vv) = (
                MatMut::from_row_major_slice_mut(kt, rows, h),
                MatMut::from_row_major_slice_mut(vt, rows, h),
            );
            backward_key_tile(&views[idx], dview(idx), lse_h, d_h, t, scale, kv, vv, sc);
        };
        run_tasks(tasks, h, par, work);
    }
    {
        let mut tasks = Vec::new();
        for (idx, q) in dq.chunks_mut(n * h).enumerate() {
            for (t, qt) in q.chunks_mut(TILE * h).enumerate() {
                tasks.push((idx, t, qt));
            }
        }
        let work = |sc: &mut TileScratch<T>, (idx, t, qt): (usize, usize, &mut [T])| {
            let rows = qt.len() / h;
            let (lse_h, d_h) = (&lse[idx * n..(idx + 1) * n], &dsum[idx * n..(idx + 1) * n]);
            backward_query_tile(
                &views[idx],
                dview(idx),
                lse_h,
                d_h,
                t,
                scale,
                MatMut::from_row_major_slice_mut(qt, rows, h),
                sc,
            );
        };
        run_tasks(tasks, h, par, work);
    }
    (dq, dk, dv)
}
