//! The paper's comparisons at CPU scale (the book's chapter "Reproducing the paper"): four
//! studies of the same small GPT trained with each attention kind, every arm with two seeds.
//!
//! ```sh
//! cargo run --release --example paper -- corpus            # Tables 2, 7: validation loss, 15 arms
//! cargo run --release --example paper -- copying           # Table 5: selective copying, 7 arms
//! cargo run --release --example paper -- degree            # p = 2, 4, 8
//! cargo run --release --example paper -- induction         # induction heads, r = 32
//! cargo run --release --example paper -- corpus --quick    # CI-sized: tiny models, 8 steps
//! cargo run --release --example paper -- corpus --only softmax,polysketch-learned-local-r32
//! cargo run --release --example paper -- corpus --report  # the finished runs so far, training nothing
//! cargo run --release --example paper -- plot OUT.svg name=runs/x/metrics.csv ...
//! ```
//!
//! Runs go to `runs/paper/<setting>/<arm>-s<seed>/`; a finished run is read back and an
//! interrupted one resumes, so a study can be stopped (Ctrl-C) and started again. Each study
//! ends by printing its table and writing `runs/paper/<study>.{csv,md,svg}`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use polysketch::paper::{self, Options, Study};
use polysketch::run;

/// The paper's comparisons at CPU scale: corpus quality, selective copying, degree, induction
/// heads (see the book's chapter "Reproducing the paper").
#[derive(Parser, Debug)]
#[command(long_about = None)]
struct Args {
    #[command(subcommand)]
    what: What,
}

/// A study's options.
#[derive(clap::Args, Debug)]
struct StudyArgs {
    /// The CI-sized variant: tiny models, 8 steps, one seed (unless --seeds).
    #[arg(long)]
    quick: bool,
    /// Seeds per arm [default: 2, quick 1]: --first-seed, --first-seed + 1, ...
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed (1: a second seed for runs whose first is elsewhere).
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Folder of the runs and the study's table, CSV and plot.
    #[arg(long, default_value = "runs/paper")]
    root: PathBuf,
    /// Only these arms (their folder names, comma-separated; an unknown one lists them all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Context of the copying study [default: 128]; its table, CSV and plot are then named
    /// copying-n<context>.
    #[arg(long)]
    context: Option<usize>,
    /// Worker threads (default: one per core); results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Train nothing: tabulate the finished runs (while the study is still running).
    #[arg(long)]
    report: bool,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Validation loss on the bundled corpus: softmax, polynomial, PolySketch (learned + local
    /// r = 32 and 64, also with the sketch's networks at lower learning rates, random + local,
    /// learned), Performer, Hedgehog, learned + local and softmax
    /// with one layer more, local-only and sliding-window attention.
    Corpus(StudyArgs),
    /// Selective copying: softmax, polynomial, learned + local (also at a tenth of the sketch's
    /// learning rate), random + local, local, sliding.
    Copying(StudyArgs),
    /// Degree p = 2, 4, 8 of polynomial and PolySketch attention on the corpus.
    Degree(StudyArgs),
    /// Induction heads with r = 32, learned with and without local blocks (with them also at a
    /// tenth of the sketch's learning rate), and softmax.
    Induction(StudyArgs),
    /// Draw the held-out loss curves of finished runs into one SVG.
    Plot {
        /// The SVG to write.
        out: PathBuf,
        /// Runs as name=path/to/metrics.csv (split at the last `=`).
        #[arg(required = true, value_parser = parse_run)]
        runs: Vec<(String, PathBuf)>,
    },
}

fn parse_run(s: &str) -> Result<(String, PathBuf), String> {
    s.rsplit_once('=')
        .map(|(n, p)| (n.to_string(), PathBuf::from(p)))
        .ok_or_else(|| format!("{s:?} is not name=path/to/metrics.csv"))
}

fn main() {
    polysketch::exit_on_error(real_main(Args::parse()));
}

fn real_main(args: Args) -> polysketch::Result<()> {
    let (study, a) = match args.what {
        What::Plot { out, runs } => {
            return run::plot_runs(&runs, "held-out loss against step", &out);
        }
        What::Corpus(a) => (Study::Corpus, a),
        What::Copying(a) => (Study::Copying, a),
        What::Degree(a) => (Study::Degree, a),
        What::Induction(a) => (Study::Induction, a),
    };
    polysketch::set_threads(a.threads)?;
    let opts = Options {
        quick: a.quick,
        seeds: a.seeds.unwrap_or(if a.quick { 1 } else { 2 }),
        first_seed: a.first_seed,
        root: a.root,
        only: a.only,
        context: a.context,
        quiet: a.quiet,
        report: a.report,
    };
    let results = paper::run_study(study, &opts)?;
    print!("{}", paper::table(&results));
    println!(
        "wrote {0}/{1}.csv, {0}/{1}.md and {0}/{1}.svg",
        opts.root.display(),
        opts.stem(study)
    );
    Ok(())
}
