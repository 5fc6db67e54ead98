//! Time of lt(A Bᵀ) C against n: block algorithm, cumulative sums, naive; forward and backward.
//!
//! ```sh
//! cargo run --release -- bench lowtri
//! cargo run --release -- bench lowtri --quick   # n up to 8k, fewer repetitions
//! ```
//!
//! A, B are the m = 528 symmetric self-tensored features of L, R ∈ R^{n×32} (r = 32), C has
//! k = 64 columns, b = 256, f32, all cores. Four ways to compute the same product:
//! - block, self-tensored: the engine on L, R (features built per block in scratch);
//! - block, general: the engine on the explicit n × 528 features;
//! - cumulative sums (Performer-style) and the naive masked product, on the explicit features.
//!
//! Prints a row per n, a block-size sweep at n = 16k, the FLOP rate of faer's own 2048³ product
//! measured in the same run, writes `lowtri_scaling.csv` and `lowtri_scaling.svg` into `--out`,
//! and prints last `ratio64k <t(64k)/t(32k)>` for the block forward (2 means linear time).

use std::path::PathBuf;
use std::time::Instant;

use faer::{Mat, Par};
use indicatif::{ProgressBar, ProgressStyle};
use polysketch_core::{normal, seeded_rng};
use polysketch_lowtri::{Grads, LowTri, Problem, Saved, baseline};
use polysketch_tensoring::{Layout, tensor_square};

use crate::Result;
use crate::scaling::{self, Series};

/// Options of `polysketch bench lowtri`: scaling of the block lower-triangular product
/// lt(A Bᵀ) C.
#[derive(clap::Args, Debug, Clone)]
pub struct LowtriBench {
    /// n up to 8k and fewer repetitions.
    #[arg(long)]
    pub quick: bool,
    /// Folder for lowtri_scaling.csv and lowtri_scaling.svg.
    #[arg(long, default_value = "runs/lowtri_scaling")]
    pub out: PathBuf,
}

const R: usize = 32;
const M: usize = R * (R + 1) / 2;
const K: usize = 64;
const B: usize = 256;
/// The naive product is run while n is at most this (its time grows as n²: 16k takes seconds).
const NAIVE_MAX: usize = 16_384;

fn random(n: usize, w: usize, scale: f64, seed: u64) -> Mat<f32> {
    let mut rng = seeded_rng(seed);
    Mat::from_fn(n, w, |_, _| (scale * normal(&mut rng)) as f32)
}

/// Median wall time of `reps` runs of `f` (at least one), in seconds, after one warm-up run.
pub(crate) fn median_time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// FLOPs of the self-tensored block forward, per row: 4mk (H_l = B_lᵀC_l and A_l Z_l) plus the
/// lower halves of the diagonal block's L_l R_lᵀ (b·r) and lt(S) C_l (b·k).
fn forward_flops(n: usize, b: usize) -> f64 {
    n as f64 * (4.0 * (M * K) as f64 + (b * (R + K)) as f64)
}

/// FLOPs of the self-tensored block backward, per row: 8mk (four m x k products) plus 3·b·r (L_l R_lᵀ
/// again, dL and dR of the diagonal block) and 2·b·k (dS and lt(S)ᵀ dout).
fn backward_flops(n: usize, b: usize) -> f64 {
    n as f64 * (8.0 * (M * K) as f64 + (b * (3 * R + 2 * K)) as f64)
}

/// FLOPs of the general form's forward on explicit features: 4mk + b·m + b·k per row.
fn general_flops(n: usize, b: usize) -> f64 {
    n as f64 * (4.0 * (M * K) as f64 + (b * (M + K)) as f64)
}

/// One measured configuration.
struct Row {
    forward: f64,
    forward_backward: f64,
    general: Option<f64>,
    cumsum: Option<f64>,
    cumsum_fb: Option<f64>,
    naive: Option<f64>,
    naive_fb: Option<f64>,
    /// Largest relative difference between the methods' outputs.
    disagreement: f64,
    /// Relative Frobenius error of the f32 block forward against the f64 one.
    f32_error: Option<f64>,
}

fn rel_diff(a: &Mat<f32>, b: &Mat<f32>) -> f64 {
    let diff = (a - b).norm_l2() as f64;
    diff / (b.norm_l2() as f64).max(f64::MIN_POSITIVE)
}

fn measure(n: usize, b: usize, reps: usize, baselines: bool, par: Par) -> Result<Row> {
    let (l, r, c, g) =
        (random(n, R, 0.25, 1), random(n, R, 0.25, 2), random(n, K, 1.0, 3), random(n, K, 1.0, 4));
    let problem = Problem::self_tensored(l.as_ref(), r.as_ref(), c.as_ref());
    let engine = LowTri::new(b)?;
    // validate once (the timed closures then cannot fail) and keep the result to compare
    let (reference, mut saved) = engine.forward(&problem, par)?;
    engine.backward(&problem, &mut saved, g.as_ref(), par)?;
    // timed as a training loop runs it: output, saved state and gradients reused across calls
    let problems = std::slice::from_ref(&problem);
    let mut out = Mat::<f32>::zeros(n, K);
    let (mut saved, mut grads) = (vec![Saved::new()], vec![Grads::new()]);
    let forward = median_time(reps, || {
        engine.forward_batch_into(problems, vec![out.as_mut()], &mut saved, par).ok();
    });
    let forward_backward = median_time(reps, || {
        engine.forward_batch_into(problems, vec![out.as_mut()], &mut saved, par).ok();
        engine.backward_batch_into(problems, &mut saved, &[g.as_ref()], &mut grads, par).ok();
    });
    let mut row = Row {
        forward,
        forward_backward,
        general: None,
        cumsum: None,
        cumsum_fb: None,
        naive: None,
        naive_fb: None,
        disagreement: 0.0,
        f32_error: None,
    };
    if baselines {
        // accuracy: the same product in f64
        let wide = |m: &Mat<f32>| Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)] as f64);
        let (l64, r64, c64) = (wide(&l), wide(&r), wide(&c));
        let (exact, _) = engine
            .forward(&Problem::self_tensored(l64.as_ref(), r64.as_ref(), c64.as_ref()), par)?;
        row.f32_error = Some((&wide(&reference) - &exact).norm_l2() / exact.norm_l2());
        // the explicit n x 528 features, formed once outside the timings
        let (mut fl, mut fr) = (Mat::<f32>::zeros(n, M), Mat::<f32>::zeros(n, M));
        tensor_square(l.as_ref(), Layout::Symmetric, fl.as_mut());
        tensor_square(r.as_ref(), Layout::Symmetric, fr.as_mut());
        let general = Problem::general(fl.as_ref(), fr.as_ref(), c.as_ref());
        let (out_general, _) = engine.forward(&general, par)?;
        row.disagreement = rel_diff(&out_general, &reference);
        row.general = Some(median_time(reps, || {
            engine.forward_into(&general, out.as_mut(), &mut saved[0], par).ok();
        }));
        // a baseline's disagreement with the block forward, and its median times
        let (fl, fr, c, g) = (fl.as_ref(), fr.as_ref(), c.as_ref(), g.as_ref());
        let measure_baseline =
            |fwd: &dyn Fn() -> polysketch_core::Result<Mat<f32>>, bwd: &dyn Fn()| -> Result<_> {
                let disagreement = rel_diff(&fwd()?, &reference);
                let forward = median_time(reps.min(3), || {
                    let _ = fwd();
                });
                let both = median_time(reps.min(3), || {
                    let _ = fwd();
                    bwd();
                });
                Ok((disagreement, Some(forward), Some(both)))
            };
        let (d, forward, both) =
            measure_baseline(&|| baseline::cumsum_forward(fl, fr, c, par), &|| {
                drop(baseline::cumsum_backward(fl, fr, c, g, par))
            })?;
        (row.disagreement, row.cumsum, row.cumsum_fb) = (row.disagreement.max(d), forward, both);
        if n <= NAIVE_MAX && baseline::naive_fits::<f32>(n) {
            let (d, forward, both) =
                measure_baseline(&|| baseline::naive_forward(fl, fr, c, par), &|| {
                    drop(baseline::naive_backward(fl, fr, c, g, par))
                })?;
            (row.disagreement, row.naive, row.naive_fb) = (row.disagreement.max(d), forward, both);
        }
    }
    Ok(row)
}

fn ms(t: Option<f64>) -> String {
    t.map_or("-".into(), |t| format!("{:.2} ms", t * 1e3))
}

/// Runs `polysketch bench lowtri`: a row per n, a block-size sweep at n = 16k, faer's rate in
/// the same run, `lowtri_scaling.csv` and `lowtri_scaling.svg` in `--out`, and last the
/// `ratio64k` line.
///
/// # Errors
/// A product that refuses its sizes; files that cannot be written.
pub fn run(args: &LowtriBench) -> Result<()> {
    let par = Par::rayon(0);
    let threads = rayon::current_num_threads();
    let ns: Vec<usize> = (10..=if args.quick { 13 } else { 16 }).map(|e| 1usize << e).collect();
    let reps = if args.quick { 3 } else { 5 };
    let sweep_n = if args.quick { 8192 } else { 16_384 };
    let sweep = [64usize, 128, 512, 1024];
    let ceiling = scaling::faer_gflops(2048, reps, par);
    println!(
        "lt(A Bᵀ) C with A = L^(x)2, B = R^(x)2 (r = {R}, m = {M} symmetric features), k = {K}, f32, {threads} threads"
    );
    println!("faer's 2048³ f32 product in this run: {ceiling:.1} GFLOP/s");
    println!(
        "{:>6} {:>5} {:>10} {:>10} {:>7} {:>7} {:>11} {:>7} {:>11} {:>11} {:>11} {:>11} {:>9} {:>9}",
        "n",
        "b",
        "block_fwd",
        "block_f+b",
        "fwd_GF",
        "f+b_GF",
        "general_fwd",
        "gen_GF",
        "cumsum_fwd",
        "cumsum_f+b",
        "naive_fwd",
        "naive_f+b",
        "max_diff",
        "f32_err"
    );
    let bar = ProgressBar::new((ns.len() + sweep.len()) as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut series = [
        Series::new("block forward (self-tensored)"),
        Series::new("block forward+backward (self-tensored)"),
        Series::new("block forward (general, explicit features)"),
        Series::new("cumulative-sum forward"),
        Series::new("naive forward"),
        Series::new("cumulative-sum forward+backward"),
        Series::new("naive forward+backward"),
    ];
    let print_row = |n: usize, b: usize, r: &Row| {
        let gf = forward_flops(n, b) / r.forward / 1e9;
        let gfb = (forward_flops(n, b) + backward_flops(n, b)) / r.forward_backward / 1e9;
        let ggf = r.general.map_or("-".into(), |t| format!("{:.1}", general_flops(n, b) / t / 1e9));
        bar.suspend(|| {
            println!(
                "{n:>6} {b:>5} {:>7.2} ms {:>7.2} ms {gf:>7.1} {gfb:>7.1} {:>11} {ggf:>7} {:>11} {:>11} {:>11} {:>11} {:>9} {:>9}",
                r.forward * 1e3,
                r.forward_backward * 1e3,
                ms(r.general),
                ms(r.cumsum),
                ms(r.cumsum_fb),
                ms(r.naive),
                ms(r.naive_fb),
                if r.general.is_some() { format!("{:.1e}", r.disagreement) } else { "-".into() },
                r.f32_error.map_or("-".into(), |e| format!("{e:.1e}")),
            )
        });
        bar.inc(1);
        gf
    };
    let mut rates = Vec::new();
    for &n in &ns {
        bar.set_message(format!("n = {n}"));
        let r = measure(n, B, reps, true, par)?;
        rates.push((n, print_row(n, B, &r)));
        for (s, t) in series.iter_mut().zip([
            Some(r.forward),
            Some(r.forward_backward),
            r.general,
            r.cumsum,
            r.naive,
            r.cumsum_fb,
            r.naive_fb,
        ]) {
            if let Some(t) = t {
                s.push(n, t);
            }
        }
    }
    bar.suspend(|| println!("block-size sweep at n = {sweep_n}:"));
    for b in sweep {
        bar.set_message(format!("n = {sweep_n}, b = {b}"));
        let r = measure(sweep_n, b, reps, false, par)?;
        print_row(sweep_n, b, &r);
    }
    bar.finish_and_clear();
    let from_4k: Vec<f64> = rates.iter().filter(|(n, _)| *n >= 4096).map(|(_, g)| *g).collect();
    let mean = from_4k.iter().sum::<f64>() / from_4k.len().max(1) as f64;
    println!(
        "block forward (self-tensored, b = {B}) from n = 4096 on: {mean:.1} GFLOP/s on average = {:.0} % of faer's product rate in this run",
        100.0 * mean / ceiling
    );
    std::fs::create_dir_all(&args.out)?;
    let csv = args.out.join("lowtri_scaling.csv");
    let svg = args.out.join("lowtri_scaling.svg");
    polysketch_core::io::write_atomic(&csv, scaling::to_csv(&series).as_bytes())?;
    scaling::plot_svg(&series, "lt(A Bᵀ) C against n (m = 528, k = 64, b = 256, f32)", &svg)?;
    println!("wrote {} and {}", csv.display(), svg.display());
    let fwd = &series[0].points;
    let (n1, t1) = fwd[fwd.len() - 1];
    let (_, t0) = fwd[fwd.len() - 2];
    println!("ratio{}k {:.3}", n1 / 1024, t1 / t0);
    Ok(())
}
