//! The `polysketch` program's side of a training run (the run itself is
//! [`polysketch_gpt::run`]): progress on the terminal or in a log, the loss plot, and the
//! bundled corpus.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
pub use polysketch_gpt::run::{
    DEFAULT_DATA, EvalReport, RunConfig, RunSummary, Source, eval, load_model, new_run_dir,
};
use polysketch_gpt::run::{Progress, StepReport};
pub use polysketch_gpt::sample::{generate, generate_streaming};
use polysketch_gpt::{Collective, GptConfig, SingleProcess};

use crate::Result;
use crate::plot::{Axes, Line, line_plot, line_plot_capped};

/// Resolves the default corpus: the path as given, else under the source tree.
pub fn default_data() -> PathBuf {
    let here = PathBuf::from(DEFAULT_DATA);
    if here.exists() { here } else { Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DATA) }
}

/// Progress of a run: a bar on a terminal; one plain line per evaluation (step, loss,
/// tokens/s, elapsed, ETA) when standard error is not a terminal (a log, nohup, CI); nothing
/// when quiet.
enum Shown {
    Bar(ProgressBar),
    Lines,
    Nothing,
}

impl Shown {
    fn new(quiet: bool) -> Self {
        if quiet {
            Shown::Nothing
        } else if std::io::stderr().is_terminal() {
            Shown::Bar(ProgressBar::hidden())
        } else {
            Shown::Lines
        }
    }
}

impl Progress for Shown {
    fn start(&mut self, start: usize, total: usize) {
        if let Shown::Bar(bar) = self {
            *bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(start as u64);
        }
    }

    fn step(&mut self, r: &StepReport) {
        match self {
            Shown::Bar(bar) => {
                bar.set_message(format!(
                    "loss {:.4} val {} {:.0} tok/s",
                    r.loss,
                    if r.val_loss.is_nan() { "-".into() } else { format!("{:.4}", r.val_loss) },
                    r.tokens_per_s
                ));
                bar.inc(1);
            }
            Shown::Lines if r.evaluated.is_some() => {
                let left = r.elapsed / (r.step - r.start) as f64 * (r.end - r.step) as f64;
                let acc = r.accuracy.map_or(String::new(), |a| format!(", accuracy {a:.4}"));
                eprintln!(
                    "step {}/{}: loss {:.4}, val {:.4}{acc}, {:.0} tokens/s, elapsed {}, eta {}",
                    r.step,
                    r.total,
                    r.loss,
                    r.val_loss,
                    r.tokens_per_s,
                    clock(r.elapsed),
                    clock(left)
                );
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        if let Shown::Bar(bar) = self {
            bar.finish();
        }
    }
}

/// [`polysketch_gpt::run::train`] with progress shown (unless `quiet`) and the loss curves
/// drawn into `out/loss.svg` at the end.
///
/// # Errors
/// Those of the run; a plot that cannot be written.
pub fn train(
    model_config: GptConfig, run: RunConfig, out: &Path, resume: Option<&Path>,
    stop_after: Option<usize>, quiet: bool,
) -> Result<RunSummary> {
    train_with(model_config, run, out, resume, stop_after, quiet, &SingleProcess)
}

/// [`train`] as one rank of a data-parallel run over `comm`
/// ([`polysketch_gpt::run::train_with`]): only rank 0 shows progress and draws the plot.
///
/// # Errors
/// As [`train`].
pub fn train_with(
    model_config: GptConfig, run: RunConfig, out: &Path, resume: Option<&Path>,
    stop_after: Option<usize>, quiet: bool, comm: &dyn Collective,
) -> Result<RunSummary> {
    let writer = comm.rank() == 0;
    let mut shown = Shown::new(quiet || !writer);
    let summary = polysketch_gpt::run::train_with(
        model_config,
        run,
        out,
        resume,
        stop_after,
        &mut shown,
        comm,
    )?;
    if writer {
        let csv = std::fs::read_to_string(out.join("metrics.csv"))?;
        plot_losses(&csv, &out.join("loss.svg"))?;
    }
    Ok(summary)
}

/// Seconds as `h:mm:ss`.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The training and validation curves of a metrics CSV as an SVG.
fn plot_losses(csv: &str, path: &Path) -> Result<()> {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let step: f64 = f[0].parse().unwrap_or(f64::NAN);
        if let Ok(l) = f[2].parse::<f64>() {
            train.push((step, l));
        }
        if let Ok(l) = f[3].parse::<f64>() {
            val.push((step, l));
        }
    }
    let lines = vec![
        Line { name: "train".into(), points: train, ..Line::default() },
        Line { name: "validation".into(), points: val, ..Line::default() },
    ];
    // the first steps fall fast from the initial loss and would squash the rest: the axis ends
    // at the lowest loss plus three times the distance from it to the median training loss
    let mut sorted: Vec<f64> = lines[0].points.iter().map(|p| p.1).collect();
    sorted.sort_by(f64::total_cmp);
    let lo = lines.iter().flat_map(|l| &l.points).map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y_cap = sorted.get(sorted.len() / 2).map(|median| lo + 3.0 * (median - lo).max(0.05));
    let title = match y_cap {
        Some(c) if sorted.last().is_some_and(|&m| m > c) => {
            format!("loss (first steps above {c:.2} cut off)")
        }
        _ => "loss".to_string(),
    };
    Ok(line_plot_capped(
        &lines,
        &[],
        &Axes {
            title: &title,
            x_label: "step",
            y_label: "cross-entropy (nats/token)",
            log_x: false,
            log_y: false,
        },
        y_cap,
        path,
    )?)
}

/// Loss curves of several runs (`(name, metrics.csv)`) in one plot, validation only.
///
/// # Errors
/// Unreadable files, nothing to plot.
pub fn plot_runs(runs: &[(String, PathBuf)], title: &str, path: &Path) -> Result<()> {
    let mut lines = Vec::new();
    for (name, csv) in runs {
        let points = val_curve(csv)?.into_iter().map(|(s, l)| (s as f64, l)).collect();
        lines.push(Line { name: name.clone(), points, ..Line::default() });
    }
    Ok(line_plot(
        &lines,
        &[],
        &Axes {
            title,
            x_label: "step",
            y_label: "validation loss (nats/token)",
            log_x: false,
            log_y: false,
        },
        path,
    )?)
}

/// One row of a `metrics.csv`: the columns the studies read.
#[derive(Debug, Clone, Copy)]
pub struct MetricsRow {
    /// The step.
    pub step: usize,
    /// The held-out loss (NaN where the step was not evaluated).
    pub val_loss: f64,
    /// The held-out accuracy (tasks, evaluated steps).
    pub accuracy: Option<f64>,
    /// Tokens per second so far in the invocation.
    pub tokens_per_s: f64,
}

/// The rows of a run's `metrics.csv` (header skipped; rows that do not parse are skipped).
///
/// # Errors
/// [`crate::Error::Config`] naming the file if it cannot be read.
pub fn metrics_rows(metrics: &Path) -> Result<Vec<MetricsRow>> {
    let text = std::fs::read_to_string(metrics)
        .map_err(|e| crate::Error::Config(format!("cannot read {}: {e}", metrics.display())))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some(MetricsRow {
                step: f.first()?.parse().ok()?,
                val_loss: f.get(3)?.parse().unwrap_or(f64::NAN),
                accuracy: f.get(5)?.parse().ok(),
                tokens_per_s: f.get(8)?.parse().unwrap_or(f64::NAN),
            })
        })
        .collect())
}

/// The evaluated steps of a run's `metrics.csv`: `(step, held-out loss)`.
///
/// # Errors
/// As [`metrics_rows`].
pub fn val_curve(metrics: &Path) -> Result<Vec<(usize, f64)>> {
    Ok(metrics_rows(metrics)?
        .into_iter()
        .filter(|r| r.val_loss.is_finite())
        .map(|r| (r.step, r.val_loss))
        .collect())
}
