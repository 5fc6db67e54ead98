//! The Gaussian tree sketch of degree \\(q = p/2\\) (Ahle et al., paper Algorithm 1) on the
//! device, forward and backward, from dense projections and Hadamard products.

mod kernels;

use cubecl::prelude::*;

use crate::ops::{Strided, check_size, rows_of, u32_of};
use crate::{Buffer, Gpu, GpuError, Result};

/// A degree-\\(q\\) sketch \\(x \mapsto S^\top x^{\otimes q}\\) from \\(\mathbb R^h\\) to
/// \\(\mathbb R^r\\), \\(q\\) a power of two.
///
/// - \\(q = 1\\): one Gaussian JL projection, \\(x W\\) with \\(W \in \mathbb R^{h \times r}\\)
///   (already scaled).
/// - \\(q \ge 2\\): \\(\log_2 q\\) levels; level \\(l\\) has \\(q/2^{l+1}\\) nodes, each combining
///   two children \\(M_1, M_2\\) as \\(\sqrt{1/r}\,(M_1 G_1) \circ (M_2 G_2)\\); the leaves are
///   \\(x\\). Level \\(l\\)'s projections are stored side by side, `[d_l, 2·nodes_l·r]` row-major
///   (\\(d_0 = h\\), \\(d_l = r\\) above), in node order (\\(G_1\\) then \\(G_2\\) of each node) —
///   the layout of `polysketch_sketch::TreeSketch::dense_projections`.
#[derive(Debug, Clone)]
pub struct TreeSketchGpu<R: Runtime> {
    h: usize,
    r: usize,
    degree: usize,
    levels: Vec<Buffer<R>>,
}

/// What [`TreeSketchGpu::backward`] needs: each level's projections (the weights are fixed,
/// so the levels' inputs are not kept).
#[derive(Debug, Clone)]
pub struct SketchSaved<R: Runtime> {
    rows: usize,
    projections: Vec<Buffer<R>>,
}

impl<R: Runtime> TreeSketchGpu<R> {
    /// Uploads a sketch of degree `degree` from `h` to `r` given each level's projections
    /// (`levels[l]`: `[d_l, 2·nodes_l·r]` row-major; for `degree = 1` one `[h, r]` matrix).
    ///
    /// # Errors
    /// [`GpuError::InvalidArgument`] if `degree` is not a power of two up to 64, `h` or `r` is 0,
    /// or the number of levels differs from \\(\max(1, \log_2 q)\\); [`GpuError::Shape`] if a
    /// level's size is wrong; [`GpuError::NonFinite`] for a NaN or infinite weight.
    pub fn new(
        gpu: &Gpu<R>, h: usize, r: usize, degree: usize, levels: &[Vec<f32>],
    ) -> Result<Self> {
        const OP: &str = "TreeSketchGpu::new";
        if !(1..=64).contains(&degree) || !degree.is_power_of_two() || h == 0 || r == 0 {
            return Err(GpuError::InvalidArgument(format!(
                "{OP}: need a degree that is a power of two in 1..=64 and h, r > 0; got degree \
                 {degree}, h {h}, r {r}"
            )));
        }
        let count = (degree.trailing_zeros() as usize).max(1);
        if levels.len() != count {
            return Err(GpuError::InvalidArgument(format!(
                "{OP}: degree {degree} has {count} level(s), got {}",
                levels.len()
            )));
        }
        let mut bufs = Vec::with_capacity(count);
        for (l, w) in levels.iter().enumerate() {
            let d = if l == 0 { h } else { r };
            let width = if degree == 1 { r } else { 2 * (degree >> (l + 1)) * r };
            if w.len() != d * width {
                return Err(GpuError::Shape {
                    op: OP,
                    input: "levels",
                    expected: d * width,
                    got: w.len(),
                });
            }
            if let Some(index) = w.iter().position(|x| !x.is_finite()) {
                return Err(GpuError::NonFinite { op: OP, input: "levels", index });
            }
            bufs.push(gpu.upload(w)?);
        }
        Ok(Self { h, r, degree, levels: bufs })
    }

    /// Input dimension \\(h\\).
    pub fn input_dim(&self) -> usize {
        self.h
    }
    /// Sketch size \\(r\\).
    pub fn sketch_dim(&self) -> usize {
        self.r
    }
    /// Degree \\(q\\).
    pub fn degree(&self) -> usize {
        self.degree
    }

    fn nodes(&self, l: usize) -> usize {
        if self.degree == 1 { 1 } else { self.degree >> (l + 1) }
    }

    /// Projection widths `2·nodes_l·r` (`r` for degree 1).
    fn width(&self, l: usize) -> usize {
        if self.degree == 1 { self.r } else { 2 * self.nodes(l) * self.r }
    }

    /// Applies the sketch to each row of `x: [rows, h]`, giving `[rows, r]` and what the
    /// backward needs.
    ///
    /// # Errors
    /// [`GpuError::Shape`] if `x.len()` is not a multiple of `h`; [`GpuError::TooLarge`] past
    /// the kernels' sizes.
    pub fn forward(&self, gpu: &Gpu<R>, x: &Buffer<R>) -> Result<(Buffer<R>, SketchSaved<R>)> {
        const OP: &str = "TreeSketchGpu::forward";
        let (h, r) = (self.h, self.r);
        let rows = rows_of(OP, "x", x, h)?;
        let s = 1.0 / (r as f32).sqrt();
        let mut projections = Vec::new();
        let mut cur = x.clone();
        for (l, w) in self.levels.iter().enumerate() {
            let width = self.width(l);
            check_size(OP, "a level's projections", rows * width)?;
            let p = gpu.empty::<f32>(rows * width);
            if l == 0 {
                // P = X W₀, all of level 0's projections at once
                gpu.matmul(
                    (rows, width, h, 1),
                    (&cur, Strided::row_major(rows, h)),
                    (w, Strided::row_major(h, width)),
                    (&p, Strided::row_major(rows, width)),
                    1.0,
                    0.0,
                )?;
            } else {
                // P_k = M_k G_k for each child k (column blocks of width r)
                let blocks = Strided { row: width, col: 1, batch: r };
                gpu.matmul(
                    (rows, r, r, width / r),
                    (&cur, blocks),
                    (w, blocks),
                    (&p, blocks),
                    1.0,
                    0.0,
                )?;
            }
            cur = if self.degree == 1 {
                p.clone()
            } else {
                gpu.hadamard_forward(&p, self.nodes(l), r, s)?
            };
            projections.push(p);
        }
        Ok((cur, SketchSaved { rows, projections }))
    }

    /// The gradient with respect to the input rows, given the gradient `dout: [rows, r]` of the
    /// output.
    ///
    /// # Errors
    /// [`GpuError::Shape`] if `dout` does not match the forward.
    pub fn backward(
        &self, gpu: &Gpu<R>, saved: &SketchSaved<R>, dout: &Buffer<R>,
    ) -> Result<Buffer<R>> {
        const OP: &str = "TreeSketchGpu::backward";
        let (h, r, rows) = (self.h, self.r, saved.rows);
        crate::ops::check_len(OP, "dout", dout, rows * r)?;
        let s = 1.0 / (r as f32).sqrt();
        let mut g = dout.clone();
        for l in (0..self.levels.len()).rev() {
            let width = self.width(l);
            let dp = if self.degree == 1 {
                g.clone()
            } else {
                gpu.hadamard_backward(&saved.projections[l], &g, self.nodes(l), r, s)?
            };
            let w = &self.levels[l];
            if l == 0 {
                // dX = dP W₀ᵀ
                let dx = gpu.empty::<f32>(rows * h);
                gpu.matmul(
                    (rows, h, width, 1),
                    (&dp, Strided::row_major(rows, width)),
                    (w, Strided::row_major(h, width).t()),
                    (&dx, Strided::row_major(rows, h)),
                    1.0,
                    0.0,
                )?;
                g = dx;
            } else {
                // dM_k = dP_k G_kᵀ
                let blocks = Strided { row: width, col: 1, batch: r };
                let dm = gpu.empty::<f32>(rows * width);
                gpu.matmul(
                    (rows, r, r, width / r),
                    (&dp, blocks),
                    (w, blocks.t()),
                    (&dm, blocks),
                    1.0,
                    0.0,
                )?;
                g = dm;
            }
        }
        Ok(g)
    }
}

impl<R: Runtime> Gpu<R> {
    /// A tree level's combination, node `j` = `s · p[2j] ∘ p[2j+1]` (`p: [rows, 2·nodes·r]`
    /// → `[rows, nodes·r]`).
    pub(crate) fn hadamard_forward(
        &self, p: &Buffer<R>, nodes: usize, r: usize, s: f32,
    ) -> Result<Buffer<R>> {
        const OP: &str = "Gpu::hadamard_forward";
        let out = self.empty(p.len() / 2);
        // SAFETY: p holds rows·2·nodes·r, out rows·nodes·r; bounds checked per element.
        unsafe {
            launch_1d!(self, kernels::hadamard_forward::<R>, (out.len(), 256);
                p.arg(), out.arg(), u32_of(OP, "nodes", nodes)?, u32_of(OP, "r", r)?, s)
        };
        Ok(out)
    }

    /// Backward of [`hadamard_forward`](Self::hadamard_forward).
    pub(crate) fn hadamard_backward(
        &self, p: &Buffer<R>, dout: &Buffer<R>, nodes: usize, r: usize, s: f32,
    ) -> Result<Buffer<R>> {
        const OP: &str = "Gpu::hadamard_backward";
        let dp = self.empty(p.len());
        // SAFETY: as in the forward.
        unsafe {
            launch_1d!(self, kernels::hadamard_backward::<R>, (dout.len(), 256);
                p.arg(), dout.arg(), dp.arg(), u32_of(OP, "nodes", nodes)?, u32_of(OP, "r", r)?, s)
        };
        Ok(dp)
    }
}
