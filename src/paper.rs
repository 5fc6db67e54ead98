//! The paper's comparisons at CPU scale (the book's chapter "Reproducing the paper"): four
//! studies, each a list of [`Arm`]s (a model and its run), every arm trained once per seed.
//!
//! - [`Study::Corpus`]: validation loss on the bundled corpus (bytes, context 256) of softmax,
//!   polynomial \\(p = 4\\), PolySketch learned + local (\\(r = 32, 64\\), also with the sketch's
//!   networks at a lower learning rate, [`TrainConfig::sketch_lr`]), random + local,
//!   learned without local blocks, Performer, Hedgehog, learned + local with one layer more
//!   (the paper's 13 against 12) and softmax with one layer more, local-only and sliding-window
//!   attention; the paper's Tables 2 and 7.
//! - [`Study::Copying`]: selective copying (Appendix F, Table 5) for softmax, polynomial,
//!   learned + local (also at a tenth of the sketch's learning rate), random + local, local-only
//!   and sliding-window attention.
//! - [`Study::Degree`]: \\(p = 2, 4, 8\\) for polynomial and PolySketch attention on the corpus
//!   (quality and tokens/s); its \\(p = 4\\) arms are the corpus study's own runs.
//! - [`Study::Induction`]: induction heads with \\(r = 32\\), learned with and without local
//!   blocks (with local blocks also at a tenth of the sketch's learning rate), against softmax.
//!
//! Every run lives in `root/<setting>/<arm>-s<seed>/` (a normal run folder: checkpoint,
//! `metrics.csv`, `loss.svg`). A finished run is read back instead of trained again and an
//! interrupted one resumes from its checkpoint, so a study can be stopped and continued, and two
//! studies share the runs they have in common. [`run_study`] then writes
//! `root/<study>.csv` (one row per run), `root/<study>.md` (one row per arm: mean, spread and
//! the seeds' values) and `root/<study>.svg` (the seeds' mean held-out loss against step);
//! `<study>-n<context>` for the copying study at a given context ([`Options::stem`]).

use std::path::{Path, PathBuf};

use polysketch_gpt::checkpoint;
use polysketch_gpt::tasks::Task;
use polysketch_gpt::{AttentionKind, GptConfig, TrainConfig};

use crate::attention::{PolySketchConfig, SketchKind};
use crate::plot::{Axes, Line, line_plot_capped};
use crate::run::{self, RunConfig, Source, metrics_rows, val_curve};
use crate::{Error, Result};

/// One of the four studies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Study {
    /// Validation loss on the bundled corpus, fifteen arms.
    Corpus,
    /// Selective copying accuracy, seven arms.
    Copying,
    /// Degree \\(p = 2, 4, 8\\), polynomial and PolySketch, on the corpus.
    Degree,
    /// Induction heads, \\(r = 32\\), learned with and without local blocks (the first also
    /// with the sketch's networks at a tenth of the learning rate), and softmax.
    Induction,
}

impl Study {
    /// Every study, in the chapter's order.
    pub const ALL: [Study; 4] = [Study::Corpus, Study::Copying, Study::Degree, Study::Induction];

    /// The name of the study's files and subcommand: `corpus`, `copying`, `degree`, `induction`.
    pub fn name(self) -> &'static str {
        match self {
            Study::Corpus => "corpus",
            Study::Copying => "copying",
            Study::Degree => "degree",
            Study::Induction => "induction",
        }
    }
}

/// One configuration of a study: trained once per seed (the seed replaces the model's and the
/// run's).
#[derive(Debug, Clone)]
pub struct Arm {
    /// Its row in the tables: `polysketch learned+local r=32`, ...
    pub label: String,
    /// Its run folders' path under the root, before `-s<seed>`: `<setting>/<kind name>`.
    pub folder: String,
    /// The model (seed 0).
    pub model: GptConfig,
    /// The run (seed 0).
    pub run: RunConfig,
    /// Stop after this step of the run's schedule (`--stop-after`); `None`: all its steps.
    pub stop_after: Option<usize>,
}

impl Arm {
    /// The step at which the arm's runs end.
    pub fn last_step(&self) -> usize {
        self.stop_after.map_or(self.run.train.steps, |s| s.min(self.run.train.steps))
    }
}

/// How a study runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The CI-sized variant: tiny models, a few steps, one seed unless `seeds` says otherwise.
    pub quick: bool,
    /// How many seeds: `first_seed`, `first_seed + 1`, ..., `first_seed + seeds − 1`.
    pub seeds: u64,
    /// The first seed (0 for a study from scratch; 1 to add a second seed to runs made
    /// elsewhere, whose folders are not under `root`).
    pub first_seed: u64,
    /// Where the runs and the study's files go.
    pub root: PathBuf,
    /// Only the arms whose folder ends with one of these kind names (empty: every arm).
    pub only: Vec<String>,
    /// Context length of the copying study (its full variant; default 128).
    pub context: Option<usize>,
    /// No progress bars.
    pub quiet: bool,
    /// Train nothing: tabulate the runs that have finished (an arm without one is listed as
    /// not run), to report a study while it is still running.
    pub report: bool,
}

impl Options {
    /// The name of the study's table, CSV and plot under `root`: the study's name, with
    /// `-n<context>` when a context is given (`copying-n256`), so that the copying study at
    /// another context does not replace the default one's files.
    pub fn stem(&self, study: Study) -> String {
        match self.context {
            Some(c) => format!("{}-n{c}", study.name()),
            None => study.name().into(),
        }
    }
}

/// What one run ended with, read from its `metrics.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The run's seed.
    pub seed: u64,
    /// Its last step.
    pub step: usize,
    /// Its last held-out (validation) loss, nats per token.
    pub val_loss: f64,
    /// Its last held-out exact accuracy (tasks).
    pub accuracy: Option<f64>,
    /// The first evaluated step whose accuracy reached 99 % (tasks).
    pub solved_at: Option<usize>,
    /// Training tokens per second of its last invocation (evaluations included).
    pub tokens_per_s: f64,
    /// Its `metrics.csv`.
    pub metrics: PathBuf,
}

/// An arm and its runs' outcomes, by seed.
#[derive(Debug, Clone)]
pub struct ArmResult {
    /// The arm.
    pub arm: Arm,
    /// One outcome per seed.
    pub outcomes: Vec<Outcome>,
}

/// Mean, sample standard deviation (0 for one value), smallest and largest of `v` (not empty).
pub fn spread(v: &[f64]) -> (f64, f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, var.sqrt(), lo, hi)
}

/// The study's arms (`quick`: the CI-sized variant; `context`: the copying study's context).
///
/// # Errors
/// [`Error::Attention`] if a kind's text form is refused (a bug: they are fixed here).
pub fn arms(study: Study, quick: bool, context: Option<usize>) -> Result<Vec<Arm>> {
    match study {
        Study::Corpus => corpus_arms(quick, &CORPUS_KINDS),
        Study::Degree => corpus_arms(quick, &DEGREE_KINDS),
        Study::Copying => task_arms(Task::Copying, quick, context, &COPYING_KINDS),
        Study::Induction => task_arms(Task::Induction, quick, None, &INDUCTION_KINDS),
    }
}

/// `(kind, extra layers, sketch learning-rate factor)`: the kind in
/// [`AttentionKind::parse_with`]'s text form, over defaults `p = 4` and the setting's `r` and
/// `b`, without local blocks unless `+local`; the factor is [`TrainConfig::sketch_lr`].
type KindSpec = (&'static str, usize, f64);

const CORPUS_KINDS: [KindSpec; 15] = [
    ("softmax", 0, 1.0),
    ("polynomial", 0, 1.0),
    ("learned+local", 0, 1.0),
    ("learned+local:r=64", 0, 1.0),
    // r = 64 saturates at the full rate; its networks at a quarter of it train, at a tenth
    // they train unsaturated (and r = 32 with them)
    ("learned+local:r=64", 0, 0.25),
    ("learned+local:r=64", 0, 0.1),
    ("learned+local", 0, 0.1),
    ("random+local", 0, 1.0),
    ("learned", 0, 1.0),
    ("performer", 0, 1.0),
    ("hedgehog", 0, 1.0),
    ("learned+local", 1, 1.0),
    // the extra layer's own worth: the paper's Appendix K compares at equal depth
    ("softmax", 1, 1.0),
    // the paper's Table 7: the locality baselines, with b = w = 64
    ("local", 0, 1.0),
    ("sliding", 0, 1.0),
];

const DEGREE_KINDS: [KindSpec; 6] = [
    ("polynomial:p=2", 0, 1.0),
    ("polynomial", 0, 1.0),
    ("polynomial:p=8", 0, 1.0),
    // a learned sketch needs p ≥ 4 (Algorithm 2 has no network for p = 2)
    ("random+local:p=2", 0, 1.0),
    ("learned+local", 0, 1.0),
    ("learned+local:p=8", 0, 1.0),
];

const COPYING_KINDS: [KindSpec; 7] = [
    ("softmax", 0, 1.0),
    ("polynomial", 0, 1.0),
    ("learned+local", 0, 1.0),
    // the corpus study's sketch learning-rate factor, in this setting
    ("learned+local", 0, 0.1),
    ("random+local", 0, 1.0),
    ("local", 0, 1.0),
    ("sliding", 0, 1.0),
];

const INDUCTION_KINDS: [KindSpec; 4] = [
    ("softmax", 0, 1.0),
    ("learned+local:r=32", 0, 1.0),
    // the sketch starts to saturate at the full rate; the corpus study's factor
    ("learned+local:r=32", 0, 0.1),
    ("learned:r=32", 0, 1.0),
];

/// The kinds' arms on one model and run: `sketch` gives the defaults of `r` and `b` (also the
/// local block, the sliding window and the Performer/Hedgehog block); the quick variant shrinks
/// the feature maps too.
fn arms_of(
    kinds: &[KindSpec], model: GptConfig, run: RunConfig, sketch: PolySketchConfig, setting: &str,
    stop_after: Option<usize>, quick: bool,
) -> Result<Vec<Arm>> {
    kinds
        .iter()
        .map(|&(spec, extra, sketch_lr)| {
            let mut attention = AttentionKind::parse_with(spec, sketch)?;
            if quick {
                if let AttentionKind::Performer { features, .. }
                | AttentionKind::Hedgehog { features, .. } = &mut attention
                {
                    *features = 8;
                }
                if let AttentionKind::PolySketch(c) = &mut attention {
                    c.r /= 4;
                }
            }
            let model = GptConfig { attention, layers: model.layers + extra, ..model };
            let mut label = attention.label();
            let mut name = attention.name();
            if let AttentionKind::PolySketch(c) = attention {
                label.push_str(&format!(" r={}", c.r));
                if c.p != 4 {
                    label.push_str(&format!(" p={}", c.p));
                    name.push_str(&format!("-p{}", c.p));
                }
            }
            if extra > 0 {
                label.push_str(&format!(", {} layers", model.layers));
                name.push_str(&format!("-l{}", model.layers));
            }
            let mut run = run.clone();
            if sketch_lr != 1.0 {
                label.push_str(&format!(", sketch lr ×{sketch_lr}"));
                name.push_str(&format!("-slr{sketch_lr}"));
                run.train.sketch_lr = sketch_lr;
            }
            Ok(Arm { label, folder: format!("{setting}/{name}"), model, run, stop_after })
        })
        .collect()
}

/// The corpus setting: bytes of the bundled corpus, context 256, 2 layers of width 64 with 2
/// heads of 32, batches of 8, 3,000 steps (a tenth warm-up, cosine), PolySketch \\(r = 32\\),
/// \\(b = 64\\); held-out loss on 16 validation batches every 100 steps.
fn corpus_arms(quick: bool, kinds: &[KindSpec]) -> Result<Vec<Arm>> {
    let (context, d_model, layers, batch, steps, eval_every, eval_batches, block) =
        if quick { (64, 32, 1, 2, 8, 4, 2, 16) } else { (256, 64, 2, 8, 3000, 100, 16, 64) };
    let model =
        GptConfig { vocab: 256, context, d_model, layers, heads: 2, ..GptConfig::default() };
    let run = RunConfig {
        train: TrainConfig { batch, seq: context, steps, warmup: steps / 10, ..Default::default() },
        source: Source::Text { path: run::default_data(), val_fraction: 0.1 },
        eval_every,
        eval_batches,
        ..RunConfig::default()
    };
    let sketch =
        PolySketchConfig { p: 4, r: 32, block, sketch: SketchKind::Learned, local: false, seed: 0 };
    let setting = if quick { "corpus-quick" } else { "corpus" };
    arms_of(kinds, model, run, sketch, setting, None, quick)
}

/// The task setting: `polysketch task <task>`'s defaults (2 layers of width 64, 2 heads,
/// batches of 32 fresh examples, the 10,000-step schedule, 512 held-out examples, evaluations
/// every 250 steps, \\(r = 16\\), \\(b = 32\\)), stopped after 3,000 steps (copying) or 5,000
/// (induction) for every arm alike; `context` replaces copying's 128.
fn task_arms(
    task: Task, quick: bool, context: Option<usize>, kinds: &[KindSpec],
) -> Result<Vec<Arm>> {
    let mut model = GptConfig::task(task.vocab());
    let mut run =
        RunConfig { source: Source::Task { task, held_out: 512 }, ..RunConfig::task(task) };
    let AttentionKind::PolySketch(mut sketch) = model.attention else {
        unreachable!("the task model uses PolySketch attention")
    };
    sketch.local = false;
    let mut stop = if task == Task::Copying { 3000 } else { 5000 };
    if quick {
        (model.context, model.d_model, model.layers) = (32, 32, 1);
        (run.train.batch, run.train.steps, run.train.warmup, run.eval_every) = (4, 8, 1, 4);
        run.source = Source::Task { task, held_out: 16 };
        sketch.block = 8;
        stop = 8;
    } else if let Some(c) = context {
        model.context = c;
    }
    run.train.seq = model.context;
    let setting = match (task, quick) {
        (Task::Copying, false) => format!("copying-n{}", model.context),
        (Task::Induction, false) => "induction".into(),
        (_, true) => format!(
            "{}-quick",
            match task {
                Task::Copying => "copying",
                Task::Induction => "induction",
            }
        ),
    };
    arms_of(kinds, model, run, sketch, &setting, Some(stop), quick)
}

/// Reads a run's outcome from its `metrics.csv` (columns [`polysketch_gpt::run::CSV_HEADER`]).
///
/// # Errors
/// [`Error::Config`] if it cannot be read or has no evaluated row.
pub fn read_outcome(metrics: &Path, seed: u64) -> Result<Outcome> {
    let rows = metrics_rows(metrics)?;
    let evaluated = rows.iter().filter(|r| r.val_loss.is_finite());
    let last = evaluated
        .clone()
        .next_back()
        .ok_or_else(|| Error::Config(format!("{} has no evaluated step", metrics.display())))?;
    let step = rows.last().map_or(0, |r| r.step);
    let tokens_per_s = rows.last().map_or(f64::NAN, |r| r.tokens_per_s);
    Ok(Outcome {
        seed,
        step,
        val_loss: last.val_loss,
        accuracy: last.accuracy,
        solved_at: evaluated
            .clone()
            .find(|r| r.accuracy.is_some_and(|a| a >= 0.99))
            .map(|r| r.step),
        tokens_per_s,
        metrics: metrics.to_path_buf(),
    })
}

/// Trains (or reads back, or resumes) every arm of `study` with every seed, then writes the
/// study's table, CSV and plot under `opts.root` (see the module's documentation).
///
/// # Errors
/// [`Error::Config`] for no seeds, a context for another study than the full copying one, an
/// unknown `--only` name or a run folder holding a run of
/// another configuration; the runs' and their checkpoints' errors.
pub fn run_study(study: Study, opts: &Options) -> Result<Vec<ArmResult>> {
    if opts.seeds == 0 || opts.first_seed.checked_add(opts.seeds).is_none() {
        return Err(Error::Config(format!(
            "--seeds must be at least 1 and --first-seed + --seeds at most 2^64 − 1, got {} and {}",
            opts.seeds, opts.first_seed
        )));
    }
    if opts.context.is_some() && (study != Study::Copying || opts.quick) {
        return Err(Error::Config(
            "--context sets the full copying study's context only (not with --quick)".into(),
        ));
    }
    let mut arms = arms(study, opts.quick, opts.context)?;
    if !opts.only.is_empty() {
        let names: Vec<String> =
            arms.iter().map(|a| a.folder.rsplit('/').next().unwrap_or("").to_string()).collect();
        if let Some(bad) = opts.only.iter().find(|o| !names.contains(o)) {
            return Err(Error::Config(format!(
                "--only {bad:?}: the {} study's arms are {}",
                study.name(),
                names.join(", ")
            )));
        }
        arms.retain(|a| opts.only.iter().any(|o| a.folder.ends_with(&format!("/{o}"))));
    }
    // seed-major: an interrupted study has every arm's first seeds before any arm's next one
    let total = arms.len() * opts.seeds as usize;
    let mut outcomes = vec![Vec::new(); arms.len()];
    for (j, seed) in (opts.first_seed..opts.first_seed + opts.seeds).enumerate() {
        for (i, arm) in arms.iter().enumerate() {
            let k = j * arms.len() + i + 1;
            outcomes[i].extend(train_or_reuse(arm, seed, opts, &format!("[{k}/{total}]"))?);
        }
    }
    let results: Vec<ArmResult> =
        arms.into_iter().zip(outcomes).map(|(arm, outcomes)| ArmResult { arm, outcomes }).collect();
    write_study(&opts.stem(study), &results, &opts.root)?;
    Ok(results)
}

/// One run of `arm` with `seed`: read back if finished, resumed if interrupted, else trained
/// (`None`: not finished, and `opts.report` forbids training). A folder whose checkpoint holds
/// another model or optimisation is refused, never touched.
fn train_or_reuse(arm: &Arm, seed: u64, opts: &Options, tag: &str) -> Result<Option<Outcome>> {
    let out = opts.root.join(format!("{}-s{seed}", arm.folder));
    let mut model = arm.model;
    let mut run = arm.run.clone();
    (model.seed, run.train.seed) = (seed, seed);
    let ckpt = out.join("checkpoint");
    let step = if ckpt.exists() {
        let meta = checkpoint::read_meta(&checkpoint::locate(&ckpt)?)?;
        if meta.model != model
            || meta.run.train != run.train
            || meta.run.eval_every != run.eval_every
        {
            return Err(Error::Config(format!(
                "{} holds a run of another configuration than {} with seed {seed}: move it away \
                 or choose another root",
                out.display(),
                arm.label
            )));
        }
        meta.step
    } else {
        0
    };
    let end = arm.last_step();
    if step < end && opts.report {
        eprintln!("{tag} {} (seed {seed}): not finished (step {step} of {end})", arm.label);
        return Ok(None);
    }
    if step < end {
        let resume = (step > 0).then_some(out.as_path());
        let how = if resume.is_some() { "resuming" } else { "training" };
        eprintln!("{tag} {how} {} (seed {seed}) in {}", arm.label, out.display());
        run::train(model, run, &out, resume, arm.stop_after, opts.quiet)?;
    } else {
        eprintln!("{tag} {} (seed {seed}): finished run in {}", arm.label, out.display());
    }
    read_outcome(&out.join("metrics.csv"), seed).map(Some)
}

/// `x` with 4 decimals, or `-`.
fn opt4(x: Option<f64>) -> String {
    x.map_or("-".into(), |a| format!("{a:.4}"))
}

/// The study's markdown table: one row per arm.
pub fn table(results: &[ArmResult]) -> String {
    let task = results.iter().any(|r| r.outcomes.iter().any(|o| o.accuracy.is_some()));
    let mut s = String::from(if task {
        "| attention | seeds | held-out loss, mean ± sd | per seed | accuracy, mean ± sd | per seed | first ≥ 99 % | tokens/s |\n|---|---|---|---|---|---|---|---|\n"
    } else {
        "| attention | seeds | validation loss, mean ± sd | per seed | tokens/s |\n|---|---|---|---|---|\n"
    });
    for r in results {
        if r.outcomes.is_empty() {
            let dashes = if task { " - | - | - | - | - | - |" } else { " - | - | - |" };
            s.push_str(&format!("| {} | not run yet |{dashes}\n", r.arm.label));
            continue;
        }
        let seeds: Vec<String> = r.outcomes.iter().map(|o| o.seed.to_string()).collect();
        let seeds = seeds.join(", ");
        let col = |f: &dyn Fn(&Outcome) -> f64, digits: usize| {
            let v: Vec<f64> = r.outcomes.iter().map(f).collect();
            let (mean, sd, _, _) = spread(&v);
            let each: Vec<String> = v.iter().map(|x| format!("{x:.digits$}")).collect();
            // one seed has no spread: its value alone, not a misleading "± 0"
            let mean_sd = if v.len() > 1 {
                format!("{mean:.digits$} ± {sd:.digits$}")
            } else {
                format!("{mean:.digits$}")
            };
            (mean_sd, each.join(", "))
        };
        let (loss, losses) = col(&|o| o.val_loss, 4);
        let tps = spread(&r.outcomes.iter().map(|o| o.tokens_per_s).collect::<Vec<_>>()).0;
        if task {
            let (acc, accs) = col(&|o| o.accuracy.unwrap_or(f64::NAN), 3);
            let solved: Vec<String> = r
                .outcomes
                .iter()
                .map(|o| o.solved_at.map_or("-".into(), |t| t.to_string()))
                .collect();
            s.push_str(&format!(
                "| {} | {seeds} | {loss} | {losses} | {acc} | {accs} | {} | {tps:.0} |\n",
                r.arm.label,
                solved.join(", ")
            ));
        } else {
            s.push_str(&format!("| {} | {seeds} | {loss} | {losses} | {tps:.0} |\n", r.arm.label));
        }
    }
    s
}

/// One CSV field (RFC 4180): as it is, or in double quotes (inner quotes doubled) when it holds
/// a comma, a quote or a line break — arm labels such as `softmax, 3 layers` do.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `root/<name>.{csv,md,svg}` (no plot while no run has finished).
fn write_study(name: &str, results: &[ArmResult], root: &Path) -> Result<()> {
    let mut csv = String::from("arm,folder,seed,step,val_loss,accuracy,solved_at,tokens_per_s\n");
    for r in results {
        for o in &r.outcomes {
            csv.push_str(&format!(
                "{},{},{},{},{:.5},{},{},{:.1}\n",
                csv_field(&r.arm.label),
                r.arm.folder,
                o.seed,
                o.step,
                o.val_loss,
                opt4(o.accuracy),
                o.solved_at.map_or("-".into(), |t| t.to_string()),
                o.tokens_per_s
            ));
        }
    }
    crate::io::write_atomic(&root.join(format!("{name}.csv")), csv.as_bytes())?;
    crate::io::write_atomic(&root.join(format!("{name}.md")), table(results).as_bytes())?;
    let mut lines = Vec::new();
    // six solid lines, then dashed ones (the palette restarts for them: still one look per arm)
    for (i, r) in results.iter().filter(|r| !r.outcomes.is_empty()).enumerate() {
        lines.push(Line { name: r.arm.label.clone(), points: mean_curve(r)?, dashed: i >= 6 });
    }
    if lines.is_empty() {
        return Ok(()); // a report before any run has finished: nothing to draw
    }
    // the first evaluations' losses (near ln 256 on the corpus) would flatten the rest
    let cap =
        lines.iter().filter_map(|l| l.points.last().map(|p| p.1)).fold(f64::NEG_INFINITY, f64::max)
            + 0.5;
    let title = format!("{name}: held-out loss against step, mean of the seeds");
    let axes = Axes {
        title: &title,
        x_label: "step",
        y_label: "held-out loss (nats/token)",
        log_x: false,
        log_y: false,
    };
    line_plot_capped(&lines, &[], &axes, Some(cap), &root.join(format!("{name}.svg")))?;
    Ok(())
}

/// The held-out loss against step, averaged over the arm's seeds at the steps all evaluated.
fn mean_curve(r: &ArmResult) -> Result<Vec<(f64, f64)>> {
    let mut curves = Vec::new();
    for o in &r.outcomes {
        curves.push(val_curve(&o.metrics)?);
    }
    let Some(first) = curves.first() else { return Ok(Vec::new()) };
    Ok(first
        .iter()
        .filter_map(|&(step, _)| {
            let v: Option<Vec<f64>> =
                curves.iter().map(|c| c.iter().find(|p| p.0 == step).map(|p| p.1)).collect();
            v.map(|v| (step as f64, spread(&v).0))
        })
        .collect())
}
