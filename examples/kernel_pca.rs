//! Kernel PCA on real data: exact (eigendecomposition of the centred kernel matrix) against PCA
//! of sketched features (tree, TensorSketch, self-tensored) and of Nyström features.
//!
//! ```sh
//! cargo run --release --example kernel_pca                       # digits, ~1 minute on 2 cores
//! cargo run --release --example kernel_pca -- --data data/wine.csv --class class
//! ```
//!
//! Prints the top eigenvalues of the exact and every approximate method with their relative
//! errors and explained variances, and the principal angles between the exact and approximate
//! top-k score subspaces, for D ∈ {256, 1024, 4096}; writes `kernel_pca.csv` and
//! `kernel_pca.svg` (the first two components, coloured by class, exact and sketched side by
//! side) into `--out`; prints last `angle <degrees>`, the largest principal angle between the
//! exact and the best sketched top-5 subspace at D = 4096.

use std::path::PathBuf;

use clap::Parser;
use faer::{MatRef, Par};
use indicatif::{ProgressBar, ProgressStyle};
use polysketch::kernel::data::{Standardizer, Table};
use polysketch::kernel::{
    FeatureKind, KernelPca, Nystrom, PolyKernel, SketchFeatures, kernel_pca_exact,
    kernel_pca_features, principal_angles,
};
use polysketch::plot::{Panel, scatter_panels};

/// Kernel PCA: exact against sketched features and Nyström.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// CSV file with a header line, numeric features and an integer class column.
    #[arg(long, default_value = "data/digits.csv")]
    data: PathBuf,
    /// The class column (used for colours only).
    #[arg(long, default_value = "digit")]
    class: String,
    /// Polynomial degree p.
    #[arg(long, default_value_t = 4)]
    degree: usize,
    /// Feature counts D (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![256usize, 1024, 4096])]
    dims: Vec<usize>,
    /// Components compared (eigenvalues printed and the subspace of the angles).
    #[arg(long, default_value_t = 5)]
    components: usize,
    /// Clip standardised features to [-clip, clip].
    #[arg(long, default_value_t = 4.0)]
    clip: f64,
    /// Seed of the sketches and the landmarks.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Folder for kernel_pca.csv and kernel_pca.svg.
    #[arg(long, default_value = "runs/kernel_pca")]
    out: PathBuf,
}

fn main() {
    polysketch::exit_on_error(run(Args::parse()));
}

/// One approximate method's comparison with the exact kernel PCA.
struct Comparison {
    method: String,
    dim: usize,
    pca: KernelPca,
    /// Relative error of each of the top eigenvalues.
    value_errors: Vec<f64>,
    /// Principal angles (degrees) between the top-k score subspaces, ascending.
    angles: Vec<f64>,
}

fn compare(
    method: &str, dim: usize, pca: KernelPca, exact: &KernelPca, k: usize,
) -> polysketch::Result<Comparison> {
    let value_errors =
        pca.values.iter().zip(&exact.values).map(|(a, e)| (a - e).abs() / e.abs()).collect();
    let angles =
        principal_angles(exact.scores.as_ref().subcols(0, k), pca.scores.as_ref().subcols(0, k))?
            .iter()
            .map(|a| a.to_degrees())
            .collect();
    Ok(Comparison { method: method.into(), dim, pca, value_errors, angles })
}

/// Scores of the first two components with each sign chosen to match `reference` (components
/// are defined up to sign).
fn aligned_2d(
    scores: MatRef<'_, f64>, reference: MatRef<'_, f64>, classes: &[usize],
) -> Vec<(f64, f64, usize)> {
    let sign = |c: usize| {
        let dot: f64 = (0..scores.nrows()).map(|i| scores[(i, c)] * reference[(i, c)]).sum();
        if dot < 0.0 { -1.0 } else { 1.0 }
    };
    let (s0, s1) = (sign(0), sign(1));
    (0..scores.nrows()).map(|i| (s0 * scores[(i, 0)], s1 * scores[(i, 1)], classes[i])).collect()
}

fn run(args: Args) -> polysketch::Result<()> {
    let par = Par::rayon(0);
    let table = Table::from_csv(&args.data)?;
    let (raw, labels) = table.split_target(&args.class)?;
    if labels.iter().any(|c| *c < 0.0 || c.fract() != 0.0) {
        return Err(polysketch::Error::Config(format!(
            "column `{}` must hold non-negative integer classes",
            args.class
        )));
    }
    let classes: Vec<usize> = labels.iter().map(|c| *c as usize).collect();
    let x = Standardizer::fit(raw.as_ref())
        .and_then(|s| s.with_clip(args.clip))
        .and_then(|s| s.transform(raw.as_ref()))?;
    let (n, d, k) = (x.nrows(), x.ncols(), args.components);
    if k < 2 || args.dims.is_empty() {
        return Err(polysketch::Error::Config(
            "need at least 2 components and one feature count".into(),
        ));
    }
    let kernel = PolyKernel::new(args.degree, 1.0 / d as f64, 1.0)?;
    let shown = k.max(10).min(n - 1);
    println!(
        "kernel PCA on {} ({n} rows, {d} features standardised and clipped to ±{}), kernel (x·y/{d} + 1)^{}",
        args.data.display(),
        args.clip,
        args.degree
    );
    let bar = ProgressBar::new((1 + 4 * args.dims.len()) as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("exact");
    let kmat = kernel.gram(x.as_ref(), x.as_ref(), par)?;
    let exact = kernel_pca_exact(kmat.as_ref(), shown, par)?;
    drop(kmat);
    bar.inc(1);
    let fmt = |v: &[f64], digits: usize| {
        v.iter().map(|x| format!("{x:.digits$}")).collect::<Vec<_>>().join(" ")
    };
    bar.suspend(|| {
        println!("exact eigenvalues (variance along the component): {}", fmt(&exact.values, 4));
        println!(
            "exact explained variance: {} (top {k}: {:.3})",
            fmt(&exact.explained, 3),
            exact.explained[..k].iter().sum::<f64>()
        );
        println!(
            "{:<14} {:>5} {:>26} {:>24} {:>12} {:>12}",
            "method",
            "D",
            format!("top-{k} eigenvalue rel err"),
            format!("explained (top {k})"),
            "mean angle",
            "max angle"
        );
    });
    let mut results = Vec::new();
    for &dim in &args.dims {
        for kind in FeatureKind::ALL {
            bar.set_message(format!("{} D = {dim}", kind.name()));
            let features = SketchFeatures::new(kernel, d, kind, dim, args.seed)?;
            let phi = features.transform(x.as_ref(), par)?;
            let pca = kernel_pca_features(phi.as_ref(), shown.min(phi.ncols()), par)?;
            results.push(compare(kind.name(), features.dim(), pca, &exact, k)?);
            bar.inc(1);
        }
        bar.set_message(format!("nystrom D = {dim}"));
        let ny = Nystrom::fit(kernel, x.as_ref(), dim.min(n), args.seed, par)?;
        let phi = ny.transform(x.as_ref(), par)?;
        let pca = kernel_pca_features(phi.as_ref(), shown.min(phi.ncols()), par)?;
        results.push(compare("nystrom", ny.dim(), pca, &exact, k)?);
        bar.inc(1);
        for r in &results[results.len() - 4..] {
            let mean_angle = r.angles.iter().sum::<f64>() / r.angles.len() as f64;
            let max_angle = r.angles.iter().copied().fold(0.0, f64::max);
            bar.suspend(|| {
                println!(
                    "{:<14} {:>5} {:>26} {:>24} {:>11.2}° {:>11.2}°",
                    r.method,
                    r.dim,
                    fmt(&r.value_errors[..k], 3),
                    format!(
                        "{} ({:.3})",
                        fmt(&r.pca.explained[..k.min(3)], 3),
                        r.pca.explained[..k].iter().sum::<f64>()
                    ),
                    mean_angle,
                    max_angle
                )
            });
        }
    }
    bar.finish_and_clear();
    std::fs::create_dir_all(&args.out)?;
    let mut csv = String::from(
        "method,D,component,eigenvalue,exact_eigenvalue,relative_error,explained,angle_degrees\n",
    );
    for r in &results {
        for c in 0..k {
            csv.push_str(&format!(
                "{},{},{},{:.6e},{:.6e},{:.6e},{:.6e},{:.4}\n",
                r.method,
                r.dim,
                c + 1,
                r.pca.values[c],
                exact.values[c],
                r.value_errors[c],
                r.pca.explained[c],
                r.angles[c]
            ));
        }
    }
    let csv_path = args.out.join("kernel_pca.csv");
    polysketch::io::write_atomic(&csv_path, csv.as_bytes())?;
    // the best sketch at the largest D, by its largest angle
    let top = *args.dims.iter().max().unwrap_or(&4096);
    let max_angle = |r: &Comparison| r.angles.iter().copied().fold(0.0, f64::max);
    let best = results
        .iter()
        .filter(|r| r.method != "nystrom" && r.dim >= top * 9 / 10)
        .min_by(|a, b| max_angle(a).total_cmp(&max_angle(b)))
        .ok_or_else(|| polysketch::Error::Config("no sketched result".into()))?;
    let panels = [
        Panel {
            title: "exact kernel PCA".into(),
            points: aligned_2d(exact.scores.as_ref(), exact.scores.as_ref(), &classes),
        },
        Panel {
            title: format!("{} sketch, D = {}", best.method, best.dim),
            points: aligned_2d(best.pca.scores.as_ref(), exact.scores.as_ref(), &classes),
        },
    ];
    let svg_path = args.out.join("kernel_pca.svg");
    // the classes are the data set's integer labels (the digits 0–9 for the default data)
    scatter_panels(&panels, "component 1", "component 2", &[], &svg_path)?;
    println!("wrote {} and {}", csv_path.display(), svg_path.display());
    println!("best sketch at D = {top}: {} (largest angle of the top-{k} subspaces)", best.method);
    println!("angle {:.2}", max_angle(best));
    Ok(())
}
