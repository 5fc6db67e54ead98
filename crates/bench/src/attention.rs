//! `polysketch bench attention`: causal attention of every kind, forward and forward+backward,
//! against softmax in the same run.

use std::path::PathBuf;
use std::time::Instant;

use faer::Par;
use indicatif::{ProgressBar, ProgressStyle};
use polysketch_attention::{
    Attention, AttentionConfig, AttentionError, AttentionKind, Grads, PolySketchConfig, Saved,
    SketchKind,
};

use crate::scaling::{self, Series};
use crate::{Error, Result, memory};

/// Options of `polysketch bench attention`.
#[derive(clap::Args, Debug, Clone)]
pub struct AttentionBench {
    /// Sequence lengths (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024usize, 4096, 16384, 32768])]
    pub n: Vec<usize>,
    /// Head counts (comma separated); batch is 1.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 8])]
    pub heads: Vec<usize>,
    /// Head size h.
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    /// Repetitions per case (the median is reported; slow cases run once).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Skip a case whose estimated time exceeds this many seconds (it is reported as skipped).
    #[arg(long, default_value_t = 120.0)]
    pub max_seconds: f64,
    /// Folder for attention_bench.csv and attention_bench.svg.
    #[arg(long, default_value = "runs/bench_attention")]
    pub out: PathBuf,
    /// Where to run: cpu (every kind), or wgpu / cuda (PolySketch, random and learned sketches,
    /// the kinds the GPU kernels run; needs the feature of the same name, `cuda` off by
    /// default).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Batch size on a device (the CPU bench runs batch 1).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Tokens per case on a device: batch = tokens / n for each n (overrides --batch; the
    /// GPT-2-small comparison uses 262144).
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Sketch sizes r of the device's PolySketch kinds (comma separated; p = 4, block 256).
    #[arg(long, value_delimiter = ',', default_values_t = vec![32usize])]
    pub r: Vec<usize>,
    /// Element type of the device's inputs and outputs: f32 or bf16 (accumulation is f32).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Attention kinds to measure (comma separated, in the text form of `--attention`:
    /// softmax, polynomial, random, random+local, learned, learned+local, and the baselines
    /// local, sliding, performer, hedgehog, each with at most one option, as in
    /// learned+local:r=64, since commas separate kinds); the ratios need softmax among them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "softmax,polynomial,random,random+local,learned,learned+local"
    )]
    pub kinds: Vec<AttentionKind>,
    /// Also measure every PolySketch kind with bf16 inputs to its large products (CPU only): the
    /// causal engine's feature products (`Attention::set_bf16_features`) and, for learned
    /// sketches, the networks' products (`Attention::set_bf16_products`); a row `… bf16` after
    /// each, and a closing `speedup_bf16` line for the first learned + local kind.
    #[arg(long)]
    pub bf16: bool,
    /// Measure nothing: draw attention_bench.svg into --out again from the attention_bench.csv
    /// of an earlier run.
    #[arg(long)]
    pub plot_from: Option<PathBuf>,
}

/// A row's kind: [`AttentionKind::label`], with the PolySketch options that differ from
/// [`PolySketchConfig::default`] (` p=8`, ` r=64`, ` b=128`), so that `--kinds
/// random+local:p=2,random+local` gives rows that tell the two apart.
fn case_label(k: &AttentionKind) -> String {
    let mut label = k.label();
    if let AttentionKind::PolySketch(c) = k {
        let d = PolySketchConfig::default();
        for (name, v, default) in [("p", c.p, d.p), ("r", c.r, d.r), ("b", c.block, d.block)] {
            if v != default {
                label.push_str(&format!(" {name}={v}"));
            }
        }
    }
    label
}

/// The closing `speedup` line's kind: the first learned + local kind asked for (the paper's
/// best model: learned sketches with exact local blocks; p = 4, r = 32 by default).
fn speedup_kind(kinds: &[AttentionKind]) -> Option<usize> {
    kinds.iter().position(
        |k| matches!(k, AttentionKind::PolySketch(c) if c.sketch == SketchKind::Learned && c.local),
    )
}

/// Median wall time of `reps` runs, in seconds.
pub(crate) fn median(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

pub(crate) fn attention_err(e: AttentionError) -> Error {
    Error::Config(e.to_string())
}

/// One measured case.
pub(crate) struct Case {
    pub(crate) forward: f64,
    pub(crate) forward_backward: f64,
    /// Peak bytes of the first forward+backward (heap on the CPU, with a meter installed; device
    /// memory on a device).
    pub(crate) peak: Option<usize>,
}

fn run_case(
    kind: &AttentionKind, bf16: bool, heads: usize, h: usize, n: usize, reps: usize, par: Par,
) -> Result<Case> {
    let mut layer =
        Attention::<f32>::new(AttentionConfig::new(heads, h, *kind)).map_err(attention_err)?;
    layer.set_bf16_products(bf16);
    layer.set_bf16_features(bf16);
    // the case's own buffers (the input, the output, three gradients), before they exist
    let bytes = [heads, n, h, 5 * size_of::<f32>()].iter().fold(1u128, |a, &x| a * x as u128);
    if bytes > polysketch_attention::MAX_STATE_BYTES {
        return Err(Error::Config(format!(
            "{heads} heads × n {n} × h {h}: the case's buffers alone would take {bytes} bytes, \
             over the limit of {} bytes",
            polysketch_attention::MAX_STATE_BYTES
        )));
    }
    let len = heads * n * h;
    let x: Vec<f32> =
        (0..len).map(|i| ((i.wrapping_mul(2_654_435_761) % 2001) as f32 / 1000.0) - 1.0).collect();
    let meter = memory::meter();
    let base = meter.map(|m| {
        let base = m.current();
        m.reset_peak();
        base
    });
    // one untimed warm-up that also sizes the reused buffers (what a training loop does: one
    // state per layer, no allocation after the first step); then forward, then forward+backward
    let mut out = vec![0.0f32; len];
    let mut saved = Saved::new();
    let mut grads = Grads::default();
    layer.forward_into(&x, &x, &x, 1, n, &mut out, &mut saved, par).map_err(attention_err)?;
    layer.backward_into(&mut saved, &x, &mut grads, par).map_err(attention_err)?;
    let peak = meter.zip(base).map(|(m, base)| m.peak_since_reset(base));
    let forward = median(reps, || {
        layer.forward_into(&x, &x, &x, 1, n, &mut out, &mut saved, par).map_err(attention_err)
    })?;
    let forward_backward = median(reps, || {
        layer.forward_into(&x, &x, &x, 1, n, &mut out, &mut saved, par).map_err(attention_err)?;
        layer.backward_into(&mut saved, &x, &mut grads, par).map_err(attention_err)
    })?;
    Ok(Case { forward, forward_backward, peak })
}

/// The plotted series of `kind` with `heads` heads: one colour per kind, solid for the fewest
/// heads of the run and dashed for more.
pub(crate) fn heads_series(kind: &str, heads: usize, min_heads: usize) -> Series {
    let mut line = Series::new(&format!("{kind} ({heads} heads)"));
    line.dashed = heads != min_heads;
    line
}

/// The plot of an earlier `bench attention` from its CSV (`--plot-from`).
fn replot_attention(csv: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(csv)?;
    let mut rows = Vec::new();
    // columns by name: older runs have no batch column
    let header: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| Error::Config(format!("{}: no column {name:?}", csv.display())))
    };
    let cols = [column("kind")?, column("heads")?, column("n")?, column("forward_backward_s")?];
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || Error::Config(format!("{}:{}: not a bench row", csv.display(), i + 1));
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

/// Runs `polysketch bench attention`: every kind on the CPU (or the PolySketch kinds on a
/// device) at each `--heads` and `--n`, a table, `attention_bench.csv` and
/// `attention_bench.svg` in `--out`, then the `speedup` line. The peak column needs a
/// [`memory::meter`] (the `polysketch` program installs one when built with the feature
/// `peak-memory`).
///
/// # Errors
/// Empty or zero sizes; a device that is not there or not built in; files that cannot be
/// written.
pub fn run(args: &AttentionBench) -> Result<()> {
    if let Some(csv) = &args.plot_from {
        return replot_attention(csv, &args.out);
    }
    if args.n.is_empty()
        || args.n.contains(&0)
        || args.heads.is_empty()
        || args.heads.contains(&0)
        || args.head_dim == 0
    {
        return Err(Error::Config("--n, --heads and --head-dim need positive values".into()));
    }
    match args.device.as_str() {
        "cpu" => {}
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            use polysketch_attention::device::{Gpu, Wgpu};
            let gpu = Gpu::<Wgpu>::new(&Default::default()).map_err(AttentionError::from)?;
            return crate::device::run(args, &gpu);
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            use polysketch_attention::device::{Cuda, Gpu};
            let gpu = Gpu::<Cuda>::new(&Default::default()).map_err(AttentionError::from)?;
            return crate::device::run(args, &gpu);
        }
        other => {
            return Err(Error::Config(format!(
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
    if args.kinds.is_empty() {
        return Err(Error::Config("--kinds needs at least one kind".into()));
    }
    if args.bf16 && args.device != "cpu" {
        return Err(Error::Config("--bf16 is a CPU option (the device kernels ignore it)".into()));
    }
    // (kind, bf16 products): with --bf16, each PolySketch kind a second time right after it
    let polysketch = |k: &AttentionKind| matches!(k, AttentionKind::PolySketch(_));
    let all: Vec<(AttentionKind, bool)> = args
        .kinds
        .iter()
        .flat_map(|k| {
            let twice = args.bf16 && polysketch(k);
            std::iter::once((*k, false)).chain(twice.then_some((*k, true)))
        })
        .collect();
    // Untimed and unmeasured: every kind once at the smallest case, so that each thread's
    // packing buffers of the matrix-product library (private-gemm keeps 2 × L3 bytes per
    // thread, allocated at a thread's first product: 128 MiB here) exist before the first peak
    // is measured. They belong to the process, not to a case; the first row counted them.
    let (n0, heads0) = (args.n.iter().min(), args.heads.iter().max());
    if let (Some(&n0), Some(&heads0)) = (n0, heads0) {
        for (k, bf16) in &all {
            let _ = run_case(k, *bf16, heads0, h, n0, 1, par); // errors show when measured
        }
    }
    let mut report = Report::new();
    let total = args.heads.len() * args.n.len() * all.len();
    let bar = cases_bar(total);
    let mut series: Vec<Series> = Vec::new();
    // the closing lines: f32 and (with --bf16) bf16 products
    let mut last_speedup: [Option<(usize, f64)>; 2] = [None, None];
    let min_heads = args.heads.iter().copied().min().unwrap_or(1);
    let speedup = speedup_kind(&args.kinds);
    let speedup_label =
        speedup.map_or("polysketch learned+local".into(), |i| case_label(&args.kinds[i]));
    for &heads in &args.heads {
        let mut fb_time: Vec<Option<(f64, f64)>> = vec![None; args.n.len()]; // softmax (fwd, fwd+bwd) per n
        for (k, bf16) in &all {
            let name = &format!("{}{}", case_label(k), if *bf16 { " bf16" } else { "" });
            let mut line = heads_series(name, heads, min_heads);
            // time of the previous n, to skip cases projected past --max-seconds
            let mut previous: Option<(usize, f64)> = None;
            for (ni, &n) in args.n.iter().enumerate() {
                bar.set_message(format!("{} heads={heads} n={n}", name));
                let quadratic =
                    matches!(*k, AttentionKind::Softmax | AttentionKind::Polynomial { .. });
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
                let reps = if previous.is_some_and(|(_, t)| t > 5.0) { 1 } else { args.reps };
                let case = match run_case(k, *bf16, heads, h, n, reps, par) {
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
                    && speedup.is_some_and(|i| args.kinds[i] == *k)
                    && heads == *args.heads.iter().max().unwrap_or(&1)
                {
                    last_speedup[usize::from(*bf16)] = Some((n, r));
                }
                bar.suspend(|| report.row(name, (1, heads, n), &case, gflops, ratio));
                line.push(n, case.forward_backward);
                bar.inc(1);
            }
            series.push(line);
        }
    }
    let title = format!("causal attention, forward+backward, h = {h}, f32");
    report.write(&bar, &args.out, &series, &title)?;

    let heads = args.heads.iter().max().unwrap_or(&1);
    if args.bf16
        && let Some((n, r)) = last_speedup[1]
    {
        println!(
            "speedup_bf16 {n} {r:.2}  ({speedup_label} with bf16 products, forward+backward \
             against softmax's at n = {n}, {heads} heads: {r:.2}x faster)"
        );
    }
    match last_speedup[0] {
        Some((n, r)) => println!(
            "speedup {n} {r:.2}  ({speedup_label} forward+backward against softmax's at n = {n}, \
             {heads} heads: {r:.2}x faster)"
        ),
        None => println!(
            "speedup na  (no n where both softmax and {speedup_label} ran with {heads} heads)"
        ),
    }
    Ok(())
}

/// A progress bar over `len` bench cases (the current case in its message).
pub(crate) fn cases_bar(len: usize) -> ProgressBar {
    ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

/// The table, CSV and plot of `bench attention`, on the CPU or a device.
pub(crate) struct Report {
    csv: String,
}

impl Report {
    /// Prints the header.
    pub(crate) fn new() -> Self {
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
    pub(crate) fn row(
        &mut self, name: &str, (batch, heads, n): (usize, usize, usize), case: &Case, gflops: f64,
        ratio: Option<f64>,
    ) {
        let tokens = (batch * n) as f64 / case.forward_backward;
        println!(
            "{:<28} {:>5} {:>5} {:>6} {:>8.2} ms {:>8.2} ms {:>12.0} {:>9.1} {:>10} {:>9}",
            name,
            batch,
            heads,
            n,
            case.forward * 1e3,
            case.forward_backward * 1e3,
            tokens,
            gflops,
            case.peak.map_or("-".into(), |p| format!("{:.1}", p as f64 / (1 << 20) as f64)),
            ratio.map_or("-".into(), |r| format!("{r:.1}x")),
        );
        self.csv.push_str(&format!(
            "{name},{batch},{heads},{n},{:.6},{:.6},{:.1},{:.2},{},{}\n",
            case.forward,
            case.forward_backward,
            tokens,
            gflops,
            case.peak.map_or(String::new(), |p| p.to_string()),
            ratio.map_or(String::new(), |r| format!("{r:.3}"))
        ));
    }

    /// Clears the cases' bar and writes attention_bench.csv and attention_bench.svg into `out`.
    pub(crate) fn write(
        &self, bar: &ProgressBar, out: &std::path::Path, series: &[Series], title: &str,
    ) -> Result<()> {
        bar.finish_and_clear();
        std::fs::create_dir_all(out)?;
        let csv_path = out.join("attention_bench.csv");
        polysketch_core::io::write_atomic(&csv_path, self.csv.as_bytes())?;
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
