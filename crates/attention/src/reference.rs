//! Plain `f64` references from the formulas, for tests: \\(O(n^2)\\) per head.

use faer::{Mat, MatRef};
use polysketch_sketch::{PolySketch, Scalar};

/// \\(\tilde x = s\,(g \circ \hat x + \beta)\\) of every row, in `f64` (layer norm with
/// \\(\epsilon\\) = [`crate::layernorm::LN_EPS`]).
pub fn layernorm_reference<T: Scalar>(
    x: MatRef<'_, T>,
    gain: &[T],
    bias: &[T],
    scale: f64,
) -> Mat<f64> {
    let (n, h) = (x.nrows(), x.ncols());
    Mat::from_fn(n, h, |i, j| {
        let row: Vec<f64> = (0..h).map(|c| x[(i, c)].as_f64()).collect();
        let mean = row.iter().sum::<f64>() / h as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / h as f64;
        scale
            * (gain[j].as_f64() * (row[j] - mean) / (var + crate::layernorm::LN_EPS).sqrt()
                + bias[j].as_f64())
    })
}

/// Causal normalised kernel attention from explicit scores: \\(\mathrm{out}_i = \sum_{j \le i}
/// s_{ij} v_j / (1 + \sum_{j \le i} s_{ij})\\).
pub fn normalised_attention_reference<T: Scalar>(
    v: MatRef<'_, T>,
    score: impl Fn(usize, usize) -> f64,
) -> Mat<f64> {
    let (n, h) = (v.nrows(), v.ncols());
    let mut out = Mat::zeros(n, h);
    for i in 0..n {
        let mut den = 1.0;
        for j in 0..=i {
            let s = score(i, j);
            den += s;
            for c in 0..h {
                out[(i, c)] += s * v[(j, c)].as_f64();
            }
        }
        for c in 0..h {
            out[(i, c)] /= den;
        }
    }
    out
}

/// PolySketch attention of one head, from its definition: \\(\tilde q, \tilde k\\) by the layer
/// norm, \\(l_i = S^\top\tilde q_i^{\otimes p/2}\\), \\(r_j\\) likewise, scores \\(\langle l_i,
/// r_j\rangle^2\\), or \\(\langle\tilde q_i, \tilde k_j\rangle^p\\) when `local` and \\(i, j\\) share
/// a block of `block` tokens.
#[allow(clippy::too_many_arguments)]
pub fn polysketch_reference<S: PolySketch<f64> + ?Sized>(
    sketch: &S,
    q: MatRef<'_, f64>,
    k: MatRef<'_, f64>,
    v: MatRef<'_, f64>,
    gain: &[f64],
    bias: &[f64],
    p: usize,
    local: Option<usize>,
) -> Mat<f64> {
    let scale = (q.ncols() as f64).powf(-0.25);
    let (qt, kt) = (
        layernorm_reference(q, gain, bias, scale),
        layernorm_reference(k, gain, bias, scale),
    );
    let l = sketch
        .apply(qt.as_ref(), faer::Par::Seq)
        .expect("reference inputs are valid");
    let r = sketch
        .apply(kt.as_ref(), faer::Par::Seq)
        .expect("reference inputs are valid");
    let dot = |a: &Mat<f64>, i: usize, b: &Mat<f64>, j: usize| {
        (0..a.ncols()).map(|c| a[(i, c)] * b[(j, c)]).sum::<f64>()
    };
    normalised_attention_reference(v, |i, j| match local {
        Some(b) if i / b == j / b => dot(&qt, i, &kt, j).powi(p as i32),
        _ => dot(&l, i, &r, j).powi(2),
    })
}

/// Causal softmax attention of one head from its definition: \\(\\mathrm{out}_i = \\sum_{j \\le i}
/// e^{s_{ij}} v_j / \\sum_{j \\le i} e^{s_{ij}}\\), \\(s_{ij} = \\langle q_i, k_j\\rangle/\\sqrt h\\)
/// (shifted by the row maximum for stability).
pub fn softmax_reference<T: Scalar>(
    q: MatRef<'_, T>,
    k: MatRef<'_, T>,
    v: MatRef<'_, T>,
) -> Mat<f64> {
    let (n, h) = (q.nrows(), q.ncols());
    let scale = 1.0 / (h as f64).sqrt();
    let mut out = Mat::zeros(n, v.ncols());
    for i in 0..n {
        let s: Vec<f64> = (0..=i)
            .map(|j| {
                scale
                    * (0..h)
                        .map(|c| q[(i, c)].as_f64() * k[(j, c)].as_f64())
                        .sum::<f64>()
            })
            .collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let total: f64 = w.iter().sum();
        for (j, wj) in w.iter().enumerate() {
            for c in 0..v.ncols() {
                out[(i, c)] += wj / total * v[(j, c)].as_f64();
            }
        }
    }
    out
}

/// Exact polynomial attention of one head from its definition: scores \\(\\langle\\tilde q_i,
/// \\tilde k_j\\rangle^p\\) with \\(\\tilde x = \\mathrm{LN}(x)/h^{1/4}\\), normalised by
/// [`normalised_attention_reference`].
pub fn polynomial_reference<T: Scalar>(
    q: MatRef<'_, T>,
    k: MatRef<'_, T>,
    v: MatRef<'_, T>,
    gain: &[T],
    bias: &[T],
    p: usize,
) -> Mat<f64> {
    let scale = (q.ncols() as f64).powf(-0.25);
    let (qt, kt) = (
        layernorm_reference(q, gain, bias, scale),
        layernorm_reference(k, gain, bias, scale),
    );
    normalised_attention_reference(v, |i, j| {
        (0..qt.ncols())
            .map(|c| qt[(i, c)] * kt[(j, c)])
            .sum::<f64>()
            .powi(p as i32)
    })
}
