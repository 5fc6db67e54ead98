//! Bidirectional PolySketch products, forward and backward, in time linear in \\(n\\).
//!
//! With \\(\Phi(X)\\) the rows' tensor squares (\\(\langle\Phi(l), \Phi(r)\rangle = \langle l,
//! r\rangle^2\\), the symmetric layout of the tensoring crate), \\(C = [V, \mathbf 1]\\) and the
//! sequence cut into blocks \\(B\\) of `block` rows:
//!
//! \\[ S_B = \Phi(R_B)^\top C_B, \quad S = \sum_B S_B, \quad
//!     \mathrm{raw}_B = \Phi(L_B)\,U_B + E_B C_B, \\]
//!
//! where without local blocks \\(U_B = S\\) and \\(E_B = 0\\) — \\(\mathrm{raw} =
//! \phi'(\tilde Q)(\phi'(\tilde K)^\top C)\\) — and with them \\(U_B = S - S_B\\) (the other
//! blocks, sketched) and \\(E_B = (\tilde Q_B\tilde K_B^\top)^{\circ p}\\) (the block's own
//! tokens, exact). Blocks bound the scratch to \\(b \times r(r+1)/2\\).
//!
//! Backward, given \\(G = \partial L/\partial\mathrm{raw}\\): \\(dU_B = \Phi(L_B)^\top G_B\\),
//! \\(d\Phi(L_B) = G_B U_B^\top\\); since \\(S_B\\) enters \\(S\\) and (local) \\(U_B\\) with a
//! minus, \\(dS_B = \sum_{B'} dU_{B'} - [\text{local}]\,dU_B\\); then \\(d\Phi(R_B) = C_B
//! dS_B^\top\\), \\(dC_B = \Phi(R_B) dS_B + E_B^\top G_B\\), and for \\(E_B\\): \\(dX = p\,(\tilde
//! Q_B\tilde K_B^\top)^{\circ(p-1)} \circ G_B C_B^\top\\), \\(d\tilde Q_B = dX\,\tilde K_B\\),
//! \\(d\tilde K_B = dX^\top\tilde Q_B\\). Block sums are added in block order: the numbers do
//! not depend on the thread count.

use faer::prelude::{Reborrow, ReborrowMut};
use faer::{Mat, MatMut, MatRef, Par};
use polysketch_core::Scalar;
use polysketch_core::linalg::{gemm, ipow};
use polysketch_lowtri::Grads as LtGrads;
use polysketch_tensoring::{Layout, feature_dim, tensor_square, tensor_square_vjp};

const LAYOUT: Layout = Layout::Symmetric;

/// One head's inputs: the sketches \\(L\\), \\(R\\) (`[n, r]`), \\(\tilde Q\\), \\(\tilde K\\)
/// (`[n, h]`, read for local blocks only), \\(C\\) (`[n, h + 1]`).
pub(crate) struct Head<'a, T> {
    pub l: MatRef<'a, T>,
    pub r: MatRef<'a, T>,
    pub qt: MatRef<'a, T>,
    pub kt: MatRef<'a, T>,
    pub c: MatRef<'a, T>,
}

/// The options: degree \\(p\\) of the exact local scores, block size, local blocks or not.
#[derive(Clone, Copy)]
pub(crate) struct Options {
    pub p: usize,
    pub block: usize,
    pub local: bool,
}

/// The row ranges `(start, rows)` of the blocks of `n` rows.
fn blocks(n: usize, block: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n.div_ceil(block)).map(move |b| (b * block, block.min(n - b * block)))
}

/// \\(S_B\\) of every block (`[f, h + 1]` each) and their sum \\(S\\) (in block order); `phi`
/// is `[≥ b, f]` scratch.
fn block_sums<T: Scalar>(x: &Head<'_, T>, o: Options, phi: &mut Mat<T>) -> (Vec<Mat<T>>, Mat<T>) {
    let (f, k) = (feature_dim(x.r.ncols(), LAYOUT), x.c.ncols());
    let sums: Vec<Mat<T>> = blocks(x.r.nrows(), o.block)
        .map(|(start, rows)| {
            let mut ph = phi.as_mut().submatrix_mut(0, 0, rows, f);
            tensor_square(x.r.subrows(start, rows), LAYOUT, ph.rb_mut());
            let mut s = Mat::zeros(f, k);
            gemm(
                s.as_mut(),
                ph.rb().transpose(),
                x.c.subrows(start, rows),
                T::one(),
                false,
                Par::Seq,
            );
            s
        })
        .collect();
    let mut total = Mat::zeros(f, k);
    sums.iter().for_each(|s| total += s);
    (sums, total)
}

/// `total − own` in `buf` (the other blocks' sum) when `local`, else `total` itself.
fn excluding<'a, T: Scalar>(
    buf: &'a mut Mat<T>, total: &'a Mat<T>, own: &Mat<T>, local: bool,
) -> MatRef<'a, T> {
    if !local {
        return total.as_ref();
    }
    buf.copy_from(total);
    *buf -= own;
    buf.as_ref()
}

/// \\(E_B = (\tilde Q_B\tilde K_B^\top)^{\circ p}\\) into `e` (`[rows, rows]`), and with `dx` the
/// products' \\(p\\,G^{\circ(p-1)}\\) (for the backward).
fn local_scores<T: Scalar>(
    x: &Head<'_, T>, p: usize, (start, rows): (usize, usize), mut e: MatMut<'_, T>,
    dx: Option<MatMut<'_, T>>,
) {
    gemm(
        e.rb_mut(),
        x.qt.subrows(start, rows),
        x.kt.subrows(start, rows).transpose(),
        T::one(),
        false,
        Par::Seq,
    );
    let pf = T::of(p as f64);
    if let Some(mut dx) = dx {
        faer::zip!(dx.rb_mut(), e.rb()).for_each(|faer::unzip!(d, g)| {
            *d = pf * ipow(*g, p as u32 - 1);
        });
    }
    faer::zip!(e).for_each(|faer::unzip!(g)| *g = ipow(*g, p as u32));
}

/// \\(\mathrm{raw}\\) (`[n, h + 1]`) of one head.
pub(crate) fn forward<T: Scalar>(x: &Head<'_, T>, o: Options, mut raw: MatMut<'_, T>) {
    let (n, f) = (x.r.nrows(), feature_dim(x.r.ncols(), LAYOUT));
    let b = o.block.min(n);
    let mut phi = Mat::zeros(b, f);
    let (sums, total) = block_sums(x, o, &mut phi);
    let mut u = total.clone();
    let mut e = Mat::zeros(b, b);
    for ((start, rows), s) in blocks(n, o.block).zip(&sums) {
        let u = excluding(&mut u, &total, s, o.local);
        let mut ph = phi.as_mut().submatrix_mut(0, 0, rows, f);
        tensor_square(x.l.subrows(start, rows), LAYOUT, ph.rb_mut());
        let mut out = raw.rb_mut().subrows_mut(start, rows);
        gemm(out.rb_mut(), ph.rb(), u, T::one(), false, Par::Seq);
        if o.local {
            let mut eb = e.as_mut().submatrix_mut(0, 0, rows, rows);
            local_scores(x, o.p, (start, rows), eb.rb_mut(), None);
            gemm(out, eb.rb(), x.c.subrows(start, rows), T::one(), true, Par::Seq);
        }
    }
}

/// Gradients of one head's [`forward`] given `g` = \\(\partial L/\partial\mathrm{raw}\\), into
/// `grads` (`d_a` = \\(\partial/\partial L\\), `d_b` = \\(\partial/\partial R\\), `d_c`, and
/// `d_q`, `d_k` with local blocks), in the lowtri engine's form so that the layer treats both
/// alike.
pub(crate) fn backward<T: Scalar>(
    x: &Head<'_, T>, o: Options, g: MatRef<'_, T>, grads: &mut LtGrads<T>,
) {
    let (n, rdim, h) = (x.r.nrows(), x.r.ncols(), x.qt.ncols());
    let (f, k) = (feature_dim(rdim, LAYOUT), x.c.ncols());
    let b = o.block.min(n);
    let zeroed = |m: &mut Mat<T>, rows, cols| *m = Mat::zeros(rows, cols);
    zeroed(&mut grads.d_a, n, rdim);
    zeroed(&mut grads.d_b, n, rdim);
    zeroed(&mut grads.d_c, n, k);
    grads.d_q = o.local.then(|| Mat::zeros(n, h));
    grads.d_k = o.local.then(|| Mat::zeros(n, h));
    let mut phi = Mat::zeros(b, f);
    let mut dphi = Mat::zeros(b, f);
    let (sums, total) = block_sums(x, o, &mut phi);
    let mut u = total.clone();
    let (mut e, mut dx, mut de) = (Mat::zeros(b, b), Mat::zeros(b, b), Mat::zeros(b, b));
    // the query side, block by block: dU_B, dL_B, and the local blocks' own gradients
    let mut du_sum = Mat::<T>::zeros(f, k);
    let mut du: Vec<Mat<T>> = Vec::new();
    for ((start, rows), s) in blocks(n, o.block).zip(&sums) {
        let u = excluding(&mut u, &total, s, o.local);
        let gb = g.subrows(start, rows);
        let mut ph = phi.as_mut().submatrix_mut(0, 0, rows, f);
        tensor_square(x.l.subrows(start, rows), LAYOUT, ph.rb_mut());
        // forward: raw_B = Φ(L_B) U_B, so dU_B = Φ(L_B)ᵀ G_B and dΦ(L_B) = G_B U_Bᵀ
        let mut du_b = Mat::zeros(f, k);
        gemm(du_b.as_mut(), ph.rb().transpose(), gb, T::one(), false, Par::Seq);
        let mut dph = dphi.as_mut().submatrix_mut(0, 0, rows, f);
        gemm(dph.rb_mut(), gb, u.transpose(), T::one(), false, Par::Seq);
        tensor_square_vjp(
            x.l.subrows(start, rows),
            dph.rb(),
            LAYOUT,
            grads.d_a.as_mut().subrows_mut(start, rows),
        );
        du_sum += &du_b;
        if o.local {
            du.push(du_b);
            let (mut eb, mut dxb, mut deb) = (
                e.as_mut().submatrix_mut(0, 0, rows, rows),
                dx.as_mut().submatrix_mut(0, 0, rows, rows),
                de.as_mut().submatrix_mut(0, 0, rows, rows),
            );
            local_scores(x, o.p, (start, rows), eb.rb_mut(), Some(dxb.rb_mut()));
            let cb = x.c.subrows(start, rows);
            // forward: raw_B += E_B C_B, so dC_B += E_Bᵀ G_B and dE_B = G_B C_Bᵀ
            let d_c = grads.d_c.as_mut().subrows_mut(start, rows);
            gemm(d_c, eb.rb().transpose(), gb, T::one(), true, Par::Seq);
            gemm(deb.rb_mut(), gb, cb.transpose(), T::one(), false, Par::Seq);
            // E = X^p with X = Q̃_B K̃_Bᵀ: dX = p X^{p-1} ∘ dE
            faer::zip!(deb.rb_mut(), dxb.rb()).for_each(|faer::unzip!(d, s)| *d *= *s);
            if let (Some(dq), Some(dk)) = (&mut grads.d_q, &mut grads.d_k) {
                let (qb, kb) = (x.qt.subrows(start, rows), x.kt.subrows(start, rows));
                gemm(dq.as_mut().subrows_mut(start, rows), deb.rb(), kb, T::one(), false, Par::Seq);
                let dkb = dk.as_mut().subrows_mut(start, rows);
                gemm(dkb, deb.rb().transpose(), qb, T::one(), false, Par::Seq);
            }
        }
    }
    // the key side: dS_B = Σ dU − [local] dU_B, then dC_B += Φ(R_B) dS_B, dΦ(R_B) = C_B dS_Bᵀ
    let mut ds = du_sum.clone();
    for (index, (start, rows)) in blocks(n, o.block).enumerate() {
        let ds = match o.local {
            true => excluding(&mut ds, &du_sum, &du[index], true),
            false => du_sum.as_ref(),
        };
        let mut ph = phi.as_mut().submatrix_mut(0, 0, rows, f);
        tensor_square(x.r.subrows(start, rows), LAYOUT, ph.rb_mut());
        let d_c = grads.d_c.as_mut().subrows_mut(start, rows);
        gemm(d_c, ph.rb(), ds, T::one(), true, Par::Seq);
        let mut dph = dphi.as_mut().submatrix_mut(0, 0, rows, f);
        gemm(dph.rb_mut(), x.c.subrows(start, rows), ds.transpose(), T::one(), false, Par::Seq);
        tensor_square_vjp(
            x.r.subrows(start, rows),
            dph.rb(),
            LAYOUT,
            grads.d_b.as_mut().subrows_mut(start, rows),
        );
    }
}
