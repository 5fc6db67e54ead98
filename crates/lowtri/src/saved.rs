//! The engine's reusable state: the forward's block prefixes ([`Saved`]) and the backward's
//! gradients ([`Grads`]).

use faer::{Mat, MatRef};
use polysketch_core::Scalar;

use crate::Problem;

/// What the backward needs from the forward: the exclusive block prefixes \\(Z_l\\).
///
/// Reusable: [`LowTri::forward_batch_into`](crate::LowTri::forward_batch_into) fills it (reallocating only when the shape
/// changes) and [`LowTri::backward_batch_into`](crate::LowTri::backward_batch_into) uses its memory for the reverse prefixes,
/// leaving it *consumed* — a second backward on it is refused until a forward refills it. A
/// training loop that keeps one `Saved` per problem allocates nothing after its first step.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved<T> {
    /// `[m, t·k]`: block `l` (columns `l·k .. (l+1)·k`, contiguous in memory) is \\(Z_l\\).
    pub(crate) prefixes: Mat<T>,
    pub(crate) block: usize,
    pub(crate) ready: bool,
}

impl<T: Scalar> Saved<T> {
    /// An empty state, to be filled by a forward.
    pub fn new() -> Self {
        Self { prefixes: Mat::new(), block: 0, ready: false }
    }

    /// The prefixes \\(Z_l\\), `[m, t·k]` (block `l` is columns `l·k .. (l+1)·k`).
    pub fn prefixes(&self) -> MatRef<'_, T> {
        self.prefixes.as_ref()
    }

    /// The block size of the forward that filled it.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Whether it holds a forward's prefixes that no backward has used yet.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Makes the buffer `[m, cols]`, reusing its memory when the shape is unchanged.
    pub(crate) fn shape_for(&mut self, m: usize, cols: usize) {
        if (self.prefixes.nrows(), self.prefixes.ncols()) != (m, cols) {
            self.prefixes = Mat::zeros(m, cols);
        }
    }
}

impl<T: Scalar> Default for Saved<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Gradients of \\(\langle \partial\mathrm{out}, \mathrm{out}\rangle\\) with respect to every input.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads<T> {
    /// \\(\partial/\partial A\\) (`[n, m]`) for explicit features, \\(\partial/\partial L\\)
    /// (`[n, r]`) for self-tensored ones.
    pub d_a: Mat<T>,
    /// \\(\partial/\partial B\\) or \\(\partial/\partial R\\), like `d_a`.
    pub d_b: Mat<T>,
    /// \\(\partial/\partial C\\), `[n, k]`.
    pub d_c: Mat<T>,
    /// \\(\partial/\partial Q\\), `[n, h]`, for an exact diagonal.
    pub d_q: Option<Mat<T>>,
    /// \\(\partial/\partial K\\), `[n, h]`, for an exact diagonal.
    pub d_k: Option<Mat<T>>,
}

impl<T: Scalar> Grads<T> {
    /// Empty gradients, to be filled by [`LowTri::backward_batch_into`](crate::LowTri::backward_batch_into).
    pub fn new() -> Self {
        Self { d_a: Mat::new(), d_b: Mat::new(), d_c: Mat::new(), d_q: None, d_k: None }
    }

    /// Zeroed gradients for `problem`, reusing `self`'s memory where the shapes match.
    pub(crate) fn reset_for(&mut self, problem: &Problem<'_, T>) {
        let (n, w, k) = (problem.n(), problem.feature_input_width(), problem.k());
        let zeroed = |m: &mut Mat<T>, rows: usize, cols: usize| {
            if (m.nrows(), m.ncols()) == (rows, cols) {
                m.fill(T::zero());
            } else {
                *m = Mat::zeros(rows, cols);
            }
        };
        zeroed(&mut self.d_a, n, w);
        zeroed(&mut self.d_b, n, w);
        zeroed(&mut self.d_c, n, k);
        if problem.has_exact_diagonal() {
            let h = problem.diagonal_width();
            zeroed(self.d_q.get_or_insert_with(Mat::new), n, h);
            zeroed(self.d_k.get_or_insert_with(Mat::new), n, h);
        } else {
            self.d_q = None;
            self.d_k = None;
        }
    }
}

impl<T: Scalar> Default for Grads<T> {
    fn default() -> Self {
        Self::new()
    }
}
