//! Exact polynomial attention (causal or bidirectional), tiled: \\(O(n^2 h)\\) work, no \\(n \times n\\) matrix
//! stored.
//!
//! With \\(C = [V, \mathbf 1]\\) and \\(S_{IJ} = (\tilde Q_I\tilde K_J^\top)^{\circ p}\\) (lower
//! triangle on the diagonal tiles when causal), the forward computes \\(\sum_{J \le I}
//! S_{IJ}C_J\\) (every \\(J\\) when bidirectional) per query tile; the layer then divides the first \\(h\\) columns by \\(1 +\\) the last.
//!
//! Backward, given \\(G = \partial L/\partial(\sum_J S_{IJ}C_J)\\): \\(dS = GC_J^\top\\),
//! \\(dX = p\,(\tilde Q_I\tilde K_J^\top)^{\circ(p-1)} \circ dS\\); \\(dC_J = \sum_I S_{IJ}^\top G_I\\)
//! and \\(d\tilde K_J = \sum_I dX^\top\tilde Q_I\\) in one pass over key tiles,
//! \\(d\tilde Q_I = \sum_J dX\,\tilde K_J\\) in a second over query tiles (deterministic, no atomics).

use faer::prelude::ReborrowMut;
use faer::{MatMut, MatRef, Par};
use polysketch_core::Scalar;
use polysketch_core::linalg::{gemm, ipow, pow_assign};

use crate::tiles::{Mask, TILE, TileScratch};

/// One head's inputs: \\(\tilde Q\\), \\(\tilde K\\) (`[n, h]`) and \\(C = [V, \mathbf 1]\\)
/// (`[n, h+1]`), and which keys each query sees.
#[derive(Clone, Copy)]
pub(crate) struct PolyViews<'a, T> {
    pub q: MatRef<'a, T>,
    pub k: MatRef<'a, T>,
    pub c: MatRef<'a, T>,
    pub mask: Mask,
}

/// `s ← Q̃_I K̃_Jᵀ` (zero where the mask hides the key); returns
/// `(bi, bj)`.
fn products<T: Scalar>(
    x: &PolyViews<'_, T>, i: usize, j: usize, mut s: MatMut<'_, T>,
) -> (usize, usize) {
    let n = x.q.nrows();
    let (i0, j0) = (i * TILE, j * TILE);
    let (bi, bj) = (TILE.min(n - i0), TILE.min(n - j0));
    let mut st = s.rb_mut().submatrix_mut(0, 0, bi, bj);
    gemm(
        st.rb_mut(),
        x.q.subrows(i0, bi),
        x.k.subrows(j0, bj).transpose(),
        T::one(),
        false,
        Par::Seq,
    );
    x.mask.apply(i0, j0, st, T::zero());
    (bi, bj)
}

/// Forward of query tile `i`: `out` (`[bi, h+1]`) = \\(\sum_{J \le I} S_{IJ}C_J\\).
pub(crate) fn forward_tile<T: Scalar>(
    x: &PolyViews<'_, T>, p: usize, i: usize, mut out: MatMut<'_, T>, sc: &mut TileScratch<T>,
) {
    out.fill(T::zero());
    for j in x.mask.key_tiles(i, x.q.nrows()) {
        let (bi, bj) = products(x, i, j, sc.s.as_mut());
        for c in 0..bj {
            pow_assign(&mut sc.s.col_as_slice_mut(c)[..bi], p as u32);
        }
        gemm(
            out.rb_mut(),
            sc.s.as_ref().submatrix(0, 0, bi, bj),
            x.c.subrows(j * TILE, bj),
            T::one(),
            true,
            Par::Seq,
        );
    }
}

/// `s ← S = G^p`, `dp ← dX = p G^{p-1} ∘ (G_I C_Jᵀ)` for the tile pair `(i, j)`.
fn scores_and_dx<T: Scalar>(
    x: &PolyViews<'_, T>, g: MatRef<'_, T>, p: usize, i: usize, j: usize, sc: &mut TileScratch<T>,
) -> (usize, usize) {
    let (bi, bj) = products(x, i, j, sc.s.as_mut());
    let mut dp = sc.dp.as_mut().submatrix_mut(0, 0, bi, bj);
    // forward: acc_I += S C_J, so dS = G_I C_Jᵀ (only where the mask let S through)
    gemm(
        dp.rb_mut(),
        g.subrows(i * TILE, bi),
        x.c.subrows(j * TILE, bj).transpose(),
        T::one(),
        false,
        Par::Seq,
    );
    let pf = T::of(p as f64);
    for c in 0..bj {
        for r in 0..bi {
            let gv = sc.s[(r, c)];
            // forward: S = G^p elementwise (G = Q̃ K̃ᵀ), so dG = p G^{p-1} dS; a hidden
            // entry has G = 0 and p ≥ 2, so its dG is 0 too
            dp[(r, c)] = pf * ipow(gv, p as u32 - 1) * dp[(r, c)];
            sc.s[(r, c)] = ipow(gv, p as u32);
        }
    }
    (bi, bj)
}

/// Backward pass A for key tile `j`: `dc` (`[bj, h+1]`) and `dk` (`[bj, h]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_key_tile<T: Scalar>(
    x: &PolyViews<'_, T>, g: MatRef<'_, T>, p: usize, j: usize, mut dc: MatMut<'_, T>,
    mut dk: MatMut<'_, T>, sc: &mut TileScratch<T>,
) {
    dc.fill(T::zero());
    dk.fill(T::zero());
    for i in x.mask.query_tiles(j, x.q.nrows()) {
        let (bi, bj) = scores_and_dx(x, g, p, i, j, sc);
        let gi = g.subrows(i * TILE, bi);
        gemm(
            dc.rb_mut(),
            sc.s.as_ref().submatrix(0, 0, bi, bj).transpose(),
            gi,
            T::one(),
            true,
            Par::Seq,
        );
        // forward: G = Q̃_I K̃_Jᵀ, so dK̃_J += dGᵀ Q̃_I
        gemm(
            dk.rb_mut(),
            sc.dp.as_ref().submatrix(0, 0, bi, bj).transpose(),
            x.q.subrows(i * TILE, bi),
            T::one(),
            true,
            Par::Seq,
        );
    }
}

/// Backward pass B for query tile `i`: `dq` (`[bi, h]`).
pub(crate) fn backward_query_tile<T: Scalar>(
    x: &PolyViews<'_, T>, g: MatRef<'_, T>, p: usize, i: usize, mut dq: MatMut<'_, T>,
    sc: &mut TileScratch<T>,
) {
    dq.fill(T::zero());
    for j in x.mask.key_tiles(i, x.q.nrows()) {
        let (bi, bj) = scores_and_dx(x, g, p, i, j, sc);
        // forward: G = Q̃_I K̃_Jᵀ, so dQ̃_I += dG K̃_J
        gemm(
            dq.rb_mut(),
            sc.dp.as_ref().submatrix(0, 0, bi, bj),
            x.k.subrows(j * TILE, bj),
            T::one(),
            true,
            Par::Seq,
        );
    }
}
