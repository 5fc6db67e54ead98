//! Conversions at the API boundary for data that lives in nalgebra matrices (feature
//! `nalgebra`, on by default).
//!
//! nalgebra's `DMatrix` is column-major and contiguous, like faer's `Mat`, so viewing it costs
//! nothing.
//!
//! # Example
//! ```
//! use faer::Par;
//! use nalgebra::DMatrix;
//! use polysketch_sketch::{nalgebra_views, GaussianJl, PolySketch};
//! let data = DMatrix::<f64>::from_fn(5, 3, |i, j| (i + j) as f64);
//! let s = GaussianJl::<f64>::new(3, 4, 0)?;
//! let y = s.apply(nalgebra_views::view(&data), Par::Seq)?;
//! let back: DMatrix<f64> = nalgebra_views::to_nalgebra(y.as_ref());
//! assert_eq!(back.shape(), (5, 4));
//! # Ok::<(), polysketch_sketch::SketchError>(())
//! ```

use faer::MatRef;

use crate::Scalar;

/// A zero-copy faer view of a nalgebra matrix, `[nrows, ncols]`.
pub fn view<T: Scalar>(m: &nalgebra::DMatrix<T>) -> MatRef<'_, T> {
    MatRef::from_column_major_slice(m.as_slice(), m.nrows(), m.ncols())
}

/// Copies a faer matrix into a new nalgebra `DMatrix` of the same shape.
pub fn to_nalgebra<T: Scalar>(m: MatRef<'_, T>) -> nalgebra::DMatrix<T> {
    nalgebra::DMatrix::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}
