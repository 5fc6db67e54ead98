//! The Ahle et al. recursive tree sketch: paper Algorithm 1, POLYSKETCHWITHNEGATIVITY.

use faer::prelude::ReborrowMut;
use faer::{Mat, MatMut, MatRef, Par};

use crate::{
    MAX_DEGREE, PolySketch, Result, Scalar, check_param_bytes, check_sketch_sizes,
    gaussian::gaussian_matrix,
    linalg::{gemm, hadamard},
    seeded_rng,
    srht::Srht,
};

/// The random projection inside every node of a [`TreeSketch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeKind {
    /// Dense standard Gaussian matrices \\(G_1, G_2\\) (`h x r` at the bottom level, `r x r`
    /// above), as in the paper's Algorithm 1.
    Gaussian,
    /// TensorSRHT nodes: random signs, a Walsh–Hadamard transform and `r` sampled coordinates
    /// (Ahle et al. 2020). Cheaper per node for large `r`
    /// (\\(O(r \log r)\\) instead of \\(O(r^2)\\) per row) at the price of a larger variance.
    Srht,
}

/// The projections of every level, bottom (level 0, from `R^h`) to root.
#[derive(Debug, Clone)]
enum Weights<T: Scalar> {
    /// Level `l` holds its `2·nodes_l` Gaussian matrices side by side: `[d_l, 2·nodes_l·r]`.
    Gaussian(Vec<Mat<T>>),
    /// Level `l` holds `2·nodes_l` SRHT projections.
    Srht(Vec<Vec<Srht<T>>>),
}

/// The Ahle et al. (2020) tree sketch for \\(p = 2^L\\): a complete binary tree with \\(p\\)
/// leaves, each leaf the input \\(x\\); every internal node combines its children's sketches
/// \\(m_1, m_2\\) into
/// \\[ \sqrt{1/r}\,\big(\pi_1(m_1) \ast \pi_2(m_2)\big) \in \mathbb{R}^r, \\]
/// with \\(\ast\\) the entrywise product and \\(\pi_1, \pi_2\\) independent random projections
/// to \\(\mathbb{R}^r\\) ([`NodeKind`]). The root is \\(S^\top x^{\otimes p}\\). With Gaussian
/// nodes this is exactly POLYSKETCHWITHNEGATIVITY of the paper's Algorithm 1: \\(p\\)
/// projections of size \\(h \times r\\), \\(p - 2\\) of size \\(r \times r\\) and \\(p - 1\\)
/// entrywise products per row (Theorem 2.2).
///
/// Unbiased: each node satisfies \\(\mathbb{E}\langle \text{node}(x), \text{node}(y)\rangle =
/// \langle m_1(x), m_1(y)\rangle\langle m_2(x), m_2(y)\rangle\\) in expectation over its own
/// projections, so by induction \\(\mathbb{E}\langle S^\top x^{\otimes p}, S^\top
/// y^{\otimes p}\rangle = \langle x, y\rangle^p\\).
///
/// # Shapes
/// `apply`: `[n, h]` → `[n, r]`.
///
/// # Example
/// ```
/// use faer::{Mat, Par};
/// use polysketch_sketch::{PolySketch, TreeSketch};
/// let s = TreeSketch::<f32>::gaussian(64, 32, 2, 0)?; // the sketch PolySketch attention uses for p = 4
/// let x = Mat::<f32>::from_fn(10, 64, |i, j| ((i + 2 * j) as f32).cos());
/// assert_eq!(s.apply(x.as_ref(), Par::Seq)?.ncols(), 32);
/// # Ok::<(), polysketch_sketch::SketchError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TreeSketch<T: Scalar> {
    h: usize,
    r: usize,
    p: usize,
    kind: NodeKind,
    weights: Weights<T>,
}

impl<T: Scalar> TreeSketch<T> {
    /// A tree with Gaussian nodes (paper Algorithm 1). Same as
    /// `TreeSketch::new(h, r, p, NodeKind::Gaussian, seed)`.
    ///
    /// # Errors
    /// See [`new`](Self::new).
    pub fn gaussian(h: usize, r: usize, p: usize, seed: u64) -> Result<Self> {
        Self::new(h, r, p, NodeKind::Gaussian, seed)
    }

    /// A tree with TensorSRHT nodes. Same as `TreeSketch::new(h, r, p, NodeKind::Srht, seed)`.
    ///
    /// # Errors
    /// See [`new`](Self::new).
    pub fn srht(h: usize, r: usize, p: usize, seed: u64) -> Result<Self> {
        Self::new(h, r, p, NodeKind::Srht, seed)
    }

    /// Draws a degree-`p` tree sketch from `R^{h^p}` to `R^r` with nodes of `kind` from `seed`.
    ///
    /// Projections are drawn level by level from the bottom, left to right, first \\(\pi_1\\)
    /// then \\(\pi_2\\) of each node, all from one ChaCha stream.
    ///
    /// # Errors
    /// [`InvalidDegree`](crate::SketchError::InvalidDegree) unless `p` is a power of two with
    /// `2 <= p <= MAX_DEGREE` (for degree 1 use [`GaussianJl`](crate::GaussianJl)),
    /// [`ZeroDimension`](crate::SketchError::ZeroDimension) if `h` or `r` is 0,
    /// [`TooLarge`](crate::SketchError::TooLarge) if the projections would not fit in memory.
    pub fn new(h: usize, r: usize, p: usize, kind: NodeKind, seed: u64) -> Result<Self> {
        const NAME: &str = "TreeSketch";
        let ok = (2..=MAX_DEGREE).contains(&p) && p.is_power_of_two();
        let degree = (p, ok, "a power of two with 2 <= p <= 64 (use GaussianJl for p = 1)");
        check_sketch_sizes(NAME, degree, h, r)?;
        let (h128, r128, p128) = (h as u128, r as u128, p as u128);
        // saturating: (p - 2) r² for r near 2^64 passes even u128
        let count = match kind {
            NodeKind::Gaussian => (p128 * h128)
                .saturating_mul(r128)
                .saturating_add((p128 - 2).saturating_mul(r128).saturating_mul(r128)),
            NodeKind::Srht => p128 * (h128 + r128) + (p128 - 2) * 2 * r128,
        };
        check_param_bytes(NAME, count, size_of::<T>().max(4))?;
        let mut rng = seeded_rng(seed);
        let levels = p.trailing_zeros() as usize;
        let weights = match kind {
            NodeKind::Gaussian => Weights::Gaussian(
                (0..levels)
                    .map(|l| {
                        let d = if l == 0 { h } else { r };
                        gaussian_matrix(&mut rng, d, 2 * (p >> (l + 1)) * r, 1.0)
                    })
                    .collect(),
            ),
            NodeKind::Srht => Weights::Srht(
                (0..levels)
                    .map(|l| {
                        let d = if l == 0 { h } else { r };
                        (0..2 * (p >> (l + 1))).map(|_| Srht::draw(d, r, &mut rng)).collect()
                    })
                    .collect(),
            ),
        };
        Ok(Self { h, r, p, kind, weights })
    }

    /// The kind of projection in the nodes.
    pub fn node_kind(&self) -> NodeKind {
        self.kind
    }

    /// The projections of level `l` (0 = bottom, whose inputs are the rows) as explicit dense
    /// `f64` matrices `[d_l, r]`, in node order (\(\pi_1\) then \(\pi_2\) of each node): the
    /// Gaussian matrices themselves, or the SRHT maps applied to the identity. For references
    /// and tests; `None` past the root.
    pub fn dense_projections(&self, l: usize) -> Option<Vec<Mat<f64>>> {
        if l >= self.levels() {
            return None;
        }
        let (r, d) = (self.r, if l == 0 { self.h } else { self.r });
        Some(match &self.weights {
            Weights::Gaussian(w) => (0..2 * self.nodes(l))
                .map(|k| Mat::from_fn(d, r, |i, c| w[l][(i, k * r + c)].as_f64()))
                .collect(),
            Weights::Srht(w) => w[l]
                .iter()
                .map(|s| {
                    let mut m = Mat::<T>::zeros(d, r);
                    s.forward(Mat::<T>::identity(d, d).as_ref(), m.as_mut());
                    Mat::from_fn(d, r, |i, c| m[(i, c)].as_f64())
                })
                .collect(),
        })
    }

    /// Number of levels \(\log_2 p\).
    pub fn levels(&self) -> usize {
        self.p.trailing_zeros() as usize
    }

    /// Number of nodes on level `l` (0 = bottom).
    fn nodes(&self, l: usize) -> usize {
        self.p >> (l + 1)
    }

    fn scale(&self) -> T {
        T::of(1.0 / (self.r as f64).sqrt())
    }

    /// Level `l`'s projections of their children: `proj: [rows, 2·nodes_l·r]`, block `k` =
    /// \\(\pi_k\\)(child `k`). `input` is `a` on level 0, else the previous level's outputs
    /// `[rows, 2·nodes_l·r]` (block `k` = child `k`).
    fn project(&self, l: usize, input: MatRef<'_, T>, mut proj: MatMut<'_, T>) {
        let r = self.r;
        match &self.weights {
            Weights::Gaussian(w) if l == 0 => {
                gemm(proj, input, w[0].as_ref(), T::one(), false, Par::Seq)
            }
            Weights::Gaussian(w) => {
                for k in 0..2 * self.nodes(l) {
                    let g = w[l].subcols(k * r, r);
                    let child = input.subcols(k * r, r);
                    gemm(proj.rb_mut().subcols_mut(k * r, r), child, g, T::one(), false, Par::Seq);
                }
            }
            Weights::Srht(w) => {
                for (k, s) in w[l].iter().enumerate() {
                    let child = if l == 0 { input } else { input.subcols(k * r, r) };
                    s.forward(child, proj.rb_mut().subcols_mut(k * r, r));
                }
            }
        }
    }

    /// Transpose of [`project`](Self::project): from `dproj` (block `k` = ∂L/∂π_k(child k)) to
    /// the children's gradients. On level 0 all projections read `a`, so their transposes are
    /// summed into `dinput: [rows, h]`; above, block `k` of `dinput` is child `k`'s gradient.
    fn project_t(&self, l: usize, dproj: MatRef<'_, T>, mut dinput: MatMut<'_, T>) {
        let r = self.r;
        match &self.weights {
            // forward: P = A W₀ (all projections side by side), so dA = dP W₀ᵀ
            Weights::Gaussian(w) if l == 0 => {
                gemm(dinput, dproj, w[0].transpose(), T::one(), false, Par::Seq)
            }
            // forward: P_k = M_k G_k, so dM_k = dP_k G_kᵀ
            Weights::Gaussian(w) => {
                for k in 0..2 * self.nodes(l) {
                    let g = w[l].subcols(k * r, r);
                    let dchild = dinput.rb_mut().subcols_mut(k * r, r);
                    gemm(dchild, dproj.subcols(k * r, r), g.transpose(), T::one(), false, Par::Seq);
                }
            }
            Weights::Srht(w) => {
                for (k, s) in w[l].iter().enumerate() {
                    let dp = dproj.subcols(k * r, r);
                    if l == 0 {
                        s.transpose(dp, dinput.rb_mut(), k > 0);
                    } else {
                        s.transpose(dp, dinput.rb_mut().subcols_mut(k * r, r), false);
                    }
                }
            }
        }
    }

    /// Combines level `l`'s projections into its node outputs: node `j` is
    /// `scale · proj[2j] ∗ proj[2j+1]`, written to block `j` of `out` (`[rows, nodes_l·r]`).
    fn combine(&self, l: usize, proj: MatRef<'_, T>, mut out: MatMut<'_, T>) {
        let (r, s) = (self.r, self.scale());
        for j in 0..self.nodes(l) {
            let (p1, p2) = (proj.subcols(2 * j * r, r), proj.subcols((2 * j + 1) * r, r));
            hadamard(out.rb_mut().subcols_mut(j * r, r), p1, p2, s);
        }
    }

    /// Runs the tree on a chunk and writes the root to `root`; returns every level's
    /// projections `[rows, 2·nodes_l·r]` if `keep_projections` (the backward needs them), else
    /// nothing.
    fn run(
        &self, a: MatRef<'_, T>, mut root: MatMut<'_, T>, keep_projections: bool,
    ) -> Vec<Mat<T>> {
        let (rows, r, top) = (a.nrows(), self.r, self.levels() - 1);
        let mut kept = Vec::new();
        let mut prev: Option<Mat<T>> = None;
        for l in 0..=top {
            let mut pl = Mat::zeros(rows, 2 * self.nodes(l) * r);
            self.project(l, prev.as_ref().map_or(a, |m| m.as_ref()), pl.as_mut());
            if l == top {
                self.combine(l, pl.as_ref(), root.rb_mut());
            } else {
                let mut ol = Mat::zeros(rows, self.nodes(l) * r);
                self.combine(l, pl.as_ref(), ol.as_mut());
                prev = Some(ol);
            }
            if keep_projections {
                kept.push(pl);
            }
        }
        kept
    }
}

impl<T: Scalar> PolySketch<T> for TreeSketch<T> {
    fn name(&self) -> &'static str {
        "TreeSketch"
    }
    fn degree(&self) -> usize {
        self.p
    }
    fn input_dim(&self) -> usize {
        self.h
    }
    fn sketch_dim(&self) -> usize {
        self.r
    }

    fn apply_rows(&self, a: MatRef<'_, T>, out: MatMut<'_, T>) {
        assert_eq!((a.ncols(), out.ncols(), a.nrows()), (self.h, self.r, out.nrows()));
        self.run(a, out, false);
    }

    fn vjp_rows(&self, a: MatRef<'_, T>, grad: MatRef<'_, T>, out: MatMut<'_, T>) {
        assert_eq!((grad.ncols(), grad.nrows(), out.ncols()), (self.r, a.nrows(), self.h));
        let (rows, r, s) = (a.nrows(), self.r, self.scale());
        let mut root = Mat::zeros(rows, r);
        let proj = self.run(a, root.as_mut(), true);
        // ∂L/∂(outputs of level l), block j = node j; starts at the root.
        let mut dout = grad.to_owned();
        let mut out = out;
        for l in (0..self.levels()).rev() {
            // forward: node_j = s · P_{2j} ∗ P_{2j+1}, so
            // dP_{2j} = s · dnode_j ∗ P_{2j+1} and dP_{2j+1} = s · dnode_j ∗ P_{2j}
            let mut dproj = Mat::zeros(rows, 2 * self.nodes(l) * r);
            for j in 0..self.nodes(l) {
                let dn = dout.subcols(j * r, r);
                let (p1, p2) = (proj[l].subcols(2 * j * r, r), proj[l].subcols((2 * j + 1) * r, r));
                hadamard(dproj.as_mut().subcols_mut(2 * j * r, r), dn, p2, s);
                hadamard(dproj.as_mut().subcols_mut((2 * j + 1) * r, r), dn, p1, s);
            }
            if l == 0 {
                self.project_t(0, dproj.as_ref(), out.rb_mut());
            } else {
                let mut dchildren = Mat::zeros(rows, 2 * self.nodes(l) * r);
                self.project_t(l, dproj.as_ref(), dchildren.as_mut());
                dout = dchildren;
            }
        }
    }

    fn dense_levels(&self) -> Option<Vec<Mat<f64>>> {
        Some(
            (0..self.levels())
                .map(|l| {
                    let mats = self.dense_projections(l).expect("l < levels");
                    let (d, r) = (mats[0].nrows(), self.r);
                    Mat::from_fn(d, mats.len() * r, |i, c| mats[c / r][(i, c % r)])
                })
                .collect(),
        )
    }
}
