//! Same seed, same numbers: across constructions, thread counts and float types.

mod common;

use common::{gaussian, to_f64};
use faer::{Mat, Par};
use polysketch_core::CHUNK_ROWS;
use polysketch_sketch::{CountSketch, GaussianJl, PolySketch, TensorSketch, TreeSketch};
use proptest::prelude::*;

fn all_sketches(h: usize, r: usize, seed: u64) -> Vec<Box<dyn PolySketch<f32>>> {
    vec![
        Box::new(GaussianJl::new(h, r, seed).unwrap()),
        Box::new(CountSketch::new(h, r, seed).unwrap()),
        Box::new(TensorSketch::new(h, r, 3, seed).unwrap()),
        Box::new(TreeSketch::gaussian(h, r, 4, seed).unwrap()),
        Box::new(TreeSketch::srht(h, r, 4, seed).unwrap()),
    ]
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// apply and vjp give bitwise the same result with 1, 2 or 3 threads and sequentially.
#[test]
fn results_do_not_depend_on_thread_count() {
    let n = 4 * CHUNK_ROWS + 5;
    let a = gaussian::<f32>(n, 12, 1);
    for s in all_sketches(12, 24, 99) {
        let g = gaussian::<f32>(n, 24, 2);
        let seq = s.apply(a.as_ref(), Par::Seq).unwrap();
        let seq_vjp = s.vjp(a.as_ref(), g.as_ref(), Par::Seq).unwrap();
        for threads in [1, 2, 3] {
            let (y, d) = in_pool(threads, || {
                (
                    s.apply(a.as_ref(), Par::rayon(0)).unwrap(),
                    s.vjp(a.as_ref(), g.as_ref(), Par::rayon(0)).unwrap(),
                )
            });
            assert_eq!(y, seq, "{} apply with {threads} threads", s.name());
            assert_eq!(d, seq_vjp, "{} vjp with {threads} threads", s.name());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Two sketches built from one seed are identical; another seed gives another sketch. (The
    /// hash-based sketches repeat with probability (2r)^-h: the shapes keep that below 1e-7.)
    #[test]
    fn seed_determines_the_sketch(seed in any::<u64>(), h in 6usize..10, r in 8usize..20) {
        let a = gaussian::<f32>(3, h, 5);
        for (s1, (s2, s3)) in all_sketches(h, r, seed).iter().zip(all_sketches(h, r, seed).iter().zip(all_sketches(h, r, seed ^ 1))) {
            let y1 = s1.apply(a.as_ref(), Par::Seq).unwrap();
            prop_assert_eq!(&y1, &s2.apply(a.as_ref(), Par::Seq).unwrap());
            prop_assert_ne!(&y1, &s3.apply(a.as_ref(), Par::Seq).unwrap());
        }
    }

    /// Shapes: `[n, h]` in, `[n, r]` out, `[n, h]` back.
    #[test]
    fn shapes_are_as_documented(n in 1usize..300, h in 1usize..9, r in 1usize..33, seed in any::<u64>()) {
        let a = gaussian::<f32>(n, h, seed);
        for s in all_sketches(h, r, seed) {
            let y = s.apply(a.as_ref(), Par::rayon(2)).unwrap();
            prop_assert_eq!((y.nrows(), y.ncols()), (n, r));
            let d = s.vjp(a.as_ref(), y.as_ref(), Par::rayon(2)).unwrap();
            prop_assert_eq!((d.nrows(), d.ncols()), (n, h));
        }
    }
}

/// f32 and f64 sketches from one seed hold the same parameters up to rounding.
#[test]
fn f32_and_f64_sketches_from_one_seed_agree() {
    let a64 = gaussian::<f64>(50, 8, 3);
    let a32 = Mat::from_fn(50, 8, |i, j| a64[(i, j)] as f32);
    type Pair = (Box<dyn PolySketch<f32>>, Box<dyn PolySketch<f64>>);
    let pairs: Vec<Pair> = vec![
        (
            Box::new(TreeSketch::gaussian(8, 16, 4, 7).unwrap()),
            Box::new(TreeSketch::gaussian(8, 16, 4, 7).unwrap()),
        ),
        (
            Box::new(TensorSketch::new(8, 16, 4, 7).unwrap()),
            Box::new(TensorSketch::new(8, 16, 4, 7).unwrap()),
        ),
    ];
    for (s32, s64) in pairs {
        let y32 = to_f64(s32.apply(a32.as_ref(), Par::Seq).unwrap().as_ref());
        let y64 = s64.apply(a64.as_ref(), Par::Seq).unwrap();
        common::assert_close(y32.as_ref(), y64.as_ref(), 1e-4, s32.name());
    }
}
