//! The `polysketch` command-line program.
//!
//! ```sh
//! cargo run --release -- train                      # a small polysketch GPT on the bundled corpus
//! cargo run --release -- train --resume runs/train-1/checkpoint
//! cargo run --release -- sample --checkpoint runs/train-1/checkpoint --prompt "Emma"
//! cargo run --release -- eval --checkpoint runs/train-1/checkpoint
//! cargo run --release -- task induction
//! cargo run --release -- bench attention --n 1024,4096,16384,32768
//! cargo run --release -- bench lowtri
//! cargo run --release -- --help
//! ```

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use polysketch::attention::{AttentionKind, PolySketchConfig};
use polysketch::bench::{
    attention::AttentionBench, lowtri::LowtriBench, products::ProductsBench, train::TrainBench,
};
use polysketch::gpt::data::TokenizerSpec;
use polysketch::gpt::tasks::Task;
use polysketch::gpt::{Decay, GptConfig};
use polysketch::run;

/// The peak-heap meter of `bench attention`, only in builds with the feature `peak-memory`: the
/// program people train with counts no allocations.
#[cfg(feature = "peak-memory")]
#[global_allocator]
static ALLOC: polysketch::memory::CountingAlloc = polysketch::memory::CountingAlloc::new();

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
    /// Attention kind: softmax, polynomial, random or learned (PolySketch sketches), and the
    /// paper's baselines local (exact polynomial inside blocks only), sliding (softmax over the
    /// last `block` tokens), performer (FAVOR+, 256 features) and hedgehog (learned feature
    /// maps, 128 features); optionally with options (`learned:r=64,block=128`,
    /// `sliding:window=32`, `performer:features=128`), which win over the flags below.
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
    /// Learning-rate factor of the learned sketches' networks (their tensors' rate is --lr times
    /// this; 0.1 is recommended for r >= 32, whose sketch can saturate at the full rate).
    #[arg(long, default_value_t = 1.0)]
    sketch_lr: f64,
    /// bf16 inputs for the learned sketches' network products and the PolySketch feature
    /// products (f32 sums; 1.3-1.7x faster products on CPUs with AVX-512 BF16, see `bench
    /// products`). Off by default.
    #[arg(long)]
    bf16: bool,
    /// Gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Seed of the initialisation and the batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluate and checkpoint every this many steps [default: train 50, task 250]
    #[arg(long)]
    eval_every: Option<usize>,
    /// Folder for the run's files (default: a new runs/<name>-<n>). A folder that already holds
    /// a run is refused unless --force is given.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the run already in --out (its checkpoint, metrics.csv and loss.svg are removed
    /// first).
    #[arg(long)]
    force: bool,
    /// Stop after this step (writing a checkpoint to resume from).
    #[arg(long)]
    stop_after: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Sequences per piece of the batch, whose gradients are summed in a fixed chain (0: the
    /// whole batch, or each MPI rank's share, is one piece). With the same pieces, any rank
    /// count that divides the batch trains the same model bit for bit [default: 1]
    #[arg(long)]
    piece: Option<usize>,
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
    /// The block lower-triangular product lt(A Bᵀ) C against n, with its baselines (last
    /// line: `ratio64k <t(64k)/t(32k)>`).
    Lowtri(LowtriBench),
    /// The learned sketch networks' matrix products, faer's f32 product against the bf16
    /// product, one thread (last line: `bf16_speedup <f32 time / bf16 time>`).
    Products(ProductsBench),
}

fn main() {
    quiet_on_closed_pipe();
    #[cfg(feature = "peak-memory")]
    polysketch::memory::install_meter(&ALLOC);
    let cli = parse_args();
    polysketch::exit_on_error(polysketch::set_threads(cli.threads));
    polysketch::exit_on_error(match cli.command {
        Command::Train(args) => train(args),
        Command::Sample(args) => sample(&args),
        Command::Eval(args) => eval(&args),
        Command::Task(args) => task(args),
        Command::Bench { what: Bench::Attention(args) } => {
            polysketch::bench::attention::run(&args).map_err(Into::into)
        }
        Command::Bench { what: Bench::Train(args) } => {
            polysketch::bench::train::run(&args).map_err(Into::into)
        }
        Command::Bench { what: Bench::Lowtri(args) } => {
            polysketch::bench::lowtri::run(&args).map_err(Into::into)
        }
        Command::Bench { what: Bench::Products(args) } => {
            polysketch::bench::products::run(&args).map_err(Into::into)
        }
    });
}

/// The command line, or exit: help and version as clap prints them (status 0), any other
/// argument error as one line, `error: … (see --help)`, with status 2, like the program's own
/// errors (status 1) and without clap's usage block.
fn parse_args() -> Cli {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("error: bad arguments");
            eprintln!("{first} (see --help)");
            std::process::exit(2);
        }
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

/// The model and run of `train`/`task` options: each option given replaces the value of the
/// library's default model and run (`GptConfig::default()`/`RunConfig::default()` for `train`,
/// `GptConfig::task`/`RunConfig::task` for `task`).
fn configs(
    m: &ModelArgs, model: GptConfig, mut run: run::RunConfig,
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
    t.piece = m.piece.unwrap_or(t.piece);
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
    (t.weight_decay, t.clip, t.seed, t.sketch_lr) = (m.weight_decay, m.clip, m.seed, m.sketch_lr);
    t.bf16 = m.bf16;
    if m.bf16 && !polysketch_core::bf16::has_fast_bf16() {
        eprintln!(
            "note: this CPU has no AVX-512 BF16; --bf16 runs its products on the portable path \
             (same rounding, slower than f32)"
        );
    }
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
        return Err(polysketch::Error::Config("--eval-batches must be at least 1".into()));
    }
    let data = args.data.clone().unwrap_or_else(run::default_data);
    let source = run::Source::Text { path: data, val_fraction: 0.1 };
    let defaults =
        run::RunConfig { source, eval_batches: args.eval_batches, ..run::RunConfig::default() };
    let (model, mut cfg) = configs(m, GptConfig::default(), defaults)?;
    cfg.tokenizer = match args.tokenizer.as_str() {
        "bytes" => TokenizerSpec::Bytes,
        "bpe" => TokenizerSpec::Bpe { vocab: args.bpe_vocab },
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
    let resume = args.resume.as_deref();
    #[cfg(feature = "mpi")]
    let s = {
        // every rank runs the same command; an error on one ends them all (MPI_Abort)
        let comm = polysketch::distributed::Mpi::init()?;
        let many = polysketch::gpt::Collective::size(&comm) > 1;
        let first = polysketch::gpt::Collective::rank(&comm) == 0;
        let cleared = if first && resume.is_none() { clear_if_forced(m, &out) } else { Ok(()) };
        let s = cleared
            .and_then(|()| run::train_with(model, cfg, &out, resume, m.stop_after, m.quiet, &comm));
        match s {
            Err(e) if many => comm.abort(&e.to_string()),
            Err(e) => return Err(e),
            Ok(_) if !first => return Ok(()),
            Ok(s) => s,
        }
    };
    #[cfg(not(feature = "mpi"))]
    let s = {
        if resume.is_none() {
            clear_if_forced(m, &out)?;
        }
        run::train(model, cfg, &out, resume, m.stop_after, m.quiet)?
    };
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
    println!("wrote {0}/checkpoint, {0}/metrics.csv, {0}/loss.svg", out.display());
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
    // the text appears as it is generated: a long request shows its first characters at once
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let closed = |e: std::io::Error| polysketch::gpt::GptError::File {
        path: "standard output".into(),
        reason: e.to_string(),
    };
    write!(stdout, "{}", args.prompt).and_then(|()| stdout.flush()).map_err(closed)?;
    let (prompt, count, temperature, seed) =
        (&args.prompt, args.tokens, args.temperature, args.seed);
    run::generate_streaming(&model, &tokenizer, prompt, count, temperature, seed, &mut |piece| {
        write!(stdout, "{piece}").and_then(|()| stdout.flush()).map_err(closed)
    })?;
    writeln!(stdout).map_err(closed)?;
    Ok(())
}

fn eval(args: &EvalArgs) -> polysketch::Result<()> {
    if args.batches == 0 {
        return Err(polysketch::Error::Config("--batches must be at least 1".into()));
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
    let source = run::Source::Task { task, held_out: args.held_out };
    let defaults = run::RunConfig { source, ..run::RunConfig::task(task) };
    let (model, mut cfg) = configs(m, GptConfig::task(task.vocab()), defaults)?;
    if !(0.0..=1.0).contains(&args.until) {
        return Err(polysketch::Error::Config(format!("--until {} must be in [0, 1]", args.until)));
    }
    cfg.stop_at_accuracy = (args.until > 0.0).then_some(args.until);
    let out = m.out.clone().unwrap_or_else(|| run::new_run_dir(&format!("task-{}", args.task)));
    clear_if_forced(m, &out)?;
    let s = run::train(model, cfg, &out, None, m.stop_after, m.quiet)?;
    let accuracy = s.accuracy.unwrap_or(0.0);
    let goal = if args.until == 0.0 {
        "no accuracy goal (--until 0)".to_string()
    } else if accuracy >= args.until {
        format!("reached the goal {} at step {}", args.until, s.step)
    } else {
        format!("did not reach the goal {}", args.until)
    };
    let solved =
        s.solved_at.map_or("never at 99 %".into(), |t| format!("first at 99 % at step {t}"));
    println!(
        "{} {}: step {}, held-out loss {:.4}, {goal}, {solved}",
        args.task,
        model.attention.name(),
        s.step,
        s.val_loss,
    );
    println!("accuracy {accuracy:.4}");
    Ok(())
}

/// `--force`: removes the files of the run already in `out` (nothing else in the folder), so
/// that the new run may write there; without it the run refuses such a folder.
fn clear_if_forced(m: &ModelArgs, out: &std::path::Path) -> polysketch::Result<()> {
    if !m.force {
        return Ok(());
    }
    for name in ["checkpoint", "checkpoint.old", "checkpoint.tmp", "metrics.csv", "loss.svg"] {
        let path = out.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else if path.exists() {
            std::fs::remove_file(&path)
        } else {
            Ok(())
        };
        removed.map_err(|e| {
            polysketch::Error::Config(format!("--force: cannot remove {}: {e}", path.display()))
        })?;
    }
    Ok(())
}
