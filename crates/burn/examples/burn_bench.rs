//! Forward + backward time of the burn module on burn's CPU backend (ndarray, with autodiff):
//! the portable path and the fast path, against our CPU layer called directly and burn's own
//! softmax attention (`burn::tensor::module::attention`, causal), at n = 1k, 4k, 16k tokens,
//! 8 heads of 64, batch 1. Prints a markdown table (milliseconds, and each time over our CPU
//! layer's in the same run).
//!
//! ```sh
//! cargo run --release -p polysketch-burn --example burn_bench [-- --kind learned+local --sizes 1024,4096,16384]
//! ```

use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tensor};
use clap::Parser;
use faer::Par;
use polysketch_attention::{Attention, AttentionKind};
use polysketch_burn::{PolySketchAttention, PolySketchAttentionConfig};

type B = Autodiff<NdArray>;
const HEADS: usize = 8;
const H: usize = 64;

#[derive(Parser, Debug)]
#[command(
    about = "Forward + backward time of the burn module against our CPU layer and burn's softmax"
)]
struct Args {
    /// The PolySketch kind (text form).
    #[arg(long, default_value = "learned+local:p=4,r=32,block=256")]
    kind: AttentionKind,
    /// Sequence lengths.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024, 4096, 16384])]
    sizes: Vec<usize>,
    /// Skip burn's softmax where its n × n scores (and their gradient, softmax and mask)
    /// would pass this many GiB.
    #[arg(long, default_value_t = 8.0)]
    softmax_gib: f64,
}

/// Seconds of the fastest of `reps` runs of `f` after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn inputs(n: usize) -> [Tensor<B, 4>; 3] {
    let device = Default::default();
    [0, 1, 2].map(|_| {
        Tensor::<B, 4>::random([1, HEADS, n, H], Distribution::Normal(0.0, 1.0), &device)
            .require_grad()
    })
}

/// Forward, then the backward of the output's sum.
fn burn_step(run: &dyn Fn([Tensor<B, 4>; 3]) -> Tensor<B, 4>, x: &[Tensor<B, 4>; 3]) {
    let out = run(x.clone());
    let _grads = out.sum().backward();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = Default::default();
    let module: PolySketchAttention<B> =
        PolySketchAttentionConfig::new(HEADS, H).with_kind(args.kind).try_init(&device)?;
    let cpu = Attention::<f32>::new(*module.config())?;
    println!(
        "{} (causal), {HEADS} heads of {H}, batch 1, forward + backward, {} threads; ms (× our CPU layer)\n",
        args.kind,
        rayon::current_num_threads()
    );
    println!(
        "| n | our CPU layer | burn module, fast path | burn module, portable path | burn softmax attention |"
    );
    println!("|---|---|---|---|---|");
    let bar = indicatif::ProgressBar::new(args.sizes.len() as u64 * 4);
    for &n in &args.sizes {
        let reps = if n >= 8192 { 1 } else { 3 };
        let x = inputs(n);
        let flat: Vec<Vec<f32>> =
            x.iter().map(|t| t.to_data().convert::<f32>().into_vec().unwrap()).collect();
        let ones = vec![1.0f32; flat[0].len()];
        let ours = time(reps, || {
            let (_, mut saved) =
                cpu.forward(&flat[0], &flat[1], &flat[2], 1, n, Par::rayon(0)).unwrap();
            cpu.backward(&mut saved, &ones, Par::rayon(0)).unwrap();
        });
        bar.inc(1);
        let fast = time(reps, || burn_step(&|[q, k, v]| module.try_forward(q, k, v).unwrap(), &x));
        bar.inc(1);
        let portable =
            time(reps, || burn_step(&|[q, k, v]| module.forward_portable(q, k, v).unwrap(), &x));
        bar.inc(1);
        let gib = 4.0 * (HEADS * n * n * 4) as f64 / (1u64 << 30) as f64;
        let softmax = (gib <= args.softmax_gib).then(|| {
            let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
            time(reps, || burn_step(&|[q, k, v]| attention(q, k, v, None, None, options), &x))
        });
        bar.inc(1);
        let cell = |t: f64| format!("{:.0} ({:.2}×)", 1e3 * t, t / ours);
        bar.suspend(|| {
            println!(
                "| {n} | {:.0} | {} | {} | {} |",
                1e3 * ours,
                cell(fast),
                cell(portable),
                softmax.map_or(format!("skipped: ≈ {gib:.0} GiB of scores"), cell)
            )
        });
    }
    bar.finish_and_clear();
    Ok(())
}
