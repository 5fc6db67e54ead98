//! Plain `f64` references from the definitions: the masked \\(O(n^2)\\) sum and its hand-derived
//! gradients, for any [`Problem`] form. Slow; for tests on small `n`.

use faer::{Mat, MatRef};
use polysketch_core::Scalar;

use crate::{Diagonal, Features, Grads, Problem};

fn dot<T: Scalar>(x: MatRef<'_, T>, i: usize, y: MatRef<'_, T>, j: usize) -> f64 {
    (0..x.ncols()).map(|c| x[(i, c)].as_f64() * y[(j, c)].as_f64()).sum()
}

/// How entry \\(S_{ij}\\) is made: the pair of inputs, the row indices and the power \\(e\\),
/// \\(S_{ij} = \langle x_i, y_j\rangle^e\\).
fn score_rule<'p, T: Scalar>(
    p: &'p Problem<'_, T>, block: usize, i: usize, j: usize,
) -> (MatRef<'p, T>, MatRef<'p, T>, i32) {
    match (p.diagonal, p.features) {
        (Diagonal::ExactPower { q, k, p }, _) if i / block == j / block => (q, k, p as i32),
        (_, Features::Explicit { a, b }) => (a, b, 1),
        (_, Features::SelfTensored { l, r }) => (l, r, 2),
    }
}

/// \\(\mathrm{out}_i = \sum_{j \le i} S_{ij}\,c_j\\) with \\(S_{ij} = \langle a_i, b_j\rangle\\)
/// (explicit), \\(\langle l_i, r_j\rangle^2\\) (self-tensored), or \\(\langle q_i, k_j\rangle^p\\)
/// when \\(i, j\\) share a block of `block` rows and the diagonal is exact.
pub fn forward_reference<T: Scalar>(p: &Problem<'_, T>, block: usize) -> Mat<f64> {
    let (n, k) = (p.n(), p.k());
    let mut out = Mat::zeros(n, k);
    for i in 0..n {
        for j in 0..=i {
            let (x, y, e) = score_rule(p, block, i, j);
            let s = dot(x, i, y, j).powi(e);
            for c in 0..k {
                out[(i, c)] += s * p.c[(j, c)].as_f64();
            }
        }
    }
    out
}

/// Gradients of \\(\langle G, \mathrm{out}\rangle\\) by the chain rule on the sum:
/// \\(\partial c_j \mathrel{+}= S_{ij} g_i\\), \\(\partial S_{ij} = \langle g_i, c_j\rangle\\), and
/// for \\(S_{ij} = \langle x_i, y_j\rangle^e\\): \\(\partial x_i \mathrel{+}= e\langle x_i,
/// y_j\rangle^{e-1}\partial S_{ij}\, y_j\\), \\(\partial y_j \mathrel{+}= e\langle x_i,
/// y_j\rangle^{e-1}\partial S_{ij}\, x_i\\).
pub fn backward_reference<T: Scalar>(
    p: &Problem<'_, T>, block: usize, g: MatRef<'_, T>,
) -> Grads<f64> {
    let (n, k, w) = (p.n(), p.k(), p.feature_input_width());
    let exact = p.has_exact_diagonal().then(|| Mat::zeros(n, p.diagonal_width()));
    let mut grads = Grads {
        d_a: Mat::zeros(n, w),
        d_b: Mat::zeros(n, w),
        d_c: Mat::zeros(n, k),
        d_q: exact.clone(),
        d_k: exact,
    };
    for i in 0..n {
        for j in 0..=i {
            let (x, y, e) = score_rule(p, block, i, j);
            let xy = dot(x, i, y, j);
            let s = xy.powi(e);
            let ds: f64 = (0..k).map(|c| g[(i, c)].as_f64() * p.c[(j, c)].as_f64()).sum();
            for c in 0..k {
                grads.d_c[(j, c)] += s * g[(i, c)].as_f64();
            }
            let coef = e as f64 * xy.powi(e - 1) * ds;
            let on_diagonal_exact = p.has_exact_diagonal() && i / block == j / block;
            let (dx, dy) = if on_diagonal_exact {
                (grads.d_q.as_mut().expect("exact diagonal"), None)
            } else {
                (&mut grads.d_a, Some(&mut grads.d_b))
            };
            for c in 0..x.ncols() {
                dx[(i, c)] += coef * y[(j, c)].as_f64();
            }
            let dy = match dy {
                Some(d) => d,
                None => grads.d_k.as_mut().expect("exact diagonal"),
            };
            for c in 0..x.ncols() {
                dy[(j, c)] += coef * x[(i, c)].as_f64();
            }
        }
    }
    grads
}
