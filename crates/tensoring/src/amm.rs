//! The empirical check of Theorem 2.4 (paper Section 2.2): the AMM error of the self-tensored
//! sketch against \\(\sqrt5\,\varepsilon\\); `examples/amm_bound.rs` runs it, and
//! `polysketch_bench::figures::amm_error` draws it.
//!
//! For each degree \\(p\\), base sketch size \\(r\\) and input [`Family`], over independent draws
//! of the sketches:
//!
//! - the AMM error of the self-tensored sketch \\(\phi'\\) built on the degree-\\(p/2\\) base
//!   (the Gaussian tree; Gaussian JL for \\(p = 2\\)), computed through
//!   \\((LR^\top)^{\circ 2}\\), and of the degree-\\(p\\) Gaussian tree of the same size \\(r\\);
//! - \\(\varepsilon\\) of the base sketch, estimated from its measured JL moments
//!   (Definition 2.3) over the unit vectors the inputs reach: for every row \\(x\\) of \\(A\\)
//!   and \\(B\\), \\(u = (x/\|x\|)^{\otimes p/2}\\), the deviations \\(\|S^\top u\|^2 - 1\\) over
//!   the draws give \\(m_t\\) and \\(m_{2t}\\) (empirical \\(L^t\\) norms), and
//!   \\(\varepsilon = \max_u \max(m_t \delta^{-1/t}, m_{2t}\delta^{-1/(2t)})\\) with \\(t = 2\\),
//!   \\(\delta = 0.1\\);
//! - whether the case is inside the theorem's assumption (\\(\varepsilon \le\\)
//!   [`EPS_MAX`]) and there the fraction of draws whose self-tensored error exceeded
//!   \\(\sqrt5\,\varepsilon\\) — at most \\(\delta\\) if the theorem holds.

use std::fmt::Write as _;

use faer::{Mat, MatRef, Par};
use polysketch_core::{normal, seeded_rng, split_seed};
use polysketch_sketch::{GaussianJl, PolySketch, TreeSketch, jl};
use rayon::prelude::*;

use crate::{Result, SketchError, gram_block};

/// Largest \\(\varepsilon\\) for which the proof's constant \\(\sqrt 5\\) holds: with
/// \\(C = 1/\varepsilon\\) the proof needs \\(4\varepsilon^2 + 5\varepsilon^3 + \varepsilon^4 \le
/// 5\varepsilon^2\\), i.e. \\(\varepsilon \le 0.1926\\) (slightly less than the paper's 1/5).
pub const EPS_MAX: f64 = 0.19;

/// The kinds of input the experiment tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Independent Gaussian rows, \\(\mathcal N(0, I/h)\\): nearly orthogonal, so the leading
    /// error term \\(2\langle c, d\rangle e\\) vanishes and the error falls faster than
    /// \\(r^{-1/2}\\) at small \\(r\\).
    Gaussian,
    /// Gaussian rows scaled by \\(10^{-1}\\) to \\(10^{1}\\): norms 100 times apart.
    UnequalNorms,
    /// A common unit direction plus 5 % Gaussian noise: inner products near \\(\|c\|\|d\|\\),
    /// the case where the error is \\(\Theta(r^{-1/2})\\).
    NearlyParallel,
}

impl Family {
    /// All families, in table order.
    pub const ALL: [Family; 3] = [Family::Gaussian, Family::UnequalNorms, Family::NearlyParallel];

    /// Short name used in tables and CSV.
    pub fn name(self) -> &'static str {
        match self {
            Family::Gaussian => "gaussian",
            Family::UnequalNorms => "unequal_norms",
            Family::NearlyParallel => "nearly_parallel",
        }
    }

    /// An `[n, h]` input of this family from `seed` (the experiment splits it into \\(A\\) and
    /// \\(B\\)).
    pub fn generate(self, n: usize, h: usize, seed: u64) -> Mat<f64> {
        let mut rng = seeded_rng(seed);
        let scale = 1.0 / (h as f64).sqrt();
        let mut normal = move || -> f64 { normal(&mut rng) };
        let noise = Mat::from_fn(n, h, |_, _| scale * normal());
        match self {
            Family::Gaussian => noise,
            Family::UnequalNorms => {
                let spread = |i: usize| 10f64.powf(-1.0 + 2.0 * i as f64 / (n.max(2) - 1) as f64);
                Mat::from_fn(n, h, |i, j| spread(i) * noise[(i, j)])
            }
            Family::NearlyParallel => {
                let u: Vec<f64> = (0..h).map(|_| normal()).collect();
                let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
                Mat::from_fn(n, h, |i, j| u[j] / norm + 0.05 * noise[(i, j)])
            }
        }
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Degrees \\(p\\) (even).
    pub degrees: Vec<usize>,
    /// Base sketch sizes \\(r\\).
    pub sizes: Vec<usize>,
    /// Per degree, the largest \\(r\\) at which the degree-\\(p/2\\) base is run (its \\(r \times
    /// r\\) Gaussian nodes get expensive for \\(p \ge 8\\)).
    pub max_base_size: Vec<(usize, usize)>,
    /// Per degree, the largest \\(r\\) at which the degree-\\(p\\) tree is run for comparison.
    pub max_tree_size: Vec<(usize, usize)>,
    /// Independent draws per case.
    pub draws: usize,
    /// Rows of \\(A\\) and of \\(B\\).
    pub rows: usize,
    /// Input dimension \\(h\\).
    pub dim: usize,
    /// JL-moment order \\(t\\) (even; \\(2t\\) is used too).
    pub t: f64,
    /// Failure probability \\(\delta\\) of the theorem.
    pub delta: f64,
    /// Master seed.
    pub seed: u64,
}

impl Config {
    /// The full grid: \\(p \in \{2, 4, 8\}\\), \\(r = 16 \dots 4096\\), 100 draws.
    pub fn full() -> Self {
        Self {
            degrees: vec![2, 4, 8],
            sizes: (4..=12).map(|k| 1usize << k).collect(),
            max_base_size: vec![(2, 4096), (4, 4096), (8, 4096)],
            max_tree_size: vec![(2, 4096), (4, 4096), (8, 2048)],
            draws: 100,
            rows: 32,
            dim: 16,
            t: 2.0,
            delta: 0.1,
            seed: 2024,
        }
    }

    /// A reduced grid that runs in seconds (`--quick`).
    pub fn quick() -> Self {
        Self {
            sizes: vec![16, 64, 256, 1024],
            max_base_size: vec![(2, 1024), (4, 1024), (8, 256)],
            max_tree_size: vec![(2, 1024), (4, 256), (8, 128)],
            draws: 40,
            ..Self::full()
        }
    }

    fn limit(table: &[(usize, usize)], p: usize) -> usize {
        table.iter().find(|(q, _)| *q == p).map_or(usize::MAX, |(_, r)| *r)
    }

    /// The cases of the grid, in run order.
    pub fn cases(&self) -> Vec<(usize, usize, Family)> {
        let mut out = Vec::new();
        for &p in &self.degrees {
            for &r in self.sizes.iter().filter(|&&r| r <= Self::limit(&self.max_base_size, p)) {
                for family in Family::ALL {
                    out.push((p, r, family));
                }
            }
        }
        out
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`SketchError::InvalidArgument`] for an odd or unsupported degree, fewer than 2 draws or rows, a zero
    /// dimension or size, \\(t < 1\\), or \\(\delta \notin (0, 1)\\).
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(SketchError::InvalidArgument { op: "amm::Config::validate", reason })
        };
        if let Some(p) =
            self.degrees.iter().find(|&&p| p < 2 || p % 2 != 0 || !(p / 2).is_power_of_two())
        {
            return bad(format!("degree {p}: needs p = 2 or p/2 a power of two"));
        }
        if self.draws < 2 || self.rows < 2 || self.dim == 0 || self.sizes.contains(&0) {
            return bad("draws and rows must be >= 2, dim and sizes >= 1".into());
        }
        let t_ok = self.t >= 1.0 && self.t.is_finite();
        if !(t_ok && self.delta > 0.0 && self.delta < 1.0) {
            return bad(format!(
                "need t >= 1 and 0 < delta < 1, got t = {}, delta = {}",
                self.t, self.delta
            ));
        }
        Ok(())
    }
}

/// What one case measured.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// Degree \\(p\\).
    pub p: usize,
    /// Base sketch size \\(r\\).
    pub r: usize,
    /// Input family.
    pub family: Family,
    /// Number of draws.
    pub draws: usize,
    /// Mean AMM error of the self-tensored sketch.
    pub self_mean: f64,
    /// 95th percentile of the same.
    pub self_p95: f64,
    /// Mean AMM error of the degree-\\(p\\) tree (if run at this \\(r\\)).
    pub tree_mean: Option<f64>,
    /// 95th percentile of the same.
    pub tree_p95: Option<f64>,
    /// \\(\varepsilon\\) of the base sketch from its JL moments.
    pub eps: f64,
    /// Worst \\(m_t\\) over the input directions.
    pub m_t: f64,
    /// Worst \\(m_{2t}\\) over the input directions.
    pub m_2t: f64,
    /// Fraction of draws with self-tensored error \\(> \sqrt5\,\varepsilon\\).
    pub violations: f64,
}

impl CaseResult {
    /// Whether the case satisfies the theorem's assumption \\(\varepsilon \le\\) [`EPS_MAX`].
    pub fn in_regime(&self) -> bool {
        self.eps <= EPS_MAX
    }

    /// Self-tensored mean error over the tree's mean error.
    pub fn ratio(&self) -> Option<f64> {
        self.tree_mean.map(|t| self.self_mean / t)
    }
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

fn p95(x: &[f64]) -> f64 {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    v[((0.95 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

/// The degree-`q` base sketch of the experiment: Gaussian JL for `q = 1`, else the Gaussian
/// tree.
fn base_sketch(h: usize, r: usize, q: usize, seed: u64) -> Result<Box<dyn PolySketch<f64>>> {
    Ok(if q == 1 {
        Box::new(GaussianJl::new(h, r, seed)?)
    } else {
        Box::new(TreeSketch::gaussian(h, r, q, seed)?)
    })
}

/// One draw: (self-tensored error, tree error, JL deviations of every input direction).
fn one_draw(
    config: &Config, p: usize, r: usize, a: MatRef<'_, f64>, b: MatRef<'_, f64>, seed: u64,
) -> Result<(f64, Option<f64>, Vec<f64>)> {
    let base = base_sketch(config.dim, r, p / 2, seed)?;
    let (l, rr) = (base.apply(a, Par::Seq)?, base.apply(b, Par::Seq)?);
    let mut gram = Mat::zeros(a.nrows(), b.nrows());
    gram_block(l.as_ref(), rr.as_ref(), gram.as_mut(), Par::Seq);
    let self_err = jl::amm_error_from_gram(gram.as_ref(), a, b, p)?;
    let mut dev = jl::sq_norm_deviations(a, l.as_ref(), p / 2)?;
    dev.extend(jl::sq_norm_deviations(b, rr.as_ref(), p / 2)?);
    let tree_err = if r <= Config::limit(&config.max_tree_size, p) {
        let tree = TreeSketch::gaussian(config.dim, r, p, split_seed(seed, 1))?;
        Some(jl::amm_error(&tree, a, b, Par::Seq)?)
    } else {
        None
    };
    Ok((self_err, tree_err, dev))
}

/// Runs one case; draws in parallel under `par` (each draw sequential, so the numbers do not
/// depend on the thread count).
///
/// # Errors
/// Invalid configuration, or a sketch error.
pub fn run_case(
    config: &Config, p: usize, r: usize, family: Family, par: Par,
) -> Result<CaseResult> {
    config.validate()?;
    let fam = Family::ALL.iter().position(|f| *f == family).unwrap_or(0) as u64;
    // A and B are the two halves of one sample, so they share the family's structure (the
    // common direction of the nearly parallel family in particular).
    let ab = family.generate(2 * config.rows, config.dim, split_seed(config.seed, fam));
    let (a, b) =
        (ab.subrows(0, config.rows).to_owned(), ab.subrows(config.rows, config.rows).to_owned());
    let case_seed = split_seed(config.seed, ((p as u64) << 40) | ((r as u64) << 8) | fam);
    let draw =
        |d: usize| one_draw(config, p, r, a.as_ref(), b.as_ref(), split_seed(case_seed, d as u64));
    let draws: Vec<_> = match par {
        Par::Seq => (0..config.draws).map(draw).collect::<Result<_>>()?,
        Par::Rayon(_) => (0..config.draws).into_par_iter().map(draw).collect::<Result<_>>()?,
    };
    let self_errs: Vec<f64> = draws.iter().map(|d| d.0).collect();
    let tree_errs: Option<Vec<f64>> = draws.iter().map(|d| d.1).collect();
    let (mut m_t, mut m_2t, mut eps) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..draws[0].2.len() {
        let samples: Vec<f64> = draws.iter().map(|d| d.2[i]).collect();
        let mt = jl::lt_norm(&samples, config.t, 0.95)?.value;
        let m2t = jl::lt_norm(&samples, 2.0 * config.t, 0.95)?.value;
        m_t = m_t.max(mt);
        m_2t = m_2t.max(m2t);
        eps = eps.max(jl::epsilon_from_moments(mt, m2t, config.t, config.delta));
    }
    let bound = 5f64.sqrt() * eps;
    let violations =
        self_errs.iter().filter(|&&e| e > bound).count() as f64 / self_errs.len() as f64;
    Ok(CaseResult {
        p,
        r,
        family,
        draws: config.draws,
        self_mean: mean(&self_errs),
        self_p95: p95(&self_errs),
        tree_mean: tree_errs.as_deref().map(mean),
        tree_p95: tree_errs.as_deref().map(p95),
        eps,
        m_t,
        m_2t,
        violations,
    })
}

/// Fitted log-log slope of the mean self-tensored error against \\(r\\) for one degree and
/// family (`None` with fewer than two sizes).
pub fn slope(results: &[CaseResult], p: usize, family: Family) -> Option<f64> {
    let pts: Vec<(f64, f64)> = results
        .iter()
        .filter(|c| c.p == p && c.family == family)
        .map(|c| (c.r as f64, c.self_mean))
        .collect();
    let (x, y): (Vec<f64>, Vec<f64>) = pts.into_iter().unzip();
    jl::log_log_slope(&x, &y).ok()
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.4}"))
}

/// The header of [`table_row`].
pub fn table_header() -> String {
    format!(
        "{:>2} {:>5} {:<15} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>6} {:>9}",
        "p",
        "r",
        "family",
        "self_mean",
        "self_p95",
        "tree_mean",
        "tree_p95",
        "ratio",
        "eps",
        "in_reg",
        "viol_frac"
    )
}

/// One printed row: mean and 95th-percentile errors, \\(\varepsilon\\), the in-regime flag,
/// and the violation fraction (only meaningful, so only shown, in the regime).
pub fn table_row(c: &CaseResult) -> String {
    format!(
        "{:>2} {:>5} {:<15} {:>9.4} {:>9.4} {:>9} {:>9} {:>7} {:>7.3} {:>6} {:>9}",
        c.p,
        c.r,
        c.family.name(),
        c.self_mean,
        c.self_p95,
        opt(c.tree_mean),
        opt(c.tree_p95),
        c.ratio().map_or("-".into(), |v| format!("{v:.3}")),
        c.eps,
        if c.in_regime() { "yes" } else { "no" },
        if c.in_regime() { format!("{:.3}", c.violations) } else { "-".into() },
    )
}

/// All results as CSV (header line first).
pub fn to_csv(results: &[CaseResult]) -> String {
    let mut s = String::from(
        "p,r,family,draws,self_mean,self_p95,tree_mean,tree_p95,ratio,eps,m_t,m_2t,in_regime,violation_fraction\n",
    );
    for c in results {
        let o = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.6e}"));
        let _ = writeln!(
            s,
            "{},{},{},{},{:.6e},{:.6e},{},{},{},{:.6e},{:.6e},{:.6e},{},{:.4}",
            c.p,
            c.r,
            c.family.name(),
            c.draws,
            c.self_mean,
            c.self_p95,
            o(c.tree_mean),
            o(c.tree_p95),
            o(c.ratio()),
            c.eps,
            c.m_t,
            c.m_2t,
            c.in_regime(),
            c.violations
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Config {
        Config {
            degrees: vec![2, 4],
            sizes: vec![16, 64, 256, 1024],
            max_tree_size: vec![(2, 1024), (4, 1024)],
            draws: 40,
            rows: 8,
            dim: 8,
            ..Config::quick()
        }
    }

    #[test]
    fn errors_fall_with_r_and_self_tensoring_stays_near_the_tree() {
        let cfg = tiny();
        let results: Vec<CaseResult> = cfg
            .cases()
            .into_iter()
            .map(|(p, r, f)| run_case(&cfg, p, r, f, Par::rayon(2)).unwrap())
            .collect();
        for p in [2, 4] {
            let s = slope(&results, p, Family::NearlyParallel).unwrap();
            assert!((-0.75..=-0.35).contains(&s), "p={p}: slope {s}");
        }
        for c in &results {
            let ratio = c.ratio().unwrap();
            assert!(ratio > 0.2 && ratio < 5.0, "{}", table_row(c));
            assert!(c.eps > 0.0 && c.self_mean > 0.0 && c.self_p95 >= c.self_mean * 0.5);
        }
        let csv = to_csv(&results);
        assert_eq!(csv.lines().count(), results.len() + 1);
    }

    #[test]
    fn results_do_not_depend_on_thread_count() {
        let cfg = Config {
            degrees: vec![4],
            sizes: vec![32],
            draws: 6,
            rows: 4,
            dim: 4,
            ..Config::quick()
        };
        let seq = run_case(&cfg, 4, 32, Family::UnequalNorms, Par::Seq).unwrap();
        let par = run_case(&cfg, 4, 32, Family::UnequalNorms, Par::rayon(2)).unwrap();
        assert_eq!(seq, par);
    }

    #[test]
    fn bad_configurations_are_refused() {
        for cfg in [
            Config { degrees: vec![3], ..Config::quick() },
            Config { degrees: vec![12], ..Config::quick() },
            Config { draws: 1, ..Config::quick() },
            Config { delta: 1.5, ..Config::quick() },
            Config { sizes: vec![0], ..Config::quick() },
        ] {
            assert!(matches!(cfg.validate(), Err(SketchError::InvalidArgument { .. })), "{cfg:?}");
        }
    }
}
