//! Helpers shared by the attention crate's test files (each file uses a subset).

#![allow(dead_code)]

use faer::MatRef;
use polysketch_attention::{
    Attention, AttentionConfig, AttentionKind, PolySketchConfig, SketchKind,
};
use polysketch_core::{Scalar, seeded_rng};
use rand_distr::{Distribution, StandardNormal};

/// `len` independent N(0, scale²) values from `seed`.
pub fn random<T: Scalar>(len: usize, scale: f64, seed: u64) -> Vec<T> {
    let mut rng = seeded_rng(seed);
    (0..len)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            T::of(scale * z)
        })
        .collect()
}

/// Head `idx` of a row-major `[.., n, h]` buffer as an `[n, h]` view.
pub fn head<T>(x: &[T], idx: usize, n: usize, h: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(&x[idx * n * h..(idx + 1) * n * h], n, h)
}

/// Runs `f` in a rayon pool of `threads` threads.
pub fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// PolySketch attention with random sketches drawn from seed 11.
pub fn config(
    heads: usize, h: usize, p: usize, r: usize, block: usize, local: bool,
) -> AttentionConfig {
    AttentionConfig {
        heads,
        head_dim: h,
        kind: AttentionKind::PolySketch(PolySketchConfig {
            p,
            r,
            block,
            local,
            seed: 11,
            sketch: SketchKind::Random,
        }),
    }
}

/// Moves every parameter off its initial value, deterministically, so that gradients are
/// generic: layer-norm gains near 1, biases small, network weights by a few percent.
pub fn perturb_parameters<T: Scalar>(layer: &mut Attention<T>, seed: u64) {
    for (pi, param) in layer.parameters_mut().into_iter().enumerate() {
        let noise = random::<f64>(param.data.len(), 1.0, seed + pi as u64);
        for (x, z) in param.data.iter_mut().zip(noise) {
            *x = if param.name.ends_with("gain") {
                T::of(1.0 + 0.2 * z)
            } else if param.name.contains(".b") || param.name.ends_with("bias") {
                T::of(0.1 * z)
            } else {
                *x * T::of(1.0 + 0.05 * z)
            };
        }
    }
}
