//! The paper's comparisons at laptop scale (Section 4, Appendix F): the same small GPT trained
//! with each attention kind at equal steps and tokens, on the bundled corpus (validation loss)
//! or on the induction-heads task (exact accuracy, steps to solve).
//!
//! ```sh
//! cargo run --release --example gpt_compare                       # corpus, six kinds
//! cargo run --release --example gpt_compare -- induction          # induction heads, n = 128
//! cargo run --release --example gpt_compare -- corpus --steps 100 # shorter
//! cargo run --release --example gpt_compare -- plot OUT.svg name=runs/x/metrics.csv ...
//! cargo run --release --example gpt_compare -- --help
//! ```
//!
//! `plot` draws the validation (held-out) loss curves of finished runs into one SVG.
//!
//! Writes `runs/compare-<what>/{compare.csv, compare.svg}` and one run folder per kind.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use polysketch::attention::{PolySketchConfig, SketchKind};
use polysketch::gpt::tasks::Task;
use polysketch::gpt::{AttentionKind, GptConfig, TrainConfig};
use polysketch::run::{self, RunConfig, Source};

/// The paper's comparisons at laptop scale: the same small GPT trained with each attention
/// kind (softmax, polynomial, PolySketch random/learned with and without local blocks) at equal
/// steps and tokens, on the bundled corpus or on induction heads.
#[derive(Parser, Debug)]
#[command(long_about = None)]
struct Args {
    /// Which comparison (default: corpus).
    #[command(subcommand)]
    what: Option<What>,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Validation loss on the bundled corpus (8.5 min on 2 cores).
    Corpus {
        /// Training steps per kind.
        #[arg(long, default_value_t = 300)]
        steps: usize,
    },
    /// Held-out accuracy on induction heads at n = 128.
    Induction {
        /// Training steps per kind.
        #[arg(long, default_value_t = 600)]
        steps: usize,
    },
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
    let (what, steps) = match args.what.unwrap_or(What::Corpus { steps: 300 }) {
        What::Plot { out, runs } => {
            return run::plot_runs(&runs, "held-out loss against step", &out);
        }
        What::Corpus { steps } => ("corpus", steps),
        What::Induction { steps } => ("induction", steps),
    };
    let ps = |r, block, learned, local| {
        AttentionKind::PolySketch(PolySketchConfig {
            p: 4,
            r,
            block,
            sketch: if learned { SketchKind::Learned } else { SketchKind::Random },
            local,
            seed: 0,
        })
    };
    // the exact kinds every comparison includes, then the PolySketch variants
    let exact = [AttentionKind::Softmax, AttentionKind::Polynomial { p: 4 }];
    let (kinds, vocab, seq, batch, steps, lr, source, eval_every, d_model, layers, heads): (
        Vec<AttentionKind>,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
    ) = match what {
        "corpus" => (
            exact
                .into_iter()
                .chain(
                    [false, true]
                        .map(|local| [false, true].map(|learned| ps(32, 64, learned, local)))
                        .into_iter()
                        .flatten(),
                )
                .collect(),
            256,
            256,
            8,
            steps,
            2e-3,
            Source::Text { path: run::default_data(), val_fraction: 0.1 },
            25,
            128,
            4,
            4,
        ),
        _ => (
            exact
                .into_iter()
                .chain(
                    [false, true]
                        .map(|local| [16, 32].map(|r| ps(r, 32, true, local)))
                        .into_iter()
                        .flatten(),
                )
                .collect(),
            Task::Induction.vocab(),
            128,
            32,
            steps,
            1e-3,
            Source::Task { task: Task::Induction, held_out: 512 },
            50,
            64,
            2,
            2,
        ),
    };
    let root = PathBuf::from(format!("runs/compare-{what}"));
    let mut csv =
        String::from("kind,steps,tokens,val_loss,val_ppl,accuracy,solved_at,tokens_per_s\n");
    let mut curves = Vec::new();
    println!(
        "{:<30} {:>10} {:>9} {:>9} {:>10} {:>10}",
        "kind", "val loss", "ppl", "accuracy", "solved at", "tokens/s"
    );
    for spec in kinds {
        let model =
            GptConfig { vocab, context: seq, d_model, layers, heads, attention: spec, seed: 0 };
        let cfg = RunConfig {
            train: TrainConfig {
                batch,
                seq,
                steps,
                lr,
                warmup: steps / 10,
                ..TrainConfig::default()
            },
            source: source.clone(),
            eval_every,
            eval_batches: 16,
            tokenizer: Default::default(),
            stop_at_accuracy: None,
        };
        let out = root.join(spec.name());
        eprintln!("{}", spec.name());
        let s = run::train(model, cfg, &out, None, None, false)?;
        let acc = s.accuracy.map_or("-".into(), |a| format!("{a:.4}"));
        let solved = s.solved_at.map_or("-".into(), |t| t.to_string());
        println!(
            "{:<30} {:>10.4} {:>9.3} {:>9} {:>10} {:>10.0}",
            spec.name(),
            s.val_loss,
            s.val_loss.exp(),
            acc,
            solved,
            s.tokens_per_s
        );
        csv.push_str(&format!(
            "{},{steps},{},{:.5},{:.4},{acc},{solved},{:.1}\n",
            spec.name(),
            steps * batch * seq,
            s.val_loss,
            s.val_loss.exp(),
            s.tokens_per_s
        ));
        curves.push((spec.name(), out.join("metrics.csv")));
    }
    polysketch::io::write_atomic(&root.join("compare.csv"), csv.as_bytes())?;
    let title = format!("{what}: validation loss at equal steps");
    run::plot_runs(&curves, &title, &root.join("compare.svg"))?;
    println!("wrote {0}/compare.csv and {0}/compare.svg", root.display());
    Ok(())
}
