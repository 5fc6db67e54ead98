//! What a lower-triangular product is made of: the features, the diagonal-block rule, and C.

use faer::linalg::matmul::triangular::{BlockStructure, matmul as tri_matmul};
use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par, unzip, zip};
use polysketch_core::linalg::{ipow, pow_assign, pow_gate};
use polysketch_core::{
    Error as SketchError, MAX_DEGREE, Result, Scalar, check_finite, check_nonempty, check_nonzero,
    check_shape,
};
use polysketch_tensoring::{Layout, feature_dim, tensor_square, tensor_square_vjp};

/// Where the rows of \\(A\\) and \\(B\\) come from.
#[derive(Debug, Clone, Copy)]
pub enum Features<'a, T> {
    /// Given explicitly: `a`, `b`: `[n, m]`.
    Explicit {
        /// \\(A\\), `[n, m]`.
        a: MatRef<'a, T>,
        /// \\(B\\), `[n, m]`.
        b: MatRef<'a, T>,
    },
    /// Self-tensored: \\(A = L^{\otimes 2}\\), \\(B = R^{\otimes 2}\\) in the symmetric layout
    /// of the tensoring crate (`m = r(r+1)/2`), computed block by block from `l`, `r`:
    /// `[n, r]`. Feature-wide rows exist only in block-local scratch.
    SelfTensored {
        /// \\(L\\), `[n, r]`.
        l: MatRef<'a, T>,
        /// \\(R\\), `[n, r]`.
        r: MatRef<'a, T>,
    },
}

/// How the diagonal blocks \\(\mathrm{lt}(S_{ll})\\) are scored.
#[derive(Debug, Clone, Copy)]
pub enum Diagonal<'a, T> {
    /// By the features, like every other block: \\(A_l B_l^\top\\), which for
    /// [`Features::SelfTensored`] is computed as \\((L_lR_l^\top)^{\circ 2}\\) in
    /// \\(O(b^2 r)\\).
    FromFeatures,
    /// Exactly, from the raw vectors: \\((Q_l K_l^\top)^{\circ p}\\) (local exact polynomial
    /// attention); the off-diagonal blocks still use the features.
    ExactPower {
        /// \\(Q\\), `[n, h]`.
        q: MatRef<'a, T>,
        /// \\(K\\), `[n, h]`.
        k: MatRef<'a, T>,
        /// The power \\(p \ge 1\\).
        p: usize,
    },
}

/// One product \\(\mathrm{out} = \mathrm{lt}(S)\,C\\), where \\(S_{ij}\\) is
/// \\(\langle a_i, b_j\rangle\\) outside the diagonal blocks, the [`Diagonal`] rule inside them,
/// and \\(\mathrm{lt}\\) keeps \\(j \le i\\).
///
/// # Shapes
/// `c: [n, k]`; the features and the diagonal's inputs have `n` rows.
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a, T> {
    /// The features of every row.
    pub features: Features<'a, T>,
    /// The rule for the diagonal blocks.
    pub diagonal: Diagonal<'a, T>,
    /// \\(C\\), `[n, k]`.
    pub c: MatRef<'a, T>,
}

impl<'a, T: Scalar> Problem<'a, T> {
    /// \\(\mathrm{lt}(AB^\top)\,C\\).
    pub fn general(a: MatRef<'a, T>, b: MatRef<'a, T>, c: MatRef<'a, T>) -> Self {
        Self { features: Features::Explicit { a, b }, diagonal: Diagonal::FromFeatures, c }
    }

    /// \\(\mathrm{lt}(L^{\otimes 2}(R^{\otimes 2})^\top)\,C = \mathrm{lt}((LR^\top)^{\circ 2})\,C\\).
    pub fn self_tensored(l: MatRef<'a, T>, r: MatRef<'a, T>, c: MatRef<'a, T>) -> Self {
        Self { features: Features::SelfTensored { l, r }, diagonal: Diagonal::FromFeatures, c }
    }

    /// Features off the diagonal blocks, exact \\((Q_lK_l^\top)^{\circ p}\\) on them.
    pub fn local_exact(
        features: Features<'a, T>, q: MatRef<'a, T>, k: MatRef<'a, T>, p: usize, c: MatRef<'a, T>,
    ) -> Self {
        Self { features, diagonal: Diagonal::ExactPower { q, k, p }, c }
    }

    /// The inputs' names, for an error that blames their magnitudes.
    pub(crate) fn inputs(&self) -> &'static str {
        match (self.features, self.diagonal) {
            (Features::Explicit { .. }, Diagonal::ExactPower { .. }) => "a, b, q, k and c",
            (Features::Explicit { .. }, _) => "a, b and c",
            (Features::SelfTensored { .. }, Diagonal::ExactPower { .. }) => "l, r, q, k and c",
            (Features::SelfTensored { .. }, _) => "l, r and c",
        }
    }

    /// Number of rows \\(n\\).
    pub fn n(&self) -> usize {
        self.c.nrows()
    }

    /// Number of columns \\(k\\) of \\(C\\).
    pub fn k(&self) -> usize {
        self.c.ncols()
    }

    /// Feature width \\(m\\).
    pub fn m(&self) -> usize {
        match self.features {
            Features::Explicit { a, .. } => a.ncols(),
            Features::SelfTensored { l, .. } => feature_dim(l.ncols(), Layout::Symmetric),
        }
    }

    /// Checks every shape and value.
    ///
    /// # Errors
    /// [`SketchError::EmptyInput`] if `n = 0`, [`SketchError::ZeroDimension`] if `C` has no
    /// columns, [`SketchError::ShapeMismatch`] for inputs of
    /// different lengths or `A`, `B` (or `L`, `R`, or `Q`, `K`) of different widths,
    /// [`SketchError::InvalidDegree`] for `p` outside `1..=64`,
    /// [`SketchError::NonFinite`] for a NaN or infinity anywhere.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        self.validate_with(op, true)
    }

    /// [`validate`](Self::validate), the scans for NaN and infinities only if `values`.
    pub(crate) fn validate_with(&self, op: &'static str, values: bool) -> Result<()> {
        let n = self.n();
        check_nonempty(op, "c", self.c)?;
        // zero widths: the product is empty or zero, and the blocks of width 0 do not exist
        check_nonzero(op, "the columns of c", self.c.ncols())?;
        let finite = |name, m| if values { check_finite(op, name, m) } else { Ok(()) };
        finite("c", self.c)?;
        let (x, y, names) = match self.features {
            Features::Explicit { a, b } => (a, b, ("a", "b")),
            Features::SelfTensored { l, r } => (l, r, ("l", "r")),
        };
        check_shape(op, names.0, x, (n, x.ncols()))?;
        check_shape(op, names.1, y, (n, x.ncols()))?;
        finite(names.0, x)?;
        finite(names.1, y)?;
        if let Diagonal::ExactPower { q, k, p } = self.diagonal {
            if p == 0 || p > MAX_DEGREE {
                return Err(SketchError::InvalidDegree {
                    sketch: op,
                    degree: p,
                    requirement: "1 <= p <= 64",
                });
            }
            check_shape(op, "q", q, (n, q.ncols()))?;
            check_shape(op, "k", k, (n, q.ncols()))?;
            finite("q", q)?;
            finite("k", k)?;
        }
        Ok(())
    }

    /// Rows `s..s+len` of \\(A\\): a view of the input, or the tensor square of \\(L\\)'s rows
    /// written into `scratch` (`[b, m]`).
    pub(crate) fn a_rows<'s>(
        &'s self, s: usize, len: usize, scratch: &'s mut Mat<T>,
    ) -> MatRef<'s, T> {
        self.side_rows(false, s, len, scratch)
    }

    /// Rows `s..s+len` of \\(B\\), like [`a_rows`](Self::a_rows).
    pub(crate) fn b_rows<'s>(
        &'s self, s: usize, len: usize, scratch: &'s mut Mat<T>,
    ) -> MatRef<'s, T> {
        self.side_rows(true, s, len, scratch)
    }

    /// Rows of \\(A\\) (`right` false) or \\(B\\) (`right` true).
    fn side_rows<'s>(
        &'s self, right: bool, s: usize, len: usize, scratch: &'s mut Mat<T>,
    ) -> MatRef<'s, T> {
        match self.features {
            Features::Explicit { a, b } => (if right { b } else { a }).subrows(s, len),
            Features::SelfTensored { l, r } => {
                square_into((if right { r } else { l }).subrows(s, len), scratch)
            }
        }
    }

    /// The raw pair whose product the diagonal block starts from, and the entrywise power
    /// applied to it: \\((A_l, B_l, 1)\\), \\((L_l, R_l, 2)\\) or \\((Q_l, K_l, p)\\).
    fn diagonal_inputs(&self, s: usize, len: usize) -> (MatRef<'a, T>, MatRef<'a, T>, usize) {
        match (self.diagonal, self.features) {
            (Diagonal::ExactPower { q, k, p }, _) => (q.subrows(s, len), k.subrows(s, len), p),
            (Diagonal::FromFeatures, Features::Explicit { a, b }) => {
                (a.subrows(s, len), b.subrows(s, len), 1)
            }
            (Diagonal::FromFeatures, Features::SelfTensored { l, r }) => {
                (l.subrows(s, len), r.subrows(s, len), 2)
            }
        }
    }

    /// The lower triangle (diagonal included) of the diagonal block's scores,
    /// \\(S = (XY^\top)^{\circ e}\\), into `s_out: [len, len]`; `g_out` receives the lower
    /// triangle of \\(XY^\top\\) itself when the backward needs it (`e > 1`).
    pub(crate) fn diagonal_scores(
        &self, s: usize, len: usize, mut s_out: MatMut<'_, T>, g_out: Option<MatMut<'_, T>>,
    ) {
        let (x, y, e) = self.diagonal_inputs(s, len);
        tri_matmul(
            s_out.rb_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            x,
            BlockStructure::Rectangular,
            y.transpose(),
            BlockStructure::Rectangular,
            T::one(),
            Par::Seq,
        );
        if let Some(mut g) = g_out {
            copy_lower(s_out.as_ref(), g.rb_mut());
        }
        if e > 1 {
            for j in 0..len {
                let mut col = s_out.rb_mut().col_mut(j).subrows_mut(j, len - j);
                match col.rb_mut().try_as_col_major_mut() {
                    Some(c) => pow_assign(c.as_slice_mut(), e as u32),
                    None => zip!(col).for_each(|unzip!(v)| *v = ipow(*v, e as u32)),
                }
            }
        }
    }

    /// Backward of the diagonal block: given the lower triangle of \\(dS\\) (`ds`) and of
    /// \\(G = XY^\top\\) (`g`, needed when \\(e > 1\\)), adds \\(dX = \mathrm{tril}(dG)\,Y\\)
    /// and \\(dY = \mathrm{tril}(dG)^\top X\\) with \\(dG = e\,G^{\circ(e-1)} \circ dS\\) into
    /// `dx`, `dy`. Overwrites `ds` with \\(dG\\).
    pub(crate) fn diagonal_backward(
        &self, s: usize, len: usize, mut ds: MatMut<'_, T>, g: MatRef<'_, T>, dx: MatMut<'_, T>,
        dy: MatMut<'_, T>,
    ) {
        let (x, y, e) = self.diagonal_inputs(s, len);
        if e > 1 {
            // in the forward pass S = G^∘e, so dG = e G^∘(e-1) ∘ dS
            let ef = T::of(e as f64);
            for j in 0..len {
                let (mut d, g) =
                    (ds.rb_mut().col_mut(j).subrows_mut(j, len - j), g.col(j).subrows(j, len - j));
                match (d.rb_mut().try_as_col_major_mut(), g.try_as_col_major()) {
                    (Some(d), Some(g)) => {
                        pow_gate(d.as_slice_mut(), g.as_slice(), e as u32 - 1, ef)
                    }
                    _ => zip!(d, g).for_each(|unzip!(d, g)| *d = ef * ipow(*g, e as u32 - 1) * *d),
                }
            }
        }
        // in the forward pass G = X Yᵀ (lower part), so dX = tril(dG) Y and dY = tril(dG)ᵀ X
        tri_matmul(
            dx,
            BlockStructure::Rectangular,
            Accum::Add,
            ds.as_ref(),
            BlockStructure::TriangularLower,
            y,
            BlockStructure::Rectangular,
            T::one(),
            Par::Seq,
        );
        tri_matmul(
            dy,
            BlockStructure::Rectangular,
            Accum::Add,
            ds.as_ref().transpose(),
            BlockStructure::TriangularUpper,
            x,
            BlockStructure::Rectangular,
            T::one(),
            Par::Seq,
        );
    }

    /// Whether the diagonal rule reads `Q`, `K` (so their gradients exist).
    pub(crate) fn has_exact_diagonal(&self) -> bool {
        matches!(self.diagonal, Diagonal::ExactPower { .. })
    }

    /// Width of the raw inputs the diagonal block reads (`m`, `r` or `h`).
    pub(crate) fn diagonal_width(&self) -> usize {
        self.diagonal_inputs(0, 0).0.ncols()
    }

    /// Width of what `d_a`/`d_b` refer to: `m` for explicit features, `r` for self-tensored.
    pub(crate) fn feature_input_width(&self) -> usize {
        match self.features {
            Features::Explicit { a, .. } => a.ncols(),
            Features::SelfTensored { l, .. } => l.ncols(),
        }
    }

    /// Chains a gradient with respect to feature rows `s..s+len` of \\(A\\) (or \\(B\\) when
    /// `b_side`) to the input rows: the identity for explicit features (added into `out`), the
    /// tensor-square VJP for self-tensored ones (added, via `scratch`).
    pub(crate) fn feature_vjp(
        &self, b_side: bool, s: usize, len: usize, dfeat: MatRef<'_, T>, mut out: MatMut<'_, T>,
        scratch: &mut Mat<T>,
    ) {
        match self.features {
            Features::Explicit { .. } => {
                zip!(out.rb_mut(), dfeat).for_each(|unzip!(o, d)| *o += *d)
            }
            Features::SelfTensored { l, r } => {
                let x = if b_side { r } else { l };
                let mut tmp = scratch.as_mut().submatrix_mut(0, 0, len, x.ncols());
                tensor_square_vjp(x.subrows(s, len), dfeat, Layout::Symmetric, tmp.rb_mut());
                zip!(out.rb_mut(), tmp.as_ref()).for_each(|unzip!(o, d)| *o += *d);
            }
        }
    }
}

/// Tensor square of `rows` (symmetric layout) into the first rows of `scratch`.
fn square_into<'s, T: Scalar>(rows: MatRef<'_, T>, scratch: &'s mut Mat<T>) -> MatRef<'s, T> {
    let (len, m) = (rows.nrows(), feature_dim(rows.ncols(), Layout::Symmetric));
    tensor_square(rows, Layout::Symmetric, scratch.as_mut().submatrix_mut(0, 0, len, m));
    scratch.as_ref().submatrix(0, 0, len, m)
}

/// Copies the lower triangle (diagonal included) of a square matrix.
fn copy_lower<T: Scalar>(src: MatRef<'_, T>, mut dst: MatMut<'_, T>) {
    let len = src.nrows();
    for j in 0..len {
        dst.rb_mut().col_mut(j).subrows_mut(j, len - j).copy_from(src.col(j).subrows(j, len - j));
    }
}
