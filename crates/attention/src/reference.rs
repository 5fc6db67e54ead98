//! Plain `f64` references from the formulas, for tests: \\(O(n^2)\\) per head.

use faer::{Mat, MatRef};
use polysketch_core::Scalar;
use polysketch_sketch::PolySketch;

/// \\(\tilde x = s\,(g \circ \hat x + \beta)\\) of every row, in `f64` (layer norm with
/// \\(\epsilon\\) = [`crate::layernorm::LN_EPS`]).
pub fn layernorm_reference<T: Scalar>(
    x: MatRef<'_, T>, gain: &[T], bias: &[T], scale: f64,
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

/// The keys token `i` of `n` attends to: `0..=i` when `causal`, else all.
fn keys(i: usize, n: usize, causal: bool) -> core::ops::Range<usize> {
    0..if causal { i + 1 } else { n }
}

/// Normalised kernel attention from explicit scores: \\(\mathrm{out}_i = \sum_{j \le i}
/// s_{ij} v_j / (1 + \sum_{j \le i} s_{ij})\\) when `causal`, over every \\(j\\) otherwise.
pub fn normalised_attention_reference<T: Scalar>(
    v: MatRef<'_, T>, causal: bool, score: impl Fn(usize, usize) -> f64,
) -> Mat<f64> {
    masked_normalised_reference(v, causal, |_, _| true, score, 1.0)
}

/// [`normalised_attention_reference`] over the keys \\(j\\) that `sees(i, j)` allows, with
/// `offset + Σ s_ij` as the denominator (1 for the polynomial kinds, 0 for the feature maps).
fn masked_normalised_reference<T: Scalar>(
    v: MatRef<'_, T>, causal: bool, sees: impl Fn(usize, usize) -> bool,
    score: impl Fn(usize, usize) -> f64, offset: f64,
) -> Mat<f64> {
    let (n, h) = (v.nrows(), v.ncols());
    let mut out = Mat::zeros(n, h);
    for i in 0..n {
        let mut den = offset;
        for j in keys(i, n, causal).filter(|&j| sees(i, j)) {
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
/// a block of `block` tokens; causal or (`causal = false`) bidirectional.
#[allow(clippy::too_many_arguments)]
pub fn polysketch_reference<S: PolySketch<f64> + ?Sized>(
    sketch: &S, q: MatRef<'_, f64>, k: MatRef<'_, f64>, v: MatRef<'_, f64>, gain: &[f64],
    bias: &[f64], p: usize, local: Option<usize>, causal: bool,
) -> Mat<f64> {
    let scale = (q.ncols() as f64).powf(-0.25);
    let (qt, kt) =
        (layernorm_reference(q, gain, bias, scale), layernorm_reference(k, gain, bias, scale));
    let l = sketch.apply(qt.as_ref(), faer::Par::Seq).expect("reference inputs are valid");
    let r = sketch.apply(kt.as_ref(), faer::Par::Seq).expect("reference inputs are valid");
    let dot = |a: &Mat<f64>, i: usize, b: &Mat<f64>, j: usize| {
        (0..a.ncols()).map(|c| a[(i, c)] * b[(j, c)]).sum::<f64>()
    };
    normalised_attention_reference(v, causal, |i, j| match local {
        Some(b) if i / b == j / b => dot(&qt, i, &kt, j).powi(p as i32),
        _ => dot(&l, i, &r, j).powi(2),
    })
}

/// Softmax attention of one head from its definition: \\(\\mathrm{out}_i = \\sum_{j \\le i}
/// e^{s_{ij}} v_j / \\sum_{j \\le i} e^{s_{ij}}\\), \\(s_{ij} = \\langle q_i, k_j\\rangle/\\sqrt h\\)
/// (shifted by the row maximum for stability), causal or over every \\(j\\).
pub fn softmax_reference<T: Scalar>(
    q: MatRef<'_, T>, k: MatRef<'_, T>, v: MatRef<'_, T>, causal: bool,
) -> Mat<f64> {
    masked_softmax_reference(q, k, v, causal, |_, _| true)
}

/// Sliding-window softmax attention of one head from its definition: as
/// [`softmax_reference`] over the keys with \\(|i - j| < w\\) only (causal: \\(i - w < j \le
/// i\\)).
pub fn sliding_reference<T: Scalar>(
    q: MatRef<'_, T>, k: MatRef<'_, T>, v: MatRef<'_, T>, window: usize, causal: bool,
) -> Mat<f64> {
    masked_softmax_reference(q, k, v, causal, |i, j| i.abs_diff(j) < window)
}

/// Softmax attention over the keys that `sees(i, j)` allows.
fn masked_softmax_reference<T: Scalar>(
    q: MatRef<'_, T>, k: MatRef<'_, T>, v: MatRef<'_, T>, causal: bool,
    sees: impl Fn(usize, usize) -> bool,
) -> Mat<f64> {
    let (n, h) = (q.nrows(), q.ncols());
    let scale = 1.0 / (h as f64).sqrt();
    let mut out = Mat::zeros(n, v.ncols());
    for i in 0..n {
        let seen: Vec<usize> = keys(i, n, causal).filter(|&j| sees(i, j)).collect();
        let s: Vec<f64> = seen
            .iter()
            .map(|&j| scale * (0..h).map(|c| q[(i, c)].as_f64() * k[(j, c)].as_f64()).sum::<f64>())
            .collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let total: f64 = w.iter().sum();
        for (&j, wj) in seen.iter().zip(&w) {
            for c in 0..v.ncols() {
                out[(i, c)] += wj / total * v[(j, c)].as_f64();
            }
        }
    }
    out
}

/// Exact polynomial attention of one head from its definition: scores \\(\\langle\\tilde q_i,
/// \\tilde k_j\\rangle^p\\) with \\(\\tilde x = \\mathrm{LN}(x)/h^{1/4}\\), normalised by
/// [`normalised_attention_reference`] (causal or not).
#[allow(clippy::too_many_arguments)]
pub fn polynomial_reference<T: Scalar>(
    q: MatRef<'_, T>, k: MatRef<'_, T>, v: MatRef<'_, T>, gain: &[T], bias: &[T], p: usize,
    causal: bool,
) -> Mat<f64> {
    let scale = (q.ncols() as f64).powf(-0.25);
    let (qt, kt) =
        (layernorm_reference(q, gain, bias, scale), layernorm_reference(k, gain, bias, scale));
    normalised_attention_reference(v, causal, |i, j| {
        (0..qt.ncols()).map(|c| qt[(i, c)] * kt[(j, c)]).sum::<f64>().powi(p as i32)
    })
}

/// Local-only attention of one head from its definition: [`polynomial_reference`] over the
/// keys of the query's own block of `block` tokens only.
#[allow(clippy::too_many_arguments)]
pub fn local_reference<T: Scalar>(
    q: MatRef<'_, T>, k: MatRef<'_, T>, v: MatRef<'_, T>, gain: &[T], bias: &[T], p: usize,
    block: usize, causal: bool,
) -> Mat<f64> {
    let scale = (q.ncols() as f64).powf(-0.25);
    let (qt, kt) =
        (layernorm_reference(q, gain, bias, scale), layernorm_reference(k, gain, bias, scale));
    let same_block = |i: usize, j: usize| i / block == j / block;
    let score = |i: usize, j: usize| {
        (0..qt.ncols()).map(|c| qt[(i, c)] * kt[(j, c)]).sum::<f64>().powi(p as i32)
    };
    masked_normalised_reference(v, causal, same_block, score, 1.0)
}

/// A learned sketch applied to the rows of `x` from its definition (paper Algorithm 2,
/// Appendix D), in `f64`, with plain loops, reading the networks through their named
/// parameters: node \\(i\\) (post-order) maps its inputs \\(M_1, M_2\\) to \\(\sqrt r
/// \tanh(f_1(M_1) \circ f_2(M_2)/\sqrt r)\\), each \\(f = \\) LN, dense \\(8r\\), gelu, dense
/// \\(r\\), LN, dense \\(8r\\), gelu, dense \\(r\\).
///
/// # Shapes
/// `x: [n, h]` → `[n, r]`.
pub fn learned_sketch_reference<T: Scalar>(
    sketch: &crate::LearnedSketch<T>, x: MatRef<'_, T>,
) -> Mat<f64> {
    use polysketch_sketch::PolySketch;
    let params = sketch.parameters();
    let get = |name: String| -> Vec<f64> {
        let p = params.iter().find(|p| p.name == name).expect("every network parameter is named");
        p.data.iter().map(|v| v.as_f64()).collect()
    };
    let layernorm = |row: &[f64], gain: &[f64], bias: &[f64]| -> Vec<f64> {
        let d = row.len() as f64;
        let mean = row.iter().sum::<f64>() / d;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d;
        let inv = 1.0 / (var + crate::layernorm::LN_EPS).sqrt();
        (0..row.len()).map(|j| gain[j] * (row[j] - mean) * inv + bias[j]).collect()
    };
    let dense = |x: &[f64], w: &[f64], b: &[f64]| -> Vec<f64> {
        (0..b.len())
            .map(|o| b[o] + (0..x.len()).map(|i| x[i] * w[i * b.len() + o]).sum::<f64>())
            .collect()
    };
    let gelu = |v: Vec<f64>| -> Vec<f64> {
        let c = (2.0 / core::f64::consts::PI).sqrt();
        v.into_iter().map(|a| 0.5 * a * (1.0 + (c * (a + 0.044715 * a * a * a)).tanh())).collect()
    };
    let network = |m: usize, input: &[f64]| -> Vec<f64> {
        let name = |p: &str| format!("sketch.node{}.f{}.{p}", m / 2, m % 2 + 1);
        let y = layernorm(input, &get(name("ln0.gain")), &get(name("ln0.bias")));
        let z = gelu(dense(&y, &get(name("w1")), &get(name("b1"))));
        let a2 = dense(&z, &get(name("w2")), &get(name("b2")));
        let y2 = layernorm(&a2, &get(name("ln1.gain")), &get(name("ln1.bias")));
        let z3 = gelu(dense(&y2, &get(name("w3")), &get(name("b3"))));
        dense(&z3, &get(name("w4")), &get(name("b4")))
    };
    let r = sketch.sketch_dim();
    // the tree of degree d: two subtrees of degree d/2 (numbered first), then this node
    fn node(
        d: usize, next: &mut usize, x: &[f64], r: usize,
        network: &dyn Fn(usize, &[f64]) -> Vec<f64>,
    ) -> Vec<f64> {
        if d == 1 {
            return x.to_vec();
        }
        let m1 = node(d / 2, next, x, r, network);
        let m2 = node(d / 2, next, x, r, network);
        let i = *next;
        *next += 1;
        let (f1, f2) = (network(2 * i, &m1), network(2 * i + 1, &m2));
        let s = (r as f64).sqrt();
        f1.iter().zip(&f2).map(|(a, b)| s * (a * b / s).tanh()).collect()
    }
    let mut out = Mat::zeros(x.nrows(), r);
    for i in 0..x.nrows() {
        let row: Vec<f64> = (0..x.ncols()).map(|c| x[(i, c)].as_f64()).collect();
        let l = node(sketch.degree(), &mut 0, &row, r, &network);
        for (c, v) in l.into_iter().enumerate() {
            out[(i, c)] = v;
        }
    }
    out
}

/// Performer attention of one head from its definition, in `f64` with no shift:
/// \\(\phi(x)_f = e^{\langle\omega_f, x\rangle - \|x\|^2/2}/\sqrt m\\) of \\(x = q/h^{1/4}\\)
/// and \\(y = k/h^{1/4}\\), \\(\mathrm{out}_i = \sum_{j \le i} s_{ij}v_j / \sum_{j \le i}
/// s_{ij}\\) with \\(s_{ij} = \langle\phi(x_i), \phi(y_j)\rangle\\) (causal).
pub fn performer_reference<T: Scalar>(
    favor: &crate::performer::Favor<T>, q: MatRef<'_, T>, k: MatRef<'_, T>, v: MatRef<'_, T>,
) -> Mat<f64> {
    let (n, h) = (q.nrows(), q.ncols());
    let (omega, m) = (favor.omega(), favor.features());
    let scale = (h as f64).powf(-0.25);
    let phi = |x: MatRef<'_, T>| {
        Mat::from_fn(n, m, |i, f| {
            let row: Vec<f64> = (0..h).map(|c| scale * x[(i, c)].as_f64()).collect();
            let wx: f64 = (0..h).map(|c| omega[(f, c)].as_f64() * row[c]).sum();
            let sq: f64 = row.iter().map(|r| r * r).sum();
            (wx - sq / 2.0).exp() / (m as f64).sqrt()
        })
    };
    let (fq, fk) = (phi(q), phi(k));
    let score = |i: usize, j: usize| (0..m).map(|f| fq[(i, f)] * fk[(j, f)]).sum::<f64>();
    masked_normalised_reference(v, true, |_, _| true, score, 0.0)
}

/// Hedgehog attention of one head from its definition, in `f64`, reading the map through its
/// named parameters: \\(\phi(x) = [\mathrm{softmax}(xW + b), \mathrm{softmax}(-xW - b)]\\),
/// \\(\mathrm{out}_i = \sum_{j \le i} s_{ij}v_j / \sum_{j \le i} s_{ij}\\) with \\(s_{ij} =
/// \langle\phi(q_i), \phi(k_j)\rangle\\) (causal).
pub fn hedgehog_reference<T: Scalar>(
    map: &crate::hedgehog::Hedgehog<T>, q: MatRef<'_, T>, k: MatRef<'_, T>, v: MatRef<'_, T>,
) -> Mat<f64> {
    let params = map.parameters();
    let (w, b) = (params[0].data, params[1].data);
    let (n, h, half) = (q.nrows(), q.ncols(), params[1].data.len());
    let softmax = |z: Vec<f64>| {
        let total: f64 = z.iter().map(|x| x.exp()).sum();
        z.into_iter().map(move |x| x.exp() / total)
    };
    let phi = |x: MatRef<'_, T>, i: usize| -> Vec<f64> {
        let z: Vec<f64> = (0..half)
            .map(|j| {
                b[j].as_f64()
                    + (0..h).map(|c| x[(i, c)].as_f64() * w[c * half + j].as_f64()).sum::<f64>()
            })
            .collect();
        softmax(z.clone()).chain(softmax(z.iter().map(|x| -x).collect())).collect()
    };
    let (fq, fk): (Vec<_>, Vec<_>) = (0..n).map(|i| (phi(q, i), phi(k, i))).unzip();
    let score = |i: usize, j: usize| fq[i].iter().zip(&fk[j]).map(|(a, b)| a * b).sum::<f64>();
    masked_normalised_reference(v, true, |_, _| true, score, 0.0)
}
