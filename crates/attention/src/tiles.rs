//! The tiles of exact attention (softmax and polynomial), causal or bidirectional: rows per
//! tile, which tile pairs meet, each worker's scratch, one head's views, and the task runner
//! that deals tiles to threads.

use faer::{Mat, MatMut, MatRef, Par};
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

/// Which keys a query sees, besides causality: every key, the keys of its own block, or the
/// keys within a distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    /// Every key (every earlier one when causal).
    All,
    /// The keys of the query's block of `b` tokens: \(\lfloor i/b\rfloor = \lfloor j/b\rfloor\).
    Blocks(usize),
    /// The keys within distance `w`: \(|i - j| < w\).
    Band(usize),
}

/// Which keys each query of a head sees: query \(i\) sees key \(j\) when \(j \le i\) (if
/// causal) and the window allows it. Every query sees itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mask {
    pub causal: bool,
    pub window: Window,
}

impl Mask {
    /// Whether query `i` sees key `j`.
    pub(crate) fn sees(&self, i: usize, j: usize) -> bool {
        if self.causal && j > i {
            return false;
        }
        match self.window {
            Window::All => true,
            Window::Blocks(b) => i / b == j / b,
            Window::Band(w) => i.abs_diff(j) < w,
        }
    }

    /// The end of the window of rows `..end`, in `n` rows (exclusive).
    fn window_end(&self, end: usize, n: usize) -> usize {
        match self.window {
            Window::All => n,
            Window::Blocks(b) => n.min(end.div_ceil(b) * b),
            Window::Band(w) => n.min(end + w - 1),
        }
    }

    /// The start of the window of rows `start..`.
    fn window_start(&self, start: usize) -> usize {
        match self.window {
            Window::All => 0,
            Window::Blocks(b) => start / b * b,
            Window::Band(w) => start.saturating_sub(w - 1),
        }
    }

    /// The key tiles that query tile `i` of `n` rows reads (a range holding every key seen).
    pub(crate) fn key_tiles(&self, i: usize, n: usize) -> core::ops::Range<usize> {
        let (a, b) = (i * TILE, n.min((i + 1) * TILE));
        let end = if self.causal { b } else { self.window_end(b, n) };
        self.window_start(a) / TILE..end.div_ceil(TILE)
    }

    /// The query tiles that read key tile `j` of `n` rows.
    pub(crate) fn query_tiles(&self, j: usize, n: usize) -> core::ops::Range<usize> {
        let (a, b) = (j * TILE, n.min((j + 1) * TILE));
        let start = if self.causal { a } else { self.window_start(a) };
        start / TILE..self.window_end(b, n).div_ceil(TILE)
    }

    /// Sets to `fill` the entries of the tile `t` (rows from `i0`, columns from `j0`) that the
    /// mask hides. A tile whose corners away from the diagonal are seen is seen whole (every
    /// window bounds \(i - j\) from both sides and keeps blocks), and is left as it is.
    pub(crate) fn apply<T: Copy>(&self, i0: usize, j0: usize, mut t: MatMut<'_, T>, fill: T) {
        let (bi, bj) = (t.nrows(), t.ncols());
        if bi == 0 || bj == 0 || (self.sees(i0, j0 + bj - 1) && self.sees(i0 + bi - 1, j0)) {
            return;
        }
        for c in 0..bj {
            for r in 0..bi {
                if !self.sees(i0 + r, j0 + c) {
                    t[(r, c)] = fill;
                }
            }
        }
    }
}

/// One head's inputs as `[n, h]` views, and which keys each query sees.
#[derive(Clone, Copy)]
pub(crate) struct HeadViews<'a, T> {
    pub q: MatRef<'a, T>,
    pub k: MatRef<'a, T>,
    pub v: MatRef<'a, T>,
    pub mask: Mask,
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
