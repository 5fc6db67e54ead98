//! The drivers of `polysketch train`, `sample`, `eval` and `task`: a run folder with a
//! checkpoint, a metrics CSV and a loss plot, progress on the terminal, exact resumption.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use faer::Par;
use indicatif::{ProgressBar, ProgressStyle};
use polysketch_core::{seeded_rng, split_seed};
use polysketch_gpt::checkpoint::{self, Meta};
use polysketch_gpt::data::{Corpus, Tokenizer, TokenizerSpec, read_text};
use polysketch_gpt::tasks::{Task, exact_accuracy};
use polysketch_gpt::{Activations, Gpt, GptConfig, GptError, TrainConfig, Trainer, evaluate};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::io::write_atomic;
use crate::plot::{Axes, Line, line_plot, line_plot_capped};
use crate::{Error, Result};

/// The corpus `train` uses when none is given (Austen's *Emma* and *Persuasion*, 1.35 MB).
pub const DEFAULT_DATA: &str = "data/austen_emma_persuasion.txt";

/// Everything a run needs besides the model shape (stored in its checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Optimisation.
    pub train: TrainConfig,
    /// What it trains on.
    pub source: Source,
    /// Evaluate (and checkpoint) every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Validation batches per evaluation.
    pub eval_batches: usize,
    /// The tokenizer of a text run (a BPE is trained on the training part of the text).
    #[serde(default)]
    pub tokenizer: TokenizerSpec,
    /// Task runs: stop at the first evaluation whose held-out accuracy reaches this (the
    /// checkpoint is written there). The steps before are those of the full schedule.
    #[serde(default)]
    pub stop_at_accuracy: Option<f64>,
}

/// Where the batches come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A UTF-8 text file, byte tokens, the last `val_fraction` held out.
    Text {
        /// The file.
        path: PathBuf,
        /// Held-out fraction.
        val_fraction: f64,
    },
    /// A synthetic task with fresh examples each step and a held-out set of `held_out`.
    Task {
        /// Which.
        task: Task,
        /// Held-out examples.
        held_out: usize,
    },
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Steps taken.
    pub step: usize,
    /// Training loss of each step of this invocation, `(step, loss)`.
    pub losses: Vec<(usize, f64)>,
    /// The last validation loss (text) or held-out loss (task).
    pub val_loss: f64,
    /// Exact accuracy on the held-out set (tasks only).
    pub accuracy: Option<f64>,
    /// First step at which the held-out accuracy reached 99 % (tasks only).
    pub solved_at: Option<usize>,
    /// Mean training throughput of this invocation.
    pub tokens_per_s: f64,
    /// The run folder.
    pub out: PathBuf,
}

/// Resolves the default corpus: the path as given, else under the source tree.
pub fn default_data() -> PathBuf {
    let here = PathBuf::from(DEFAULT_DATA);
    if here.exists() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DATA)
    }
}

/// A new run folder `runs/<prefix>-<n>` (the first free `n`).
pub fn new_run_dir(prefix: &str) -> PathBuf {
    (1..)
        .map(|i| PathBuf::from(format!("runs/{prefix}-{i}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| PathBuf::from("runs/run"))
}

enum Data {
    Text(Corpus, Vec<(Vec<u32>, Vec<u32>)>),
    Task(Task, Vec<polysketch_gpt::tasks::TaskBatch>),
}

impl Data {
    fn load(run: &RunConfig, model: &GptConfig, tokenizer: &Tokenizer) -> Result<Self> {
        let t = &run.train;
        match &run.source {
            Source::Text { path, val_fraction } => {
                if model.vocab != tokenizer.vocab() {
                    return Err(Error::Config(format!(
                        "the tokenizer has {} tokens, the model {}",
                        tokenizer.vocab(),
                        model.vocab
                    )));
                }
                let text = read_text(path)?;
                let corpus = Corpus::from_text(&text, tokenizer, *val_fraction, t.seq)?;
                let val = corpus.val_batches(t.batch, t.seq, run.eval_batches);
                Ok(Data::Text(corpus, val))
            }
            Source::Task { task, held_out } => {
                if model.vocab != task.vocab() || t.seq < task.min_len() {
                    return Err(Error::Config(format!(
                        "{task:?} needs vocab {} and seq ≥ {}",
                        task.vocab(),
                        task.min_len()
                    )));
                }
                // the held-out set comes from its own seed stream, never used for training
                let mut rng = seeded_rng(split_seed(t.seed, u64::MAX));
                let batches = held_out.div_ceil(t.batch);
                Ok(Data::Task(
                    *task,
                    (0..batches)
                        .map(|_| task.generate(&mut rng, t.batch, t.seq))
                        .collect(),
                ))
            }
        }
    }

    fn batch(&self, t: &TrainConfig, step: usize) -> (Vec<u32>, Vec<u32>) {
        match self {
            Data::Text(c, _) => c.train_batch(t.seed, step, t.batch, t.seq),
            Data::Task(task, _) => {
                let b = task.generate(
                    &mut seeded_rng(split_seed(t.seed, step as u64)),
                    t.batch,
                    t.seq,
                );
                (b.tokens, b.targets)
            }
        }
    }

    /// Held-out loss and, for tasks, exact accuracy.
    fn evaluate(
        &self,
        model: &Gpt<f32>,
        t: &TrainConfig,
        acts: &mut Activations<f32>,
    ) -> Result<(f64, Option<f64>)> {
        match self {
            Data::Text(_, val) => Ok((
                evaluate(model, val, t.batch, t.seq, acts, Par::rayon(0))?,
                None,
            )),
            Data::Task(_, held) => {
                let (mut loss, mut acc) = (0.0, 0.0);
                for b in held {
                    loss +=
                        model.forward(&b.tokens, &b.targets, b.batch, b.n, acts, Par::rayon(0))?;
                    acc += exact_accuracy(acts.probs(), b, model.config().vocab);
                }
                Ok((loss / held.len() as f64, Some(acc / held.len() as f64)))
            }
        }
    }
}

const CSV_HEADER: &str =
    "step,tokens,train_loss,val_loss,val_ppl,accuracy,lr,grad_norm,tokens_per_s,elapsed_s";

/// Trains `model` (or continues the checkpoint `resume`) into the folder `out`, stopping after
/// `stop_after` steps if given (a checkpoint is written there, to resume from). Shows a
/// progress bar unless `quiet`; when standard error is not a terminal, a plain line per
/// evaluation (step, loss, tokens/s, elapsed, ETA) instead.
///
/// # Errors
/// Bad configurations, data or checkpoints; a diverged loss; files that cannot be written.
pub fn train(
    model_config: GptConfig,
    run: RunConfig,
    out: &Path,
    resume: Option<&Path>,
    stop_after: Option<usize>,
    quiet: bool,
) -> Result<RunSummary> {
    let (mut trainer, run, start, tokenizer) = match resume {
        Some(ckpt) => {
            let ckpt = &checkpoint::locate(ckpt)?;
            let t0 = checkpoint::read_meta(ckpt)?;
            let run: RunConfig = serde_json::from_value(t0.train.clone()).map_err(|e| {
                Error::Config(format!("{}: not a run checkpoint ({e})", ckpt.display()))
            })?;
            let t = run.train;
            let (meta, model, opt) =
                checkpoint::load(ckpt, Some((t.beta1, t.beta2, 1e-8, t.weight_decay)))?;
            let opt = opt.ok_or_else(|| Error::Config("no optimizer state".into()))?;
            if meta.step >= t.steps {
                return Err(Error::Config(format!(
                    "{} has finished its {} steps",
                    ckpt.display(),
                    t.steps
                )));
            }
            let tokenizer = checkpoint::load_tokenizer(ckpt, &meta)?;
            (
                Trainer::new(model, opt, t, meta.step)?,
                run,
                meta.step,
                tokenizer,
            )
        }
        None => {
            let mut model_config = model_config;
            let tokenizer = match &run.source {
                Source::Text { path, val_fraction } => {
                    let text = read_text(path)?;
                    let (train_text, _) = Corpus::split_text(&text, *val_fraction)?;
                    let tok = Tokenizer::from_spec(run.tokenizer, train_text)?;
                    model_config.vocab = tok.vocab();
                    tok
                }
                Source::Task { .. } => Tokenizer::Bytes,
            };
            let model = Gpt::<f32>::new(model_config)?;
            let opt = run.train.optimizer(model.num_params());
            (Trainer::new(model, opt, run.train, 0)?, run, 0, tokenizer)
        }
    };
    let t = run.train;
    let model_config = *trainer.model.config();
    let bytes = trainer.model.activation_bytes(t.batch, t.seq);
    if bytes > polysketch_gpt::MAX_ACTIVATION_BYTES {
        return Err(GptError::TooLarge {
            op: "train",
            bytes,
            limit: polysketch_gpt::MAX_ACTIVATION_BYTES,
        }
        .into());
    }
    let data = Data::load(&run, &model_config, &tokenizer)?;
    std::fs::create_dir_all(out)?;
    let csv_path = out.join("metrics.csv");
    let mut csv = previous_rows(&csv_path, start);
    let end = stop_after.map_or(t.steps, |s| s.min(t.steps));
    let plain_progress = !quiet && !std::io::stderr().is_terminal();
    let bar = if quiet || plain_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(t.steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(start as u64);
    let tokens_per_step = t.batch * t.seq;
    let mut acts = Activations::new();
    let mut losses = Vec::new();
    let (mut val_loss, mut accuracy, mut solved_at) = (f64::NAN, None, None);
    let began = Instant::now();
    let mut done = start;
    for step in start..end {
        let (x, y) = data.batch(&t, step);
        let s = trainer.step(&x, &y, t.batch, t.seq, Par::rayon(0))?;
        losses.push((step + 1, s.loss));
        let elapsed = began.elapsed().as_secs_f64();
        let tps = ((step + 1 - start) * tokens_per_step) as f64 / elapsed;
        let mut last = step + 1 == end;
        let mut row = (f64::NAN, None);
        if last || (run.eval_every > 0 && (step + 1) % run.eval_every == 0) {
            row = data.evaluate(&trainer.model, &t, &mut acts)?;
            val_loss = row.0;
            accuracy = row.1;
            if solved_at.is_none() && accuracy.is_some_and(|a| a >= 0.99) {
                solved_at = Some(step + 1);
            }
            if let (Some(goal), Some(a)) = (run.stop_at_accuracy, accuracy) {
                last |= a >= goal;
            }
            save(&trainer, &run, &tokenizer, &out.join("checkpoint"))?;
            if plain_progress {
                // the bar is hidden when standard error is not a terminal (a log, nohup, CI):
                // one line per evaluation instead
                let left = elapsed / (step + 1 - start) as f64 * (end - step - 1) as f64;
                let acc = accuracy.map_or(String::new(), |a| format!(", accuracy {a:.4}"));
                eprintln!(
                    "step {}/{}: loss {:.4}, val {val_loss:.4}{acc}, {tps:.0} tokens/s, \
                     elapsed {}, eta {}",
                    step + 1,
                    t.steps,
                    s.loss,
                    clock(elapsed),
                    clock(left)
                );
            }
        }
        done = step + 1;
        let _ = writeln!(
            csv,
            "{},{},{:.6},{},{},{},{:.6e},{:.4},{:.1},{:.2}",
            step + 1,
            (step + 1) * tokens_per_step,
            s.loss,
            fmt_opt(row.0),
            fmt_opt(row.0.exp()),
            row.1.map_or(String::new(), |a| format!("{a:.4}")),
            s.lr,
            s.grad_norm,
            tps,
            elapsed
        );
        bar.set_message(format!(
            "loss {:.4} val {} {:.0} tok/s",
            s.loss,
            if val_loss.is_nan() {
                "-".into()
            } else {
                format!("{val_loss:.4}")
            },
            tps
        ));
        bar.inc(1);
        if last || (step + 1) % 10 == 0 {
            write_atomic(&csv_path, csv.as_bytes())?;
        }
        if last {
            break;
        }
    }
    bar.finish();
    write_atomic(&csv_path, csv.as_bytes())?;
    plot_losses(&csv, &out.join("loss.svg"))?;
    let tokens_per_s = ((done - start) * tokens_per_step) as f64 / began.elapsed().as_secs_f64();
    Ok(RunSummary {
        step: done,
        losses,
        val_loss,
        accuracy,
        solved_at,
        tokens_per_s,
        out: out.to_path_buf(),
    })
}

/// Seconds as `h:mm:ss`.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn fmt_opt(x: f64) -> String {
    if x.is_nan() {
        String::new()
    } else {
        format!("{x:.6}")
    }
}

/// The CSV rows of an earlier invocation up to `step` (resume keeps them), or the header.
fn previous_rows(path: &Path, step: usize) -> String {
    let mut csv = format!("{CSV_HEADER}\n");
    if step == 0 {
        return csv;
    }
    if let Ok(old) = std::fs::read_to_string(path) {
        for line in old.lines().skip(1) {
            if line
                .split(',')
                .next()
                .and_then(|s| s.parse::<usize>().ok())
                .is_some_and(|s| s <= step)
            {
                csv.push_str(line);
                csv.push('\n');
            }
        }
    }
    csv
}

fn save(trainer: &Trainer, run: &RunConfig, tokenizer: &Tokenizer, dir: &Path) -> Result<()> {
    let meta = Meta {
        format: checkpoint::FORMAT,
        model: *trainer.model.config(),
        step: trainer.step,
        train: serde_json::to_value(run).map_err(|e| Error::Config(e.to_string()))?,
        tokenizer: "bytes".into(),
    };
    Ok(checkpoint::save(
        dir,
        &trainer.model,
        &trainer.opt,
        tokenizer,
        &meta,
    )?)
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
        Line {
            name: "train".into(),
            points: train,
            ..Line::default()
        },
        Line {
            name: "validation".into(),
            points: val,
            ..Line::default()
        },
    ];
    // the first steps fall fast from the initial loss and would squash the rest: the axis ends
    // at the lowest loss plus three times the distance from it to the median training loss
    let mut sorted: Vec<f64> = lines[0].points.iter().map(|p| p.1).collect();
    sorted.sort_by(f64::total_cmp);
    let lo = lines
        .iter()
        .flat_map(|l| &l.points)
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min);
    let y_cap = sorted
        .get(sorted.len() / 2)
        .map(|median| lo + 3.0 * (median - lo).max(0.05));
    let title = match y_cap {
        Some(c) if sorted.last().is_some_and(|&m| m > c) => {
            format!("loss (first steps above {c:.2} cut off)")
        }
        _ => "loss".to_string(),
    };
    line_plot_capped(
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
    )
}

/// Loss curves of several runs (`(name, metrics.csv)`) in one plot, validation only.
///
/// # Errors
/// Unreadable files, nothing to plot.
pub fn plot_runs(runs: &[(String, PathBuf)], title: &str, path: &Path) -> Result<()> {
    let mut lines = Vec::new();
    for (name, csv) in runs {
        let text = std::fs::read_to_string(csv)?;
        let points = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                Some((f[0].parse().ok()?, f[3].parse().ok()?))
            })
            .collect();
        lines.push(Line {
            name: name.clone(),
            points,
            ..Line::default()
        });
    }
    line_plot(
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
    )
}

/// Generates `count` tokens after `prompt` with the recurrent decoding of the attention layers:
/// the prompt is prefilled in one chunk, then each token costs one step. Sampling at
/// `temperature` (0: greedy) from a seeded generator.
///
/// # Errors
/// The model's errors.
pub fn generate(
    model: &Gpt<f32>,
    tok: &Tokenizer,
    prompt: &str,
    count: usize,
    temperature: f64,
    seed: u64,
) -> Result<String> {
    let mut ids = tok.encode(prompt)?;
    if ids.is_empty() {
        ids = tok.encode("\n")?;
    }
    let mut state = model.new_state(1)?;
    let mut scratch = Activations::new();
    let mut logits =
        model.forward_chunk(&ids, ids.len(), &mut state, &mut scratch, Par::rayon(0))?;
    let mut rng = seeded_rng(seed);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let next = pick(&logits, temperature, rng.random::<f64>());
        out.push(next);
        logits = model.forward_chunk(&[next], 1, &mut state, &mut scratch, Par::Seq)?;
    }
    Ok(tok.decode(&out))
}

/// A token from `logits`: arg-max at temperature 0, else the inverse CDF at `u` of
/// softmax(logits / temperature).
fn pick(logits: &[f32], temperature: f64, u: f64) -> u32 {
    let arg = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
    if temperature <= 0.0 {
        return arg as u32;
    }
    let max = f64::from(logits[arg]);
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| ((f64::from(l) - max) / temperature).exp())
        .collect();
    let mut target = u * w.iter().sum::<f64>();
    for (i, wi) in w.iter().enumerate() {
        target -= wi;
        if target <= 0.0 {
            return i as u32;
        }
    }
    arg as u32
}

/// A checkpoint's model and tokenizer, for generation. `ckpt` is a checkpoint folder or a run
/// folder holding one (see [`checkpoint::locate`]).
///
/// # Errors
/// Missing or corrupt checkpoint files.
pub fn load_model(ckpt: &Path) -> Result<(Meta, Gpt<f32>, Tokenizer)> {
    let ckpt = &checkpoint::locate(ckpt)?;
    let (meta, model, _) = checkpoint::load(ckpt, None)?;
    let tokenizer = checkpoint::load_tokenizer(ckpt, &meta)?;
    Ok((meta, model, tokenizer))
}

/// What [`eval`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalReport {
    /// Mean cross-entropy (nats per token).
    pub loss: f64,
    /// Batches it averaged over.
    pub batches: usize,
    /// Tokens it averaged over.
    pub tokens: usize,
    /// Batches each evaluation of the training run averaged over (`eval_batches`).
    pub training_batches: usize,
}

/// Validation loss of a checkpoint (folder, or run folder holding one) on a text file (default:
/// the one it was trained on), over `batches` batches of the run's shape.
///
/// # Errors
/// Missing or corrupt checkpoint, data too short.
pub fn eval(ckpt: &Path, data: Option<&Path>, batches: usize) -> Result<EvalReport> {
    let (meta, model, tokenizer) = load_model(ckpt)?;
    let mut run: RunConfig = serde_json::from_value(meta.train)
        .map_err(|e| Error::Config(format!("{}: {e}", ckpt.display())))?;
    if let Some(p) = data {
        run.source = Source::Text {
            path: p.to_path_buf(),
            val_fraction: 0.1,
        };
    }
    let training_batches = run.eval_batches;
    run.eval_batches = batches;
    let d = Data::load(&run, model.config(), &tokenizer)?;
    let batches = match &d {
        Data::Text(_, v) => v.len(),
        Data::Task(_, h) => h.len(),
    };
    let (loss, _) = d.evaluate(&model, &run.train, &mut Activations::new())?;
    Ok(EvalReport {
        loss,
        batches,
        tokens: batches * run.train.batch * run.train.seq,
        training_batches,
    })
}
