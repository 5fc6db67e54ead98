//! The two textbook ways to compute \\(\mathrm{lt}(AB^\top)C\\), for comparison and benches.

use faer::linalg::matmul::triangular::{BlockStructure, matmul as tri_matmul};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use polysketch_core::linalg::dot;
use polysketch_core::{
    Result, Scalar, check_finite, check_overflow, check_param_bytes, check_shape,
};
use rayon::prelude::*;

use crate::{Grads, Problem};

/// Largest \\(n\\) for which [`naive_forward`] builds its \\(n \times n\\) matrix (\\(n^2\\)
/// values must stay under 4 GiB).
pub fn naive_fits<T>(n: usize) -> bool {
    check_param_bytes("naive", (n as u128) * (n as u128), size_of::<T>()).is_ok()
}

/// The masked quadratic product: \\(S = AB^\top\\) (lower triangle only, faer's triangular
/// product), then \\(\mathrm{lt}(S)\,C\\). \\(O(n^2(m + k))\\) time, \\(n^2\\) memory.
///
/// # Errors
/// Validation errors of the problem (general form only); `SketchError::TooLarge` when the
/// \\(n \times n\\) matrix would exceed 4 GiB.
pub fn naive_forward<T: Scalar>(
    a: MatRef<'_, T>, b: MatRef<'_, T>, c: MatRef<'_, T>, par: Par,
) -> Result<Mat<T>> {
    Problem::general(a, b, c).validate("lowtri::naive_forward")?;
    let n = a.nrows();
    check_param_bytes("lowtri::naive_forward", (n as u128) * (n as u128), size_of::<T>())?;
    let mut s = Mat::<T>::zeros(n, n);
    tri_matmul(
        s.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        a,
        BlockStructure::Rectangular,
        b.transpose(),
        BlockStructure::Rectangular,
        T::one(),
        par,
    );
    let mut out = Mat::zeros(n, c.ncols());
    tri_matmul(
        out.as_mut(),
        BlockStructure::Rectangular,
        Accum::Replace,
        s.as_ref(),
        BlockStructure::TriangularLower,
        c,
        BlockStructure::Rectangular,
        T::one(),
        par,
    );
    check_overflow("lowtri baseline forward", "a, b and c", "out", out.as_ref())?;
    Ok(out)
}

/// The cumulative-sum algorithm (as in Performer): a running state \\(P_i = \sum_{j \le i}
/// b_j c_j^\top\\) (`m x k`) updated row by row, \\(\mathrm{out}_i = a_i^\top P_i\\).
/// \\(O(nmk)\\) time but \\(n\\) sequential rank-one updates, bound by memory traffic on the
/// state. Columns of \\(C\\) are independent, so they are split into fixed groups of 8 that run
/// in parallel.
///
/// # Errors
/// Validation errors of the problem (general form only).
pub fn cumsum_forward<T: Scalar>(
    a: MatRef<'_, T>, b: MatRef<'_, T>, c: MatRef<'_, T>, par: Par,
) -> Result<Mat<T>> {
    Problem::general(a, b, c).validate("lowtri::cumsum_forward")?;
    let (n, m, k) = (a.nrows(), a.ncols(), c.ncols());
    const GROUP: usize = 8;
    // rows as contiguous slices
    let at = a.transpose().to_owned(); // [m, n]
    let bt = b.transpose().to_owned();
    let mut out = Mat::<T>::zeros(n, k);
    let group = |(g, mut cols): (usize, MatMut<'_, T>)| {
        let width = cols.ncols();
        let mut state = vec![T::zero(); m * width]; // column-major [m, width]
        for i in 0..n {
            let (ai, bi) = (at.col_as_slice(i), bt.col_as_slice(i));
            for q in 0..width {
                let cij = c[(i, g * GROUP + q)];
                let col = &mut state[q * m..(q + 1) * m];
                // P_i = P_{i-1} + b_i c_iᵀ (one column of it), then out_iq = <a_i, P_i[:, q]>
                for (s, &bv) in col.iter_mut().zip(bi) {
                    *s += bv * cij;
                }
                cols[(i, q)] = dot(ai, col);
            }
        }
    };
    let groups: Vec<(usize, MatMut<'_, T>)> = {
        let mut v = Vec::new();
        let mut rest = out.as_mut();
        let mut g = 0;
        while rest.ncols() > 0 {
            let len = GROUP.min(rest.ncols());
            let (head, tail) = rest.split_at_col_mut(len);
            v.push((g, head));
            rest = tail;
            g += 1;
        }
        v
    };
    match par {
        Par::Seq => groups.into_iter().for_each(group),
        Par::Rayon(_) => groups.into_par_iter().for_each(group),
    }
    check_overflow("lowtri baseline forward", "a, b and c", "out", out.as_ref())?;
    Ok(out)
}

/// Finite inputs whose gradients leave the number format: a typed error.
fn overflowed<T: Scalar>(grads: [(&'static str, &Mat<T>); 3]) -> Result<()> {
    for (name, g) in grads {
        check_overflow("lowtri baseline backward", "a, b, c and g", name, g.as_ref())?;
    }
    Ok(())
}

/// The checks shared by the baselines' backward passes.
fn validate_backward<T: Scalar>(
    op: &'static str, a: MatRef<'_, T>, b: MatRef<'_, T>, c: MatRef<'_, T>, g: MatRef<'_, T>,
) -> Result<()> {
    Problem::general(a, b, c).validate(op)?;
    check_shape(op, "g", g, (c.nrows(), c.ncols()))?;
    check_finite(op, "g", g)
}

/// Backward of [`naive_forward`]: with \\(S = \mathrm{lt}(AB^\top)\\) and \\(G = \partial
/// L/\partial\mathrm{out}\\), \\(\partial C = S^\top G\\), \\(dS = \mathrm{lt}(GC^\top)\\),
/// \\(\partial A = dS\,B\\), \\(\partial B = dS^\top A\\). \\(O(n^2(m + k))\\) time, \\(n^2\\)
/// memory (the buffer of \\(S\\) is reused for \\(dS\\)).
///
/// # Errors
/// As [`naive_forward`], and a shape mismatch or non-finite value in `g`.
pub fn naive_backward<T: Scalar>(
    a: MatRef<'_, T>, b: MatRef<'_, T>, c: MatRef<'_, T>, g: MatRef<'_, T>, par: Par,
) -> Result<Grads<T>> {
    const OP: &str = "lowtri::naive_backward";
    validate_backward(OP, a, b, c, g)?;
    let n = a.nrows();
    check_param_bytes(OP, (n as u128) * (n as u128), size_of::<T>())?;
    let tri = |dst: MatMut<'_, T>,
               ds: BlockStructure,
               lhs: MatRef<'_, T>,
               ls: BlockStructure,
               rhs: MatRef<'_, T>| {
        tri_matmul(
            dst,
            ds,
            Accum::Replace,
            lhs,
            ls,
            rhs,
            BlockStructure::Rectangular,
            T::one(),
            par,
        )
    };
    let mut s = Mat::<T>::zeros(n, n);
    tri(s.as_mut(), BlockStructure::TriangularLower, a, BlockStructure::Rectangular, b.transpose());
    let mut d_c = Mat::zeros(n, c.ncols());
    tri(
        d_c.as_mut(),
        BlockStructure::Rectangular,
        s.transpose(),
        BlockStructure::TriangularUpper,
        g,
    );
    // s now becomes dS = lt(G Cᵀ)
    tri(s.as_mut(), BlockStructure::TriangularLower, g, BlockStructure::Rectangular, c.transpose());
    let (mut d_a, mut d_b) = (Mat::zeros(n, a.ncols()), Mat::zeros(n, a.ncols()));
    tri(d_a.as_mut(), BlockStructure::Rectangular, s.as_ref(), BlockStructure::TriangularLower, b);
    tri(
        d_b.as_mut(),
        BlockStructure::Rectangular,
        s.transpose(),
        BlockStructure::TriangularUpper,
        a,
    );
    overflowed([("d_a", &d_a), ("d_b", &d_b), ("d_c", &d_c)])?;
    Ok(Grads { d_a, d_b, d_c, d_q: None, d_k: None })
}

/// Backward of [`cumsum_forward`] by running sums: a forward sweep rebuilds
/// \\(P_i = \sum_{j \le i} b_jc_j^\top\\) for \\(\partial a_i = P_i g_i\\); a reverse sweep builds
/// \\(Q_j = \sum_{i \ge j} a_i g_i^\top\\) for \\(\partial b_j = Q_j c_j\\) and \\(\partial c_j =
/// Q_j^\top b_j\\). The \\(m\\) rows of \\(P\\) and \\(Q\\) are independent for \\(\partial a\\) and
/// \\(\partial b\\), and their \\(k\\) columns for \\(\partial c\\), so each sweep runs on fixed groups
/// of them in parallel.
///
/// # Errors
/// As [`naive_backward`], without the memory limit.
pub fn cumsum_backward<T: Scalar>(
    a: MatRef<'_, T>, b: MatRef<'_, T>, c: MatRef<'_, T>, g: MatRef<'_, T>, par: Par,
) -> Result<Grads<T>> {
    validate_backward("lowtri::cumsum_backward", a, b, c, g)?;
    let n = a.nrows();
    // rows as contiguous slices: column i of the transposes
    let (at, bt, ct, gt) = (
        a.transpose().to_owned(),
        b.transpose().to_owned(),
        c.transpose().to_owned(),
        g.transpose().to_owned(),
    );
    // One sweep over the rows i (forward or reverse) for the entries e in `owned` of x's rows:
    // state[e] (as long as y's rows) accumulates x_ie · y_i, and out[e, i] = <state[e], z_i>.
    // Entries are independent, so fixed groups of 16 of them run in parallel.
    //   ∂aᵀ: x = b, y = c, z = g, forward (state = rows of P_i)
    //   ∂bᵀ: x = a, y = g, z = c, reverse (state = rows of Q_j)
    //   ∂cᵀ: x = g, y = a, z = b, reverse (state = columns of Q_j)
    let sweep = |x: &Mat<T>, y: &Mat<T>, z: &Mat<T>, reverse: bool| -> Mat<T> {
        const GROUP: usize = 16;
        let (width, len) = (x.nrows(), y.nrows());
        let mut out_t = Mat::<T>::zeros(width, n);
        let group = |(g, mut out): (usize, MatMut<'_, T>)| {
            let mut state = vec![T::zero(); out.nrows() * len];
            for step in 0..n {
                let i = if reverse { n - 1 - step } else { step };
                let (xi, yi, zi) = (x.col_as_slice(i), y.col_as_slice(i), z.col_as_slice(i));
                for local in 0..out.nrows() {
                    let st = &mut state[local * len..(local + 1) * len];
                    let xe = xi[g * GROUP + local];
                    st.iter_mut().zip(yi).for_each(|(s, &v)| *s += xe * v);
                    out[(local, i)] = dot(st, zi);
                }
            }
        };
        let groups: Vec<_> = polysketch_core::linalg::row_blocks(out_t.as_mut(), GROUP)
            .into_iter()
            .enumerate()
            .collect();
        match par {
            Par::Seq => groups.into_iter().for_each(group),
            Par::Rayon(_) => groups.into_par_iter().for_each(group),
        }
        out_t.transpose().to_owned()
    };
    let (d_a, d_b, d_c) =
        (sweep(&bt, &ct, &gt, false), sweep(&at, &gt, &ct, true), sweep(&gt, &at, &bt, true));
    overflowed([("d_a", &d_a), ("d_b", &d_b), ("d_c", &d_c)])?;
    Ok(Grads { d_a, d_b, d_c, d_q: None, d_k: None })
}
