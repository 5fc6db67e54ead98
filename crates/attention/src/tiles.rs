//! The tiles of exact attention (softmax and polynomial), causal or bidirectional: rows per
//! tile, which tile pairs meet, each worker's scratch, one head's views, and the task runner
//! that deals tiles to threads.

use faer::{Mat, MatRef, Par};
use polysketch_core::Scalar;
use rayon::prelude::*;

/// Rows per tile.
pub const TILE: usize = 128;

/// Per-worker scratch of the tiled kernels.
pub(crate) struct TileScratch<T> {
    pub(crate) s: Mat<T>,
    pub(crate) dp: Mat<T>,
    pub(crate) acc: Mat<T>,
    pub(crate) m: Vec<T>,
    pub(crate) l: Vec<T>,
    pub(crate) tmp: Vec<T>,
}

impl<T: Scalar> TileScratch<T> {
    pub(crate) fn new(h: usize) -> Self {
        Self {
            s: Mat::zeros(TILE, TILE),
            dp: Mat::zeros(TILE, TILE),
            acc: Mat::zeros(TILE, h),
            m: vec![T::zero(); TILE],
            l: vec![T::zero(); TILE],
            tmp: vec![T::zero(); TILE],
        }
    }
}

/// One head's inputs as `[n, h]` views, and whether it is causal.
#[derive(Clone, Copy)]
pub(crate) struct HeadViews<'a, T> {
    pub q: MatRef<'a, T>,
    pub k: MatRef<'a, T>,
    pub v: MatRef<'a, T>,
    pub causal: bool,
}

/// The key tiles that query tile `i` of `tiles` reads: up to its own (causal) or all.
pub(crate) fn key_tiles(i: usize, tiles: usize, causal: bool) -> core::ops::Range<usize> {
    0..if causal { i + 1 } else { tiles }
}

/// The query tiles that read key tile `j` of `tiles`: from its own on (causal) or all.
pub(crate) fn query_tiles(j: usize, tiles: usize, causal: bool) -> core::ops::Range<usize> {
    (if causal { j } else { 0 })..tiles
}

/// Whether entry `(r, c)` of the tile pair `(i, j)` is masked: above the diagonal of a
/// diagonal tile, when causal.
pub(crate) fn masked(causal: bool, i: usize, j: usize, r: usize, c: usize) -> bool {
    causal && i == j && r < c
}

/// Runs tile tasks, in parallel under `Par::Rayon` with one scratch per group of tasks. The
/// causal triangle makes later tiles costlier, so tasks are dealt round-robin into the groups.
pub(crate) fn run_tasks<T: Scalar, J: Send>(
    tasks: Vec<J>, h: usize, par: Par, work: impl Fn(&mut TileScratch<T>, J) + Sync + Send,
) {
    match par {
        Par::Seq => {
            let mut sc = TileScratch::new(h);
            tasks.into_iter().for_each(|t| work(&mut sc, t));
        }
        Par::Rayon(_) => {
            let groups = (4 * rayon::current_num_threads()).max(1);
            let mut chunks: Vec<Vec<J>> = (0..groups).map(|_| Vec::new()).collect();
            for (i, t) in tasks.into_iter().enumerate() {
                chunks[i % groups].push(t);
            }
            chunks.into_par_iter().for_each(|chunk| {
                let mut sc = TileScratch::new(h);
                chunk.into_iter().for_each(|t| work(&mut sc, t));
            });
        }
    }
}
