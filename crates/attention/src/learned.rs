//! Learned sketches (paper Section 2.3, Appendix D, Algorithm 2): the Gaussian projections of
//! the random tree replaced by small trained networks.
//!
//! A learned sketch of degree \\(d = p/2\\) (a power of two, at least 2) is a binary tree with
//! \\(d - 1\\) nodes and \\(d\\) leaves, the leaves being the input rows \\(x \in \mathbb R^h\\).
//! Each node combines its two inputs \\(M_1, M_2\\) (leaves, or the outputs of its children)
//! through two networks \\(f_1, f_2\\):
//! \\[ \mathrm{node}(M_1, M_2) = \sqrt r\,\tanh\!\big(\tfrac{1}{\sqrt r}\, f_1(M_1) \circ
//!     f_2(M_2)\big) \in \mathbb R^{r}, \\]
//! and the root's output is the sketch \\(L\\) that the layer self-tensors, \\(\phi'(x) = L
//! \otimes L\\) (so \\(\langle\phi'(q), \phi'(k)\rangle = \langle L_q, L_k\rangle^2 \ge 0\\)).
//! There are \\(2(d - 1) = p - 2\\) networks, each
//! \\[ f(x) = W_4^\top\,\mathrm{gelu}\big(W_3^\top\,\mathrm{LN}_1(W_2^\top\,
//!     \mathrm{gelu}(W_1^\top\,\mathrm{LN}_0(x) + b_1) + b_2) + b_3\big) + b_4, \\]
//! hidden sizes \\([8r, r, 8r]\\), input \\(h\\) (on leaves) or \\(r\\), output \\(r\\); the layer
//! norms have a learned gain and bias, and gelu is the tanh form
//! \\(\tfrac12 x(1 + \tanh(\sqrt{2/\pi}(x + 0.044715x^3)))\\).
//!
//! The networks are shared by the heads of a layer; their weights start at
//! \\(\mathcal N(0, 1/\text{fan-in})\\), biases at 0, gains at 1, all from the seed.

use faer::{Mat, MatMut, MatRef, Par};
use polysketch_core::bf16::gemm_seq as mm;
use polysketch_core::linalg::scaled_copy;
use polysketch_core::tree::{Src, tree_nodes};
use polysketch_core::{Scalar, normal, seeded_rng};
use polysketch_sketch::PolySketch;

use crate::layernorm::{LnSaved, layernorm_backward, layernorm_rows_forward};
use crate::nn::{Param, ParamMut, gelu_one, gelu_with_grad};
use crate::{AttentionError, Result};

/// Width of the wide hidden layers, in units of \\(r\\): the hidden sizes are \\([8r, r, 8r]\\).
pub const WIDE: usize = 8;

/// The parameters of one network, in order: names (after the network's prefix) and indices.
const NAMES: [&str; 12] = [
    "ln0.gain", "ln0.bias", "w1", "b1", "w2", "b2", "ln1.gain", "ln1.bias", "w3", "b3", "w4", "b4",
];
const G0: usize = 0;
const B0: usize = 1;
const W1: usize = 2;
const C1: usize = 3;
const W2: usize = 4;
const C2: usize = 5;
const G1: usize = 6;
const B1: usize = 7;
const W3: usize = 8;
const C3: usize = 9;
const W4: usize = 10;
const C4: usize = 11;

/// One network \\(f: \mathbb R^{d} \to \mathbb R^r\\); `p[i]` is parameter `NAMES[i]`.
#[derive(Debug, Clone)]
struct Mlp<T> {
    d: usize,
    p: Vec<Vec<T>>,
}

/// The shapes of the parameters of a network \\(\mathbb R^d \to \mathbb R^r\\), in `NAMES` order.
fn shapes(d: usize, r: usize) -> [Vec<usize>; 12] {
    let w = WIDE.saturating_mul(r);
    [
        vec![d],
        vec![d],
        vec![d, w],
        vec![w],
        vec![w, r],
        vec![r],
        vec![r],
        vec![r],
        vec![r, w],
        vec![w],
        vec![w, r],
        vec![r],
    ]
}

fn rm<T>(x: &[T], rows: usize, cols: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(&x[..rows * cols], rows, cols)
}

fn rm_mut<T>(x: &mut [T], rows: usize, cols: usize) -> MatMut<'_, T> {
    MatMut::from_row_major_slice_mut(&mut x[..rows * cols], rows, cols)
}

/// `y = x W` for row-major `x: [n, din]`, `W: [din, dout]`, `y: [n, dout]` (see [`mm`]).
fn product<T: Scalar>(
    x: &[T], n: usize, din: usize, w: &[T], dout: usize, y: &mut [T], bf16: bool,
) {
    mm(rm_mut(y, n, dout), rm(x, n, din), rm(w, din, dout), false, bf16);
}

/// `y = x W + b` for row-major `x: [n, din]`, `W: [din, dout]`, `y: [n, dout]`.
fn dense<T: Scalar>(x: &[T], n: usize, din: usize, w: &[T], b: &[T], y: &mut [T], bf16: bool) {
    product(x, n, din, w, b.len(), y, bf16);
    add_bias(&mut y[..n * b.len()], b);
}

polysketch_core::multiversion! {
    /// `a[i, c] = x[i, c] + b[c]` and `z = gelu(a)`, in one pass over row-major `x`, `a`, `z`
    /// (rows of `b.len()`). `x` is a product just made (in cache); `a` is kept for the
    /// backward, so it is written once, never read back here.
    fn bias_gelu<T: Scalar>(x: &[T], b: &[T], a: &mut [T], z: &mut [T]) {
        let rows = x.chunks_exact(b.len()).zip(a.chunks_exact_mut(b.len()));
        for ((xr, ar), zr) in rows.zip(z.chunks_exact_mut(b.len())) {
            for (((x, a), z), &b) in xr.iter().zip(ar.iter_mut()).zip(zr.iter_mut()).zip(b) {
                *a = *x + b;
                *z = gelu_one(*a);
            }
        }
    }
}

polysketch_core::multiversion! {
    /// `y[i, c] += b[c]` for row-major `y` with rows of `b.len()`.
    fn add_bias<T: Scalar>(y: &mut [T], b: &[T]) {
        for row in y.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(y, b)| *y += *b);
        }
    }
}

polysketch_core::multiversion! {
    /// `acc[c] += Σ_i x[i, c]` for row-major `x: [n, cols]`, rows in order.
    fn add_column_sums<T: Scalar>(x: &[T], acc: &mut [T]) {
        for row in x.chunks_exact(acc.len()) {
            acc.iter_mut().zip(row).for_each(|(a, v)| *a += *v);
        }
    }
}

polysketch_core::multiversion! {
    /// `x[i] += y[i]`.
    fn add_assign<T: Scalar>(x: &mut [T], y: &[T]) {
        x.iter_mut().zip(y).for_each(|(a, b)| *a += *b);
    }
}

polysketch_core::multiversion! {
    /// `x[i] *= y[i]`.
    fn mul_assign<T: Scalar>(x: &mut [T], y: &[T]) {
        x.iter_mut().zip(y).for_each(|(a, b)| *a *= *b);
    }
}

polysketch_core::multiversion! {
    /// A node's forward: `t = tanh(m1 ∘ m2 / √r)`, `out = √r t`.
    fn node_forward<T: Scalar>(m1: &[T], m2: &[T], t: &mut [T], out: &mut [T], sqrt_r: T) {
        let inv = T::one() / sqrt_r;
        for (((t, o), &a), &b) in t.iter_mut().zip(out.iter_mut()).zip(m1).zip(m2) {
            *t = (a * b * inv).fast_tanh();
            *o = sqrt_r * *t;
        }
    }
}

polysketch_core::multiversion! {
    /// `gate = dout ∘ (1 - t²)`.
    fn node_gate<T: Scalar>(dout: &[T], t: &[T], gate: &mut [T]) {
        for ((g, &d), &t) in gate.iter_mut().zip(dout).zip(t) {
            *g = d * (T::one() - t * t);
        }
    }
}

polysketch_core::multiversion! {
    /// `y = g ∘ x̂ + b` row by row (the layer norm's output, recomputed from what it saved).
    fn affine<T: Scalar>(xhat: &[T], gain: &[T], bias: &[T], y: &mut [T]) {
        for (yr, xr) in y.chunks_exact_mut(gain.len()).zip(xhat.chunks_exact(gain.len())) {
            for ((y, x), (g, b)) in yr.iter_mut().zip(xr).zip(gain.iter().zip(bias)) {
                *y = *g * *x + *b;
            }
        }
    }
}

/// Mutable references to two different parameters `i < j`.
fn pair_mut<T>(v: &mut [Vec<T>], i: usize, j: usize) -> (&mut [T], &mut [T]) {
    let (a, b) = v.split_at_mut(j);
    (&mut a[i], &mut b[0])
}

/// What one network's backward needs.
#[derive(Debug, Clone, Default)]
struct MlpSaved<T> {
    ln0: LnSaved<T>,
    /// `[n, 8r]`: the first hidden layer before gelu.
    a1: Vec<T>,
    ln1: LnSaved<T>,
    /// `[n, 8r]`: the third hidden layer before gelu.
    a3: Vec<T>,
}

/// Work buffers shared by the networks of one application (reused across calls).
#[derive(Debug, Clone, Default)]
struct Scratch<T> {
    /// `[n, max(h, r)]`: a layer norm's output.
    y: Vec<T>,
    /// `[n, 8r]` ×2: hidden activations and gelu derivatives (in the forward, `wide2` holds
    /// the hidden products before their biases).
    wide: Vec<T>,
    wide2: Vec<T>,
    /// `[n, r]` ×2.
    narrow: Vec<T>,
    narrow2: Vec<T>,
    /// `[n, max(h, r)]`: the gradient of a network's input.
    din: Vec<T>,
    /// `[n, h]`: the gradient of the input rows, summed over the leaves.
    dx: Vec<T>,
    /// `[n, r]` ×2: a node's \(\partial\mathrm{out} \circ (1 - t^2)\), and one network's output
    /// gradient.
    gate: Vec<T>,
    dm: Vec<T>,
}

impl<T: Scalar> Mlp<T> {
    fn new(d: usize, r: usize, rng: &mut polysketch_core::SketchRng) -> Self {
        let p = shapes(d, r)
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                let len: usize = shape.iter().product();
                match i {
                    G0 | G1 => vec![T::one(); len],
                    W1 | W2 | W3 | W4 => {
                        let std = 1.0 / (shape[0] as f64).sqrt();
                        (0..len).map(|_| T::of(std * normal(rng))).collect()
                    }
                    _ => vec![T::zero(); len],
                }
            })
            .collect();
        Self { d, p }
    }

    /// `out = f(x)` for rows `r0..r0 + n` of a forward, `x: [n, d]` (any strides), `out`:
    /// row-major `[n, r]`; what the backward needs goes into those rows of `s` (sized by the
    /// caller for every row).
    fn forward(
        &self, x: MatRef<'_, T>, out: &mut [T], s: &mut MlpSaved<T>, r0: usize,
        sc: &mut Scratch<T>, bf16: bool,
    ) {
        let (n, d, r) = (x.nrows(), self.d, self.p[C4].len());
        let (w, r1) = (WIDE * r, r0 + n);
        let p = &self.p;
        sc.y.resize(n * d.max(r), T::zero());
        sc.wide.resize(n * w, T::zero());
        sc.wide2.resize(n * w, T::zero());
        sc.narrow.resize(n * r, T::zero());
        let (a1, a3) = (&mut s.a1[r0 * w..r1 * w], &mut s.a3[r0 * w..r1 * w]);
        let ln0 = s.ln0.rows_mut(r0, r1, d);
        layernorm_rows_forward(x, &p[G0], &p[B0], T::one(), &mut sc.y[..n * d], ln0);
        // the hidden products go to the chunk's scratch, and only once, with their biases,
        // into the saved rows (one write to memory, not a write, a read and a write)
        product(&sc.y, n, d, &p[W1], w, &mut sc.wide2, bf16);
        bias_gelu(&sc.wide2, &p[C1], a1, &mut sc.wide);
        dense(&sc.wide, n, w, &p[W2], &p[C2], &mut sc.narrow, bf16);
        let ln1 = s.ln1.rows_mut(r0, r1, r);
        layernorm_rows_forward(
            rm(&sc.narrow, n, r),
            &p[G1],
            &p[B1],
            T::one(),
            &mut sc.y[..n * r],
            ln1,
        );
        product(&sc.y, n, r, &p[W3], w, &mut sc.wide2, bf16);
        bias_gelu(&sc.wide2, &p[C3], a3, &mut sc.wide);
        dense(&sc.wide, n, w, &p[W4], &p[C4], out, bf16);
    }

    /// Given `dout` \\(= \partial L/\partial f(x)\\) (`[n, r]`) for rows `r0..r0 + n` of the
    /// forward, writes \\(\partial L/\partial x\\) into `sc.din[..n d]` and adds the
    /// parameter gradients into `g` (`NAMES` order).
    fn backward(
        &self, dout: &[T], s: &MlpSaved<T>, r0: usize, g: &mut [Vec<T>], sc: &mut Scratch<T>,
        bf16: bool,
    ) {
        let (d, r) = (self.d, self.p[C4].len());
        let (n, w) = (dout.len() / r, WIDE * r);
        let r1 = r0 + n;
        let p = &self.p;
        sc.wide.resize(n * w, T::zero());
        sc.wide2.resize(n * w, T::zero());
        sc.narrow.resize(n * r, T::zero());
        sc.narrow2.resize(n * r, T::zero());
        sc.y.resize(n * d.max(r), T::zero());
        sc.din.resize(n * d.max(r), T::zero());
        let one = T::one();
        let (a1, a3) = (&s.a1[r0 * w..r1 * w], &s.a3[r0 * w..r1 * w]);
        let (ln0, ln1) = (s.ln0.rows(r0, r1, d), s.ln1.rows(r0, r1, r));
        // out = gelu(a3) W4 + b4
        gelu_with_grad(a3, &mut sc.wide, &mut sc.wide2);
        mm(rm_mut(&mut g[W4], w, r), rm(&sc.wide, n, w).transpose(), rm(dout, n, r), true, bf16);
        add_column_sums(dout, &mut g[C4]);
        mm(rm_mut(&mut sc.wide, n, w), rm(dout, n, r), rm(&p[W4], w, r).transpose(), false, bf16);
        mul_assign(&mut sc.wide, &sc.wide2);
        // a3 = y2 W3 + b3, y2 = LN1(a2)
        affine(ln1.xhat, &p[G1], &p[B1], &mut sc.y[..n * r]);
        mm(rm_mut(&mut g[W3], r, w), rm(&sc.y, n, r).transpose(), rm(&sc.wide, n, w), true, bf16);
        add_column_sums(&sc.wide, &mut g[C3]);
        mm(
            rm_mut(&mut sc.narrow, n, r),
            rm(&sc.wide, n, w),
            rm(&p[W3], r, w).transpose(),
            false,
            bf16,
        );
        let (dg1, db1) = pair_mut(g, G1, B1);
        layernorm_backward(&sc.narrow, ln1, &p[G1], one, &mut sc.narrow2, dg1, db1);
        // a2 = gelu(a1) W2 + b2
        gelu_with_grad(a1, &mut sc.wide, &mut sc.wide2);
        mm(
            rm_mut(&mut g[W2], w, r),
            rm(&sc.wide, n, w).transpose(),
            rm(&sc.narrow2, n, r),
            true,
            bf16,
        );
        add_column_sums(&sc.narrow2, &mut g[C2]);
        mm(
            rm_mut(&mut sc.wide, n, w),
            rm(&sc.narrow2, n, r),
            rm(&p[W2], w, r).transpose(),
            false,
            bf16,
        );
        mul_assign(&mut sc.wide, &sc.wide2);
        // a1 = y0 W1 + b1, y0 = LN0(x)
        affine(ln0.xhat, &p[G0], &p[B0], &mut sc.y[..n * d]);
        mm(rm_mut(&mut g[W1], d, w), rm(&sc.y, n, d).transpose(), rm(&sc.wide, n, w), true, bf16);
        add_column_sums(&sc.wide, &mut g[C1]);
        mm(rm_mut(&mut sc.y, n, d), rm(&sc.wide, n, w), rm(&p[W1], d, w).transpose(), false, bf16);
        let (dg0, db0) = pair_mut(g, G0, B0);
        layernorm_backward(&sc.y[..n * d], ln0, &p[G0], one, &mut sc.din[..n * d], dg0, db0);
    }

    /// Sizes `s` for `n` rows (the contents are written by the forward).
    fn reserve(&self, s: &mut MlpSaved<T>, n: usize) {
        let (d, r) = (self.d, self.p[C4].len());
        let w = WIDE * r;
        s.ln0.resize(n, d);
        s.ln1.resize(n, r);
        s.a1.resize(n * w, T::zero());
        s.a3.resize(n * w, T::zero());
    }
}

/// Rows per chunk of the networks: every network of the tree runs on one chunk of rows before
/// the next, so that a chunk's activations (`[CHUNK, 8r]`) stay in the core's cache between
/// the products and the elementwise passes (a fixed partition: the numbers do not depend on
/// the number of threads).
pub const CHUNK: usize = 256;

/// The chunks `(r0, r1)` of `n` rows.
fn chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).step_by(CHUNK).map(move |r0| (r0, (r0 + CHUNK).min(n)))
}

/// A learned sketch: the tree of networks of Algorithm 2, mapping rows \\(x \in \mathbb R^h\\)
/// to \\(L(x) \in \mathbb R^r\\) (see the [module documentation](self) for the formulas).
///
/// It implements [`PolySketch`] (`apply` is the forward, `vjp` the gradient for the input), so
/// it drops in wherever a random sketch goes; [`forward`](Self::forward) and
/// [`backward`](Self::backward) also give the parameter gradients that training needs.
///
/// # Shapes
/// input `[n, h]` → `[n, r]`; parameters as listed by [`parameters`](Self::parameters).
#[derive(Debug, Clone)]
pub struct LearnedSketch<T> {
    h: usize,
    r: usize,
    degree: usize,
    /// `(left, right)` inputs of every node, in post-order (the root last).
    nodes: Vec<(Src, Src)>,
    /// `2i`, `2i + 1`: the networks \\(f_1, f_2\\) of node `i`.
    mlps: Vec<Mlp<T>>,
    /// Whether the networks' products round their inputs to bfloat16
    /// ([`set_bf16_products`](Self::set_bf16_products)).
    bf16: bool,
}

/// What [`LearnedSketch::backward`] needs from [`LearnedSketch::forward`] (reusable buffers).
#[derive(Debug, Clone, Default)]
pub struct LearnedSaved<T> {
    n: usize,
    mlps: Vec<MlpSaved<T>>,
    /// `[n, r]` per network: its output \\(f(M)\\).
    m: Vec<Vec<T>>,
    /// `[n, r]` per node: \\(\tanh(f_1(M_1) \circ f_2(M_2)/\sqrt r)\\).
    t: Vec<Vec<T>>,
    /// `[n, r]` per node: its output \\(\sqrt r\, t\\); in the backward, its gradient.
    out: Vec<Vec<T>>,
    scratch: Scratch<T>,
}

impl<T: Scalar> LearnedSketch<T> {
    /// A learned sketch of degree `degree` (= \\(p/2\\)) from `h` to `r` with freshly initialised
    /// networks (the seed fixes them).
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`] if `h` or `r` is 0, or `degree` is not a power of two
    /// in 2..=64 (degree 1 has no network: \\(L = x\\)).
    pub fn new(h: usize, r: usize, degree: usize, seed: u64) -> Result<Self> {
        let nodes = tree_nodes(degree).filter(|_| h > 0 && r > 0).ok_or_else(|| {
            AttentionError::InvalidConfig(format!(
                "a learned sketch needs h, r ≥ 1 and a degree p/2 that is a power of two in \
                 2..=64 (p ≥ 4), got h = {h}, r = {r}, degree = {degree}"
            ))
        })?;
        // the networks' parameters, estimated before anything is allocated: 2(d - 1) networks
        // of at most (max(h, r) + 2) · 8r + 8r · r + … values each
        let per_network: u128 = shapes(h.max(r), r)
            .iter()
            .map(|s| s.iter().fold(1u128, |a, &x| a.saturating_mul(x as u128)))
            .fold(0, u128::saturating_add);
        let count = per_network.saturating_mul(2 * nodes.len() as u128);
        polysketch_core::check_param_bytes("LearnedSketch", count, size_of::<T>())?;
        let mut rng = seeded_rng(seed);
        let dim = |s: Src| if s == Src::Input { h } else { r };
        let mlps = nodes
            .iter()
            .flat_map(|&(a, b)| [dim(a), dim(b)])
            .map(|d| Mlp::new(d, r, &mut rng))
            .collect();
        Ok(Self { h, r, degree, nodes, mlps, bf16: false })
    }

    /// The named parameters, `sketch.node{i}.f{1,2}.{ln0.gain, ln0.bias, w1, b1, w2, b2,
    /// ln1.gain, ln1.bias, w3, b3, w4, b4}` for every node `i` (post-order, the root last):
    /// `w1: [d, 8r]`, `w2: [8r, r]`, `w3: [r, 8r]`, `w4: [8r, r]` (row-major, \\(y = xW + b\\)),
    /// `d = h` for networks reading the input rows and `r` for those reading a node.
    pub fn parameters(&self) -> Vec<Param<'_, T>> {
        self.mlps
            .iter()
            .enumerate()
            .flat_map(|(m, mlp)| {
                let shapes = shapes(mlp.d, self.r);
                mlp.p.iter().zip(shapes).enumerate().map(move |(i, (data, shape))| Param {
                    name: param_name(m, i),
                    shape,
                    data,
                })
            })
            .collect()
    }

    /// Mutable access to the parameters, in the order of [`parameters`](Self::parameters).
    pub fn parameters_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        let r = self.r;
        self.mlps
            .iter_mut()
            .enumerate()
            .flat_map(|(m, mlp)| {
                let shapes = shapes(mlp.d, r);
                mlp.p.iter_mut().zip(shapes).enumerate().map(move |(i, (data, shape))| ParamMut {
                    name: param_name(m, i),
                    shape,
                    data,
                })
            })
            .collect()
    }

    /// Whether the networks' matrix products (forward and backward) round their inputs to
    /// bfloat16 and sum in `T`: \\(\mathrm{bf16}(A)\,\mathrm{bf16}(B)\\) through
    /// [`Scalar::gemm_bf16`] instead of \\(AB\\). For `f32` on a CPU with AVX-512 BF16 that is
    /// a kernel with twice the multiply-adds per instruction (`polysketch bench products`:
    /// about 1.6× faer's `f32` product on the networks' shapes); elsewhere, and for `f64`, the
    /// inputs are rounded and the usual product runs (slower, but the same numbers up to the
    /// summation order: the reference). Everything else — layer norms, gelu, the nodes'
    /// products and tanh, the gradients' sums — stays in `T`. Off by default; not saved with
    /// the weights (a way of computing, like the thread count); the GPU kernels ignore it.
    /// The book's attention chapter states the accuracy against `f64` and the training
    /// comparison.
    ///
    /// ```
    /// use polysketch_attention::LearnedSketch;
    /// use polysketch_core::faer::Mat;
    /// use polysketch_sketch::PolySketch;
    ///
    /// let mut sketch = LearnedSketch::<f32>::new(16, 8, 2, 7)?;
    /// let x = Mat::<f32>::from_fn(5, 16, |i, j| ((i * 16 + j) as f32 * 0.37).sin());
    /// let exact = sketch.apply(x.as_ref(), polysketch_core::faer::Par::Seq)?;
    /// sketch.set_bf16_products(true);
    /// assert!(sketch.bf16_products());
    /// let fast = sketch.apply(x.as_ref(), polysketch_core::faer::Par::Seq)?;
    /// // the same map up to bf16 rounding of the products' inputs
    /// let err = (&fast - &exact).norm_l2() / exact.norm_l2();
    /// assert!(err > 0.0 && err < 2e-2, "{err}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_bf16_products(&mut self, on: bool) {
        self.bf16 = on;
    }

    /// Whether [`set_bf16_products`](Self::set_bf16_products) is on.
    pub fn bf16_products(&self) -> bool {
        self.bf16
    }

    /// Zeroed gradients for [`backward`](Self::backward), one vector per parameter.
    pub fn zero_grads(&self) -> Vec<Vec<T>> {
        self.mlps.iter().flat_map(|m| m.p.iter().map(|p| vec![T::zero(); p.len()])).collect()
    }

    /// Unchecked sequential forward: `out = L(x)` for every row, keeping in `saved` what the
    /// backward needs.
    ///
    /// # Panics
    /// If `x` is not `[n, h]` or `out` is not `[n, r]`.
    pub fn forward(&self, x: MatRef<'_, T>, out: MatMut<'_, T>, saved: &mut LearnedSaved<T>) {
        let (n, r) = (x.nrows(), self.r);
        assert!(
            x.ncols() == self.h && out.nrows() == n && out.ncols() == r,
            "LearnedSketch::forward: shapes"
        );
        let nodes = self.nodes.len();
        saved.n = n;
        saved.mlps.resize_with(self.mlps.len(), MlpSaved::default);
        for (mlp, s) in self.mlps.iter().zip(&mut saved.mlps) {
            mlp.reserve(s, n);
        }
        saved.m.resize_with(self.mlps.len(), Vec::new);
        saved.t.resize_with(nodes, Vec::new);
        saved.out.resize_with(nodes, Vec::new);
        let (sqrt_r, bf16) = (T::of((r as f64).sqrt()), self.bf16);
        let LearnedSaved { mlps, m, t, out: outs, scratch, .. } = saved;
        m.iter_mut()
            .chain(t.iter_mut())
            .chain(outs.iter_mut())
            .for_each(|v| v.resize(n * r, T::zero()));
        for (r0, r1) in chunks(n) {
            let rows = r0 * r..r1 * r;
            for (i, &(a, b)) in self.nodes.iter().enumerate() {
                for (k, src) in [(2 * i, a), (2 * i + 1, b)] {
                    let input = match src {
                        Src::Input => x.subrows(r0, r1 - r0),
                        Src::Node(j) => rm(&outs[j][rows.clone()], r1 - r0, r),
                    };
                    self.mlps[k].forward(
                        input,
                        &mut m[k][rows.clone()],
                        &mut mlps[k],
                        r0,
                        scratch,
                        bf16,
                    );
                }
                let (mi, ti, oi) = (&m[2 * i..2 * i + 2], &mut t[i], &mut outs[i]);
                node_forward(
                    &mi[0][rows.clone()],
                    &mi[1][rows.clone()],
                    &mut ti[rows.clone()],
                    &mut oi[rows.clone()],
                    sqrt_r,
                );
            }
        }
        scaled_copy(out, rm(&outs[nodes - 1], n, r), T::one());
    }

    /// Unchecked sequential backward: given `dout` \\(= \partial L/\partial L(x)\\), writes
    /// \\(\partial L/\partial x\\) into `dx` and adds the parameter gradients into `grads` (as
    /// made by [`zero_grads`](Self::zero_grads)). `saved` keeps its buffers; its contents are
    /// spent.
    ///
    /// # Panics
    /// If the shapes differ from the forward's.
    pub fn backward(
        &self, saved: &mut LearnedSaved<T>, dout: MatRef<'_, T>, dx: MatMut<'_, T>,
        grads: &mut [Vec<T>],
    ) {
        let (n, r, h) = (saved.n, self.r, self.h);
        assert!(
            dout.nrows() == n && dout.ncols() == r && dx.nrows() == n && dx.ncols() == h,
            "LearnedSketch::backward: shapes"
        );
        assert_eq!(grads.len(), 12 * self.mlps.len(), "LearnedSketch::backward: grads");
        let LearnedSaved { mlps, m, t, out: douts, scratch: sc, .. } = saved;
        let (root, bf16) = (self.nodes.len() - 1, self.bf16);
        // the root's gradient, row-major, in the buffer of its output
        scaled_copy(rm_mut(&mut douts[root], n, r), dout, T::one());
        sc.dx.clear();
        sc.dx.resize(n * h, T::zero());
        // taken out of the scratch (and put back) so the networks can use the rest of it
        let (mut gate, mut dm) = (core::mem::take(&mut sc.gate), core::mem::take(&mut sc.dm));
        for (r0, r1) in chunks(n) {
            let (rows, nc) = (r0 * r..r1 * r, r1 - r0);
            gate.resize(nc * r, T::zero());
            dm.resize(nc * r, T::zero());
            for (i, &(a, b)) in self.nodes.iter().enumerate().rev() {
                // out = √r tanh(m1 ∘ m2/√r): ∂m1 = ∂out (1 - t²) m2, ∂m2 = ∂out (1 - t²) m1
                node_gate(&douts[i][rows.clone()], &t[i][rows.clone()], &mut gate);
                for (k, other, src) in [(2 * i, 2 * i + 1, a), (2 * i + 1, 2 * i, b)] {
                    let m_other = &m[other][rows.clone()];
                    polysketch_core::linalg::scaled_product(&mut dm, &gate, m_other, T::one());
                    let mlp = &self.mlps[k];
                    mlp.backward(&dm, &mlps[k], r0, &mut grads[12 * k..12 * (k + 1)], sc, bf16);
                    let din = &sc.din[..nc * mlp.d];
                    match src {
                        Src::Input => add_assign(&mut sc.dx[r0 * h..r1 * h], din),
                        Src::Node(j) => douts[j][rows.clone()].copy_from_slice(din),
                    }
                }
            }
        }
        (sc.gate, sc.dm) = (gate, dm);
        scaled_copy(dx, rm(&sc.dx, n, h), T::one());
    }

    /// The fraction of the sketch's outputs whose tanh is saturated: with the root's output
    /// \\(L = \sqrt r\,\tanh(z)\\), the share of the \\(n r\\) entries of \\(L(x)\\) with
    /// \\(|z| \ge 2\\), that is \\(|L_{ij}| \ge \sqrt r \tanh 2 \approx 0.964\sqrt r\\).
    ///
    /// A health check for training: there the gradient through the root is scaled by
    /// \\(1 - \tanh^2 z \le 0.071\\), and when most entries are saturated with one sign
    /// pattern every pair of rows scores near the ceiling \\(\langle L_q, L_k\rangle^2 \le
    /// r^4\\), so the sketched keys take the attention from the exact local ones and cannot be
    /// trained back (see the book's "Reproducing the paper", \\(r = 64\\)). Freshly initialised
    /// networks give almost 0.
    ///
    /// # Shapes
    /// `x: [n, h]` (the rows the sketch reads: layer-normed queries or keys).
    ///
    /// # Errors
    /// As [`PolySketch::apply`]: a shape other than `[n, h]`, no rows, or a non-finite entry.
    ///
    /// # Example
    /// ```
    /// use faer::{Mat, Par};
    /// use polysketch_attention::LearnedSketch;
    ///
    /// let sketch = LearnedSketch::<f64>::new(8, 16, 2, 0)?;
    /// let x = Mat::from_fn(32, 8, |i, j| ((i * 8 + j) as f64 * 0.7).sin());
    /// assert!(sketch.saturation(x.as_ref(), Par::Seq)? < 0.01);
    /// # Ok::<(), polysketch_attention::AttentionError>(())
    /// ```
    pub fn saturation(&self, x: MatRef<'_, T>, par: Par) -> Result<f64> {
        let l = self.apply(x, par)?;
        let bound = (self.r as f64).sqrt() * 2f64.tanh();
        let saturated = (0..l.ncols())
            .map(|j| l.col(j).iter().filter(|v| v.as_f64().abs() >= bound).count())
            .sum::<usize>();
        Ok(saturated as f64 / (l.nrows() * l.ncols()) as f64)
    }
}

fn param_name(mlp: usize, i: usize) -> String {
    format!("sketch.node{}.f{}.{}", mlp / 2, mlp % 2 + 1, NAMES[i])
}

impl<T: Scalar> PolySketch<T> for LearnedSketch<T> {
    fn name(&self) -> &'static str {
        "LearnedSketch"
    }
    /// The degree \\(p/2\\) the sketch stands in for (it is not a linear map of
    /// \\(x^{\otimes p/2}\\): the networks are nonlinear).
    fn degree(&self) -> usize {
        self.degree
    }
    fn input_dim(&self) -> usize {
        self.h
    }
    fn sketch_dim(&self) -> usize {
        self.r
    }
    fn apply_rows(&self, a: MatRef<'_, T>, out: MatMut<'_, T>) {
        self.forward(a, out, &mut LearnedSaved::default());
    }
    fn vjp_rows(&self, a: MatRef<'_, T>, grad: MatRef<'_, T>, out: MatMut<'_, T>) {
        let mut saved = LearnedSaved::default();
        let mut l = Mat::zeros(a.nrows(), self.r);
        self.forward(a, l.as_mut(), &mut saved);
        self.backward(&mut saved, grad, out, &mut self.zero_grads());
    }
}
