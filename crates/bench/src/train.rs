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

/// One length's trainer and its inputs (the caller runs its untimed warm-up step).
fn build_case(spec: AttentionKind, n: usize, args: &TrainBench) -> Result<Case> {
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
    let trainer = polysketch_gpt::Trainer::new(gpt, opt, train, 0)?;
    let tokens: Vec<u32> = (0..batch * n).map(|i| ((i * 7919) % 251) as u32).collect();
    let targets: Vec<u32> = tokens.iter().map(|t| (t + 1) % 256).collect();
    Ok(Case { n, batch, trainer, tokens, targets, times: Vec::new() })
}

/// Times `steps` steps of every case of `group`, in rounds: round `i` runs step `i` of each
/// case in turn, so that a slow spell of a shared host falls on all of them alike.
fn time_in_turns(
    group: &mut [Case], steps: usize, name: &str, bar: &indicatif::ProgressBar,
) -> Result<()> {
    for round in 1..=steps {
        for case in group.iter_mut() {
            bar.set_message(format!("{name} n = {}, step {round}", case.n));
            let t0 = Instant::now();
            case.trainer.step(&case.tokens, &case.targets, case.batch, case.n, Par::rayon(0))?;
            case.times.push(t0.elapsed().as_secs_f64());
            bar.inc(1);
        }
    }
    Ok(())
}

/// The table rows, csv lines and plot points of a timed `group` (median step each), which is
/// then emptied (its trainers freed).
fn report(
    group: &mut Vec<Case>, name: &str, rows: &mut Vec<String>, csv: &mut String,
    series: &mut Series,
) {
    for case in group.drain(..) {
        let (n, batch, mut times) = (case.n, case.batch, case.times);
        times.sort_by(f64::total_cmp);
        let step = times[times.len() / 2];
        let tps = (batch * n) as f64 / step;
        rows.push(format!("{name:<28} {n:>6} {batch:>6} {step:>8.3} s {tps:>10.0}"));
        csv.push_str(&format!("{name},{n},{batch},{step:.4},{tps:.1}\n"));
        series.push(n, tps);
    }
}

/// Whether one more trainer of `per_trainer` bytes fits beside the `held` ones within
/// `budget` bytes (no budget known: always; nothing held: always).
fn fits(held: usize, per_trainer: u64, budget: Option<u64>) -> bool {
    match budget {
        Some(b) if held > 0 => (held as u64).saturating_add(1).saturating_mul(per_trainer) <= b,
        _ => true,
    }
}

/// `MemAvailable` of `/proc/meminfo` in bytes (Linux; `None` elsewhere).
fn available_bytes() -> Option<u64> {
    kib_field("/proc/meminfo", "MemAvailable:")
}

/// This process's resident set (`VmRSS` of `/proc/self/status`) in bytes (Linux; `None`
/// elsewhere).
fn resident_bytes() -> Option<u64> {
    kib_field("/proc/self/status", "VmRSS:")
}

/// The value of a `Name:   123 kB` line of a `/proc` file, in bytes.
fn kib_field(path: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok()?.checked_mul(1024)
}

/// Training throughput against context length at equal tokens per step: a table, then
/// `train_bench.csv` and `train_bench.svg` in `--out`, then the `flatness` and `speedup` lines.
///
/// Per kind, one trainer per length is built and takes one untimed warm-up step; then the
/// timed steps take turns across the lengths (round `i` times step `i` of every length), and
/// the median step time of each length is reported: tokens/s = batch · n / median step. The
/// trainers of the lengths that take turns are held at once (at the default 16,384 tokens per
/// step about 4.2 GB each for learned + local, 1.2 GB for softmax), as many as fit in 80 % of
/// the memory available when the kind starts (`MemAvailable`, each trainer counted at the
/// largest resident growth one has shown); the lengths beyond that are timed in a next group.
///
/// # Errors
/// No timed step, no length or a length of 0 ([`Error::Config`](crate::Error::Config)), an
/// unknown kind, a model or trainer that refuses the sizes, files that cannot be written.
pub fn run(args: &TrainBench) -> Result<()> {
    if args.steps == 0 || args.n.is_empty() || args.n.contains(&0) {
        return Err(crate::Error::Config(format!(
            "bench train needs at least one timed step and lengths of at least 1 (got --steps {} \
             and --n {:?})",
            args.steps, args.n
        )));
    }
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
        // One trainer per length, as many alive at once as memory allows, so that the timed
        // steps can take turns.
        let budget = available_bytes().map(|b| b / 10 * 8);
        let (mut group, mut per_trainer) = (Vec::<Case>::with_capacity(args.n.len()), 0u64);
        let mut series = Series::new(&spec.name());
        for &n in &args.n {
            if !fits(group.len(), per_trainer, budget) {
                rows.push(format!(
                    "({}: about {:.1} GB per trainer and {:.1} GB to use: n = {} timed in \
                     turns as one group, the next lengths in the next)",
                    spec.name(),
                    per_trainer as f64 / 1e9,
                    budget.unwrap_or(0) as f64 / 1e9,
                    group.iter().map(|c| c.n.to_string()).collect::<Vec<_>>().join(", ")
                ));
                time_in_turns(&mut group, args.steps, &spec.name(), &bar)?;
                report(&mut group, &spec.name(), &mut rows, &mut csv, &mut series);
            }
            let before = resident_bytes();
            let mut case = build_case(spec, n, args)?;
            // the warm-up step (untimed)
            bar.set_message(format!("{} n = {n}, warm-up", spec.name()));
            case.trainer.step(&case.tokens, &case.targets, case.batch, n, Par::rayon(0))?;
            bar.inc(1);
            if let (Some(a), Some(b)) = (before, resident_bytes()) {
                per_trainer = per_trainer.max(b.saturating_sub(a));
            }
            group.push(case);
        }
        time_in_turns(&mut group, args.steps, &spec.name(), &bar)?;
        report(&mut group, &spec.name(), &mut rows, &mut csv, &mut series);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trainer_is_added_only_when_the_group_still_fits() {
        // nothing held, or no budget known: always
        assert!(fits(0, u64::MAX, Some(1)));
        assert!(fits(5, u64::MAX, None));
        // two of 4 held within 12: a third fits, a fourth does not
        assert!(fits(2, 4, Some(12)));
        assert!(!fits(3, 4, Some(12)));
        assert!(!fits(usize::MAX, u64::MAX, Some(u64::MAX - 1)));
    }

    #[test]
    fn options_that_measure_nothing_are_refused() {
        let args = |steps: usize, n: Vec<usize>| TrainBench {
            n,
            tokens: 64,
            steps,
            block: 16,
            kinds: vec!["softmax".into()],
            out: std::env::temp_dir().join("polysketch-bench-train-refused"),
            bf16: false,
        };
        for bad in [args(0, vec![32]), args(1, vec![]), args(1, vec![32, 0])] {
            assert!(matches!(run(&bad), Err(crate::Error::Config(_))), "{bad:?}");
        }
    }

    #[test]
    fn proc_fields_are_read_in_bytes() {
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(available_bytes().is_some_and(|b| b > 0));
            assert!(resident_bytes().is_some_and(|b| b > 0));
        }
        assert_eq!(kib_field("/nonexistent/file", "VmRSS:"), None);
    }
}
