//! Sketching 100 000 x 64 rows: every sketch at r ∈ {32, 64, 256, 1024}, and φ' for p = 4.
//!
//! ```sh
//! cargo bench --bench sketch
//! ```
//!
//! Throughput is in rows per second. The dense baseline of each group is the Gaussian JL sketch,
//! which is exactly one faer matrix product `[100000, 64] x [64, r]`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use faer::{Mat, Par};
use polysketch::core::seeded_rng;
use polysketch::sketch::{CountSketch, GaussianJl, PolySketch, TensorSketch, TreeSketch};
use polysketch::tensoring::{Layout, SelfTensored};
use rand_distr::{Distribution, StandardNormal};

const N: usize = 100_000;
const H: usize = 64;

fn input() -> Mat<f32> {
    let mut rng = seeded_rng(1);
    Mat::from_fn(N, H, |_, _| {
        let z: f64 = StandardNormal.sample(&mut rng);
        (z / (H as f64).sqrt()) as f32
    })
}

fn sketches(c: &mut Criterion) {
    let a = input();
    for r in [32usize, 64, 256, 1024] {
        let mut group = c.benchmark_group(format!("sketch/{N}x{H}->r{r}"));
        group.sample_size(10).throughput(Throughput::Elements(N as u64));
        let all: Vec<(&str, Box<dyn PolySketch<f32>>)> = vec![
            ("gaussian_jl_p1 (dense baseline)", Box::new(GaussianJl::new(H, r, 0).unwrap())),
            ("countsketch_p1", Box::new(CountSketch::new(H, r, 0).unwrap())),
            ("tensorsketch_p4", Box::new(TensorSketch::new(H, r, 4, 0).unwrap())),
            ("tree_gaussian_p4", Box::new(TreeSketch::gaussian(H, r, 4, 0).unwrap())),
            ("tree_srht_p4", Box::new(TreeSketch::srht(H, r, 4, 0).unwrap())),
        ];
        let mut out = Mat::<f32>::zeros(N, r);
        for (name, s) in &all {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| s.apply_into(a.as_ref(), out.as_mut(), Par::rayon(0)).unwrap())
            });
        }
        group.finish();
    }
}

fn phi_prime(c: &mut Criterion) {
    let a = input();
    for r in [32usize, 64] {
        let mut group = c.benchmark_group(format!("phi_prime_p4/{N}x{H}->r{r}"));
        group.sample_size(10).throughput(Throughput::Elements(N as u64));
        let base = TreeSketch::<f32>::gaussian(H, r, 2, 0).unwrap();
        let mut l = Mat::<f32>::zeros(N, r);
        group.bench_function("tree_gaussian_p2 (base only)", |b| {
            b.iter(|| base.apply_into(a.as_ref(), l.as_mut(), Par::rayon(0)).unwrap())
        });
        for layout in [Layout::Symmetric, Layout::Full] {
            let phi = SelfTensored::new(&base, layout);
            let mut out = Mat::<f32>::zeros(N, phi.sketch_dim());
            group.bench_function(format!("self_tensored_{layout:?}"), |b| {
                b.iter(|| phi.apply_into(a.as_ref(), out.as_mut(), Par::rayon(0)).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, sketches, phi_prime);
criterion_main!(benches);
