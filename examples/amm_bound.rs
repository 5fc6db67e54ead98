//! Theorem 2.4 checked empirically: the AMM error of the self-tensored sketch against sqrt(5)·ε.
//!
//! ```sh
//! cargo run --release --example amm_bound            # full grid (a few minutes on 2 cores)
//! cargo run --release --example amm_bound -- --quick # reduced grid, under 30 s
//! ```
//!
//! Prints a table row per case, writes `amm_bound.csv` and `amm_bound.svg` into `--out`
//! (default `runs/amm_bound`), and prints last `slope <s>`: the log-log slope of the mean
//! self-tensored error against r for p = 4 on the nearly parallel family (theory: −0.5).

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use faer::Par;
use indicatif::{ProgressBar, ProgressStyle};
use polysketch::tensoring::amm::{self, Config, Family};

/// Empirical check of Theorem 2.4 (self-tensoring a degree-p/2 sketch gives a degree-p AMM
/// sketch with error at most sqrt(5)·ε).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Run a reduced grid (r ≤ 1024, 40 draws) that finishes in under 30 s.
    #[arg(long)]
    quick: bool,
    /// Independent draws per case (default: 100, or 40 with --quick).
    #[arg(long)]
    draws: Option<usize>,
    /// Master seed.
    #[arg(long, default_value_t = 2024)]
    seed: u64,
    /// Folder for amm_bound.csv and amm_bound.svg.
    #[arg(long, default_value = "runs/amm_bound")]
    out: PathBuf,
}

fn main() {
    polysketch::exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> polysketch::Result<()> {
    let mut config = if args.quick { Config::quick() } else { Config::full() };
    config.seed = args.seed;
    if let Some(d) = args.draws {
        config.draws = d;
    }
    config.validate()?;
    let cases = config.cases();
    println!(
        "AMM error of the self-tensored sketch (base: Gaussian JL for p = 2, Gaussian tree of degree p/2 otherwise) \
         vs the degree-p Gaussian tree; n = {} rows of A and of B, h = {}, {} draws; eps from JL moments t = {}, 2t, delta = {}; \
         in regime: eps <= {}",
        config.rows,
        config.dim,
        config.draws,
        config.t,
        config.delta,
        amm::EPS_MAX
    );
    let bar = ProgressBar::new(cases.len() as u64).with_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} cases  {elapsed_precise} (eta {eta})  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut results = Vec::with_capacity(cases.len());
    println!("{}", amm::table_header());
    for (p, r, family) in cases {
        bar.set_message(format!("p={p} r={r} {}", family.name()));
        let c = amm::run_case(&config, p, r, family, Par::rayon(0))?;
        bar.suspend(|| println!("{}", amm::table_row(&c)));
        results.push(c);
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("ran {} cases in {:.1} s", results.len(), start.elapsed().as_secs_f64());

    let in_regime: Vec<_> = results.iter().filter(|c| c.in_regime()).collect();
    if in_regime.is_empty() {
        println!("no case reached eps <= {}: increase r", amm::EPS_MAX);
    } else {
        let worst = in_regime.iter().map(|c| c.violations).fold(0.0, f64::max);
        println!(
            "in regime: {} cases; largest fraction of draws with error > sqrt(5)·eps: {worst:.3} (theorem: <= delta = {})",
            in_regime.len(),
            config.delta
        );
    }
    let ratios: Vec<f64> = results.iter().filter_map(|c| c.ratio()).collect();
    if !ratios.is_empty() {
        let (lo, hi) = ratios.iter().fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
        println!("self-tensored / degree-p tree mean error: {lo:.3} .. {hi:.3}");
    }
    std::fs::create_dir_all(&args.out)?;
    let csv = args.out.join("amm_bound.csv");
    let svg = args.out.join("amm_bound.svg");
    polysketch::io::write_atomic(&csv, amm::to_csv(&results).as_bytes())?;
    polysketch::bench::figures::amm_error(&results, &svg)?;
    println!("wrote {} and {}", csv.display(), svg.display());
    for p in &config.degrees {
        for family in Family::ALL {
            if let Some(s) = amm::slope(&results, *p, family) {
                println!("slope p={p} {:<15} {s:+.3}", family.name());
            }
        }
    }
    let s = amm::slope(&results, 4, Family::NearlyParallel).ok_or_else(|| {
        polysketch::Error::Config("the grid has no p = 4 cases to fit a slope".into())
    })?;
    println!("slope {s:.3}");
    Ok(())
}
