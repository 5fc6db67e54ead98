//! Kernel ridge regression on real data: exact, sketched (tree, TensorSketch, self-tensored) and
//! Nyström, with the polynomial kernel (γ⟨x, y⟩ + c)^p.
//!
//! ```sh
//! cargo run --release --example kernel_regression            # diamonds, ~3 minutes on 2 cores
//! cargo run --release --example kernel_regression -- --quick # smaller, ~15 s
//! ```
//!
//! Data: `data/diamonds_numeric.csv` (53,940 diamonds, 9 numeric features), target log(price),
//! features standardised on the training split. Prints a row per method and feature count D
//! (test RMSE and R², fit and predict time, peak extra heap, the λ picked on the validation
//! split), writes `kernel_regression.csv` and `kernel_regression.svg` (test RMSE against D, the
//! exact method as a dashed line) into `--out`, and prints last `r2 <exact> <best sketched at
//! D = 4096>`.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use faer::{Mat, MatRef, Par};
use indicatif::{ProgressBar, ProgressStyle};
use polysketch::kernel::data::{Standardizer, Table, select_rows, split_indices};
use polysketch::kernel::{
    FeatureKind, KernelRidge, Nystrom, PolyKernel, Ridge, SketchFeatures, r2, rmse, select_by_r2,
};
use polysketch::memory::CountingAlloc;
use polysketch::plot::{Axes, Line, line_plot};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

/// Kernel ridge regression: exact against sketched features and Nyström.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// CSV file with a header line and numeric columns.
    #[arg(long, default_value = "data/diamonds_numeric.csv")]
    data: PathBuf,
    /// Target column (regressed as log(target) unless --raw-target).
    #[arg(long, default_value = "price")]
    target: String,
    /// Regress the target itself instead of its logarithm.
    #[arg(long)]
    raw_target: bool,
    /// Polynomial degree p.
    #[arg(long, default_value_t = 4)]
    degree: usize,
    /// Feature counts D (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![256usize, 1024, 4096])]
    dims: Vec<usize>,
    /// Training rows for the exact method (its n x n kernel and Cholesky must fit).
    #[arg(long, default_value_t = 12_000)]
    exact_max: usize,
    /// Clip standardised features to [-clip, clip] (the diamonds data has rows 40 standard
    /// deviations out, which a degree-4 kernel would let dominate).
    #[arg(long, default_value_t = 4.0)]
    clip: f64,
    /// Do not clip predictions to the range of the training targets.
    #[arg(long)]
    no_clip_predictions: bool,
    /// Smaller run: 8k training rows, D up to 1024, exact on 3k rows.
    #[arg(long)]
    quick: bool,
    /// Seed of the split and the sketches.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Folder for kernel_regression.csv and kernel_regression.svg.
    #[arg(long, default_value = "runs/kernel_regression")]
    out: PathBuf,
}

/// λ grid, tried on the validation split.
const LAMBDAS: [f64; 7] = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0];
/// The exact method factors an n x n matrix per λ: a shorter grid.
const EXACT_LAMBDAS: [f64; 4] = [1e-2, 1e-1, 1.0, 10.0];

/// One row of the results table.
struct Row {
    method: String,
    dim: Option<usize>,
    rmse: f64,
    r2: f64,
    val_r2: f64,
    fit_s: f64,
    predict_s: f64,
    peak_bytes: usize,
    lambda: f64,
}

impl Row {
    /// A method's row: test RMSE and R² of `pred` against `y`, and `(fit_s, predict_s,
    /// peak_bytes)`.
    fn scored(
        method: String, dim: Option<usize>, pred: &[f64], y: &[f64], val_r2: f64,
        (fit_s, predict_s, peak_bytes): (f64, f64, usize), lambda: f64,
    ) -> polysketch::Result<Self> {
        let (rmse, r2) = (rmse(pred, y)?, r2(pred, y)?);
        Ok(Self { method, dim, rmse, r2, val_r2, fit_s, predict_s, peak_bytes, lambda })
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    polysketch::exit_on_error(run(Args::parse()));
}

/// The splits: standardised features and targets of train / validation / test.
struct Splits {
    train: (Mat<f64>, Vec<f64>),
    val: (Mat<f64>, Vec<f64>),
    test: (Mat<f64>, Vec<f64>),
    /// Predictions are clipped to this range of the training targets (`None`: not clipped).
    range: Option<(f64, f64)>,
}

impl Splits {
    /// Clips predictions to the training targets' range: a degree-p polynomial extrapolates
    /// wildly on the few test rows outside the training cloud, and one such row can dominate a
    /// mean squared error.
    fn clamp(&self, mut pred: Vec<f64>) -> Vec<f64> {
        if let Some((lo, hi)) = self.range {
            pred.iter_mut().for_each(|p| *p = p.clamp(lo, hi));
        }
        pred
    }
}

fn load(args: &Args, n_train: usize) -> polysketch::Result<Splits> {
    let table = Table::from_csv(&args.data)?;
    let (x, y) = table.split_target(&args.target)?;
    if !args.raw_target && y.iter().any(|v| *v <= 0.0) {
        return Err(polysketch::Error::Config(format!(
            "log({}) needs positive targets: use --raw-target",
            args.target
        )));
    }
    let y: Vec<f64> = y.iter().map(|v| if args.raw_target { *v } else { v.ln() }).collect();
    let n = x.nrows();
    let n_val = (n / 10).min(4000);
    let n_test = (n / 5).min(10_000);
    let n_train = n_train.min(n - n_val - n_test);
    let parts = split_indices(n, &[n_train, n_val, n_test], args.seed)?;
    let pick = |idx: &[usize]| {
        (select_rows(x.as_ref(), idx), idx.iter().map(|&i| y[i]).collect::<Vec<f64>>())
    };
    let (train, val, test) = (pick(&parts[0]), pick(&parts[1]), pick(&parts[2]));
    let scaler = Standardizer::fit(train.0.as_ref()).and_then(|s| s.with_clip(args.clip))?;
    let std = |m: &Mat<f64>| scaler.transform(m.as_ref());
    let range = (!args.no_clip_predictions)
        .then(|| train.1.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v))));
    Ok(Splits {
        train: (std(&train.0)?, train.1),
        val: (std(&val.0)?, val.1),
        test: (std(&test.0)?, test.1),
        range,
    })
}

/// Ridge in a feature space: fit the λ path on train, pick λ on validation, report on test.
fn feature_method(
    name: &str, dim: usize,
    featurize: &dyn Fn(MatRef<'_, f64>) -> polysketch::kernel::Result<Mat<f64>>, fit_extra_s: f64,
    s: &Splits, par: Par,
) -> polysketch::Result<Row> {
    let base = ALLOC.current();
    ALLOC.reset_peak();
    let start = Instant::now();
    let phi = featurize(s.train.0.as_ref())?;
    let path = Ridge::fit_path(phi.as_ref(), &s.train.1, &LAMBDAS, par)?;
    let fit_s = start.elapsed().as_secs_f64() + fit_extra_s;
    drop(phi);
    let phi_val = featurize(s.val.0.as_ref())?;
    let (model, val_r2) = select_by_r2(path.into_iter().map(Ok), &s.val.1, |m| {
        Ok(s.clamp(m.predict(phi_val.as_ref(), par)?))
    })?;
    let start = Instant::now();
    let phi_test = featurize(s.test.0.as_ref())?;
    let pred = s.clamp(model.predict(phi_test.as_ref(), par)?);
    let timing = (fit_s, start.elapsed().as_secs_f64(), ALLOC.peak_since_reset(base));
    Row::scored(name.into(), Some(dim), &pred, &s.test.1, val_r2, timing, model.lambda)
}

/// Exact kernel ridge regression on the first `n` training rows.
fn exact_method(kernel: PolyKernel, n: usize, s: &Splits, par: Par) -> polysketch::Result<Row> {
    let base = ALLOC.current();
    ALLOC.reset_peak();
    let xt = s.train.0.as_ref().subrows(0, n);
    let yt = &s.train.1[..n];
    let start = Instant::now();
    let k = kernel.gram(xt, xt, par)?;
    let kv = kernel.gram(s.val.0.as_ref(), xt, par)?;
    let fits = EXACT_LAMBDAS.iter().map(|&lambda| KernelRidge::fit(k.as_ref(), yt, lambda, par));
    let (model, val_r2) =
        select_by_r2(fits, &s.val.1, |m| Ok(s.clamp(m.predict(kv.as_ref(), par)?)))?;
    // the time of one fit at the chosen λ: the kernel matrix and one Cholesky (the grid search
    // multiplies it by the grid size for every method alike)
    let fit_s = start.elapsed().as_secs_f64() / EXACT_LAMBDAS.len() as f64;
    drop((k, kv));
    let start = Instant::now();
    let kt = kernel.gram(s.test.0.as_ref(), xt, par)?;
    let pred = s.clamp(model.predict(kt.as_ref(), par)?);
    let timing = (fit_s, start.elapsed().as_secs_f64(), ALLOC.peak_since_reset(base));
    Row::scored(format!("exact ({n} rows)"), None, &pred, &s.test.1, val_r2, timing, model.lambda)
}

fn print_row(bar: &ProgressBar, r: &Row) {
    bar.suspend(|| {
        println!(
            "{:<24} {:>5} {:>8.4} {:>7.4} {:>7.4} {:>9.2} {:>10.3} {:>10.1} {:>8.0e}",
            r.method,
            r.dim.map_or("-".into(), |d| d.to_string()),
            r.rmse,
            r.r2,
            r.val_r2,
            r.fit_s,
            r.predict_s,
            mib(r.peak_bytes),
            r.lambda
        )
    });
    bar.inc(1);
}

fn run(mut args: Args) -> polysketch::Result<()> {
    if args.quick {
        args.dims.retain(|&d| d <= 1024);
        args.exact_max = args.exact_max.min(3000);
    }
    if args.dims.is_empty() || args.dims.contains(&0) {
        return Err(polysketch::Error::Config("--dims needs positive feature counts".into()));
    }
    let par = Par::rayon(0);
    let s = load(&args, if args.quick { 8000 } else { 40_000 })?;
    let d = s.train.0.ncols();
    let kernel = PolyKernel::new(args.degree, 1.0 / d as f64, 1.0)?;
    let n_exact = args.exact_max.min(s.train.0.nrows());
    println!(
        "kernel ridge regression on {} ({} train / {} validation / {} test rows, {d} features standardised and clipped to ±{}), target {}{}",
        args.data.display(),
        s.train.0.nrows(),
        s.val.0.nrows(),
        s.test.0.nrows(),
        args.clip,
        if args.raw_target { "" } else { "log " },
        args.target
    );
    println!(
        "kernel (x·y/{d} + 1)^{}; exact on the first {n_exact} training rows; λ picked on validation",
        args.degree
    );
    println!(
        "{:<24} {:>5} {:>8} {:>7} {:>7} {:>9} {:>10} {:>10} {:>8}",
        "method", "D", "rmse", "R2", "val_R2", "fit_s", "predict_s", "peak_MiB", "lambda"
    );
    let steps = 1 + args.dims.len() * 4 + 1;
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("exact");
    let exact = exact_method(kernel, n_exact, &s, par)?;
    print_row(&bar, &exact);
    let mut rows = Vec::new();
    for &dim in &args.dims {
        for kind in FeatureKind::ALL {
            bar.set_message(format!("{} D = {dim}", kind.name()));
            let features = SketchFeatures::new(kernel, d, kind, dim, args.seed)?;
            let actual = features.dim();
            let featurize = |x: MatRef<'_, f64>| features.transform(x, par);
            let row = feature_method(kind.name(), actual, &featurize, 0.0, &s, par)?;
            print_row(&bar, &row);
            rows.push(row);
        }
        bar.set_message(format!("nystrom D = {dim}"));
        let start = Instant::now();
        let ny =
            Nystrom::fit(kernel, s.train.0.as_ref(), dim.min(s.train.0.nrows()), args.seed, par)?;
        let setup_s = start.elapsed().as_secs_f64();
        let featurize = |x: MatRef<'_, f64>| ny.transform(x, par);
        let row = feature_method("nystrom", ny.dim(), &featurize, setup_s, &s, par)?;
        print_row(&bar, &row);
        rows.push(row);
    }
    // the best sketch again on the exact method's rows: what is scale, what is approximation
    let top = *args.dims.iter().max().unwrap_or(&256);
    bar.set_message("best sketch on the exact rows");
    let best_kind = FeatureKind::ALL
        .into_iter()
        .max_by(|a, b| {
            let score = |k: FeatureKind| {
                rows.iter()
                    .filter(|r| r.method == k.name() && r.dim.is_some_and(|d| d <= top))
                    .map(|r| r.r2)
                    .fold(f64::MIN, f64::max)
            };
            score(*a).total_cmp(&score(*b))
        })
        .unwrap_or(FeatureKind::Tree);
    let subset = Splits {
        train: (s.train.0.subrows(0, n_exact).to_owned(), s.train.1[..n_exact].to_vec()),
        val: s.val.clone(),
        test: s.test.clone(),
        range: s.range,
    };
    let features = SketchFeatures::new(kernel, d, best_kind, top, args.seed)?;
    let featurize = |x: MatRef<'_, f64>| features.transform(x, par);
    let mut same_rows =
        feature_method(best_kind.name(), features.dim(), &featurize, 0.0, &subset, par)?;
    same_rows.method = format!("{} ({n_exact} rows)", best_kind.name());
    print_row(&bar, &same_rows);
    bar.finish_and_clear();

    std::fs::create_dir_all(&args.out)?;
    let mut csv = String::from("method,D,rmse,r2,val_r2,fit_s,predict_s,peak_bytes,lambda\n");
    for r in std::iter::once(&exact).chain(&rows).chain(std::iter::once(&same_rows)) {
        csv.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.4},{:.4},{},{}\n",
            r.method,
            r.dim.map_or(String::new(), |d| d.to_string()),
            r.rmse,
            r.r2,
            r.val_r2,
            r.fit_s,
            r.predict_s,
            r.peak_bytes,
            r.lambda
        ));
    }
    let csv_path = args.out.join("kernel_regression.csv");
    polysketch::io::write_atomic(&csv_path, csv.as_bytes())?;
    let lines: Vec<Line> = ["tree", "tensorsketch", "self-tensored", "nystrom"]
        .iter()
        .map(|m| Line {
            name: (*m).into(),
            points: rows
                .iter()
                .filter(|r| r.method == *m)
                .filter_map(|r| r.dim.map(|d| (d as f64, r.rmse)))
                .collect(),
            ..Line::default()
        })
        .collect();
    let svg_path = args.out.join("kernel_regression.svg");
    let title = format!(
        "test RMSE against the number of features D (polynomial kernel, p = {})",
        args.degree
    );
    let axes = Axes {
        title: &title,
        x_label: "features D",
        y_label: "test RMSE",
        log_x: true,
        log_y: false,
    };
    line_plot(&lines, &[(exact.method.clone(), exact.rmse)], &axes, &svg_path)?;
    println!("wrote {} and {}", csv_path.display(), svg_path.display());
    // what the numbers say, computed from them
    let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
    let speed = |exact_s: f64, sketch_s: f64| {
        let r = ratio(exact_s, sketch_s);
        if r >= 1.0 { format!("{r:.1}x faster") } else { format!("{:.1}x slower", 1.0 / r) }
    };
    println!(
        "same {n_exact} rows, {} at D = {}: R2 {:+.4} against exact, fit {}, {:.1}x less peak memory",
        same_rows.method,
        same_rows.dim.unwrap_or(0),
        same_rows.r2 - exact.r2,
        speed(exact.fit_s, same_rows.fit_s),
        ratio(exact.peak_bytes as f64, same_rows.peak_bytes as f64)
    );
    if let Some(small) =
        rows.iter().filter(|r| r.method != "nystrom").min_by(|a, b| a.fit_s.total_cmp(&b.fit_s))
    {
        println!(
            "cheapest sketch ({} at D = {}, all {} rows): R2 {:+.4} against exact, fit {}, {:.0}x less peak memory",
            small.method,
            small.dim.unwrap_or(0),
            s.train.0.nrows(),
            small.r2 - exact.r2,
            speed(exact.fit_s, small.fit_s),
            ratio(exact.peak_bytes as f64, small.peak_bytes as f64)
        );
    }
    if let Some(ny) =
        rows.iter().filter(|r| r.method == "nystrom").max_by(|a, b| a.r2.total_cmp(&b.r2))
    {
        let sk = rows.iter().filter(|r| r.method != "nystrom").max_by(|a, b| a.r2.total_cmp(&b.r2));
        if let Some(sk) = sk {
            println!(
                "best Nystrom R2 {:.4} with D = {}; best sketch R2 {:.4} with D = {} ({})",
                ny.r2,
                ny.dim.unwrap_or(0),
                sk.r2,
                sk.dim.unwrap_or(0),
                sk.method
            );
        }
    }
    let best_top = rows
        .iter()
        .filter(|r| r.method != "nystrom" && r.dim.is_some_and(|d| d >= top * 9 / 10))
        .map(|r| r.r2)
        .fold(f64::MIN, f64::max);
    let sketched = if best_top > f64::MIN { format!("{best_top:.4}") } else { "na".into() };
    println!("r2 {:.4} {sketched}", exact.r2);
    Ok(())
}
