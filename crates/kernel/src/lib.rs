//! Kernel methods with polynomial sketches: kernel ridge regression and kernel PCA, exact,
//! sketched, and by Nyström.
//!
//! The polynomial kernel \\(k(x, y) = (\gamma\langle x, y\rangle + c)^p\\) is the homogeneous
//! kernel \\(\langle\tilde x, \tilde y\rangle^p\\) of \\(\tilde x = [\sqrt\gamma\,x, \sqrt c]\\)
//! ([`PolyKernel::homogenize`]), so any degree-\\(p\\) sketch of the sketch crate gives random
//! features \\(\phi\\) with \\(\langle\phi(x), \phi(y)\rangle \approx k(x, y)\\)
//! ([`SketchFeatures`]: the Ahle et al. tree, TensorSketch, or the nonnegative self-tensored
//! sketch). On \\(D\\) features, ridge regression costs \\(O(nD^2)\\) instead of the \\(O(n^3)\\)
//! and \\(n^2\\) memory of the exact method, and PCA \\(O(nD^2)\\) instead of an \\(n \times n\\)
//! eigendecomposition.
//!
//! - [`PolyKernel`]: the kernel, its lifted inputs and exact kernel matrices;
//! - [`SketchFeatures`], [`Nystrom`]: feature maps;
//! - [`Ridge`] (in feature space), [`KernelRidge`] (exact), [`rmse`], [`r2`];
//! - [`kernel_pca_exact`], [`kernel_pca_features`], [`principal_angles`], [`center_gram`],
//!   [`center_columns`], [`top_eigenpairs`];
//! - [`data`]: CSV tables, splits, standardisation.
//!
//! # Example
//! ```
//! use faer::{Mat, Par};
//! use polysketch_kernel::{r2, FeatureKind, KernelRidge, PolyKernel, Ridge, SketchFeatures};
//!
//! // y = (x0 + x1)² on 400 points: a degree-2 polynomial, which the kernel with p = 2 fits.
//! let x = Mat::from_fn(400, 3, |i, j| ((i * 3 + j) as f64 * 0.37).sin());
//! let y: Vec<f64> = (0..400).map(|i| (x[(i, 0)] + x[(i, 1)]).powi(2)).collect();
//! let kernel = PolyKernel::new(2, 1.0, 1.0)?;
//!
//! let exact = KernelRidge::fit(kernel.gram(x.as_ref(), x.as_ref(), Par::Seq)?.as_ref(), &y, 1e-6, Par::Seq)?;
//! let fitted = exact.predict(kernel.gram(x.as_ref(), x.as_ref(), Par::Seq)?.as_ref(), Par::Seq)?;
//! assert!(r2(&fitted, &y)? > 0.999);
//!
//! let features = SketchFeatures::new(kernel, 3, FeatureKind::Tree, 512, 7)?;
//! let phi = features.transform(x.as_ref(), Par::Seq)?;
//! let ridge = &Ridge::fit_path(phi.as_ref(), &y, &[1e-3], Par::Seq)?[0];
//! assert!(r2(&ridge.predict(phi.as_ref(), Par::Seq)?, &y)? > 0.99);
//! # Ok::<(), polysketch_kernel::KernelError>(())
//! ```

/// The faer version this crate computes with (its matrices and `Par` in the signatures): use
/// it instead of pinning faer by hand.
pub use faer;

pub mod data;
mod error;
mod nystrom;
mod pca;
mod polykernel;
mod ridge;

pub use error::{KernelError, Result};
pub use nystrom::Nystrom;
pub use pca::{
    KernelPca, center_columns, center_gram, kernel_pca_exact, kernel_pca_features,
    principal_angles, top_eigenpairs,
};
pub use polykernel::{FeatureKind, PolyKernel, SketchFeatures, symmetric_base_size};
pub use ridge::{KernelRidge, NormalEquations, Ridge, r2, rmse, select_by_r2};
