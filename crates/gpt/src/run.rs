//! A training run: where its batches come from, evaluation, checkpoints with exact resumption,
//! and a metrics CSV, all in one run folder. The caller sees progress through [`Progress`]
//! (the `polysketch` program draws a bar or prints lines; tests pass [`Quiet`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use faer::Par;
use polysketch_core::io::write_atomic;
use polysketch_core::{seeded_rng, split_seed};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Meta};
use crate::data::{Corpus, Tokenizer, TokenizerSpec, read_text};
use crate::tasks::{Task, TaskBatch, exact_accuracy};
use crate::{
    Activations, Collective, Gpt, GptConfig, GptError, IGNORE, Result, SingleProcess, TrainConfig,
    Trainer, shard,
};
use polysketch_core::collective::share;

/// The corpus a text run reads when none is given (Austen's *Emma* and *Persuasion*, 1.35 MB,
/// under the source tree's `data/`).
pub const DEFAULT_DATA: &str = "data/austen_emma_persuasion.txt";

/// Everything a run needs besides the model shape (stored in its checkpoints).
///
/// The [`Default`] is `polysketch train`'s: [`TrainConfig::default`] on [`DEFAULT_DATA`] (a
/// tenth held out), evaluating every 50 steps over 8 batches, byte tokens; [`RunConfig::task`]
/// gives `polysketch task`'s.
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

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            train: TrainConfig::default(),
            source: Source::Text { path: PathBuf::from(DEFAULT_DATA), val_fraction: 0.1 },
            eval_every: 50,
            eval_batches: 8,
            tokenizer: TokenizerSpec::Bytes,
            stop_at_accuracy: None,
        }
    }
}

impl RunConfig {
    /// `polysketch task`'s run on `task`: [`TrainConfig::task`], 256 held-out examples,
    /// evaluating every 250 steps.
    pub fn task(task: Task) -> Self {
        Self {
            train: TrainConfig::task(),
            source: Source::Task { task, held_out: 256 },
            eval_every: 250,
            eval_batches: 1,
            tokenizer: TokenizerSpec::Bytes,
            stop_at_accuracy: None,
        }
    }
}

impl RunConfig {
    /// Checks the run against `model`: [`TrainConfig::validate`], at least one evaluation batch,
    /// a held-out set of at least one example (tasks) or a validation fraction in (0, 1)
    /// (text), an accuracy goal in [0, 1].
    ///
    /// # Errors
    /// [`GptError::InvalidConfig`] naming the value.
    pub fn validate(&self, model: &GptConfig) -> Result<()> {
        let bad = |m: String| Err(GptError::InvalidConfig(m));
        self.train.validate(model)?;
        if self.eval_batches == 0 {
            return bad("eval_batches must be at least 1".into());
        }
        match self.source {
            Source::Task { held_out: 0, .. } => {
                return bad("held_out must be at least 1 (the accuracy is over it)".into());
            }
            Source::Text { val_fraction, .. } if !(val_fraction > 0.0 && val_fraction < 1.0) => {
                return bad(format!("validation fraction {val_fraction} must be in (0, 1)"));
            }
            _ => {}
        }
        if let Some(goal) = self.stop_at_accuracy
            && !(0.0..=1.0).contains(&goal)
        {
            return bad(format!("accuracy goal {goal} must be in [0, 1]"));
        }
        Ok(())
    }
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

/// What a finished (or stopped) run reports, with the model it trained.
#[derive(Debug)]
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
    /// The trained model (also in the run folder's checkpoint).
    pub model: Gpt<f32>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
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
    Task(Task, Vec<TaskBatch>),
}

impl Data {
    fn load(run: &RunConfig, model: &GptConfig, tokenizer: &Tokenizer) -> Result<Self> {
        let t = &run.train;
        match &run.source {
            Source::Text { path, val_fraction } => {
                if model.vocab != tokenizer.vocab() {
                    return Err(GptError::InvalidConfig(format!(
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
                    return Err(GptError::InvalidConfig(format!(
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
                    (0..batches).map(|_| task.generate(&mut rng, t.batch, t.seq)).collect(),
                ))
            }
        }
    }

    fn batch(&self, t: &TrainConfig, step: usize) -> (Vec<u32>, Vec<u32>) {
        match self {
            Data::Text(c, _) => c.train_batch(t.seed, step, t.batch, t.seq),
            Data::Task(task, _) => {
                let b =
                    task.generate(&mut seeded_rng(split_seed(t.seed, step as u64)), t.batch, t.seq);
                (b.tokens, b.targets)
            }
        }
    }

    /// Held-out loss and, for tasks, exact accuracy, the held-out batches shared by the ranks
    /// (consecutive runs of batches, summed by the chain in batch order: the same numbers for
    /// any rank count).
    fn evaluate(
        &self, model: &Gpt<f32>, t: &TrainConfig, acts: &mut Activations<f32>,
        comm: &dyn Collective,
    ) -> Result<(f64, Option<f64>)> {
        let mine = |len: usize| share(len, comm.rank(), comm.size());
        match self {
            Data::Text(_, val) => {
                let count: usize =
                    val.iter().map(|(_, y)| y.iter().filter(|&&t| t != IGNORE).count()).sum();
                let mut sums = Vec::new();
                for (x, y) in &val[mine(val.len())] {
                    let c = y.iter().filter(|&&t| t != IGNORE).count();
                    sums.push(model.forward(x, y, t.batch, t.seq, acts, Par::rayon(0))? * c as f64);
                }
                Ok((comm.chain_values(&sums)? / count.max(1) as f64, None))
            }
            Data::Task(_, held) => {
                let (mut losses, mut accs) = (Vec::new(), Vec::new());
                for b in &held[mine(held.len())] {
                    losses.push(model.forward(
                        &b.tokens,
                        &b.targets,
                        b.batch,
                        b.n,
                        acts,
                        Par::rayon(0),
                    )?);
                    accs.push(exact_accuracy(acts.probs(), b, model.config().vocab));
                }
                let len = held.len() as f64;
                Ok((comm.chain_values(&losses)? / len, Some(comm.chain_values(&accs)? / len)))
            }
        }
    }
}

/// The columns of a run's `metrics.csv`, one row per step.
pub const CSV_HEADER: &str =
    "step,tokens,train_loss,val_loss,val_ppl,accuracy,lr,grad_norm,tokens_per_s,elapsed_s";

/// What a run tells its [`Progress`] after each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Steps done (1-based: the step just taken).
    pub step: usize,
    /// Steps of the whole schedule.
    pub total: usize,
    /// Steps this invocation will take in all (to its stop).
    pub end: usize,
    /// The step this invocation started from (0, or a resumed checkpoint's step).
    pub start: usize,
    /// Training loss of the step.
    pub loss: f64,
    /// Held-out loss when this step evaluated, else `None`.
    pub evaluated: Option<f64>,
    /// The latest held-out loss (NaN before the first evaluation).
    pub val_loss: f64,
    /// The latest held-out exact accuracy (tasks).
    pub accuracy: Option<f64>,
    /// Mean training throughput of this invocation so far.
    pub tokens_per_s: f64,
    /// Seconds since this invocation's first step.
    pub elapsed: f64,
}

/// Where a run's progress goes (a bar, log lines, nothing).
pub trait Progress {
    /// Called once before the first step.
    fn start(&mut self, _start: usize, _total: usize) {}
    /// Called after every step.
    fn step(&mut self, _report: &StepReport) {}
    /// Called once after the last step.
    fn finish(&mut self) {}
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {}

/// Trains `model_config` under `run` (or continues the checkpoint `resume`: a checkpoint
/// folder or a run folder holding one) into the folder `out`, stopping after `stop_after` steps
/// if given (a checkpoint is written there, to resume from). Writes `out/checkpoint` at every
/// evaluation and `out/metrics.csv` (columns [`CSV_HEADER`]) as it goes.
///
/// # Errors
/// Bad configurations, data or checkpoints; a diverged loss; files that cannot be written.
pub fn train(
    model_config: GptConfig, run: RunConfig, out: &Path, resume: Option<&Path>,
    stop_after: Option<usize>, progress: &mut dyn Progress,
) -> Result<RunSummary> {
    train_with(model_config, run, out, resume, stop_after, progress, &SingleProcess)
}

/// [`train`] as one rank of a data-parallel run over `comm`: every rank builds the same model
/// from the seed (or reads the same checkpoint), trains on its share of each global batch
/// ([`shard`]: `--batch` stays the global batch) and takes the same step
/// ([`Trainer::step_sharded`]); the held-out batches are shared too. Rank 0 alone writes the
/// checkpoint and `metrics.csv` and reports to `progress`. With [`TrainConfig::piece`] fixed,
/// the metrics are the same, as text, for any rank count that divides the batch.
///
/// # Errors
/// As [`train`]; a rank count that does not divide the batch. An error on one rank is an
/// error on every rank only where the numbers make it so (a diverged loss): the caller ends
/// the other ranks otherwise (the `polysketch` program calls `MPI_Abort`).
pub fn train_with(
    model_config: GptConfig, run: RunConfig, out: &Path, resume: Option<&Path>,
    stop_after: Option<usize>, progress: &mut dyn Progress, comm: &dyn Collective,
) -> Result<RunSummary> {
    let writer = comm.rank() == 0;
    if resume.is_none() && writer {
        run.validate(&model_config)?;
        refuse_existing_run(out)?;
    }
    let (mut trainer, run, start, tokenizer) = match resume {
        Some(ckpt) => {
            let ckpt = &checkpoint::locate(ckpt)?;
            let run = checkpoint::read_meta(ckpt)?.run;
            let t = run.train;
            let (meta, model, opt) =
                checkpoint::load(ckpt, Some((t.beta1, t.beta2, 1e-8, t.weight_decay)))?;
            let opt = opt.ok_or_else(|| GptError::InvalidConfig("no optimizer state".into()))?;
            if meta.step >= t.steps {
                return Err(GptError::InvalidConfig(format!(
                    "{} has finished its {} steps",
                    ckpt.display(),
                    t.steps
                )));
            }
            let tokenizer = checkpoint::load_tokenizer(ckpt, &meta)?;
            (Trainer::new(model, opt, t, meta.step)?, run, meta.step, tokenizer)
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
    if let Some(stop) = stop_after.filter(|&s| s <= start) {
        return Err(GptError::InvalidConfig(format!(
            "stop_after {stop} must be after the step the run starts from ({start})"
        )));
    }
    let t = run.train;
    let (first, last) = shard(t.batch, t.piece, comm.rank(), comm.size())?;
    let model_config = *trainer.model.config();
    let bytes = trainer.model.activation_bytes(t.batch, t.seq);
    if bytes > crate::MAX_ACTIVATION_BYTES {
        return Err(GptError::TooLarge { op: "train", bytes, limit: crate::MAX_ACTIVATION_BYTES });
    }
    let data = Data::load(&run, &model_config, &tokenizer)?;
    let csv_path = out.join("metrics.csv");
    let mut csv = String::new();
    if writer {
        std::fs::create_dir_all(out).map_err(|e| file_err(out, e))?;
        csv = previous_rows(&csv_path, start);
    }
    // what only rank 0 writes
    let write_csv = |csv: &str| match writer {
        true => write_atomic(&csv_path, csv.as_bytes()).map_err(|e| file_err(&csv_path, e)),
        false => Ok(()),
    };
    let end = stop_after.map_or(t.steps, |s| s.min(t.steps));
    if writer {
        progress.start(start, t.steps);
    }
    let tokens_per_step = t.batch * t.seq;
    let mut acts = Activations::new();
    let mut losses = Vec::new();
    let (mut val_loss, mut accuracy, mut solved_at) = (f64::NAN, None, None);
    let began = Instant::now();
    let mut done = start;
    for step in start..end {
        let (x, y) = data.batch(&t, step);
        let targets = y.iter().filter(|&&v| v != IGNORE).count();
        let rows = first * t.seq..last * t.seq;
        let (x, y) = (&x[rows.clone()], &y[rows]);
        let s = match trainer.step_sharded(x, y, last - first, t.seq, targets, comm, Par::rayon(0))
        {
            Ok(s) => s,
            Err(e) => {
                // the metrics so far show the climb; the last checkpoint stays as it was
                write_csv(&csv)?;
                return Err(diverged(e, step + 1, t.schedule().lr(step), out, run.eval_every));
            }
        };
        losses.push((step + 1, s.loss));
        let elapsed = began.elapsed().as_secs_f64();
        let tps = ((step + 1 - start) * tokens_per_step) as f64 / elapsed;
        let mut last = step + 1 == end;
        let mut row = (f64::NAN, None);
        if last || (run.eval_every > 0 && (step + 1) % run.eval_every == 0) {
            row = data.evaluate(&trainer.model, &t, &mut acts, comm)?;
            val_loss = row.0;
            accuracy = row.1;
            if solved_at.is_none() && accuracy.is_some_and(|a| a >= 0.99) {
                solved_at = Some(step + 1);
            }
            if let (Some(goal), Some(a)) = (run.stop_at_accuracy, accuracy) {
                last |= a >= goal;
            }
            if writer {
                save(&trainer, &run, &tokenizer, &out.join("checkpoint"))?;
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
        let report = StepReport {
            step: step + 1,
            total: t.steps,
            end,
            start,
            loss: s.loss,
            evaluated: (!row.0.is_nan()).then_some(row.0),
            val_loss,
            accuracy,
            tokens_per_s: tps,
            elapsed,
        };
        if writer {
            progress.step(&report);
        }
        if last || (step + 1) % 10 == 0 {
            write_csv(&csv)?;
        }
        if last {
            break;
        }
    }
    if writer {
        progress.finish();
    }
    write_csv(&csv)?;
    let tokens_per_s = ((done - start) * tokens_per_step) as f64 / began.elapsed().as_secs_f64();
    Ok(RunSummary {
        step: done,
        losses,
        val_loss,
        accuracy,
        solved_at,
        tokens_per_s,
        out: out.to_path_buf(),
        model: trainer.model,
        tokenizer,
    })
}

/// A fresh run must not write over a run a user made: a folder with a checkpoint or metrics.
fn refuse_existing_run(out: &Path) -> Result<()> {
    let found: Vec<&str> = ["checkpoint", "metrics.csv", "checkpoint.old"]
        .into_iter()
        .filter(|name| out.join(name).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(GptError::RunExists { path: out.display().to_string(), what: found.join(", ") })
}

/// A step's error, as [`GptError::Diverged`] when it is the model leaving the number format
/// (a non-finite loss, gradient, activation or parameter); other errors unchanged.
fn diverged(e: GptError, step: usize, lr: f64, out: &Path, eval_every: usize) -> GptError {
    use polysketch_attention::AttentionError as A;
    let non_finite = match &e {
        GptError::NonFinite(_) => true,
        GptError::Attention(a) => matches!(
            a,
            A::NonFinite { .. }
                | A::NonFiniteParameter { .. }
                | A::Overflow { .. }
                | A::Sketch(
                    polysketch_core::Error::NonFinite { .. }
                        | polysketch_core::Error::Overflow { .. }
                )
        ),
        _ => false,
    };
    if !non_finite {
        return e;
    }
    let ckpt = out.join("checkpoint");
    let checkpoint = match checkpoint::read_meta(&ckpt) {
        Ok(meta) => {
            format!("the last good checkpoint, of step {}, is in {}", meta.step, ckpt.display())
        }
        Err(_) => format!(
            "no checkpoint was written before (the first evaluation is at step {eval_every})"
        ),
    };
    GptError::Diverged { step, lr, cause: e.to_string(), checkpoint }
}

fn file_err(path: &Path, reason: impl ToString) -> GptError {
    GptError::File { path: path.display().to_string(), reason: reason.to_string() }
}

fn fmt_opt(x: f64) -> String {
    if x.is_nan() { String::new() } else { format!("{x:.6}") }
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
        run: run.clone(),
        adam_t: trainer.opt.t,
        tokenizer: "bytes".into(),
    };
    checkpoint::save(dir, &trainer.model, &trainer.opt, tokenizer, &meta)
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
    let mut run = meta.run;
    if let Some(p) = data {
        run.source = Source::Text { path: p.to_path_buf(), val_fraction: 0.1 };
    }
    let training_batches = run.eval_batches;
    run.eval_batches = batches;
    let d = Data::load(&run, model.config(), &tokenizer)?;
    let batches = match &d {
        Data::Text(_, v) => v.len(),
        Data::Task(_, h) => h.len(),
    };
    let (loss, _) = d.evaluate(&model, &run.train, &mut Activations::new(), &SingleProcess)?;
    Ok(EvalReport {
        loss,
        batches,
        tokens: batches * run.train.batch * run.train.seq,
        training_batches,
    })
}
