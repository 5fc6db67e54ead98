//! The lowtri hot path: the self-tensored block product lt((L Rᵀ)^∘2) C (r = 32, so m = 528
//! features, k = 64, b = 256) forward and forward+backward, the same product on explicit
//! features (general form) and by cumulative sums, and faer's dense product of the forward's
//! FLOP count as the baseline in the same group.
//!
//! ```sh
//! cargo bench --bench lowtri
//! ```

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use faer::{Mat, Par};
use polysketch::core::{linalg::gemm, seeded_rng};
use polysketch::lowtri::{Grads, LowTri, Problem, Saved, baseline};
use polysketch::tensoring::{Layout, tensor_square};
use rand_distr::{Distribution, StandardNormal};

const R: usize = 32;
const M: usize = R * (R + 1) / 2;
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
    for n in [4096usize, 32_768] {
        let (l, r, cm, g) = (
            random(n, R, 0.25, 1),
            random(n, R, 0.25, 2),
            random(n, K, 1.0, 3),
            random(n, K, 1.0, 4),
        );
        let problem = Problem::self_tensored(l.as_ref(), r.as_ref(), cm.as_ref());
        let problems = std::slice::from_ref(&problem);
        let engine = LowTri::new(B).unwrap();
        // FLOPs of the forward: 4mk + b(r + k) per row (see the lowtri chapter of the book)
        let flops = n as f64 * (4.0 * (M * K) as f64 + (B * (R + K)) as f64);
        let mut group = c.benchmark_group(format!("lowtri/n{n}_m{M}_k{K}_b{B}"));
        group.sample_size(10).throughput(Throughput::Elements(flops as u64));
        let (mut out, mut saved, mut grads) =
            (Mat::<f32>::zeros(n, K), vec![Saved::new()], vec![Grads::new()]);
        group.bench_function("block_forward_self_tensored", |bench| {
            bench.iter(|| {
                engine
                    .forward_batch_into(problems, vec![out.as_mut()], &mut saved, Par::rayon(0))
                    .unwrap()
            })
        });
        group.bench_function("block_forward_backward_self_tensored", |bench| {
            bench.iter(|| {
                engine
                    .forward_batch_into(problems, vec![out.as_mut()], &mut saved, Par::rayon(0))
                    .unwrap();
                engine
                    .backward_batch_into(
                        problems,
                        &mut saved,
                        &[g.as_ref()],
                        &mut grads,
                        Par::rayon(0),
                    )
                    .unwrap();
            })
        });
        let (mut fl, mut fr) = (Mat::<f32>::zeros(n, M), Mat::<f32>::zeros(n, M));
        tensor_square(l.as_ref(), Layout::Symmetric, fl.as_mut());
        tensor_square(r.as_ref(), Layout::Symmetric, fr.as_mut());
        let general = Problem::general(fl.as_ref(), fr.as_ref(), cm.as_ref());
        group.bench_function("block_forward_general", |bench| {
            bench.iter(|| {
                engine.forward_into(&general, out.as_mut(), &mut saved[0], Par::rayon(0)).unwrap()
            })
        });
        if n <= 4096 {
            group.bench_function("cumsum_forward", |bench| {
                bench.iter(|| {
                    baseline::cumsum_forward(fl.as_ref(), fr.as_ref(), cm.as_ref(), Par::rayon(0))
                        .unwrap()
                })
            });
        }
        // the dense baseline: one faer product [n, M] x [M, s] with the forward's FLOP count
        let s = (flops / (2.0 * n as f64 * M as f64)).round() as usize;
        let w = random(M, s, 1.0, 5);
        let mut dense_out = Mat::<f32>::zeros(n, s);
        group.bench_function(format!("faer_dense_{n}x{M}x{s} (same FLOPs)"), |bench| {
            bench.iter(|| {
                gemm(dense_out.as_mut(), fl.as_ref(), w.as_ref(), 1.0, false, Par::rayon(0))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, lowtri);
criterion_main!(benches);
