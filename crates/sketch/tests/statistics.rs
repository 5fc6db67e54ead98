//! The sketches against the theory: unbiasedness, error ∝ r^{-1/2}, exact JL moments.
//!
//! Every draw comes from a fixed master seed, so these tests are deterministic; the
//! thresholds are confidence intervals at 99.9 % (a true statement fails them with probability
//! 1e-3 per check over the choice of master seed, and the seeds here were not picked to pass).

mod common;

use common::{gaussian, row_dot};
use faer::{Mat, MatRef, Par};
use polysketch_core::split_seed;
use polysketch_sketch::{
    CountSketch, GaussianJl, PolySketch, Result, TensorSketch, TreeSketch, jl,
};

const LEVEL: f64 = 0.999;

/// Samples of <S^T x^{⊗p}, S^T y^{⊗p}> for rows x = a_0, y = a_1 over `draws` sketches.
fn inner_products<S: PolySketch<f64>>(
    make: impl Fn(u64) -> Result<S>, a: MatRef<'_, f64>, draws: usize,
) -> Vec<f64> {
    (0..draws)
        .map(|d| {
            let s = make(split_seed(2024, d as u64)).unwrap();
            row_dot(s.apply(a, Par::Seq).unwrap().as_ref(), 0, 1)
        })
        .collect()
}

fn check_unbiased<S: PolySketch<f64>>(name: &str, p: usize, make: impl Fn(u64) -> Result<S>) {
    // Two correlated rows: <x, y> is far from zero so a multiplicative bias shows.
    let x = [0.9, -0.3, 0.5, 0.1, -0.7, 0.2];
    let y = [0.8, -0.1, 0.6, -0.2, -0.4, 0.3];
    let a = Mat::from_fn(2, 6, |i, j| if i == 0 { x[j] } else { y[j] });
    let dot: f64 = x.iter().zip(&y).map(|(u, v)| u * v).sum();
    let norms =
        (x.iter().map(|u| u * u).sum::<f64>() * y.iter().map(|u| u * u).sum::<f64>()).sqrt();
    let truth = dot.powi(p as i32);
    let ci = jl::mean_interval(&inner_products(make, a.as_ref(), 4000), LEVEL).unwrap();
    assert!(
        ci.contains(truth),
        "{name} p={p}: E<Sx,Sy> = {truth}, interval [{}, {}]",
        ci.lower,
        ci.upper
    );
    // The interval must be narrow enough to matter: a bias of 10 % of |<x,y>|^p is visible.
    let half = (ci.upper - ci.lower) / 2.0;
    assert!(
        half < 0.1 * truth.abs(),
        "{name} p={p}: interval half-width {half} too wide for {truth} (scale {})",
        norms.powi(p as i32)
    );
}

#[test]
fn gaussian_jl_is_unbiased() {
    check_unbiased("GaussianJl", 1, |s| GaussianJl::new(6, 16, s));
}

#[test]
fn countsketch_is_unbiased() {
    check_unbiased("CountSketch", 1, |s| CountSketch::new(6, 16, s));
}

#[test]
fn tensorsketch_is_unbiased() {
    for p in [2, 3, 4] {
        check_unbiased("TensorSketch", p, |s| TensorSketch::new(6, 64, p, s));
    }
}

#[test]
fn gaussian_tree_is_unbiased() {
    for p in [2, 4, 8] {
        check_unbiased("Tree(Gaussian)", p, |s| TreeSketch::gaussian(6, 64, p, s));
    }
}

#[test]
fn srht_tree_is_unbiased() {
    for p in [2, 4] {
        check_unbiased("Tree(SRHT)", p, |s| TreeSketch::srht(6, 64, p, s));
    }
}

/// Mean AMM error over draws at growing r: the fitted log-log slope must be near −1/2.
fn slope_of_error<S: PolySketch<f64>>(name: &str, make: impl Fn(usize, u64) -> Result<S>) -> f64 {
    // Correlated rows (a shared direction plus noise), so the leading error term is present.
    // h = 64 keeps CountSketch in its r^{-1/2} regime: once r ≫ h² collisions become rare and
    // its mean error falls faster.
    let base = gaussian::<f64>(1, 64, 7);
    let noise = gaussian::<f64>(20, 64, 8);
    let a = Mat::from_fn(20, 64, |i, j| base[(0, j)] + 0.5 * noise[(i, j)]);
    let rs = [16usize, 64, 256, 1024];
    let means: Vec<f64> = rs
        .iter()
        .map(|&r| {
            let errs: Vec<f64> = (0..40)
                .map(|d| {
                    jl::amm_error(
                        &make(r, split_seed(r as u64, d)).unwrap(),
                        a.as_ref(),
                        a.as_ref(),
                        Par::Seq,
                    )
                    .unwrap()
                })
                .collect();
            errs.iter().sum::<f64>() / errs.len() as f64
        })
        .collect();
    let rsf: Vec<f64> = rs.iter().map(|&r| r as f64).collect();
    let slope = jl::log_log_slope(&rsf, &means).unwrap();
    assert!((-0.62..=-0.38).contains(&slope), "{name}: slope {slope}, mean errors {means:?}");
    slope
}

#[test]
fn amm_error_falls_as_inverse_square_root_of_r() {
    slope_of_error("GaussianJl", |r, s| GaussianJl::new(64, r, s));
    slope_of_error("CountSketch", |r, s| CountSketch::new(64, r, s));
    slope_of_error("TensorSketch p=2", |r, s| TensorSketch::new(64, r, 2, s));
    slope_of_error("Tree(Gaussian) p=2", |r, s| TreeSketch::gaussian(64, r, 2, s));
    slope_of_error("Tree(Gaussian) p=4", |r, s| TreeSketch::gaussian(64, r, 4, s));
    slope_of_error("Tree(SRHT) p=4", |r, s| TreeSketch::srht(64, r, 4, s));
}

/// For Gaussian JL, ‖Sᵀx‖² ~ χ²_r / r for unit x: the L² deviation is exactly √(2/r) and the
/// L⁴ one (12/r² + 48/r³)^{1/4}. For the degree-2 Gaussian tree each of the r terms
/// (g₁·x)²(g₂·x)² has mean 1 and second moment 9, so the L² deviation is √(8/r).
#[test]
fn jl_moments_match_closed_forms() {
    let x = gaussian::<f64>(3, 10, 11);
    let r = 32.0f64;
    let dev = jl::jl_deviations(
        |s| GaussianJl::<f64>::new(10, 32, s),
        x.as_ref(),
        6000,
        5,
        Par::rayon(2),
    )
    .unwrap();
    for i in 0..3 {
        let samples: Vec<f64> = dev.col(i).iter().copied().collect();
        let m2 = jl::lt_norm(&samples, 2.0, LEVEL).unwrap();
        let m4 = jl::lt_norm(&samples, 4.0, LEVEL).unwrap();
        let (e2, e4) = ((2.0 / r).sqrt(), (12.0 / (r * r) + 48.0 / (r * r * r)).powf(0.25));
        assert!(m2.lower <= e2 && e2 <= m2.upper, "GaussianJl L2: {m2:?} vs {e2}");
        assert!(m4.lower <= e4 && e4 <= m4.upper, "GaussianJl L4: {m4:?} vs {e4}");
    }
    let dev = jl::jl_deviations(
        |s| TreeSketch::<f64>::gaussian(10, 32, 2, s),
        x.as_ref(),
        6000,
        6,
        Par::rayon(2),
    )
    .unwrap();
    let samples: Vec<f64> = dev.col(0).iter().copied().collect();
    let m2 = jl::lt_norm(&samples, 2.0, LEVEL).unwrap();
    let e2 = (8.0 / r).sqrt();
    assert!(m2.lower <= e2 && e2 <= m2.upper, "Tree p=2 L2: {m2:?} vs {e2}");
}

#[test]
fn epsilon_from_moments_takes_the_worse_order() {
    let (m2, m4, delta) = (0.1, 0.2, 0.1f64);
    let eps = jl::epsilon_from_moments(m2, m4, 2.0, delta);
    assert!((eps - (0.1 / 0.1f64.sqrt()).max(0.2 / 0.1f64.powf(0.25))).abs() < 1e-15);
}
