//! `polysketch bench products`: the matrix products of a learned sketch's networks, faer's
//! `f32` product against the bf16-input product ([`polysketch_core::bf16`]), one thread.
//!
//! ```sh
//! cargo run --release -- bench products
//! ```
//!
//! The shapes are those of one chunk of 256 rows through a network with \\(h = 64\\),
//! \\(r = 32\\) (hidden width \\(8r = 256\\)), in the layouts the forward and backward use
//! (`xW`, `dY Wᵀ`, `Xᵀ dY`), plus faer's 2048³ product on every thread (the ceiling the
//! attention bench reports against). Each row prints the median time of both, their GFLOP/s
//! and the ratio; the last line is `bf16_speedup <total f32 time / total bf16 time>` over the
//! network shapes. Whether the CPU has the AVX-512 BF16 kernel is printed first (without it
//! the bf16 product is the portable fallback and slower than f32).

use faer::{Mat, MatRef, Par};
use polysketch_core::{bf16, linalg::gemm, normal, seeded_rng};

use crate::Result;
use crate::lowtri::median_time;
use crate::scaling::faer_gflops;

/// Options of `polysketch bench products`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProductsBench {
    /// Repetitions per shape (the median is reported).
    #[arg(long, default_value_t = 200)]
    pub reps: usize,
}

/// How an operand is stored: `N` as it is (row-major), `T` the transpose of a row-major matrix.
#[derive(Clone, Copy, Debug)]
enum Op {
    N,
    T,
}

/// `(label, m, k, n, lhs layout, rhs layout)`: `dst[m, n] = lhs[m, k] rhs[k, n]`.
const SHAPES: [(&str, usize, usize, usize, Op, Op); 6] = [
    ("x W1      [256,64]x[64,256]", 256, 64, 256, Op::N, Op::N),
    ("h W2      [256,256]x[256,32]", 256, 256, 32, Op::N, Op::N),
    ("y W3      [256,32]x[32,256]", 256, 32, 256, Op::N, Op::N),
    ("dY W2ᵀ    [256,32]x[32,256]", 256, 32, 256, Op::N, Op::T),
    ("Hᵀ dY     [256,256]x[256,32]", 256, 256, 32, Op::T, Op::N),
    ("Xᵀ dA     [64,256]x[256,256]", 64, 256, 256, Op::T, Op::N),
];

fn random(m: usize, n: usize, seed: u64) -> Mat<f32> {
    let mut rng = seeded_rng(seed);
    Mat::from_fn(m, n, |_, _| normal(&mut rng) as f32)
}

/// Storage for an operand `[rows, cols]` in layout `op`: `N` row-major (a column-major faer
/// matrix of the transposed shape), `T` the transpose of a row-major matrix (column-major).
fn store(rows: usize, cols: usize, op: Op, seed: u64) -> Mat<f32> {
    match op {
        Op::N => random(cols, rows, seed),
        Op::T => random(rows, cols, seed),
    }
}

/// The `[rows, cols]` view of what [`store`] made.
fn view(store: &Mat<f32>, op: Op) -> MatRef<'_, f32> {
    match op {
        Op::N => store.transpose(),
        Op::T => store.as_ref(),
    }
}

/// Runs the command: a table row per shape, then `bf16_speedup`.
pub fn run(args: &ProductsBench) -> Result<()> {
    if args.reps == 0 {
        return Err(crate::Error::Config("--reps must be at least 1".into()));
    }
    let fast = bf16::has_fast_bf16();
    println!(
        "bf16 kernel: {}",
        if fast { "AVX-512 BF16" } else { "none on this CPU (portable fallback)" }
    );
    let peak = faer_gflops(2048, 3, Par::rayon(0));
    println!("faer f32 2048³ product, all threads: {peak:.1} GFLOP/s");
    println!("| product (one thread) | f32 | bf16 | f32 GF/s | bf16 GF/s | bf16 speedup |");
    println!("|---|---|---|---|---|---|");
    let (mut t32, mut t16) = (0.0, 0.0);
    for (i, &(label, m, k, n, lop, rop)) in SHAPES.iter().enumerate() {
        let seed = 10 * i as u64;
        let (a_store, b_store) = (store(m, k, lop, seed), store(k, n, rop, seed + 1));
        let (a, b) = (view(&a_store, lop), view(&b_store, rop));
        // dst row-major, as in the networks
        let mut c = Mat::<f32>::zeros(n, m);
        let f =
            median_time(args.reps, || gemm(c.as_mut().transpose_mut(), a, b, 1.0, false, Par::Seq));
        let h = median_time(args.reps, || bf16::gemm_f32(c.as_mut().transpose_mut(), a, b, false));
        let flops = 2.0 * (m * k * n) as f64;
        println!(
            "| {label} | {:.1} µs | {:.1} µs | {:.1} | {:.1} | {:.2}× |",
            f * 1e6,
            h * 1e6,
            flops / f / 1e9,
            flops / h / 1e9,
            f / h
        );
        (t32, t16) = (t32 + f, t16 + h);
    }
    println!("bf16_speedup {:.3}", t32 / t16);
    Ok(())
}
