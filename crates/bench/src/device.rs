//! `polysketch bench attention --device wgpu|cuda`: the PolySketch kinds on a GPU.

use polysketch_attention::{
    Attention, AttentionConfig, AttentionKind, PolySketchConfig, SketchKind,
};

use crate::attention::{
    AttentionBench, Case, Report, attention_err, cases_bar, heads_series, median,
};
use crate::{Error, Result};

/// `bench attention --device wgpu|cuda`: PolySketch attention (p = 4, block 256, each `--r`,
/// random and learned sketches, with and without local blocks) on the device, `--batch` sequences,
/// inputs of `--dtype`. Times include a device synchronisation; peak is the device memory in
/// use while the forward's state is held.
pub(crate) fn run<R: polysketch_attention::device::Runtime>(
    args: &AttentionBench, gpu: &polysketch_attention::device::Gpu<R>,
) -> Result<()> {
    use polysketch_attention::device::bf16;
    if args.batch == 0 || args.r.is_empty() || args.r.contains(&0) {
        return Err(Error::Config("--batch and --r need positive values".into()));
    }
    match args.dtype.as_str() {
        "f32" => device_cases::<R, f32>(args, gpu),
        "bf16" => device_cases::<R, bf16>(args, gpu),
        other => Err(Error::Config(format!("--dtype {other}: f32 or bf16"))),
    }
}

fn device_cases<R, E>(
    args: &AttentionBench, gpu: &polysketch_attention::device::Gpu<R>,
) -> Result<()>
where
    R: polysketch_attention::device::Runtime,
    E: polysketch_attention::device::Float + polysketch_attention::device::CubeElement,
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
    let (gpu, dtype) = (gpu.name(), &args.dtype);
    let title = format!("PolySketch attention on {gpu}, forward+backward, h = {h}, {dtype}");
    report.write(&bar, &args.out, &series, &title)
}

/// One device case: a warm-up forward+backward, then the medians of `reps` forwards and
/// forward+backwards, each ending in a device synchronisation.
fn device_case<R, E>(
    gpu: &polysketch_attention::device::Gpu<R>, kind: &AttentionKind, batch: usize, heads: usize,
    h: usize, n: usize, reps: usize,
) -> Result<Case>
where
    R: polysketch_attention::device::Runtime,
    E: polysketch_attention::device::Float + polysketch_attention::device::CubeElement,
{
    let layer = Attention::<f32>::new(AttentionConfig::new(heads, h, *kind))
        .map_err(attention_err)?
        .to_device(gpu)
        .map_err(attention_err)?;
    let len = batch * heads * n * h;
    let x: Vec<E> = (0..len)
        .map(|i| E::new(((i.wrapping_mul(2_654_435_761) % 2001) as f32 / 1000.0) - 1.0))
        .collect();
    let device = |e: polysketch_attention::device::GpuError| attention_err(e.into());
    let x = gpu.upload(&x).map_err(device)?;
    let step = |backward: bool| -> Result<u64> {
        let (_, saved) = layer.forward_buffers(&x, &x, &x, batch, n).map_err(attention_err)?;
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
    Ok(Case { forward, forward_backward, peak: Some(peak) })
}
