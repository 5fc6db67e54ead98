//! Plain `f64` references, written from the textbook definitions, for testing the fast paths.
//!
//! Each one reads the random parameters of an existing sketch and recomputes its output with
//! naive loops, without faer products, FFTs or the row-chunk driver. They are slow (the
//! TensorSketch one enumerates all \\(h^p\\) index tuples) and meant for small inputs.

use faer::{Mat, MatRef};

use crate::{CountSketch, GaussianJl, PolySketch, Scalar, TensorSketch, TreeSketch};

/// \\(xS\\) with \\(S = G/\sqrt r\\), by the triple loop.
pub fn gaussian_jl_reference<T: Scalar>(s: &GaussianJl<T>, x: MatRef<'_, T>) -> Mat<f64> {
    let m = s.matrix();
    Mat::from_fn(x.nrows(), m.ncols(), |i, c| {
        (0..m.nrows()).map(|j| x[(i, j)].as_f64() * m[(j, c)].as_f64()).sum()
    })
}

/// CountSketch through its explicit matrix: \\(S_{j, \beta(j)} = \sigma(j)\\), zero elsewhere.
pub fn countsketch_reference<T: Scalar>(s: &CountSketch<T>, x: MatRef<'_, T>) -> Mat<f64> {
    let (h, r) = (s.input_dim(), s.sketch_dim());
    let dense = Mat::from_fn(h, r, |j, c| if s.bucket(j) == c { s.sign(j).as_f64() } else { 0.0 });
    Mat::from_fn(x.nrows(), r, |i, c| (0..h).map(|j| x[(i, j)].as_f64() * dense[(j, c)]).sum())
}

/// TensorSketch as a CountSketch of the explicit tensor power: index \\((i_1, \dots, i_p)\\) of
/// \\(x^{\otimes p}\\) goes to bucket \\(\sum_k \beta_k(i_k) \bmod r\\) with sign \\(\prod_k
/// \sigma_k(i_k)\\). Enumerates all \\(h^p\\) tuples.
pub fn tensorsketch_reference<T: Scalar>(s: &TensorSketch<T>, x: MatRef<'_, T>) -> Mat<f64> {
    let (h, r, p) = (s.input_dim(), s.sketch_dim(), s.degree());
    let mut out = Mat::zeros(x.nrows(), r);
    let total = h.pow(p as u32);
    for i in 0..x.nrows() {
        for flat in 0..total {
            let (mut rest, mut bucket, mut value) = (flat, 0usize, 1.0);
            for k in 0..p {
                let j = rest % h;
                rest /= h;
                let cs = s.count_sketch(k);
                bucket += cs.bucket(j);
                value *= cs.sign(j).as_f64() * x[(i, j)].as_f64();
            }
            out[(i, bucket % r)] += value;
        }
    }
    out
}

/// The tree sketch by its recursion, one row at a time with plain vectors: a node maps its
/// children \\(m_1, m_2\\) to \\(\sqrt{1/r}\,(\Pi_1^\top m_1) \ast (\Pi_2^\top m_2)\\), with the
/// projections taken from [`TreeSketch::dense_projections`].
pub fn tree_reference<T: Scalar>(s: &TreeSketch<T>, x: MatRef<'_, T>) -> Mat<f64> {
    tree_recursion(s, x, |v| v)
}

/// The magnitude of the terms behind each entry of [`tree_reference`]: the same recursion on
/// \\(|x|\\) with \\(|\Pi|\\), an upper bound of every entry's absolute value and of every partial
/// sum inside it. Rounding errors of any summation order are a small multiple of the unit
/// roundoff times this bound, so tests judge entries that cancel to near zero by it.
pub fn tree_term_bound<T: Scalar>(s: &TreeSketch<T>, x: MatRef<'_, T>) -> Mat<f64> {
    tree_recursion(s, x, f64::abs)
}

/// The recursion of [`tree_reference`] with `f` applied to every input and projection entry.
fn tree_recursion<T: Scalar>(s: &TreeSketch<T>, x: MatRef<'_, T>, f: fn(f64) -> f64) -> Mat<f64> {
    let r = s.sketch_dim();
    let scale = 1.0 / (r as f64).sqrt();
    let levels: Vec<Vec<Mat<f64>>> =
        (0..s.levels()).map(|l| s.dense_projections(l).unwrap_or_default()).collect();
    let project = |pi: &Mat<f64>, v: &[f64]| -> Vec<f64> {
        (0..pi.ncols())
            .map(|c| v.iter().enumerate().map(|(j, vj)| vj * f(pi[(j, c)])).sum())
            .collect()
    };
    let mut out = Mat::zeros(x.nrows(), r);
    for i in 0..x.nrows() {
        let row: Vec<f64> = (0..x.ncols()).map(|j| f(x[(i, j)].as_f64())).collect();
        // children of the bottom level: p copies of the row
        let mut children: Vec<Vec<f64>> = vec![row; s.degree()];
        for projections in &levels {
            children = projections
                .chunks(2)
                .zip(children.chunks(2))
                .map(|(pi, m)| {
                    let (a, b) = (project(&pi[0], &m[0]), project(&pi[1], &m[1]));
                    a.iter().zip(&b).map(|(u, v)| scale * u * v).collect()
                })
                .collect();
        }
        for (c, v) in children[0].iter().enumerate() {
            out[(i, c)] = *v;
        }
    }
    out
}
