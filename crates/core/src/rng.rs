//! Seeded randomness: every random draw of the crates comes from here.

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// The random number generator of every sketch: ChaCha with 8 rounds, seeded from a `u64`.
pub type SketchRng = rand_chacha::ChaCha8Rng;

/// A generator for `seed`. The same seed gives the same stream on every platform.
pub fn seeded_rng(seed: u64) -> SketchRng {
    SketchRng::seed_from_u64(seed)
}

/// Derives the seed of the `index`-th independent draw from a master `seed` (SplitMix64 of both).
///
/// Used to make many independent sketches from one seed, e.g. the draws of
/// `polysketch_sketch::jl::jl_deviations`: draw `d` of master seed `s` is built from `split_seed(s, d)`.
pub fn split_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One standard Gaussian draw, in `f64` (the draw every random parameter of the crates starts
/// from).
pub fn normal(rng: &mut SketchRng) -> f64 {
    StandardNormal.sample(rng)
}
