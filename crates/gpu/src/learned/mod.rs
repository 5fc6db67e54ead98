//! Learned sketches (paper Algorithm 2, Appendix D) on the device, forward and backward with
//! parameter gradients: the tree of small networks of `polysketch-attention`'s
//! `LearnedSketch`, run on [`Gpu::matmul`] and elementwise kernels.
//!
//! A learned sketch of degree \\(d\\) (a power of two, at least 2) has \\(d - 1\\) nodes in
//! post-order (children before parents, the root last); node \\(i\\) combines its inputs
//! \\(M_1, M_2\\) (the rows, or its children's outputs) as
//! \\(\sqrt r\tanh(f_{2i}(M_1) \circ f_{2i+1}(M_2)/\sqrt r)\\), where each network is
//! \\[ f(x) = W_4^\top\mathrm{gelu}(W_3^\top\mathrm{LN}_1(W_2^\top\mathrm{gelu}(W_1^\top
//!   \mathrm{LN}_0(x) + b_1) + b_2) + b_3) + b_4 \\]
//! with hidden sizes \\([8r, r, 8r]\\) and gelu in its tanh form.

mod kernels;

use cubecl::prelude::*;

use crate::ops::{LN_EPS, LnState, Strided, check_len, rows_of};
use crate::{Buffer, Gpu, GpuError, Result};

/// Width of the wide hidden layers in units of \\(r\\).
const WIDE: usize = 8;
/// Parameters per network, in the CPU order: `ln0.gain, ln0.bias, w1, b1, w2, b2, ln1.gain,
/// ln1.bias, w3, b3, w4, b4`.
pub const PARAMS_PER_NETWORK: usize = 12;

// the topology of the CPU sketch, from the same source file (it uses nothing but `core`)
#[path = "../../../core/src/tree.rs"]
#[allow(dead_code)]
mod tree;
use tree::{Src, tree_nodes};

/// One network on the device (`p[i]` in the CPU order).
#[derive(Debug, Clone)]
struct Network<R: Runtime> {
    d: usize,
    p: Vec<Buffer<R>>,
}

/// What one network's backward needs.
#[derive(Debug, Clone)]
struct NetworkSaved<R: Runtime> {
    y0: Buffer<R>,
    ln0: LnState<R>,
    a1: Buffer<R>,
    y2: Buffer<R>,
    ln1: LnState<R>,
    a3: Buffer<R>,
}

/// A learned sketch on the device: the tree of networks of Algorithm 2, nodes
/// \\(\sqrt r\tanh(f_1(M_1) \circ f_2(M_2)/\sqrt r)\\), shared by the heads.
///
/// # Shapes
/// input `[rows, h]` → `[rows, r]`.
#[derive(Debug, Clone)]
pub struct LearnedSketchGpu<R: Runtime> {
    h: usize,
    r: usize,
    nodes: Vec<(Src, Src)>,
    networks: Vec<Network<R>>,
}

/// What [`LearnedSketchGpu::backward`] needs from the forward.
#[derive(Debug, Clone)]
pub struct LearnedSavedGpu<R: Runtime> {
    rows: usize,
    saved: Vec<NetworkSaved<R>>,
    /// per network: its output
    m: Vec<Buffer<R>>,
    /// per node: tanh(·)
    t: Vec<Buffer<R>>,
}

impl<R: Runtime> Gpu<R> {
    /// `x W + b` for `x: [rows, din]`, `W: [din, dout]` (`dout = b.len()`).
    fn dense(&self, x: &Buffer<R>, rows: usize, w: &Buffer<R>, b: &Buffer<R>) -> Result<Buffer<R>> {
        let dout = b.len();
        let din = w.len() / dout;
        let y = self.empty(rows * dout);
        self.matmul(
            (rows, dout, din, 1),
            (x, Strided::row_major(rows, din)),
            (w, Strided::row_major(din, dout)),
            (&y, Strided::row_major(rows, dout)),
            1.0,
            0.0,
        )?;
        self.add_bias(&y, b);
        Ok(y)
    }

    /// The gradients of a dense layer given `dy: [rows, dout]`: `(∂x = dy Wᵀ, ∂W = xᵀ dy,
    /// ∂b = Σ_rows dy)`, the last two on the host.
    fn dense_backward(
        &self, x: &Buffer<R>, w: &Buffer<R>, dy: &Buffer<R>,
        (rows, din, dout): (usize, usize, usize),
    ) -> Result<(Buffer<R>, Vec<f32>, Vec<f32>)> {
        let dx = self.empty(rows * din);
        self.matmul(
            (rows, din, dout, 1),
            (dy, Strided::row_major(rows, dout)),
            (w, Strided::row_major(din, dout).t()),
            (&dx, Strided::row_major(rows, din)),
            1.0,
            0.0,
        )?;
        let dw = self.empty(din * dout);
        self.matmul(
            (din, dout, rows, 1),
            (x, Strided::row_major(rows, din).t()),
            (dy, Strided::row_major(rows, dout)),
            (&dw, Strided::row_major(din, dout)),
            1.0,
            0.0,
        )?;
        Ok((dx, self.download(&dw)?, self.column_sums(dy, None, dout)?))
    }
}

impl<R: Runtime> Network<R> {
    fn forward(
        &self, gpu: &Gpu<R>, x: &Buffer<R>, rows: usize,
    ) -> Result<(Buffer<R>, NetworkSaved<R>)> {
        let p = &self.p;
        let (y0, ln0) = gpu.layernorm_forward(x, &p[0], &p[1], 1.0, LN_EPS)?;
        let a1 = gpu.dense(&y0, rows, &p[2], &p[3])?;
        let a2 = gpu.dense(&gpu.gelu_forward(&a1), rows, &p[4], &p[5])?;
        let (y2, ln1) = gpu.layernorm_forward(&a2, &p[6], &p[7], 1.0, LN_EPS)?;
        let a3 = gpu.dense(&y2, rows, &p[8], &p[9])?;
        let out = gpu.dense(&gpu.gelu_forward(&a3), rows, &p[10], &p[11])?;
        Ok((out, NetworkSaved { y0, ln0, a1, y2, ln1, a3 }))
    }

    /// `∂x` on the device and the 12 parameter gradients on the host.
    fn backward(
        &self, gpu: &Gpu<R>, s: &NetworkSaved<R>, dout: &Buffer<R>, (rows, r): (usize, usize),
    ) -> Result<(Buffer<R>, Vec<Vec<f32>>)> {
        let (p, d, w) = (&self.p, self.d, WIDE * r);
        let mut g = vec![Vec::new(); PARAMS_PER_NETWORK];
        // out = gelu(a3) W4 + b4
        let (da3, dw4, db4) = gelu_dense_backward(gpu, &s.a3, &p[10], dout, (rows, w, r))?;
        (g[10], g[11]) = (dw4, db4);
        // a3 = y2 W3 + b3, y2 = LN1(a2)
        let (dy2, dw3, db3) = gpu.dense_backward(&s.y2, &p[8], &da3, (rows, r, w))?;
        (g[8], g[9]) = (dw3, db3);
        let (da2, dg1, dbeta1) = gpu.layernorm_backward(&dy2, &s.ln1, &p[6])?;
        (g[6], g[7]) = (dg1, dbeta1);
        // a2 = gelu(a1) W2 + b2
        let (da1, dw2, db2) = gelu_dense_backward(gpu, &s.a1, &p[4], &da2, (rows, w, r))?;
        (g[4], g[5]) = (dw2, db2);
        // a1 = y0 W1 + b1, y0 = LN0(x)
        let (dy0, dw1, db1) = gpu.dense_backward(&s.y0, &p[2], &da1, (rows, d, w))?;
        (g[2], g[3]) = (dw1, db1);
        let (dx, dg0, dbeta0) = gpu.layernorm_backward(&dy0, &s.ln0, &p[0])?;
        (g[0], g[1]) = (dg0, dbeta0);
        Ok((dx, g))
    }
}

/// The shapes of one network's parameters `ℝ^d → ℝ^r`, in the CPU order.
fn shapes(d: usize, r: usize) -> [usize; PARAMS_PER_NETWORK] {
    let w = WIDE * r;
    [d, d, d * w, w, w * r, r, r, r, r * w, w, w * r, r]
}

impl<R: Runtime> LearnedSketchGpu<R> {
    /// Uploads a learned sketch of degree `degree` from `h` to `r` given its parameters in the
    /// order of `polysketch-attention`'s `LearnedSketch::parameters` (12 per network, networks
    /// `f1, f2` of each node in post-order; matrices row-major, \\(y = xW + b\\)).
    ///
    /// # Errors
    /// [`GpuError::InvalidArgument`] for `h` or `r` = 0, a degree that is not a power of two of
    /// at least 2, or the wrong number of parameters; [`GpuError::Shape`] for a parameter of
    /// the wrong size; [`GpuError::NonFinite`] for a NaN or infinity.
    pub fn new(gpu: &Gpu<R>, h: usize, r: usize, degree: usize, params: &[&[f32]]) -> Result<Self> {
        const OP: &str = "LearnedSketchGpu::new";
        let nodes = tree_nodes(degree).filter(|_| h > 0 && r > 0).ok_or_else(|| {
            GpuError::InvalidArgument(format!(
                "{OP}: need h, r > 0 and a degree that is a power of two in 2..=64, got h {h}, \
                 r {r}, degree {degree}"
            ))
        })?;
        let dims: Vec<usize> = nodes
            .iter()
            .flat_map(|&(a, b)| [a, b])
            .map(|s| if s == Src::Input { h } else { r })
            .collect();
        if params.len() != PARAMS_PER_NETWORK * dims.len() {
            return Err(GpuError::InvalidArgument(format!(
                "{OP}: degree {degree} has {} networks of {PARAMS_PER_NETWORK} parameters, got {}",
                dims.len(),
                params.len()
            )));
        }
        let mut networks = Vec::with_capacity(dims.len());
        for (k, &d) in dims.iter().enumerate() {
            let mut p = Vec::with_capacity(PARAMS_PER_NETWORK);
            for (i, &len) in shapes(d, r).iter().enumerate() {
                let x = params[k * PARAMS_PER_NETWORK + i];
                if x.len() != len {
                    return Err(GpuError::Shape {
                        op: OP,
                        input: "params",
                        expected: len,
                        got: x.len(),
                    });
                }
                if let Some(index) = x.iter().position(|v| !v.is_finite()) {
                    return Err(GpuError::NonFinite { op: OP, input: "params", index });
                }
                p.push(gpu.upload(x)?);
            }
            networks.push(Network { d, p });
        }
        Ok(Self { h, r, nodes, networks })
    }

    /// Number of parameter tensors (12 per network).
    pub fn parameter_count(&self) -> usize {
        PARAMS_PER_NETWORK * self.networks.len()
    }

    /// `L(x)` for the rows of `x: [rows, h]` → `[rows, r]`, and what the backward needs.
    ///
    /// # Errors
    /// [`GpuError::Shape`] if `x.len()` is not a multiple of `h`.
    pub fn forward(&self, gpu: &Gpu<R>, x: &Buffer<R>) -> Result<(Buffer<R>, LearnedSavedGpu<R>)> {
        let rows = rows_of("LearnedSketchGpu::forward", "x", x, self.h)?;
        let mut outs: Vec<Buffer<R>> = Vec::with_capacity(self.nodes.len());
        let (mut saved, mut m, mut t) = (Vec::new(), Vec::new(), Vec::new());
        for (i, &(a, b)) in self.nodes.iter().enumerate() {
            for (k, src) in [(2 * i, a), (2 * i + 1, b)] {
                let input = match src {
                    Src::Input => x,
                    Src::Node(j) => &outs[j],
                };
                let (out, s) = self.networks[k].forward(gpu, input, rows)?;
                m.push(out);
                saved.push(s);
            }
            let (ti, oi) = gpu.node_forward(&m[2 * i], &m[2 * i + 1], self.r);
            t.push(ti);
            outs.push(oi);
        }
        let root = outs.pop().expect("a learned sketch has a node");
        Ok((root, LearnedSavedGpu { rows, saved, m, t }))
    }

    /// Given `dout = ∂L/∂L(x)` (`[rows, r]`): `∂L/∂x` on the device and the parameter
    /// gradients on the host, in the order of [`new`](Self::new)'s parameters.
    ///
    /// # Errors
    /// [`GpuError::Shape`] if `dout` does not match the forward.
    pub fn backward(
        &self, gpu: &Gpu<R>, s: &LearnedSavedGpu<R>, dout: &Buffer<R>,
    ) -> Result<(Buffer<R>, Vec<Vec<f32>>)> {
        let (rows, r) = (s.rows, self.r);
        check_len("LearnedSketchGpu::backward", "dout", dout, rows * r)?;
        let mut douts: Vec<Option<Buffer<R>>> = vec![None; self.nodes.len()];
        douts[self.nodes.len() - 1] = Some(dout.clone());
        let dx = gpu.zeros(rows * self.h);
        let mut grads = vec![Vec::new(); self.parameter_count()];
        for (i, &(a, b)) in self.nodes.iter().enumerate().rev() {
            let d = douts[i].take().expect("a parent sets its children's gradients first");
            let (dm1, dm2) = gpu.node_backward(&d, &s.t[i], &s.m[2 * i], &s.m[2 * i + 1]);
            for (k, dm, src) in [(2 * i, dm1, a), (2 * i + 1, dm2, b)] {
                let (din, g) = self.networks[k].backward(gpu, &s.saved[k], &dm, (rows, r))?;
                for (slot, v) in grads[k * PARAMS_PER_NETWORK..].iter_mut().zip(g) {
                    *slot = v;
                }
                match src {
                    Src::Input => gpu.axpy(1.0, &din, &dx)?,
                    Src::Node(j) => douts[j] = Some(din),
                }
            }
        }
        Ok((dx, grads))
    }
}

/// Backward of `gelu(a) W + b` (the networks' wide-to-narrow layers) given `dout`:
/// `(∂a, ∂W, ∂b)`; gelu is recomputed from `a`.
fn gelu_dense_backward<R: Runtime>(
    gpu: &Gpu<R>, a: &Buffer<R>, w: &Buffer<R>, dout: &Buffer<R>, dims: (usize, usize, usize),
) -> Result<(Buffer<R>, Vec<f32>, Vec<f32>)> {
    let (dz, dw, db) = gpu.dense_backward(&gpu.gelu_forward(a), w, dout, dims)?;
    Ok((gpu.gelu_backward(a, &dz), dw, db))
}

impl<R: Runtime> Gpu<R> {
    /// A learned node: `(t, √r·t)` with `t = tanh(m₁ ∘ m₂/√r)`.
    pub(crate) fn node_forward(
        &self, m1: &Buffer<R>, m2: &Buffer<R>, r: usize,
    ) -> (Buffer<R>, Buffer<R>) {
        let (t, out) = (self.empty(m1.len()), self.empty(m1.len()));
        // SAFETY: equal lengths, bounds checked.
        unsafe {
            launch_1d!(self, kernels::node_forward::<R>, (m1.len(), 256);
                m1.arg(), m2.arg(), t.arg(), out.arg(), (r as f32).sqrt())
        };
        (t, out)
    }

    /// Backward of [`node_forward`](Self::node_forward): `(∂m₁, ∂m₂)`.
    pub(crate) fn node_backward(
        &self, dout: &Buffer<R>, t: &Buffer<R>, m1: &Buffer<R>, m2: &Buffer<R>,
    ) -> (Buffer<R>, Buffer<R>) {
        let (dm1, dm2) = (self.empty(m1.len()), self.empty(m1.len()));
        // SAFETY: equal lengths, bounds checked.
        unsafe {
            launch_1d!(self, kernels::node_backward::<R>, (dout.len(), 256);
                dout.arg(), t.arg(), m1.arg(), m2.arg(), dm1.arg(), dm2.arg())
        };
        (dm1, dm2)
    }
}
