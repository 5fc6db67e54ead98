//! The lowtri hot path: forward and forward+backward of lt(A Bᵀ) C at m = 528, k = 64, b = 256,
//! with faer's dense product of the same FLOP count in the same group as the baseline.
//!
//! ```sh
//! cargo bench --bench lowtri
//! ```

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faer::{Mat, Par};
use polysketch::lowtri::{LowTri, Problem, baseline};
use polysketch::sketch::{linalg::gemm, seeded_rng};
use rand_distr::{Distribution, StandardNormal};

const M: usize = 528;
const K: usize = 64;
const B: usize = 256;

fn random(n: usize, w: usize, scale: f64, seed: u64) -> Mat<f32> {
    let mut rng = seeded_rng(seed);
    Mat::from_fn(n, w, |_, _| {
        let z: f64 = StandardNormal.sample(&mut rng);
        (scale * z) as f32
    })
}

fn lowtri(c: &mut Criterion) {
    for n in [4096usize, 16_384] {
        let (a, b, cm, g) = (
            random(n, M, 0.05, 1),
            random(n, M, 0.05, 2),
            random(n, K, 1.0, 3),
            random(n, K, 1.0, 4),
        );
        let problem = Problem::general(a.as_ref(), b.as_ref(), cm.as_ref());
        let engine = LowTri::new(B).unwrap();
        let flops = n as f64 * (4.0 * (M * K) as f64 + (B * M) as f64 + (B * K) as f64);
        let mut group = c.benchmark_group(format!("lowtri/n{n}_m{M}_k{K}_b{B}"));
        group
            .sample_size(10)
            .throughput(Throughput::Elements(flops as u64));
        let mut out = Mat::<f32>::zeros(n, K);
        group.bench_function("block_forward", |bench| {
            bench.iter(|| {
                engine
                    .forward_batch(
                        std::slice::from_ref(&problem),
                        vec![out.as_mut()],
                        Par::rayon(0),
                    )
                    .unwrap()
            })
        });
        group.bench_function("block_forward_backward", |bench| {
            bench.iter(|| {
                let (_, s) = engine.forward(&problem, Par::rayon(0)).unwrap();
                engine
                    .backward(&problem, &s, g.as_ref(), Par::rayon(0))
                    .unwrap()
            })
        });
        group.bench_function("cumsum_forward", |bench| {
            bench.iter(|| {
                baseline::cumsum_forward(a.as_ref(), b.as_ref(), cm.as_ref(), Par::rayon(0))
                    .unwrap()
            })
        });
        // the dense baseline: one faer product with the forward's FLOP count, [n, M] x [M, s]
        let s = (flops / (2.0 * n as f64 * M as f64)).round() as usize;
        let w = random(M, s, 1.0, 5);
        let mut dense_out = Mat::<f32>::zeros(n, s);
        group.bench_function(format!("faer_dense_{n}x{M}x{s} (same FLOPs)"), |bench| {
            bench.iter(|| {
                gemm(
                    dense_out.as_mut(),
                    a.as_ref(),
                    w.as_ref(),
                    1.0,
                    false,
                    Par::rayon(0),
                )
            })
        });
        group.finish();
    }
}

criterion_group!(benches, lowtri);
criterion_main!(benches);
