//! The trait every polynomial sketch implements.

use faer::prelude::ReborrowMut;
use faer::{Mat, MatMut, MatRef, Par};

use crate::{
    Result, Scalar, check_cols, check_finite, check_nonempty, check_overflow, check_shape,
    for_each_row_chunk,
};

/// A degree-`p` oblivious sketch \\(S \in \mathbb{R}^{h^p \times r}\\), applied to tensor powers
/// of rows without forming them.
///
/// Implementors provide the two sequential row kernels [`apply_rows`](Self::apply_rows) and
/// [`vjp_rows`](Self::vjp_rows); the checked, parallel entry points [`apply`](Self::apply),
/// [`apply_into`](Self::apply_into), [`vjp`](Self::vjp) and [`gram`](Self::gram) are provided on
/// top of them.
///
/// # Shapes
/// - input `a`: `[n, h]`, `h = input_dim()`
/// - output `a^{⊗p} S`: `[n, r]`, `r = sketch_dim()`
pub trait PolySketch<T: Scalar>: Send + Sync {
    /// Short name used in error messages, e.g. `"TreeSketch"`.
    fn name(&self) -> &'static str;

    /// The degree \\(p\\): the sketch acts on \\(x^{\otimes p}\\).
    fn degree(&self) -> usize;

    /// The input dimension \\(h\\) of the rows \\(x\\).
    fn input_dim(&self) -> usize;

    /// The sketch size \\(r\\): the number of columns of the output.
    fn sketch_dim(&self) -> usize;

    /// Unchecked sequential kernel: writes \\(S^\top a_i^{\otimes p}\\) into row `i` of `out`
    /// for every row `a_i` of `a`.
    ///
    /// Meant for callers that have validated their inputs and parallelise themselves (the
    /// lowtri and attention crates call it per block).
    ///
    /// # Panics
    /// If `a` is not `[n, h]` or `out` is not `[n, r]`.
    fn apply_rows(&self, a: MatRef<'_, T>, out: MatMut<'_, T>);

    /// Unchecked sequential kernel of the vector-Jacobian product: given `grad` \\(= \partial L
    /// / \partial (A^{\otimes p}S)\\), writes \\(\partial L / \partial A\\) into `out`
    /// (overwriting it).
    ///
    /// # Panics
    /// If `a` is not `[n, h]`, `grad` is not `[n, r]` or `out` is not `[n, h]`.
    fn vjp_rows(&self, a: MatRef<'_, T>, grad: MatRef<'_, T>, out: MatMut<'_, T>);

    /// The sketch as dense Gaussian-tree levels, for devices that run it as matrix products:
    /// level `l` is `[d_l, w_l]` with \(d_0 = h\), \(d_l = r\) above; for a degree-1
    /// projection one `[h, r]` matrix \(S\) (output \(AS\)); for a tree of degree
    /// \(q \ge 2\), \(\log_2 q\) levels holding the projections of their \(q/2^{l+1}\)
    /// nodes side by side (\(G_1\) then \(G_2\) of each node, `w_l = 2·nodes·r`), combined
    /// as \(\sqrt{1/r}\,(M_1G_1) \circ (M_2G_2)\). `None` (the default) for sketches of
    /// another form (CountSketch, TensorSketch).
    fn dense_levels(&self) -> Option<Vec<Mat<f64>>> {
        None
    }

    /// \\(A^{\otimes p} S\\): the sketch of every row of `a`, rows in parallel under `par`.
    ///
    /// # Shapes
    /// `a: [n, h]` → `[n, r]`.
    ///
    /// # Errors
    /// [`ShapeMismatch`](crate::SketchError::ShapeMismatch) if `a` does not have `h` columns,
    /// [`EmptyInput`](crate::SketchError::EmptyInput) if it has no rows,
    /// [`NonFinite`](crate::SketchError::NonFinite) if it holds a NaN or an infinity.
    fn apply(&self, a: MatRef<'_, T>, par: Par) -> Result<Mat<T>> {
        // the output is allocated here: refuse what could not be, before trying (an empty `a`
        // too: a 0 × r matrix of huge r still costs r column visits)
        check_nonempty("PolySketch::apply", "a", a)?;
        let values = a.nrows() as u128 * self.sketch_dim() as u128;
        crate::check_param_bytes(self.name(), values, size_of::<T>())?;
        let mut out = Mat::zeros(a.nrows(), self.sketch_dim());
        self.apply_into(a, out.as_mut(), par)?;
        Ok(out)
    }

    /// Like [`apply`](Self::apply), writing into `out` (`[n, r]`, any strides).
    ///
    /// # Errors
    /// As [`apply`](Self::apply), and a shape mismatch if `out` is not `[n, r]`.
    fn apply_into(&self, a: MatRef<'_, T>, mut out: MatMut<'_, T>, par: Par) -> Result<()> {
        const OP: &str = "PolySketch::apply";
        check_cols(OP, "a", a, self.input_dim())?;
        check_nonempty(OP, "a", a)?;
        check_shape(OP, "out", out.as_ref(), (a.nrows(), self.sketch_dim()))?;
        check_finite(OP, "a", a)?;
        self.apply_unchecked(a, out.rb_mut(), par);
        // finite rows whose tensor power overflows the number format (|a|^p past its range)
        check_overflow(OP, "a", "out", out.as_ref())
    }

    /// [`apply_into`](Self::apply_into) without its checks: [`apply_rows`](Self::apply_rows)
    /// on row chunks of [`CHUNK_ROWS`](polysketch_core::CHUNK_ROWS), in parallel under `par`.
    /// For callers that check their own inputs and outputs (the attention layer); values are
    /// not scanned, so NaN in gives NaN out.
    ///
    /// # Panics
    /// If `a` is not `[n, h]` or `out` is not `[n, r]`.
    fn apply_unchecked(&self, a: MatRef<'_, T>, out: MatMut<'_, T>, par: Par) {
        for_each_row_chunk(out, par, |start, chunk| {
            self.apply_rows(a.subrows(start, chunk.nrows()), chunk);
        });
    }

    /// Vector-Jacobian product: \\(\partial L/\partial A\\) given \\(\partial L/\partial
    /// (A^{\otimes p}S)\\) = `grad`.
    ///
    /// Row \\(i\\) of the result is \\(J_i^\top g_i\\) with \\(J_i\\) the Jacobian of
    /// \\(x \mapsto S^\top x^{\otimes p}\\) at \\(a_i\\).
    ///
    /// # Shapes
    /// `a: [n, h]`, `grad: [n, r]` → `[n, h]`.
    ///
    /// # Errors
    /// As [`apply`](Self::apply) for `a`, and the same checks for `grad`.
    fn vjp(&self, a: MatRef<'_, T>, grad: MatRef<'_, T>, par: Par) -> Result<Mat<T>> {
        // checked before the output is allocated
        check_cols("PolySketch::vjp", "a", a, self.input_dim())?;
        check_nonempty("PolySketch::vjp", "a", a)?;
        let mut out = Mat::zeros(a.nrows(), self.input_dim());
        self.vjp_into(a, grad, out.as_mut(), par)?;
        Ok(out)
    }

    /// Like [`vjp`](Self::vjp), writing into `out` (`[n, h]`, any strides), chunk by chunk so
    /// that no temporary grows with `n`.
    ///
    /// # Errors
    /// As [`vjp`](Self::vjp), and a shape mismatch if `out` is not `[n, h]`.
    fn vjp_into(
        &self, a: MatRef<'_, T>, grad: MatRef<'_, T>, mut out: MatMut<'_, T>, par: Par,
    ) -> Result<()> {
        const OP: &str = "PolySketch::vjp";
        check_cols(OP, "a", a, self.input_dim())?;
        check_nonempty(OP, "a", a)?;
        check_shape(OP, "grad", grad, (a.nrows(), self.sketch_dim()))?;
        check_shape(OP, "out", out.as_ref(), (a.nrows(), self.input_dim()))?;
        check_finite(OP, "a", a)?;
        check_finite(OP, "grad", grad)?;
        self.vjp_unchecked(a, grad, out.rb_mut(), par);
        check_overflow(OP, "a and grad", "out", out.as_ref())
    }

    /// [`vjp_into`](Self::vjp_into) without its checks (see
    /// [`apply_unchecked`](Self::apply_unchecked)).
    ///
    /// # Panics
    /// If `a` is not `[n, h]`, `grad` is not `[n, r]` or `out` is not `[n, h]`.
    fn vjp_unchecked(&self, a: MatRef<'_, T>, grad: MatRef<'_, T>, out: MatMut<'_, T>, par: Par) {
        for_each_row_chunk(out, par, |start, chunk| {
            let rows = chunk.nrows();
            self.vjp_rows(a.subrows(start, rows), grad.subrows(start, rows), chunk);
        });
    }

    /// The sketched Gram matrix \\((A^{\otimes p}S)(B^{\otimes p}S)^\top\\), the estimate of
    /// \\((AB^\top)^{\circ p}\\).
    ///
    /// The default forms both sketches; a sketch with a cheaper identity (the self-tensored one:
    /// \\((LR^\top)^{\circ 2}\\)) overrides it.
    ///
    /// # Shapes
    /// `a: [n, h]`, `b: [m, h]` → `[n, m]`.
    ///
    /// # Errors
    /// As [`apply`](Self::apply), for both inputs.
    fn gram(&self, a: MatRef<'_, T>, b: MatRef<'_, T>, par: Par) -> Result<Mat<T>> {
        let sa = self.apply(a, par)?;
        let sb = self.apply(b, par)?;
        let mut g = Mat::zeros(sa.nrows(), sb.nrows());
        crate::linalg::gemm(g.as_mut(), sa.as_ref(), sb.transpose(), T::one(), false, par);
        check_overflow("PolySketch::gram", "a and b", "gram", g.as_ref())?;
        Ok(g)
    }
}

/// Forwards every method to the sketch behind a pointer, so `&S`, `Box<S>` and
/// `Box<dyn PolySketch<T>>` are sketches too.
macro_rules! forward_poly_sketch {
    ($($ptr:ty),*) => {$(
        impl<T: Scalar, S: PolySketch<T> + ?Sized> PolySketch<T> for $ptr {
            fn name(&self) -> &'static str {
                (**self).name()
            }
            fn degree(&self) -> usize {
                (**self).degree()
            }
            fn input_dim(&self) -> usize {
                (**self).input_dim()
            }
            fn sketch_dim(&self) -> usize {
                (**self).sketch_dim()
            }
            fn apply_rows(&self, a: MatRef<'_, T>, out: MatMut<'_, T>) {
                (**self).apply_rows(a, out)
            }
            fn vjp_rows(&self, a: MatRef<'_, T>, grad: MatRef<'_, T>, out: MatMut<'_, T>) {
                (**self).vjp_rows(a, grad, out)
            }
            fn gram(&self, a: MatRef<'_, T>, b: MatRef<'_, T>, par: Par) -> Result<Mat<T>> {
                (**self).gram(a, b, par)
            }
            fn dense_levels(&self) -> Option<Vec<Mat<f64>>> {
                (**self).dense_levels()
            }
        }
    )*};
}

forward_poly_sketch!(Box<S>, &S);
