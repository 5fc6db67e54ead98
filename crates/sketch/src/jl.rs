//! Empirical checks of the sketching theory: JL moments and the AMM error.
//!
//! These are public so users (and the other crates' tests) can measure what a sketch actually
//! does on their data, not only what a bound promises.
//!
//! - **JL moment** (paper Definition 2.3): for a unit vector \\(x\\),
//!   \\(\big\| \|S^\top x\|^2 - 1 \big\|_{L^t} = \mathbb{E}\big[\,|\|S^\top x\|^2 - 1|^t\big]^{1/t}\\)
//!   over independent draws of \\(S\\). A sketch has the \\((\varepsilon, \delta, t)\\)-JL moment
//!   property when this is at most \\(\varepsilon\delta^{1/t}\\) for every unit \\(x\\). For a
//!   degree-\\(p\\) sketch the vectors reached are \\(x^{\otimes p}\\), unit when \\(\|x\| = 1\\).
//!   [`jl_deviations`] draws the sketches and returns the deviations; [`lt_norm`] turns a sample
//!   into the \\(L^t\\) norm with a confidence interval.
//! - **AMM error** (paper Definition 2.1):
//!   \\(\|(A^{\otimes p}S)(B^{\otimes p}S)^\top - (AB^\top)^{\circ p}\|_F /
//!   (\|A^{\otimes p}\|_F \|B^{\otimes p}\|_F)\\), with the exact side computed from \\(AB^\top\\)
//!   entrywise ([`exact_poly_gram`]) and \\(\|A^{\otimes p}\|_F^2 = \sum_i \|a_i\|^{2p}\\)
//!   ([`tensor_power_norm`]) — never from the \\(h^p\\)-wide tensors.
//!
//! # Example
//! ```
//! use faer::{Mat, Par};
//! use polysketch_sketch::{jl, GaussianJl, PolySketch};
//! let x = Mat::<f64>::from_fn(2, 8, |i, j| (i as f64 + 1.0) * (j as f64).cos());
//! // 200 independent Gaussian JL sketches of size 64: ‖Sᵀx‖² − 1 for each row.
//! let dev = jl::jl_deviations(|seed| GaussianJl::<f64>::new(8, 64, seed), x.as_ref(), 200, 1, Par::Seq)?;
//! let m2 = jl::lt_norm(dev.col(0).iter().copied().collect::<Vec<_>>().as_slice(), 2.0, 0.95)?;
//! // ‖Sᵀx‖² is χ²₆₄/64: its L² deviation is √(2/64) ≈ 0.18.
//! assert!(m2.lower < 0.177 && 0.177 < m2.upper);
//! # Ok::<(), polysketch_sketch::SketchError>(())
//! ```

use faer::{Mat, MatRef, Par};
use rayon::prelude::*;
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::{
    PolySketch, Result, Scalar, SketchError, check_cols, check_finite, check_nonempty,
    check_overflow, check_shape, split_seed,
};

/// A two-sided confidence interval for a mean, from the Student t distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanInterval {
    /// The sample mean.
    pub mean: f64,
    /// Its standard error \\(s/\sqrt n\\).
    pub std_err: f64,
    /// Lower end of the interval.
    pub lower: f64,
    /// Upper end of the interval.
    pub upper: f64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// Number of samples.
    pub samples: usize,
}

impl MeanInterval {
    /// Whether `value` lies in the interval.
    pub fn contains(&self, value: f64) -> bool {
        self.lower <= value && value <= self.upper
    }
}

/// An estimate of \\(\|X\|_{L^t} = \mathbb{E}[|X|^t]^{1/t}\\) from independent samples, with a
/// confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MomentEstimate {
    /// The order \\(t \ge 1\\).
    pub t: f64,
    /// \\((\frac1n \sum_i |x_i|^t)^{1/t}\\).
    pub value: f64,
    /// Lower end: the interval of the mean of \\(|X|^t\\), clipped at 0, to the power \\(1/t\\).
    pub lower: f64,
    /// Upper end, likewise.
    pub upper: f64,
    /// Confidence level.
    pub level: f64,
    /// Number of samples.
    pub samples: usize,
}

fn check_level(op: &'static str, level: f64) -> Result<()> {
    if !(level > 0.0 && level < 1.0) {
        return Err(SketchError::InvalidArgument {
            op,
            reason: format!("confidence level must lie in (0, 1), got {level}"),
        });
    }
    Ok(())
}

/// Student-t confidence interval at `level` for the mean of `samples`:
/// \\(\bar x \pm t_{n-1,(1+\text{level})/2}\, s/\sqrt n\\).
///
/// # Errors
/// [`InvalidArgument`](SketchError::InvalidArgument) with fewer than 2 samples, a level outside
/// \\((0, 1)\\) or a non-finite sample.
pub fn mean_interval(samples: &[f64], level: f64) -> Result<MeanInterval> {
    const OP: &str = "jl::mean_interval";
    check_level(OP, level)?;
    let n = samples.len();
    if n < 2 {
        return Err(SketchError::InvalidArgument {
            op: OP,
            reason: format!("needs at least 2 samples, got {n}"),
        });
    }
    if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
        return Err(SketchError::InvalidArgument {
            op: OP,
            reason: format!("sample {i} is not finite"),
        });
    }
    let nf = n as f64;
    let mean = samples.iter().sum::<f64>() / nf;
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (nf - 1.0);
    let std_err = (var / nf).sqrt();
    let student = StudentsT::new(0.0, 1.0, nf - 1.0)
        .map_err(|e| SketchError::InvalidArgument { op: OP, reason: e.to_string() })?;
    let q = student.inverse_cdf(0.5 + level / 2.0);
    Ok(MeanInterval {
        mean,
        std_err,
        lower: mean - q * std_err,
        upper: mean + q * std_err,
        level,
        samples: n,
    })
}

/// \\(\|X\|_{L^t}\\) from independent samples of \\(X\\), with the confidence interval of
/// [`mean_interval`] applied to \\(|X|^t\\) and mapped back through \\(y \mapsto y^{1/t}\\).
///
/// The interval rests on the central limit theorem for \\(|X|^t\\); for heavy-tailed \\(X\\)
/// and large \\(t\\) it needs many samples to be honest.
///
/// # Errors
/// As [`mean_interval`], and [`InvalidArgument`](SketchError::InvalidArgument) if `t < 1`.
pub fn lt_norm(samples: &[f64], t: f64, level: f64) -> Result<MomentEstimate> {
    if !(t >= 1.0 && t.is_finite()) {
        return Err(SketchError::InvalidArgument {
            op: "jl::lt_norm",
            reason: format!("t must be >= 1, got {t}"),
        });
    }
    let powered: Vec<f64> = samples.iter().map(|x| x.abs().powf(t)).collect();
    let ci = mean_interval(&powered, level)?;
    let root = |y: f64| y.max(0.0).powf(1.0 / t);
    Ok(MomentEstimate {
        t,
        value: root(ci.mean),
        lower: root(ci.lower),
        upper: root(ci.upper),
        level,
        samples: ci.samples,
    })
}

/// The \\(\varepsilon\\) that the measured moments support in Definition 2.3 for both \\(t\\)
/// and \\(2t\\), as Theorem 2.4 needs:
/// \\(\varepsilon = \max\big(m_t\,\delta^{-1/t},\ m_{2t}\,\delta^{-1/(2t)}\big)\\),
/// where \\(m_s = \|\|S^\top x\|^2 - 1\|_{L^s}\\).
pub fn epsilon_from_moments(m_t: f64, m_2t: f64, t: f64, delta: f64) -> f64 {
    (m_t * delta.powf(-1.0 / t)).max(m_2t * delta.powf(-1.0 / (2.0 * t)))
}

/// \\(\|a_i\|^{2p}\\)-normalised squared-norm deviations of a sketch:
/// \\(\|S^\top a_i^{\otimes p}\|^2 / \|a_i\|^{2p} - 1\\) for each row, i.e. \\(\|S^\top
/// u^{\otimes p}\|^2 - 1\\) for the unit vector \\(u = a_i/\|a_i\|\\).
///
/// # Shapes
/// `a: [n, h]`, `sa = apply(a): [n, r]` → `n` values.
///
/// # Errors
/// Shape mismatch if the row counts differ; [`InvalidArgument`](SketchError::InvalidArgument)
/// if a row of `a` is zero (it has no direction).
pub fn sq_norm_deviations<T: Scalar>(
    a: MatRef<'_, T>, sa: MatRef<'_, T>, p: usize,
) -> Result<Vec<f64>> {
    const OP: &str = "jl::sq_norm_deviations";
    check_shape(OP, "sa", sa, (a.nrows(), sa.ncols()))?;
    check_finite(OP, "a", a)?;
    check_finite(OP, "sa", sa)?;
    let deviations = (0..a.nrows())
        .map(|i| {
            let na: f64 = a.row(i).iter().map(|x| x.as_f64().powi(2)).sum();
            if na == 0.0 {
                return Err(SketchError::InvalidArgument {
                    op: OP,
                    reason: format!("row {i} of `a` is zero"),
                });
            }
            let ns: f64 = sa.row(i).iter().map(|x| x.as_f64().powi(2)).sum();
            Ok(ns / na.powi(p as i32) - 1.0)
        })
        .collect::<Result<Vec<f64>>>()?;
    let column = MatRef::from_column_major_slice(&deviations, deviations.len(), 1);
    check_overflow(OP, "a and sa", "deviations", column)?;
    Ok(deviations)
}

/// Draws `draws` independent sketches, sketch `d` from `make(split_seed(seed, d))`, and returns
/// the JL deviations \\(\|S_d^\top u_i^{\otimes p}\|^2 - 1\\) of every row direction
/// \\(u_i = x_i/\|x_i\|\\).
///
/// Draws run in parallel under `par`, each one sequentially, so the result does not depend on
/// the number of threads.
///
/// # Shapes
/// `x: [n, h]` → `[draws, n]`.
///
/// # Errors
/// Whatever `make` returns; input errors of [`PolySketch::apply`]; a zero row;
/// [`InvalidArgument`](SketchError::InvalidArgument) if `draws == 0`.
pub fn jl_deviations<T, S, F>(
    make: F, x: MatRef<'_, T>, draws: usize, seed: u64, par: Par,
) -> Result<Mat<f64>>
where
    T: Scalar,
    S: PolySketch<T>,
    F: Fn(u64) -> Result<S> + Sync,
{
    const OP: &str = "jl::jl_deviations";
    if draws == 0 {
        return Err(SketchError::InvalidArgument {
            op: OP,
            reason: "needs at least one draw".into(),
        });
    }
    check_nonempty(OP, "x", x)?;
    check_finite(OP, "x", x)?;
    let one = |d: usize| -> Result<Vec<f64>> {
        let s = make(split_seed(seed, d as u64))?;
        let sx = s.apply(x, Par::Seq)?;
        sq_norm_deviations(x, sx.as_ref(), s.degree())
    };
    let rows: Vec<Vec<f64>> = match par {
        Par::Seq => (0..draws).map(one).collect::<Result<_>>()?,
        Par::Rayon(_) => (0..draws).into_par_iter().map(one).collect::<Result<_>>()?,
    };
    Ok(Mat::from_fn(draws, x.nrows(), |d, i| rows[d][i]))
}

/// \\((AB^\top)^{\circ p}\\) in `f64`, entry \\((i, j)\\) = \\(\langle a_i, b_j\rangle^p\\),
/// computed from the inner products (the exact side of the AMM error).
///
/// # Shapes
/// `a: [n, h]`, `b: [m, h]` → `[n, m]`.
///
/// # Errors
/// Shape mismatch if the column counts differ.
pub fn exact_poly_gram<T: Scalar>(
    a: MatRef<'_, T>, b: MatRef<'_, T>, p: usize,
) -> Result<Mat<f64>> {
    const OP: &str = "jl::exact_poly_gram";
    check_cols(OP, "b", b, a.ncols())?;
    check_finite(OP, "a", a)?;
    check_finite(OP, "b", b)?;
    let gram = Mat::from_fn(a.nrows(), b.nrows(), |i, j| {
        let dot: f64 =
            a.row(i).iter().zip(b.row(j).iter()).map(|(x, y)| x.as_f64() * y.as_f64()).sum();
        dot.powi(p as i32)
    });
    check_overflow(OP, "a and b", "gram", gram.as_ref())?;
    Ok(gram)
}

/// \\(\|A^{\otimes p}\|_F = \big(\sum_i \|a_i\|^{2p}\big)^{1/2}\\), in `f64`.
pub fn tensor_power_norm<T: Scalar>(a: MatRef<'_, T>, p: usize) -> f64 {
    (0..a.nrows())
        .map(|i| a.row(i).iter().map(|x| x.as_f64().powi(2)).sum::<f64>().powi(p as i32))
        .sum::<f64>()
        .sqrt()
}

/// The AMM error of an approximate Gram matrix `gram` ≈ \\((AB^\top)^{\circ p}\\):
/// \\(\|\text{gram} - (AB^\top)^{\circ p}\|_F / (\|A^{\otimes p}\|_F \|B^{\otimes p}\|_F)\\).
///
/// # Shapes
/// `gram: [n, m]`, `a: [n, h]`, `b: [m, h]`.
///
/// # Errors
/// Shape mismatches; [`InvalidArgument`](SketchError::InvalidArgument) if \\(A\\) or \\(B\\) is
/// all zeros (the error is undefined).
pub fn amm_error_from_gram<T: Scalar>(
    gram: MatRef<'_, T>, a: MatRef<'_, T>, b: MatRef<'_, T>, p: usize,
) -> Result<f64> {
    const OP: &str = "jl::amm_error_from_gram";
    check_shape(OP, "gram", gram, (a.nrows(), b.nrows()))?;
    check_finite(OP, "gram", gram)?;
    let exact = exact_poly_gram(a, b, p)?;
    let denom = tensor_power_norm(a, p) * tensor_power_norm(b, p);
    if denom == 0.0 {
        return Err(SketchError::InvalidArgument { op: OP, reason: "A or B is all zeros".into() });
    }
    let mut num = 0.0;
    for j in 0..gram.ncols() {
        for i in 0..gram.nrows() {
            num += (gram[(i, j)].as_f64() - exact[(i, j)]).powi(2);
        }
    }
    let error = num.sqrt() / denom;
    check_overflow(OP, "gram, a and b", "error", MatRef::from_column_major_slice(&[error], 1, 1))?;
    Ok(error)
}

/// The AMM error of `sketch` on \\((A, B)\\) (Definition 2.1), using [`PolySketch::gram`].
///
/// # Shapes
/// `a: [n, h]`, `b: [m, h]`.
///
/// # Errors
/// Input errors of [`PolySketch::gram`]; see [`amm_error_from_gram`].
pub fn amm_error<T: Scalar, S: PolySketch<T> + ?Sized>(
    sketch: &S, a: MatRef<'_, T>, b: MatRef<'_, T>, par: Par,
) -> Result<f64> {
    let gram = sketch.gram(a, b, par)?;
    amm_error_from_gram(gram.as_ref(), a, b, sketch.degree())
}

/// The fitted slope of \\(\log y\\) against \\(\log x\\) by least squares (how error curves are
/// summarised: \\(-1/2\\) means error \\(\propto r^{-1/2}\\)).
///
/// # Errors
/// [`InvalidArgument`](SketchError::InvalidArgument) with fewer than two points, different
/// lengths, or a non-positive value.
pub fn log_log_slope(x: &[f64], y: &[f64]) -> Result<f64> {
    const OP: &str = "jl::log_log_slope";
    if x.len() != y.len() || x.len() < 2 {
        return Err(SketchError::InvalidArgument {
            op: OP,
            reason: "needs two equally long series of at least 2 points".into(),
        });
    }
    if x.iter().chain(y).any(|v| !(*v > 0.0 && v.is_finite())) {
        return Err(SketchError::InvalidArgument {
            op: OP,
            reason: "values must be positive and finite".into(),
        });
    }
    let lx: Vec<f64> = x.iter().map(|v| v.ln()).collect();
    let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    let n = lx.len() as f64;
    let (mx, my) = (lx.iter().sum::<f64>() / n, ly.iter().sum::<f64>() / n);
    let sxy: f64 = lx.iter().zip(&ly).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = lx.iter().map(|a| (a - mx).powi(2)).sum();
    if sxx == 0.0 {
        return Err(SketchError::InvalidArgument { op: OP, reason: "all x are equal".into() });
    }
    Ok(sxy / sxx)
}
