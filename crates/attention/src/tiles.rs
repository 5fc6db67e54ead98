//! The tiles of exact causal attention (softmax and polynomial): rows per tile, each worker's
//! scratch, one head's views, and the task runner that deals tiles to threads.

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

/// One head's inputs as `[n, h]` views.
#[derive(Clone, Copy)]
pub(crate) struct HeadViews<'a, T> {
    pub q: MatRef<'a, T>,
    pub k: MatRef<'a, T>,
    pub v: MatRef<'a, T>,
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
