//! The `polysketch` command-line program.
//!
//! ```sh
//! cargo run --release -- train                      # a small polysketch GPT on the bundled corpus
//! cargo run --release -- train --resume runs/train-1/checkpoint
//! cargo run --release -- sample --checkpoint runs/train-1/checkpoint --prompt "Emma"
//! cargo run --release -- eval --checkpoint runs/train-1/checkpoint
//! cargo run --release -- task induction
//! cargo run --release -- bench attention --n 1024,4096,16384,32768
//! cargo run --release -- --help
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};
use faer::Par;
use indicatif::{ProgressBar, ProgressStyle};
use polysketch::attention::{
    Attention, AttentionConfig, AttentionKind, Grads, PolySketchConfig, Saved, SketchKind,
};
use polysketch::gpt::data::TokenizerSpec;
use polysketch::gpt::tasks::Task;
use polysketch::gpt::{Decay, GptConfig, TrainConfig};
use polysketch::memory::CountingAlloc;
use polysketch::run;
use polysketch::scaling::{self, Series};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

/// polysketch: sketching polynomial kernels, and causal attention built on them.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Worker threads (default: one per core; the RAYON_NUM_THREADS environment variable sets
    /// the same). Results do not depend on it, only speed.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a small GPT on a text file (default: the bundled Austen corpus), writing a
    /// checkpoint, metrics.csv and loss.svg into --out, and print a generated sample.
    Train(TrainArgs),
    /// Generate text from a checkpoint with recurrent decoding.
    Sample(SampleArgs),
    /// Validation loss and perplexity of a checkpoint.
    Eval(EvalArgs),
    /// Train on a synthetic task of the paper's Appendix F and report exact accuracy
    /// (last line: `accuracy <a>`).
    Task(TaskArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

/// The model and optimisation options shared by `train` and `task`.
#[derive(clap::Args, Debug, Clone)]
struct ModelArgs {
    /// Attention kind: softmax, polynomial, random or learned (PolySketch sketches).
    #[arg(long, default_value = "learned")]
    attention: String,
    /// PolySketch without exact local blocks (default: with them).
    #[arg(long)]
    no_local: bool,
    /// Degree p of the polynomial and PolySketch kinds.
    #[arg(long, default_value_t = 4)]
    p: usize,
    /// PolySketch sketch size r [default: train 32, task 16]
    #[arg(long)]
    r: Option<usize>,
    /// PolySketch block size b [default: train 64, task 32]
    #[arg(long)]
    block: Option<usize>,
    /// Blocks [default: train 4, task 2]
    #[arg(long)]
    layers: Option<usize>,
    /// Model width [default: train 128, task 64]
    #[arg(long)]
    d_model: Option<usize>,
    /// Attention heads (head size d_model/heads, even) [default: train 4, task 2]
    #[arg(long)]
    heads: Option<usize>,
    /// Tokens per training sequence (also the model's context) [default: train 256, task 128]
    #[arg(long)]
    seq: Option<usize>,
    /// Sequences per step [default: train 8, task 32]
    #[arg(long)]
    batch: Option<usize>,
    /// Training steps [default: train 500, task 10000]
    #[arg(long)]
    steps: Option<usize>,
    /// Peak learning rate [default: train 2e-3, task 1e-3]
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up steps (default: a tenth of the steps).
    #[arg(long)]
    warmup: Option<usize>,
    /// Decay after the warm-up: cosine or linear.
    #[arg(long, default_value = "cosine")]
    decay: String,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Seed of the initialisation and the batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluate and checkpoint every this many steps [default: train 50, task 250]
    #[arg(long)]
    eval_every: Option<usize>,
    /// Folder for the run's files (default: a new runs/<name>-<n>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop after this step (writing a checkpoint to resume from).
    #[arg(long)]
    stop_after: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Options of `train`.
#[derive(clap::Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A UTF-8 text file to train on (tokens of --tokenizer; the last tenth of the text is the
    /// validation set).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 8)]
    eval_batches: usize,
    /// Tokenizer: bytes, or bpe (byte-level BPE trained on the training text with the
    /// tokenizers crate, at most --bpe-vocab tokens).
    #[arg(long, default_value = "bytes")]
    tokenizer: String,
    /// Largest BPE vocabulary.
    #[arg(long, default_value_t = 1024)]
    bpe_vocab: usize,
    /// Continue the run of this run folder or checkpoint folder exactly (its configuration
    /// wins).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Tokens of text to generate at the end (bytes with the byte tokenizer).
    #[arg(long, default_value_t = 300)]
    sample_len: usize,
}

/// Options of `sample`.
#[derive(clap::Args, Debug)]
struct SampleArgs {
    /// A run folder (e.g. runs/train-1) or the checkpoint folder in it.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Tokens to generate (bytes with the byte tokenizer; the checkpoint's tokenizer decides).
    #[arg(long, default_value_t = 400)]
    tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Options of `eval`.
#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// A run folder (e.g. runs/train-1) or the checkpoint folder in it.
    #[arg(long)]
    checkpoint: PathBuf,
    /// A text file to evaluate on (its last tenth; default: the training run's validation set).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Validation batches to average over (of the run's batch × sequence shape; training's
    /// evaluations use --eval-batches, 8 by default, so their loss differs a little).
    #[arg(long, default_value_t = 32)]
    batches: usize,
}

/// Options of `task`.
#[derive(clap::Args, Debug)]
struct TaskArgs {
    /// induction or copying.
    task: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Held-out examples for the accuracy.
    #[arg(long, default_value_t = 512)]
    held_out: usize,
    /// Stop at the first evaluation whose held-out accuracy reaches this (0: run every step).
    #[arg(long, default_value_t = 0.99)]
    until: f64,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Causal attention, every kind, forward and forward+backward, against softmax.
    Attention(AttentionBench),
    /// GPT training throughput (tokens/s at equal tokens per step) against context length,
    /// softmax and PolySketch (learned + local).
    Train(TrainBench),
}

/// Options of `bench train`.
#[derive(clap::Args, Debug)]
struct TrainBench {
    /// Context lengths (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![512usize, 1024, 2048, 4096, 8192, 16384])]
    n: Vec<usize>,
    /// Tokens per step (batch = tokens / n).
    #[arg(long, default_value_t = 16384)]
    tokens: usize,
    /// Timed steps per case (after one warm-up step).
    #[arg(long, default_value_t = 2)]
    steps: usize,
    /// PolySketch block size.
    #[arg(long, default_value_t = 256)]
    block: usize,
    /// Kinds (comma separated: softmax, polynomial, random, learned; PolySketch with local
    /// blocks).
    #[arg(long, value_delimiter = ',', default_values_t = vec!["softmax".to_string(), "learned".to_string()])]
    kinds: Vec<String>,
    /// Folder for train_bench.csv and train_bench.svg.
    #[arg(long, default_value = "runs/bench_train")]
    out: PathBuf,
}

/// Options of `bench attention`.
#[derive(clap::Args, Debug)]
struct AttentionBench {
    /// Sequence lengths (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024usize, 4096, 16384, 32768])]
    n: Vec<usize>,
    /// Head counts (comma separated); batch is 1.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 8])]
    heads: Vec<usize>,
    /// Head size h.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Repetitions per case (the median is reported; slow cases run once).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Skip a case whose estimated time exceeds this many seconds (it is reported as skipped).
    #[arg(long, default_value_t = 120.0)]
    max_seconds: f64,
    /// Folder for attention_bench.csv and attention_bench.svg.
    #[arg(long, default_value = "runs/bench_attention")]
    out: PathBuf,
    /// Where to run: cpu (every kind), or wgpu / cuda (PolySketch, random and learned sketches,
    /// the kinds the GPU kernels run; needs the feature of the same name, `cuda` off by
    /// default).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Batch size on a device (the CPU bench runs batch 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tokens per case on a device: batch = tokens / n for each n (overrides --batch; the
    /// GPT-2-small comparison uses 262144).
    #[arg(long)]
    tokens: Option<usize>,
    /// Sketch sizes r of the device's PolySketch kinds (comma separated; p = 4, block 256).
    #[arg(long, value_delimiter = ',', default_values_t = vec![32usize])]
    r: Vec<usize>,
    /// Element type of the device's inputs and outputs: f32 or bf16 (accumulation is f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Measure nothing: draw attention_bench.svg into --out again from the attention_bench.csv
    /// of an earlier run.
    #[arg(long)]
    plot_from: Option<PathBuf>,
}

fn main() {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    if let Err(e) = set_threads(cli.threads) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Train(args) => train(args),
        Command::Sample(args) => sample(&args),
        Command::Eval(args) => eval(&args),
        Command::Task(args) => task(args),
        Command::Bench {
            what: Bench::Attention(args),
        } => bench_attention(&args),
        Command::Bench {
            what: Bench::Train(args),
        } => bench_train(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// A closed standard output (`polysketch … | head -1`) ends the program quietly, as it ends
/// other command-line tools, instead of a panic in `println!`: the default action of SIGPIPE,
/// which Rust's runtime sets to ignore.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any other thread exists; restoring a
    // signal's default disposition has no other precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `--threads`: the size of rayon's global pool (every parallel loop of the crates runs in it).
fn set_threads(threads: Option<usize>) -> polysketch::Result<()> {
    let Some(t) = threads else { return Ok(()) };
    if t == 0 {
        return Err(polysketch::Error::Config(
            "--threads must be at least 1".into(),
        ));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build_global()
        .map_err(|e| polysketch::Error::Config(format!("--threads {t}: {e}")))
}

/// The model and run of `train`/`task` options: each option given replaces the value of the
/// library's default model and run (`GptConfig::default()`/`RunConfig::default()` for `train`,
/// `GptConfig::task`/`RunConfig::task` for `task`).
fn configs(
    m: &ModelArgs,
    model: GptConfig,
    mut run: run::RunConfig,
) -> polysketch::Result<(GptConfig, run::RunConfig)> {
    let AttentionKind::PolySketch(sketch) = model.attention else {
        unreachable!("the default models use PolySketch attention")
    };
    let attention = AttentionKind::parse_with(
        &m.attention,
        PolySketchConfig {
            p: m.p,
            r: m.r.unwrap_or(sketch.r),
            block: m.block.unwrap_or(sketch.block),
            local: !m.no_local,
            ..sketch
        },
    )?;
    let t = &mut run.train;
    t.seq = m.seq.unwrap_or(t.seq);
    t.steps = m.steps.unwrap_or(t.steps);
    t.batch = m.batch.unwrap_or(t.batch);
    t.lr = m.lr.unwrap_or(t.lr);
    t.warmup = m.warmup.unwrap_or(t.steps / 10);
    t.decay = match m.decay.as_str() {
        "cosine" => Decay::Cosine,
        "linear" => Decay::Linear,
        other => {
            return Err(polysketch::Error::Config(format!(
                "unknown decay {other:?} (cosine, linear)"
            )));
        }
    };
    (t.weight_decay, t.clip, t.seed) = (m.weight_decay, m.clip, m.seed);
    run.eval_every = m.eval_every.unwrap_or(run.eval_every);
    let model = GptConfig {
        context: t.seq,
        d_model: m.d_model.unwrap_or(model.d_model),
        layers: m.layers.unwrap_or(model.layers),
        heads: m.heads.unwrap_or(model.heads),
        attention,
        seed: m.seed,
        ..model
    };
    model.validate()?;
    t.validate(&model)?;
    Ok((model, run))
}

fn train(args: TrainArgs) -> polysketch::Result<()> {
    let m = &args.model;
    if args.eval_batches == 0 {
        return Err(polysketch::Error::Config(
            "--eval-batches must be at least 1".into(),
        ));
    }
    let data = args.data.clone().unwrap_or_else(run::default_data);
    let source = run::Source::Text {
        path: data,
        val_fraction: 0.1,
    };
    let defaults = run::RunConfig {
        source,
        eval_batches: args.eval_batches,
        ..run::RunConfig::default()
    };
    let (model, mut cfg) = configs(m, GptConfig::default(), defaults)?;
    cfg.tokenizer = match args.tokenizer.as_str() {
        "bytes" => TokenizerSpec::Bytes,
        "bpe" => TokenizerSpec::Bpe {
            vocab: args.bpe_vocab,
        },
        other => {
            return Err(polysketch::Error::Config(format!(
                "unknown tokenizer {other:?} (bytes, bpe)"
            )));
        }
    };
    let out = match (&m.out, &args.resume) {
        (Some(o), _) => o.clone(),
        (None, Some(ckpt)) => polysketch::gpt::checkpoint::locate(ckpt)?
            .parent()
            .map_or_else(|| PathBuf::from("."), |p| p.to_path_buf()),
        (None, None) => run::new_run_dir("train"),
    };
    let s = run::train(
        model,
        cfg,
        &out,
        args.resume.as_deref(),
        m.stop_after,
        m.quiet,
    )?;
    println!(
        "{} ({} parameters, {}): step {}, validation loss {:.4}, perplexity {:.2}, {:.0} tokens/s",
        out.display(),
        s.model.num_params(),
        s.model.config().attention.name(),
        s.step,
        s.val_loss,
        s.val_loss.exp(),
        s.tokens_per_s
    );
    println!(
        "wrote {0}/checkpoint, {0}/metrics.csv, {0}/loss.svg",
        out.display()
    );
    if args.sample_len > 0 {
        let text = run::generate(&s.model, &s.tokenizer, "\n", args.sample_len, 0.8, 0)?;
        println!("--- sample ---\n{text}\n---");
    }
    Ok(())
}

fn sample(args: &SampleArgs) -> polysketch::Result<()> {
    if !args.temperature.is_finite() || args.temperature < 0.0 {
        return Err(polysketch::Error::Config(format!(
            "temperature {} must be ≥ 0",
            args.temperature
        )));
    }
    let (meta, model, tokenizer) = run::load_model(&args.checkpoint)?;
    if matches!(meta.run.source, run::Source::Task { .. }) {
        return Err(polysketch::Error::Config(
            "sample needs a text (byte) model, not a task model".into(),
        ));
    }
    let text = run::generate(
        &model,
        &tokenizer,
        &args.prompt,
        args.tokens,
        args.temperature,
        args.seed,
    )?;
    println!("{}{text}", args.prompt);
    Ok(())
}

fn eval(args: &EvalArgs) -> polysketch::Result<()> {
    if args.batches == 0 {
        return Err(polysketch::Error::Config(
            "--batches must be at least 1".into(),
        ));
    }
    let r = run::eval(&args.checkpoint, args.data.as_deref(), args.batches)?;
    println!(
        "validation loss {:.4} (nats/token), perplexity {:.3}, over {} batches ({} tokens; \
         training evaluated over {} batches)",
        r.loss,
        r.loss.exp(),
        r.batches,
        r.tokens,
        r.training_batches
    );
    Ok(())
}

fn task(args: TaskArgs) -> polysketch::Result<()> {
    let task = match args.task.as_str() {
        "induction" => Task::Induction,
        "copying" => Task::Copying,
        other => {
            return Err(polysketch::Error::Config(format!(
                "unknown task {other:?} (induction, copying)"
            )));
        }
    };
    let m = &args.model;
    let source = run::Source::Task {
        task,
        held_out: args.held_out,
    };
    let defaults = run::RunConfig {
        source,
        ..run::RunConfig::task(task)
    };
    let (model, mut cfg) = configs(m, GptConfig::task(task.vocab()), defaults)?;
    if !(0.0..=1.0).contains(&args.until) {
        return Err(polysketch::Error::Config(format!(
            "--until {} must be in [0, 1]",
            args.until
        )));
    }
    cfg.stop_at_accuracy = (args.until > 0.0).then_some(args.until);
    let out = m
        .out
        .clone()
        .unwrap_or_else(|| run::new_run_dir(&format!("task-{}", args.task)));
    let s = run::train(model, cfg, &out, None, m.stop_after, m.quiet)?;
    println!(
        "{} {}: step {}, held-out loss {:.4}, {}",
        args.task,
        model.attention.name(),
        s.step,
        s.val_loss,
        s.solved_at.map_or("not solved (99 %)".into(), |t| format!(
            "solved (99 %) at step {t}"
        ))
    );
    println!("accuracy {:.4}", s.accuracy.unwrap_or(0.0));
    Ok(())
}

/// Training throughput against context length at equal tokens per step.
fn bench_train(args: &TrainBench) -> polysketch::Result<()> {
    use polysketch::gpt::Trainer;
    println!(
        "GPT training step (d_model 128, 4 layers, 4 heads of 32, vocab 256), {} tokens per step, {} threads",
        args.tokens,
        rayon::current_num_threads()
    );
    println!(
        "{:<28} {:>6} {:>6} {:>10} {:>10}",
        "kind", "n", "batch", "step", "tokens/s"
    );
    let mut csv = String::from("kind,n,batch,step_s,tokens_per_s\n");
    let mut all = Vec::new();
    for kind in &args.kinds {
        let spec = AttentionKind::parse_with(
            kind,
            PolySketchConfig {
                block: args.block,
                local: true,
                ..PolySketchConfig::default()
            },
        )?;
        let mut series = Series::new(&spec.name());
        for &n in &args.n {
            let batch = (args.tokens / n).max(1);
            let model = GptConfig {
                vocab: 256,
                context: n,
                d_model: 128,
                layers: 4,
                heads: 4,
                attention: spec,
                seed: 0,
            };
            let train = TrainConfig {
                batch,
                seq: n,
                steps: args.steps + 1,
                lr: 1e-3,
                warmup: 1,
                ..TrainConfig::default()
            };
            let gpt = polysketch::gpt::Gpt::<f32>::new(model)?;
            let opt = train.optimizer(gpt.num_params());
            let mut trainer = Trainer::new(gpt, opt, train, 0)?;
            let tokens: Vec<u32> = (0..batch * n).map(|i| ((i * 7919) % 251) as u32).collect();
            let targets: Vec<u32> = tokens.iter().map(|t| (t + 1) % 256).collect();
            trainer.step(&tokens, &targets, batch, n, Par::rayon(0))?;
            let t0 = Instant::now();
            for _ in 0..args.steps {
                trainer.step(&tokens, &targets, batch, n, Par::rayon(0))?;
            }
            let step = t0.elapsed().as_secs_f64() / args.steps as f64;
            let tps = (batch * n) as f64 / step;
            println!(
                "{:<28} {n:>6} {batch:>6} {:>8.3} s {tps:>10.0}",
                spec.name(),
                step
            );
            csv.push_str(&format!("{},{n},{batch},{step:.4},{tps:.1}\n", spec.name()));
            series.push(n, tps);
        }
        all.push(series);
    }
    std::fs::create_dir_all(&args.out)?;
    polysketch::io::write_atomic(&args.out.join("train_bench.csv"), csv.as_bytes())?;
    let lines: Vec<polysketch::plot::Line> = all
        .iter()
        .map(|s| polysketch::plot::Line {
            name: s.name.clone(),
            points: s.points.iter().map(|&(n, t)| (n as f64, t)).collect(),
            dashed: s.dashed,
        })
        .collect();
    polysketch::plot::line_plot(
        &lines,
        &[],
        &polysketch::plot::Axes {
            title: "GPT training throughput at equal tokens per step",
            x_label: "context length n",
            y_label: "tokens/s",
            log_x: true,
            log_y: true,
        },
        &args.out.join("train_bench.svg"),
    )?;
    println!(
        "wrote {0}/train_bench.csv and {0}/train_bench.svg",
        args.out.display()
    );
    let softmax = all.iter().find(|s| s.name == "softmax");
    let sketch = all.iter().find(|s| s.name.starts_with("polysketch"));
    if let (Some(a), Some(b)) = (
        softmax.and_then(|s| s.points.last()),
        sketch.and_then(|s| s.points.last()),
    ) {
        // polysketch tokens/s at the longest n over the shortest, then against softmax
        let first = sketch
            .and_then(|s| s.points.first())
            .map_or((b.0, b.1), |x| *x);
        let name = sketch.map_or("", |s| s.name.as_str());
        println!(
            "flatness {:.3}  ({name} tokens/s at n = {} over n = {})",
            b.1 / first.1,
            b.0,
            first.0
        );
        let (n, ratio) = (b.0, b.1 / a.1);
        println!(
            "speedup {n} {ratio:.2}  ({name} training tokens/s against softmax's at n = {n}: \
             {ratio:.2}x)"
        );
    }
    Ok(())
}

/// The label of the closing `speedup` line's kind (the paper's best model: learned sketches
/// with exact local blocks, p = 4, r = 32).
const SPEEDUP_KIND: &str = "polysketch learned+local";

/// The kinds of the benchmark (p = 4, r = 32, b = 256).
fn kinds() -> Vec<AttentionKind> {
    let sketch = AttentionKind::polysketch;
    vec![
        AttentionKind::Softmax,
        AttentionKind::Polynomial { p: 4 },
        sketch(SketchKind::Random, false),
        sketch(SketchKind::Random, true),
        sketch(SketchKind::Learned, false),
        sketch(SketchKind::Learned, true),
    ]
}

/// Median wall time of `reps` runs, in seconds.
fn median(reps: usize, mut f: impl FnMut() -> polysketch::Result<()>) -> polysketch::Result<f64> {
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn attention_err(e: polysketch::attention::AttentionError) -> polysketch::Error {
    polysketch::Error::Config(e.to_string())
}

/// One measured case.
struct Case {
    forward: f64,
    forward_backward: f64,
    peak: usize,
}

fn run_case(
    kind: &AttentionKind,
    heads: usize,
    h: usize,
    n: usize,
    reps: usize,
    par: Par,
) -> polysketch::Result<Case> {
    let layer = Attention::<f32>::new(AttentionConfig {
        heads,
        head_dim: h,
        kind: *kind,
    })
    .map_err(attention_err)?;
    let len = heads * n * h;
    let x: Vec<f32> = (0..len)
        .map(|i| ((i.wrapping_mul(2_654_435_761) % 2001) as f32 / 1000.0) - 1.0)
        .collect();
    let base = ALLOC.current();
    ALLOC.reset_peak();
    // one untimed warm-up that also sizes the reused buffers (what a training loop does: one
    // state per layer, no allocation after the first step); then forward, then forward+backward
    let mut out = vec![0.0f32; len];
    let mut saved = Saved::new();
    let mut grads = Grads::default();
    layer
        .forward_into(&x, &x, &x, 1, n, &mut out, &mut saved, par)
        .map_err(attention_err)?;
    layer
        .backward_into(&mut saved, &x, &mut grads, par)
        .map_err(attention_err)?;
    let peak = ALLOC.peak_since_reset(base);
    let forward = median(reps, || {
        layer
            .forward_into(&x, &x, &x, 1, n, &mut out, &mut saved, par)
            .map_err(attention_err)
    })?;
    let forward_backward = median(reps, || {
        layer
            .forward_into(&x, &x, &x, 1, n, &mut out, &mut saved, par)
            .map_err(attention_err)?;
        layer
            .backward_into(&mut saved, &x, &mut grads, par)
            .map_err(attention_err)
    })?;
    Ok(Case {
        forward,
        forward_backward,
        peak,
    })
}

/// The plotted series of `kind` with `heads` heads: one colour per kind, solid for the fewest
/// heads of the run and dashed for more.
fn heads_series(kind: &str, heads: usize, min_heads: usize) -> Series {
    let mut line = Series::new(&format!("{kind} ({heads} heads)"));
    line.dashed = heads != min_heads;
    line
}

/// The plot of an earlier `bench attention` from its CSV (`--plot-from`).
fn replot_attention(csv: &std::path::Path, out: &std::path::Path) -> polysketch::Result<()> {
    let text = std::fs::read_to_string(csv)?;
    let mut rows = Vec::new();
    // columns by name: older runs have no batch column
    let header: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
    let column = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            polysketch::Error::Config(format!("{}: no column {name:?}", csv.display()))
        })
    };
    let cols = [
        column("kind")?,
        column("heads")?,
        column("n")?,
        column("forward_backward_s")?,
    ];
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad =
            || polysketch::Error::Config(format!("{}:{}: not a bench row", csv.display(), i + 1));
        let [kind, heads, n, fwd_bwd] = cols.map(|c| f.get(c).copied());
        let (Some(kind), Some(heads), Some(n), Some(fwd_bwd)) = (kind, heads, n, fwd_bwd) else {
            return Err(bad());
        };
        let heads: usize = heads.parse().map_err(|_| bad())?;
        let n: usize = n.parse().map_err(|_| bad())?;
        let t: f64 = fwd_bwd.parse().map_err(|_| bad())?;
        rows.push((kind, heads, n, t));
    }
    let min_heads = rows.iter().map(|r| r.1).min().unwrap_or(1);
    let mut series: Vec<Series> = Vec::new();
    for (kind, heads, n, t) in rows {
        let mut line = heads_series(kind, heads, min_heads);
        match series.iter_mut().find(|s| s.name == line.name) {
            Some(s) => s.push(n, t),
            None => {
                line.push(n, t);
                series.push(line);
            }
        }
    }
    std::fs::create_dir_all(out)?;
    let svg = out.join("attention_bench.svg");
    scaling::plot_svg(&series, "causal attention, forward+backward, f32", &svg)?;
    println!("wrote {}", svg.display());
    Ok(())
}

fn bench_attention(args: &AttentionBench) -> polysketch::Result<()> {
    if let Some(csv) = &args.plot_from {
        return replot_attention(csv, &args.out);
    }
    if args.n.is_empty()
        || args.n.contains(&0)
        || args.heads.is_empty()
        || args.heads.contains(&0)
        || args.head_dim == 0
    {
        return Err(polysketch::Error::Config(
            "--n, --heads and --head-dim need positive values".into(),
        ));
    }
    match args.device.as_str() {
        "cpu" => {}
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            use polysketch::attention::device::{Gpu, Wgpu};
            let gpu = Gpu::<Wgpu>::new(&Default::default())
                .map_err(polysketch::attention::AttentionError::from)?;
            return bench_attention_device(args, &gpu);
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            use polysketch::attention::device::{Cuda, Gpu};
            let gpu = Gpu::<Cuda>::new(&Default::default())
                .map_err(polysketch::attention::AttentionError::from)?;
            return bench_attention_device(args, &gpu);
        }
        other => {
            return Err(polysketch::Error::Config(format!(
                "--device {other}: this build runs cpu{}{} (build with --features cuda for CUDA)",
                if cfg!(feature = "wgpu") { ", wgpu" } else { "" },
                if cfg!(feature = "cuda") { ", cuda" } else { "" },
            )));
        }
    }
    let par = Par::rayon(0);
    let h = args.head_dim;
    let ceiling = scaling::faer_gflops(2048, 3, par);
    println!(
        "causal attention, f32, batch 1, h = {h}, {} threads; faer's 2048³ product in this run: {ceiling:.1} GFLOP/s",
        rayon::current_num_threads()
    );
    let all = kinds();
    // Untimed and unmeasured: every kind once at the smallest case, so that each thread's
    // packing buffers of the matrix-product library (private-gemm keeps 2 × L3 bytes per
    // thread, allocated at a thread's first product: 128 MiB here) exist before the first peak
    // is measured. They belong to the process, not to a case; the first row counted them.
    let (n0, heads0) = (args.n.iter().min(), args.heads.iter().max());
    if let (Some(&n0), Some(&heads0)) = (n0, heads0) {
        for k in &all {
            let _ = run_case(k, heads0, h, n0, 1, par); // errors show when measured
        }
    }
    let mut report = Report::new();
    let total = args.heads.len() * args.n.len() * all.len();
    let bar = cases_bar(total);
    let mut series: Vec<Series> = Vec::new();
    let mut last_speedup: Option<(usize, f64)> = None;
    let min_heads = args.heads.iter().copied().min().unwrap_or(1);
    for &heads in &args.heads {
        let mut fb_time: Vec<Option<(f64, f64)>> = vec![None; args.n.len()]; // softmax (fwd, fwd+bwd) per n
        for k in &all {
            let name = &k.label();
            let mut line = heads_series(name, heads, min_heads);
            // time of the previous n, to skip cases projected past --max-seconds
            let mut previous: Option<(usize, f64)> = None;
            for (ni, &n) in args.n.iter().enumerate() {
                bar.set_message(format!("{} heads={heads} n={n}", name));
                let quadratic = matches!(
                    *k,
                    AttentionKind::Softmax | AttentionKind::Polynomial { .. }
                );
                // a case runs a warm-up forward+backward, then `reps` forwards (≈ ¼ of it) and
                // `reps` forward+backwards; one rep only when the previous n took over 5 s
                let projected = previous.map(|(pn, t)| {
                    let one = t * (n as f64 / pn as f64).powi(if quadratic { 2 } else { 1 });
                    let reps = if t > 5.0 { 1.0 } else { args.reps as f64 };
                    one * (1.0 + 1.25 * reps)
                });
                if projected.is_some_and(|t| t > args.max_seconds) {
                    bar.suspend(|| {
                        println!(
                            "{:<28} {:>5} {:>5} {:>6} skipped: projected {:.0} s > --max-seconds {}",
                            name,
                            1,
                            heads,
                            n,
                            projected.unwrap_or(0.0),
                            args.max_seconds
                        )
                    });
                    bar.inc(1);
                    continue;
                }
                let reps = if previous.is_some_and(|(_, t)| t > 5.0) {
                    1
                } else {
                    args.reps
                };
                let case = match run_case(k, heads, h, n, reps, par) {
                    Ok(c) => c,
                    Err(e) => {
                        bar.suspend(|| {
                            println!("{:<28} {:>5} {:>5} {:>6} skipped: {e}", name, 1, heads, n)
                        });
                        bar.inc(1);
                        continue;
                    }
                };
                previous = Some((n, case.forward_backward));
                let gflops = heads as f64 * k.forward_flops(n, h) / case.forward / 1e9;
                if matches!(*k, AttentionKind::Softmax) {
                    fb_time[ni] = Some((case.forward, case.forward_backward));
                }
                let ratio = fb_time[ni].map(|(_, s)| s / case.forward_backward);
                if let Some(r) = ratio
                    && name == SPEEDUP_KIND
                    && heads == *args.heads.iter().max().unwrap_or(&1)
                {
                    last_speedup = Some((n, r));
                }
                bar.suspend(|| report.row(name, (1, heads, n), &case, gflops, ratio));
                line.push(n, case.forward_backward);
                bar.inc(1);
            }
            series.push(line);
        }
    }
    bar.finish_and_clear();
    report.write(
        &args.out,
        &series,
        &format!("causal attention, forward+backward, h = {h}, f32"),
    )?;

    let heads = args.heads.iter().max().unwrap_or(&1);
    match last_speedup {
        Some((n, r)) => println!(
            "speedup {n} {r:.2}  ({SPEEDUP_KIND} forward+backward against softmax's at n = {n}, \
             {heads} heads: {r:.2}x faster)"
        ),
        None => println!(
            "speedup na  (no n where both softmax and {SPEEDUP_KIND} ran with {heads} heads)"
        ),
    }
    Ok(())
}

/// A progress bar over `len` bench cases (the current case in its message).
fn cases_bar(len: usize) -> ProgressBar {
    ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

/// The table, CSV and plot of `bench attention`, on the CPU or a device.
struct Report {
    csv: String,
}

impl Report {
    /// Prints the header.
    fn new() -> Self {
        println!(
            "{:<28} {:>5} {:>5} {:>6} {:>11} {:>11} {:>12} {:>9} {:>10} {:>9}",
            "kind",
            "batch",
            "heads",
            "n",
            "fwd",
            "fwd+bwd",
            "tokens/s",
            "fwd GF/s",
            "peak MiB",
            "vs softmax"
        );
        Self {
            csv: String::from(
                "kind,batch,heads,n,forward_s,forward_backward_s,tokens_per_s,forward_gflops,peak_bytes,speedup_vs_softmax\n",
            ),
        }
    }

    /// One measured case: printed and added to the CSV (tokens/s count the whole batch).
    fn row(
        &mut self,
        name: &str,
        (batch, heads, n): (usize, usize, usize),
        case: &Case,
        gflops: f64,
        ratio: Option<f64>,
    ) {
        let tokens = (batch * n) as f64 / case.forward_backward;
        println!(
            "{:<28} {:>5} {:>5} {:>6} {:>8.2} ms {:>8.2} ms {:>12.0} {:>9.1} {:>10.1} {:>9}",
            name,
            batch,
            heads,
            n,
            case.forward * 1e3,
            case.forward_backward * 1e3,
            tokens,
            gflops,
            case.peak as f64 / (1 << 20) as f64,
            ratio.map_or("-".into(), |r| format!("{r:.1}x")),
        );
        self.csv.push_str(&format!(
            "{name},{batch},{heads},{n},{:.6},{:.6},{:.1},{:.2},{},{}\n",
            case.forward,
            case.forward_backward,
            tokens,
            gflops,
            case.peak,
            ratio.map_or(String::new(), |r| format!("{r:.3}"))
        ));
    }

    /// Writes attention_bench.csv and attention_bench.svg into `out`.
    fn write(
        &self,
        out: &std::path::Path,
        series: &[Series],
        title: &str,
    ) -> polysketch::Result<()> {
        std::fs::create_dir_all(out)?;
        let csv_path = out.join("attention_bench.csv");
        polysketch::io::write_atomic(&csv_path, self.csv.as_bytes())?;
        if series.iter().all(|s| s.points.is_empty()) {
            println!("no case ran; wrote {} (no plot)", csv_path.display());
            return Ok(());
        }
        let svg_path = out.join("attention_bench.svg");
        scaling::plot_svg(series, title, &svg_path)?;
        println!("wrote {} and {}", csv_path.display(), svg_path.display());
        Ok(())
    }
}

/// `bench attention --device wgpu|cuda`: PolySketch attention (p = 4, block 256, each `--r`,
/// random and learned sketches, with and without local blocks) on the device, `--batch` sequences,
/// inputs of `--dtype`. Times include a device synchronisation; peak is the device memory in
/// use while the forward's state is held.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn bench_attention_device<R: polysketch::attention::device::Runtime>(
    args: &AttentionBench,
    gpu: &polysketch::attention::device::Gpu<R>,
) -> polysketch::Result<()> {
    use polysketch::attention::device::bf16;
    if args.batch == 0 || args.r.is_empty() || args.r.contains(&0) {
        return Err(polysketch::Error::Config(
            "--batch and --r need positive values".into(),
        ));
    }
    match args.dtype.as_str() {
        "f32" => device_cases::<R, f32>(args, gpu),
        "bf16" => device_cases::<R, bf16>(args, gpu),
        other => Err(polysketch::Error::Config(format!(
            "--dtype {other}: f32 or bf16"
        ))),
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn device_cases<R, E>(
    args: &AttentionBench,
    gpu: &polysketch::attention::device::Gpu<R>,
) -> polysketch::Result<()>
where
    R: polysketch::attention::device::Runtime,
    E: polysketch::attention::device::Float + polysketch::attention::device::CubeElement,
{
    let h = args.head_dim;
    println!(
        "causal PolySketch attention on {}, h = {h}, inputs {}, f32 accumulation",
        gpu.name(),
        args.dtype
    );
    let mut report = Report::new();
    let mut series = Vec::new();
    let kinds: Vec<(String, AttentionKind)> = args
        .r
        .iter()
        .flat_map(|&r| {
            [
                (SketchKind::Random, false),
                (SketchKind::Random, true),
                (SketchKind::Learned, false),
                (SketchKind::Learned, true),
            ]
            .map(|(sketch, local)| {
                let kind = AttentionKind::PolySketch(PolySketchConfig {
                    r,
                    sketch,
                    local,
                    ..PolySketchConfig::default()
                });
                (format!("{} r={r}", kind.label()), kind)
            })
        })
        .collect();
    let bar = cases_bar(args.heads.len() * args.n.len() * kinds.len());
    let min_heads = args.heads.iter().copied().min().unwrap_or(1);
    for &heads in &args.heads {
        for (name, kind) in &kinds {
            let mut line = heads_series(name, heads, min_heads);
            for &n in &args.n {
                bar.set_message(format!("{name} heads={heads} n={n}"));
                let batch = args.tokens.map_or(args.batch, |t| (t / n).max(1));
                match device_case::<R, E>(gpu, kind, batch, heads, h, n, args.reps) {
                    Ok(case) => {
                        let gflops =
                            (batch * heads) as f64 * kind.forward_flops(n, h) / case.forward / 1e9;
                        bar.suspend(|| report.row(name, (batch, heads, n), &case, gflops, None));
                        line.push(n, case.forward_backward);
                    }
                    Err(e) => bar.suspend(|| {
                        println!("{name:<28} {batch:>5} {heads:>5} {n:>6} skipped: {e}")
                    }),
                }
                bar.inc(1);
            }
            series.push(line);
        }
    }
    bar.finish_and_clear();
    report.write(
        &args.out,
        &series,
        &format!(
            "PolySketch attention on {}, forward+backward, h = {h}, {}",
            gpu.name(),
            args.dtype
        ),
    )
}

/// One device case: a warm-up forward+backward, then the medians of `reps` forwards and
/// forward+backwards, each ending in a device synchronisation.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn device_case<R, E>(
    gpu: &polysketch::attention::device::Gpu<R>,
    kind: &AttentionKind,
    batch: usize,
    heads: usize,
    h: usize,
    n: usize,
    reps: usize,
) -> polysketch::Result<Case>
where
    R: polysketch::attention::device::Runtime,
    E: polysketch::attention::device::Float + polysketch::attention::device::CubeElement,
{
    let layer = Attention::<f32>::new(AttentionConfig {
        heads,
        head_dim: h,
        kind: *kind,
    })
    .map_err(attention_err)?
    .to_device(gpu)
    .map_err(attention_err)?;
    let len = batch * heads * n * h;
    let x: Vec<E> = (0..len)
        .map(|i| E::new(((i.wrapping_mul(2_654_435_761) % 2001) as f32 / 1000.0) - 1.0))
        .collect();
    let device = |e: polysketch::attention::device::GpuError| attention_err(e.into());
    let x = gpu.upload(&x).map_err(device)?;
    let step = |backward: bool| -> polysketch::Result<u64> {
        let (_, saved) = layer
            .forward_buffers(&x, &x, &x, batch, n)
            .map_err(attention_err)?;
        let held = gpu.memory().map_err(device)?.0;
        if backward {
            layer.backward_buffers(&saved, &x).map_err(attention_err)?;
        }
        gpu.sync().map_err(device)?;
        Ok(held)
    };
    let peak = step(true)? as usize;
    let forward = median(reps, || step(false).map(|_| ()))?;
    let forward_backward = median(reps, || step(true).map(|_| ()))?;
    Ok(Case {
        forward,
        forward_backward,
        peak,
    })
}
