//! Sketched kernel ridge regression over rows spread across MPI ranks (feature `mpi`).
//!
//! ```sh
//! cargo build --release --features mpi --example ridge_mpi
//! mpirun -np 2 target/release/examples/ridge_mpi --threads 1    # 1M rows, D = 1024, ~30 s
//! mpirun -np 1 target/release/examples/ridge_mpi --threads 2 --rows 200000 --features 4096
//! ```
//!
//! A synthetic problem with a known degree-4 polynomial ground truth,
//! \\(y = (1 + \langle a, x\rangle)^4 + \sigma\varepsilon\\), \\(x \sim N(0, I_d/d)\\), \\(a\\) a unit
//! vector: every row is drawn from its own seed (`split_seed(seed, row)`), so each rank makes
//! only its rows and no file is shipped, and the rows are the same whatever the rank count. Each
//! rank turns its rows, a chunk at a time, into \\(D\\) sketched features of the polynomial
//! kernel \\((\langle x, y\rangle + 1)^4\\) (the same seeded TensorSketch on every rank) and adds
//! them to its normal equations; one fixed-order sum of \\(D^2 + 2D + 2\\) values combines the
//! ranks ([`NormalEquations::reduce`]) and every rank solves. Rank 0 then scores held-out rows
//! and prints `weights <Σw> <Σ|w|> intercept <b>`, then last
//! `fit <ranks> <rows> <seconds> r2 <test R²>`. The exact method's \\(n \times n\\)
//! kernel stops fitting in 24 GiB at \\(n = 56{,}755\\) rows (8 bytes each).

use std::time::Instant;

use clap::Parser;
use faer::{Mat, Par};
use indicatif::{ProgressBar, ProgressStyle};
use polysketch::core::collective::{Collective, share};
use polysketch::core::{normal, seeded_rng, split_seed};
use polysketch::distributed::Mpi;
use polysketch::kernel::{FeatureKind, NormalEquations, PolyKernel, SketchFeatures, r2};

/// Sketched kernel ridge regression over MPI ranks.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Training rows in all (spread over the ranks).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Held-out rows (scored by rank 0).
    #[arg(long, default_value_t = 20_000)]
    test_rows: usize,
    /// Input dimension d.
    #[arg(long, default_value_t = 8)]
    dim: usize,
    /// Sketched features D.
    #[arg(long, default_value_t = 1024)]
    features: usize,
    /// Rows per chunk (a chunk's features, chunk × D values, are the memory that grows with D).
    #[arg(long, default_value_t = 2048)]
    chunk: usize,
    /// Ridge λ.
    #[arg(long, default_value_t = 1e-2)]
    lambda: f64,
    /// Noise σ.
    #[arg(long, default_value_t = 0.1)]
    noise: f64,
    /// Seed of the data and the sketch.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads per rank (ranks × threads = cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Rows `range` of the problem: `x: [m, d]`, `y: [m]`.
fn rows(args: &Args, a: &[f64], range: std::ops::Range<usize>) -> (Mat<f64>, Vec<f64>) {
    let (m, d) = (range.len(), args.dim);
    let mut x = Mat::zeros(m, d);
    let mut y = Vec::with_capacity(m);
    for (i, row) in range.enumerate() {
        let mut rng = seeded_rng(split_seed(args.seed, row as u64));
        let scale = 1.0 / (d as f64).sqrt();
        for j in 0..d {
            x[(i, j)] = scale * normal(&mut rng);
        }
        let t: f64 = (0..d).map(|j| a[j] * x[(i, j)]).sum();
        y.push((1.0 + t).powi(4) + args.noise * normal(&mut rng));
    }
    (x, y)
}

fn run(args: &Args, comm: &Mpi) -> polysketch::Result<()> {
    let (rank, size) = (comm.rank(), comm.size());
    let mut rng = seeded_rng(split_seed(args.seed, u64::MAX));
    let mut a: Vec<f64> = (0..args.dim).map(|_| normal(&mut rng)).collect();
    let norm = a.iter().map(|v| v * v).sum::<f64>().sqrt();
    a.iter_mut().for_each(|v| *v /= norm);
    let kernel = PolyKernel::new(4, 1.0, 1.0)?;
    let sketch =
        SketchFeatures::new(kernel, args.dim, FeatureKind::TensorSketch, args.features, args.seed)?;
    let mine = share(args.rows, rank, size);
    let started = Instant::now();
    let bar = if rank == 0 {
        ProgressBar::new(mine.len() as u64).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} rows of rank 0 {elapsed_precise}")
                .map_err(|e| polysketch::Error::Config(e.to_string()))?,
        )
    } else {
        ProgressBar::hidden()
    };
    let mut eq = NormalEquations::new(sketch.dim())?;
    let chunk = args.chunk.max(1);
    for at in (mine.start..mine.end).step_by(chunk) {
        let (x, y) = rows(args, &a, at..(at + chunk).min(mine.end));
        let phi = sketch.transform(x.as_ref(), Par::rayon(0))?;
        eq.add_rows(phi.as_ref(), &y, Par::rayon(0))?;
        bar.inc(y.len() as u64);
    }
    bar.finish_and_clear();
    let local = started.elapsed().as_secs_f64();
    let fit = eq.reduce(comm)?.solve(&[args.lambda], Par::rayon(0))?;
    let seconds = started.elapsed().as_secs_f64();
    if rank == 0 {
        let (x, y) = rows(args, &a, args.rows..args.rows + args.test_rows);
        let phi = sketch.transform(x.as_ref(), Par::rayon(0))?;
        let predicted = fit[0].predict(phi.as_ref(), Par::rayon(0))?;
        println!(
            "{size} ranks × {} threads, {} rows, d = {}, D = {}: features and sums {local:.1} s on \
             rank 0, fit {seconds:.1} s, {:.0} rows/s",
            rayon::current_num_threads(),
            args.rows,
            args.dim,
            sketch.dim(),
            args.rows as f64 / seconds
        );
        println!("exact kernel ridge would need an n × n kernel: beyond 56755 rows in 24 GiB");
        let w = &fit[0].weights;
        println!(
            "weights {:.15e} {:.15e} intercept {:.15e}",
            w.iter().sum::<f64>(),
            w.iter().map(|v| v.abs()).sum::<f64>(),
            fit[0].intercept
        );
        println!(
            "fit {size} {} {seconds:.2} r2 {:.6}",
            args.rows,
            r2(&predicted, &y).unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if args.threads > 0
        && let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global()
    {
        eprintln!("error: --threads {}: {e}", args.threads);
        std::process::exit(2);
    }
    let comm = match Mpi::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = run(&args, &comm) {
        if comm.size() > 1 {
            comm.abort(&e.to_string());
        }
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
