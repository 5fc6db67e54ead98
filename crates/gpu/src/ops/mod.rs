//! Checked launchers of the kernels: each validates its shapes, allocates its outputs and
//! returns typed errors; the kernels themselves are unchecked.

pub(crate) mod kernels;

use cubecl::prelude::*;

use crate::{Buffer, Gpu, GpuError, Result};

/// The largest cube count wgpu accepts along one axis.
pub(crate) const MAX_AXIS: usize = 65_535;

/// A `u32` kernel argument, or an error naming what is too large.
pub(crate) fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| GpuError::TooLarge {
        op,
        reason: format!("{what} = {v} does not fit the kernels' 32-bit indices"),
    })
}

pub(crate) fn check_len<R: Runtime, E>(
    op: &'static str, name: &'static str, b: &Buffer<R, E>, expected: usize,
) -> Result<()> {
    if b.len() != expected {
        return Err(GpuError::Shape { op, input: name, expected, got: b.len() });
    }
    Ok(())
}

/// The number of rows of width `h > 0` in `x`, or [`GpuError::Shape`] if its length is not a
/// multiple of `h`.
pub(crate) fn rows_of<R: Runtime, E>(
    op: &'static str, name: &'static str, x: &Buffer<R, E>, h: usize,
) -> Result<usize> {
    if !x.len().is_multiple_of(h) {
        return Err(GpuError::Shape { op, input: name, expected: x.len() / h * h, got: x.len() });
    }
    Ok(x.len() / h)
}

/// \\(\epsilon\\) of every layer norm on the device (the attention layer's and the learned
/// networks'): the CPU crate's `polysketch_attention::layernorm::LN_EPS`, which a test of the
/// attention crate checks it against.
pub const LN_EPS: f32 = 1e-5;

/// Elements any one buffer may hold: indices stay below 2³¹ on every backend.
pub const MAX_ELEMENTS: usize = i32::MAX as usize;

pub(crate) fn check_size(op: &'static str, what: &str, len: usize) -> Result<()> {
    if len > MAX_ELEMENTS {
        return Err(GpuError::TooLarge {
            op,
            reason: format!("{what} would hold {len} elements (limit {MAX_ELEMENTS})"),
        });
    }
    Ok(())
}

/// One operand of [`Gpu::matmul`]: a batch of matrices inside a buffer, element `(i, j)` of
/// matrix `z` at `offset + z·batch + i·row + j·col`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strided {
    /// Stride between rows.
    pub row: usize,
    /// Stride between columns.
    pub col: usize,
    /// Stride between the matrices of the batch.
    pub batch: usize,
}

impl Strided {
    /// Row-major `[rows, cols]` matrices stored one after the other.
    pub fn row_major(rows: usize, cols: usize) -> Self {
        Self { row: cols, col: 1, batch: rows * cols }
    }
    /// The transpose of the same storage.
    pub fn t(self) -> Self {
        Self { row: self.col, col: self.row, batch: self.batch }
    }
    /// Largest index touched by a `[rows, cols]` batch of `count`, plus one.
    fn extent(&self, rows: usize, cols: usize, count: usize) -> usize {
        if rows == 0 || cols == 0 || count == 0 {
            return 0;
        }
        (count - 1) * self.batch + (rows - 1) * self.row + (cols - 1) * self.col + 1
    }
}

impl<R: Runtime> Gpu<R> {
    /// Converts a buffer of any float type to `f32` (the kernels' type); for `E = f32` the
    /// same buffer, without a copy.
    ///
    /// # Errors
    /// [`GpuError::Unsupported`] if the device lacks `E`.
    pub fn to_f32<E: Float + CubeElement>(&self, x: &Buffer<R, E>) -> Result<Buffer<R>> {
        if let Some(same) = x.retyped::<f32>() {
            return Ok(same);
        }
        self.require::<E>("Gpu::to_f32")?;
        let y = self.empty::<f32>(x.len());
        // SAFETY: both buffers hold `len` elements; the kernel checks `ABSOLUTE_POS < len`.
        unsafe { launch_1d!(self, kernels::to_f32::<E, R>, (x.len(), 256); x.arg(), y.arg()) };
        Ok(y)
    }

    /// Converts an `f32` buffer to `E` (rounding to nearest for `bf16`); for `E = f32` the
    /// same buffer, without a copy.
    ///
    /// # Errors
    /// [`GpuError::Unsupported`] if the device lacks `E`.
    pub fn from_f32<E: Float + CubeElement>(&self, x: &Buffer<R>) -> Result<Buffer<R, E>> {
        if let Some(same) = x.retyped::<E>() {
            return Ok(same);
        }
        self.require::<E>("Gpu::from_f32")?;
        let y = self.empty::<E>(x.len());
        // SAFETY: as in `to_f32`.
        unsafe { launch_1d!(self, kernels::from_f32::<E, R>, (x.len(), 256); x.arg(), y.arg()) };
        Ok(y)
    }

    /// `y += a·x`.
    ///
    /// # Errors
    /// [`GpuError::Shape`] if the lengths differ.
    pub fn axpy(&self, a: f32, x: &Buffer<R>, y: &Buffer<R>) -> Result<()> {
        check_len("Gpu::axpy", "x", x, y.len())?;
        // SAFETY: equal lengths, bounds checked in the kernel.
        unsafe { launch_1d!(self, kernels::axpy::<R>, (y.len(), 256); x.arg(), y.arg(), a) };
        Ok(())
    }

    /// Batched strided product `C_z = α A_z B_z + β C_z` for `z < count`, `A_z: [m, k]`,
    /// `B_z: [k, n]`, `C_z: [m, n]` (C's columns contiguous). `β = 0` overwrites `C`.
    ///
    /// # Errors
    /// [`GpuError::Shape`] if an operand's strides reach past its buffer or C's column
    /// stride is not 1; [`GpuError::TooLarge`] past 32-bit indices or 65,535 matrices.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self, (m, n, k, count): (usize, usize, usize, usize), a: (&Buffer<R>, Strided),
        b: (&Buffer<R>, Strided), c: (&Buffer<R>, Strided), alpha: f32, beta: f32,
    ) -> Result<()> {
        const OP: &str = "Gpu::matmul";
        for (name, (buf, s), rows, cols) in [("a", a, m, k), ("b", b, k, n), ("c", c, m, n)] {
            let need = s.extent(rows, cols, count);
            if need > buf.len() {
                return Err(GpuError::Shape {
                    op: OP,
                    input: name,
                    expected: need,
                    got: buf.len(),
                });
            }
        }
        if c.1.col != 1 {
            return Err(GpuError::InvalidArgument(format!(
                "{OP}: C's column stride must be 1, got {}",
                c.1.col
            )));
        }
        if m == 0 || n == 0 || count == 0 {
            return Ok(());
        }
        if count > MAX_AXIS {
            return Err(GpuError::TooLarge {
                op: OP,
                reason: format!("{count} matrices in one batch (limit {MAX_AXIS})"),
            });
        }
        let t = kernels::TILE as usize;
        let u = |w, v| u32_of(OP, w, v);
        let count_cubes = CubeCount::Static(
            u("column tiles", n.div_ceil(t))?,
            u("row tiles", m.div_ceil(t))?,
            count as u32,
        );
        // SAFETY: every index the kernel forms is below the extents checked above.
        unsafe {
            launch!(self, kernels::matmul::<R>,
                count_cubes, CubeDim::new_2d(kernels::TILE, kernels::TILE);
                a.0.arg(), b.0.arg(), c.0.arg(), u("m", m)?, u("n", n)?, u("k", k)?,
                u("stride", a.1.row)?, u("stride", a.1.col)?, u("stride", a.1.batch)?,
                u("stride", b.1.row)?, u("stride", b.1.col)?, u("stride", b.1.batch)?,
                u("stride", c.1.row)?, u("stride", c.1.batch)?, alpha, beta)
        };
        Ok(())
    }

    /// Layer norm of the rows of `x: [rows, h]`:
    /// \\(y = s\,(g \circ \hat x + \beta)\\), \\(\hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}\\).
    ///
    /// # Errors
    /// [`GpuError::Shape`] if `x.len()` is not a multiple of `h = gain.len()` or the bias
    /// length differs; [`GpuError::InvalidArgument`] for `h = 0`.
    pub fn layernorm_forward(
        &self, x: &Buffer<R>, gain: &Buffer<R>, bias: &Buffer<R>, scale: f32, eps: f32,
    ) -> Result<(Buffer<R>, LnState<R>)> {
        const OP: &str = "Gpu::layernorm_forward";
        let h = gain.len();
        if h == 0 {
            return Err(GpuError::InvalidArgument(format!("{OP}: h = 0")));
        }
        check_len(OP, "bias", bias, h)?;
        let rows = rows_of(OP, "x", x, h)?;
        let (y, xhat, rstd) = (self.empty(x.len()), self.empty(x.len()), self.empty(rows));
        // SAFETY: shapes checked above; one unit per row, bounds checked.
        unsafe {
            launch_1d!(self, kernels::layernorm_forward::<R>, (rows, 64);
                x.arg(), gain.arg(), bias.arg(), y.arg(), xhat.arg(), rstd.arg(),
                u32_of(OP, "h", h)?, scale, eps)
        };
        Ok((y, LnState { xhat, rstd, scale }))
    }

    /// Backward of [`layernorm_forward`](Self::layernorm_forward): \\(\partial L/\partial x\\)
    /// on the device and the parameter gradients \\(\partial L/\partial g\\),
    /// \\(\partial L/\partial\beta\\) on the host (summed over row chunks in a fixed order).
    ///
    /// # Errors
    /// [`GpuError::Shape`] if `dy` does not match the forward's input.
    pub fn layernorm_backward(
        &self, dy: &Buffer<R>, state: &LnState<R>, gain: &Buffer<R>,
    ) -> Result<(Buffer<R>, Vec<f32>, Vec<f32>)> {
        const OP: &str = "Gpu::layernorm_backward";
        let h = gain.len();
        check_len(OP, "dy", dy, state.xhat.len())?;
        let rows = state.rstd.len();
        let dx = self.empty(dy.len());
        let u = |w, v| u32_of(OP, w, v);
        // SAFETY: shapes as in the forward.
        unsafe {
            launch_1d!(self, kernels::layernorm_backward::<R>, (rows, 64);
                dy.arg(), state.xhat.arg(), state.rstd.arg(), gain.arg(), dx.arg(), u("h", h)?,
                state.scale)
        };
        // in the forward y = s (g x̂ + β): dβ = s Σ dy, dg = s Σ dy ∘ x̂
        let scaled = |v: Vec<f32>| v.into_iter().map(|x| state.scale * x).collect::<Vec<_>>();
        let dg = scaled(self.column_sums(dy, Some(&state.xhat), h)?);
        let db = scaled(self.column_sums(dy, None, h)?);
        Ok((dx, dg, db))
    }
}

impl<R: Runtime> Gpu<R> {
    /// `y[i, :] += b` for `y: [rows, b.len()]`.
    pub(crate) fn add_bias(&self, y: &Buffer<R>, b: &Buffer<R>) {
        // SAFETY: y.len() is a multiple of b.len() (callers' shapes); bounds checked.
        unsafe { launch_1d!(self, kernels::add_bias::<R>, (y.len(), 256); y.arg(), b.arg()) };
    }

    /// `gelu(a)` elementwise (tanh form).
    pub(crate) fn gelu_forward(&self, a: &Buffer<R>) -> Buffer<R> {
        let z = self.empty(a.len());
        // SAFETY: equal lengths, bounds checked.
        unsafe { launch_1d!(self, kernels::gelu_forward::<R>, (a.len(), 256); a.arg(), z.arg()) };
        z
    }

    /// `dz ∘ gelu'(a)`.
    pub(crate) fn gelu_backward(&self, a: &Buffer<R>, dz: &Buffer<R>) -> Buffer<R> {
        let da = self.empty(a.len());
        // SAFETY: equal lengths, bounds checked.
        unsafe {
            launch_1d!(self, kernels::gelu_backward::<R>, (a.len(), 256); a.arg(), dz.arg(), da.arg())
        };
        da
    }

    /// Column sums of `x: [rows, cols]` (of `x ∘ w` given `w`) on the host, added over chunks
    /// of 256 rows in a fixed order.
    ///
    /// # Errors
    /// [`GpuError::Device`] if reading back fails.
    pub(crate) fn column_sums(
        &self, x: &Buffer<R>, w: Option<&Buffer<R>>, cols: usize,
    ) -> Result<Vec<f32>> {
        const CHUNK: usize = 256;
        let rows = x.len() / cols;
        let chunks = rows.div_ceil(CHUNK).max(1);
        let part = self.empty(chunks * cols);
        // SAFETY: part holds chunks·cols entries; rows beyond `rows` are not read; w, when
        // given, has x's shape.
        unsafe {
            launch_1d!(self, kernels::column_partials::<R>, (part.len(), 64);
                x.arg(), w.unwrap_or(x).arg(), part.arg(),
                u32_of("Gpu::column_sums", "cols", cols)?,
                u32_of("Gpu::column_sums", "rows", rows)?, CHUNK as u32, w.is_some())
        };
        let mut s = vec![0.0f32; cols];
        for c in self.download(&part)?.chunks_exact(cols) {
            s.iter_mut().zip(c).for_each(|(a, b)| *a += b);
        }
        Ok(s)
    }
}

/// What [`Gpu::layernorm_backward`] needs from the forward.
#[derive(Debug, Clone)]
pub struct LnState<R: Runtime> {
    /// `[rows, h]`: \\(\hat x\\).
    pub xhat: Buffer<R>,
    /// `[rows]`: \\(1/\sqrt{\sigma^2 + \epsilon}\\).
    pub rstd: Buffer<R>,
    /// The output scale \\(s\\).
    pub scale: f32,
}
