//! The two textbook ways to compute \\(\mathrm{lt}(AB^\top)C\\), for comparison and benches.

use faer::linalg::matmul::triangular::{BlockStructure, matmul as tri_matmul};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use polysketch_sketch::linalg::dot;
use polysketch_sketch::{Result, Scalar, check_param_bytes};
use rayon::prelude::*;

use crate::Problem;

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
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: MatRef<'_, T>,
    par: Par,
) -> Result<Mat<T>> {
    Problem::general(a, b, c).validate("lowtri::naive_forward")?;
    let n = a.nrows();
    check_param_bytes(
        "lowtri::naive_forward",
        (n as u128) * (n as u128),
        size_of::<T>(),
    )?;
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
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: MatRef<'_, T>,
    par: Par,
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
    Ok(out)
}
