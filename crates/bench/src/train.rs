//! `polysketch bench train`: GPT training throughput against context length.

use std::path::PathBuf;
use std::time::Instant;

use faer::Par;
use polysketch_attention::{AttentionKind, PolySketchConfig};
use polysketch_gpt::{GptConfig, TrainConfig};

use crate::Result;
use crate::scaling::Series;

/// Options of `polysketch bench train`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainBench {
    /// Context lengths (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![512usize, 1024, 2048, 4096, 8192, 16384])]
    pub n: Vec<usize>,
    /// Tokens per step (batch = tokens / n).
    #[arg(long, default_value_t = 16384)]
    pub tokens: usize,
    /// Timed steps per case (after one warm-up step); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// PolySketch block size.
    #[arg(long, default_value_t = 256)]
    pub block: usize,
    /// Kinds (comma separated: softmax, polynomial, random, learned; PolySketch with local
    /// blocks).
    #[arg(long, value_delimiter = ',', default_values_t = vec!["softmax".to_string(), "learned".to_string()])]
    pub kinds: Vec<String>,
    /// Folder for train_bench.csv and train_bench.svg.
    #[arg(long, default_value = "runs/bench_train")]
    pub out: PathBuf,
    /// bf16 inputs for the learned sketches' network products and the PolySketch feature
    /// products (`TrainConfig::bf16`; softmax is unchanged).
    #[arg(long)]
    pub bf16: bool,
}

/// One length's trainer, its inputs and its timed steps.
struct Case {
    n: usize,
    batch: usize,
    trainer: polysketch_gpt::Trainer,
    tokens: Vec<u32>,
    targets: Vec<u32>,
    times: Vec<f64>,
}

/// Training throughput against context length at equal tokens per step: a table, then
/// `train_bench.csv` and `train_bench.svg` in `--out`, then the `flatness` and `speedup` lines.
///
/// Per kind, one trainer per length is built (all are held at once: about 1.2 GB each at the
/// default 16384 tokens per step), each takes one untimed warm-up step, then the timed steps
/// take turns across the lengths (round `i` times step `i` of every length), and the median
/// step time of each length is reported: tokens/s = batch · n / median step.
///
/// # Errors
/// An unknown kind, a model or trainer that refuses the sizes, files that cannot be written.
pub fn run(args: &TrainBench) -> Result<()> {
    use polysketch_gpt::Trainer;
    println!(
        "GPT training step (d_model 128, 4 layers, 4 heads of 32, vocab 256), {} tokens per step, {} threads{}",
        args.tokens,
        rayon::current_num_threads(),
        if args.bf16 { ", PolySketch network and feature products on bf16 inputs" } else { "" }
    );
    println!("{:<28} {:>6} {:>6} {:>10} {:>10}", "kind", "n", "batch", "step", "tokens/s");
    let mut csv = String::from("kind,n,batch,step_s,tokens_per_s\n");
    let mut all = Vec::new();
    let mut rows = Vec::new();
    let bar = crate::attention::cases_bar(args.kinds.len() * args.n.len() * (args.steps + 1));
    for kind in &args.kinds {
        let spec = AttentionKind::parse_with(
            kind,
            PolySketchConfig { block: args.block, local: true, ..PolySketchConfig::default() },
        )?;
        // One trainer per length, all alive at once, so that the timed steps can take turns.
        let mut cases = Vec::with_capacity(args.n.len());
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
                bf16: args.bf16,
                ..TrainConfig::default()
            };
            let gpt = polysketch_gpt::Gpt::<f32>::new(model)?;
            let opt = train.optimizer(gpt.num_params());
            let trainer = Trainer::new(gpt, opt, train, 0)?;
            let tokens: Vec<u32> = (0..batch * n).map(|i| ((i * 7919) % 251) as u32).collect();
            let targets: Vec<u32> = tokens.iter().map(|t| (t + 1) % 256).collect();
            cases.push(Case { n, batch, trainer, tokens, targets, times: Vec::new() });
        }
        // Round 0 warms every case up (untimed); then each round times one step of every
        // length in turn, so that a slow spell of a shared host falls on all lengths alike.
        for round in 0..=args.steps {
            for case in &mut cases {
                bar.set_message(format!("{} n = {}, step {round}", spec.name(), case.n));
                let t0 = Instant::now();
                case.trainer.step(
                    &case.tokens,
                    &case.targets,
                    case.batch,
                    case.n,
                    Par::rayon(0),
                )?;
                if round > 0 {
                    case.times.push(t0.elapsed().as_secs_f64());
                }
                bar.inc(1);
            }
        }
        let mut series = Series::new(&spec.name());
        for case in &mut cases {
            let (n, batch) = (case.n, case.batch);
            case.times.sort_by(f64::total_cmp);
            let step = case.times[case.times.len() / 2];
            let tps = (batch * n) as f64 / step;
            rows.push(format!("{:<28} {n:>6} {batch:>6} {:>8.3} s {tps:>10.0}", spec.name(), step));
            csv.push_str(&format!("{},{n},{batch},{step:.4},{tps:.1}\n", spec.name()));
            series.push(n, tps);
        }
        all.push(series);
    }
    bar.finish_and_clear();
    for row in &rows {
        println!("{row}");
    }
    std::fs::create_dir_all(&args.out)?;
    polysketch_core::io::write_atomic(&args.out.join("train_bench.csv"), csv.as_bytes())?;
    let lines: Vec<crate::plot::Line> = all
        .iter()
        .map(|s| crate::plot::Line {
            name: s.name.clone(),
            points: s.points.iter().map(|&(n, t)| (n as f64, t)).collect(),
            dashed: s.dashed,
        })
        .collect();
    crate::plot::line_plot(
        &lines,
        &[],
        &crate::plot::Axes {
            title: "GPT training throughput at equal tokens per step",
            x_label: "context length n",
            y_label: "tokens/s",
            log_x: true,
            log_y: true,
        },
        &args.out.join("train_bench.svg"),
    )?;
    println!("wrote {0}/train_bench.csv and {0}/train_bench.svg", args.out.display());
    let softmax = all.iter().find(|s| s.name == "softmax");
    let sketch = all.iter().find(|s| s.name.starts_with("polysketch"));
    if let (Some(a), Some(b)) =
        (softmax.and_then(|s| s.points.last()), sketch.and_then(|s| s.points.last()))
    {
        // polysketch tokens/s at the longest n over the shortest, then against softmax
        let first = sketch.and_then(|s| s.points.first()).map_or((b.0, b.1), |x| *x);
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
