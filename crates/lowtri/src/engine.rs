//! The block algorithm, forward and backward, batched over independent problems.

use faer::linalg::matmul::triangular::{BlockStructure, matmul as tri_matmul};
use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use polysketch_sketch::{
    Result, Scalar, SketchError, check_finite, check_param_bytes, check_shape, linalg::gemm,
};
use rayon::prelude::*;

use crate::Problem;

/// The block lower-triangular product engine with block size \\(b\\).
///
/// For \\(t = \lceil n/b\rceil\\) blocks of rows (the last one may be shorter),
/// \\[ H_l = B_l^\top C_l, \quad Z_l = \sum_{j<l} H_j, \quad
///    \mathrm{out}_l = A_l Z_l + \mathrm{lt}(S_{ll})\,C_l , \\]
/// in three phases: (1) per block in parallel, \\(H_l\\) and the diagonal term; (2) the
/// exclusive prefix \\(Z_l\\) over blocks, accumulated in `f64`, in parallel over its
/// \\(m \times k\\) entries; (3) per block in parallel, \\(A_l Z_l\\). Cost
/// \\(O(nb(m + k) + nmk)\\), linear in \\(n\\).
///
/// Work is cut by blocks and by entries, never by threads, so results are bitwise the same for
/// any number of threads.
///
/// # Memory
/// Besides inputs and outputs: the prefixes \\(Z_l\\), \\(t \cdot m \cdot k\\) values, kept in
/// [`Saved`] for the backward; per worker, \\(b \times m\\) feature scratch (two in the
/// backward) and three \\(b \times b\\) score blocks. Nothing of size \\(n \times m\\).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowTri {
    block: usize,
}

/// What the backward needs from the forward: the exclusive block prefixes \\(Z_l\\).
#[derive(Debug, Clone, PartialEq)]
pub struct Saved<T> {
    /// `[m, t·k]`: block `l` (columns `l·k .. (l+1)·k`, contiguous in memory) is \\(Z_l\\).
    pub prefixes: Mat<T>,
    /// The block size of the forward that made it.
    pub block: usize,
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

/// Per-worker scratch, allocated once per rayon split, never per block.
struct Scratch<T> {
    feat: Mat<T>,
    dfeat: Mat<T>,
    vjp: Mat<T>,
    s: Mat<T>,
    g: Mat<T>,
    ds: Mat<T>,
}

impl<T: Scalar> Scratch<T> {
    fn new(b: usize, m: usize, r: usize, backward: bool) -> Self {
        let z = |rows, cols| Mat::zeros(rows, cols);
        let (bb, bm) = if backward { (b, b) } else { (0, 0) };
        Self {
            feat: z(b, m),
            dfeat: z(bm, m),
            vjp: z(bm, r),
            s: z(b, b),
            g: z(b, b),
            ds: z(bb, bb),
        }
    }
}

/// Cuts `m` into consecutive row blocks of `size` (the last may be shorter).
fn row_blocks<T>(m: MatMut<'_, T>, size: usize) -> Vec<MatMut<'_, T>> {
    let mut out = Vec::with_capacity(m.nrows().div_ceil(size.max(1)));
    let mut rest = m;
    while rest.nrows() > 0 {
        let len = size.min(rest.nrows());
        let (head, tail) = rest.split_at_row_mut(len);
        out.push(head);
        rest = tail;
    }
    out
}

/// Cuts `m` into consecutive column blocks of `size`.
fn col_blocks<T>(m: MatMut<'_, T>, size: usize) -> Vec<MatMut<'_, T>> {
    let mut out = Vec::with_capacity(m.ncols().div_ceil(size.max(1)));
    let mut rest = m;
    while rest.ncols() > 0 {
        let len = size.min(rest.ncols());
        let (head, tail) = rest.split_at_col_mut(len);
        out.push(head);
        rest = tail;
    }
    out
}

/// Row blocks of an optional matrix, or `count` `None`s.
fn optional_row_blocks<T>(
    m: Option<&mut Mat<T>>,
    size: usize,
    count: usize,
) -> Vec<Option<MatMut<'_, T>>> {
    match m {
        Some(m) => row_blocks(m.as_mut(), size).into_iter().map(Some).collect(),
        None => (0..count).map(|_| None).collect(),
    }
}

/// Runs `f` on every task, in parallel under `Par::Rayon`, with per-worker scratch.
fn run<T: Scalar, J: Send>(
    tasks: Vec<J>,
    par: Par,
    scratch: impl Fn() -> Scratch<T> + Sync + Send,
    f: impl Fn(&mut Scratch<T>, J) + Sync + Send,
) {
    match par {
        Par::Seq => {
            let mut s = scratch();
            tasks.into_iter().for_each(|t| f(&mut s, t));
        }
        Par::Rayon(_) => tasks
            .into_par_iter()
            .with_max_len(1)
            .for_each_init(&scratch, |s, t| f(s, t)),
    }
}

/// In place, over the `t` blocks of `k` columns of `h` (`[m, t·k]`): block `l` becomes
/// \\(\\sum_{j<l} H_j\\) (or \\(\\sum_{j>l} H_j\\) when `reverse`), summed in `f64` in a fixed
/// order, in parallel over the `k` column positions.
fn exclusive_block_prefix<T: Scalar>(h: MatMut<'_, T>, k: usize, reverse: bool, par: Par) {
    let m = h.nrows();
    // group j holds column j of every block, in block order
    let mut groups: Vec<Vec<faer::ColMut<'_, T>>> = (0..k).map(|_| Vec::new()).collect();
    for (c, col) in h.col_iter_mut().enumerate() {
        groups[c % k].push(col);
    }
    let prefix = |group: &mut Vec<faer::ColMut<'_, T>>| {
        let mut acc = vec![0.0f64; m];
        let t = group.len();
        for i in 0..t {
            let col = &mut group[if reverse { t - 1 - i } else { i }];
            for (e, a) in acc.iter_mut().enumerate() {
                let x = col[e];
                col[e] = T::of(*a);
                *a += x.as_f64();
            }
        }
    };
    match par {
        Par::Seq => groups.iter_mut().for_each(prefix),
        Par::Rayon(_) => groups.par_iter_mut().for_each(prefix),
    }
}

struct ForwardTask<'a, T> {
    problem: usize,
    block: usize,
    out: MatMut<'a, T>,
    h: MatMut<'a, T>,
}

struct BackwardTask<'a, T> {
    problem: usize,
    block: usize,
    d_out: MatRef<'a, T>,
    w: MatMut<'a, T>,
    d_a: MatMut<'a, T>,
    d_b: MatMut<'a, T>,
    d_c: MatMut<'a, T>,
    d_q: Option<MatMut<'a, T>>,
    d_k: Option<MatMut<'a, T>>,
}

impl LowTri {
    /// An engine with blocks of `block` rows.
    ///
    /// # Errors
    /// [`SketchError::ZeroDimension`] if `block` is 0.
    pub fn new(block: usize) -> Result<Self> {
        if block == 0 {
            return Err(SketchError::ZeroDimension {
                sketch: "LowTri",
                what: "block size b",
            });
        }
        Ok(Self { block })
    }

    /// The block size \\(b\\).
    pub fn block(&self) -> usize {
        self.block
    }

    /// Bytes of [`Saved`] for a problem of `n` rows, width `m` and `k` columns.
    pub fn saved_bytes<T>(&self, n: usize, m: usize, k: usize) -> u128 {
        n.div_ceil(self.block) as u128 * m as u128 * k as u128 * size_of::<T>() as u128
    }

    fn widths<T: Scalar>(&self, problems: &[Problem<'_, T>]) -> (usize, usize) {
        let m = problems.iter().map(|p| p.m()).max().unwrap_or(0);
        let r = problems
            .iter()
            .map(|p| p.feature_input_width())
            .max()
            .unwrap_or(0);
        (m, r)
    }

    /// \\(\mathrm{out} = \mathrm{lt}(S)\,C\\) for one problem.
    ///
    /// # Shapes
    /// `out: [n, k]`.
    ///
    /// # Errors
    /// Those of [`Problem::validate`], and [`SketchError::TooLarge`] if the saved prefixes
    /// would exceed 4 GiB.
    pub fn forward<T: Scalar>(
        &self,
        problem: &Problem<'_, T>,
        par: Par,
    ) -> Result<(Mat<T>, Saved<T>)> {
        let mut out = Mat::zeros(problem.n(), problem.k());
        let saved = self.forward_batch(core::slice::from_ref(problem), vec![out.as_mut()], par)?;
        Ok((
            out,
            saved
                .into_iter()
                .next()
                .expect("one problem, one saved state"),
        ))
    }

    /// Forward of many independent problems (e.g. batch × heads) at once, parallel over all
    /// their blocks; each result is written into the matching `outs[i]` (`[n_i, k_i]`, any
    /// strides, so they can be views into one caller-owned buffer). Inputs are views: nothing is
    /// copied.
    ///
    /// # Errors
    /// As [`forward`](Self::forward) for each problem; a shape mismatch if `outs` does not match.
    pub fn forward_batch<T: Scalar>(
        &self,
        problems: &[Problem<'_, T>],
        mut outs: Vec<MatMut<'_, T>>,
        par: Par,
    ) -> Result<Vec<Saved<T>>> {
        const OP: &str = "lowtri::forward";
        if outs.len() != problems.len() {
            return Err(SketchError::ShapeMismatch {
                op: OP,
                expected: (problems.len(), 1),
                got: (outs.len(), 1),
            });
        }
        for (p, out) in problems.iter().zip(&outs) {
            p.validate(OP)?;
            check_shape(OP, out.as_ref(), (p.n(), p.k()))?;
            check_param_bytes(
                "lowtri saved prefixes",
                self.saved_bytes::<u8>(p.n(), p.m(), p.k()),
                size_of::<T>(),
            )?;
        }
        let b = self.block;
        let (m_max, r_max) = self.widths(problems);
        let mut hs: Vec<Mat<T>> = problems
            .iter()
            .map(|p| Mat::zeros(p.m(), p.n().div_ceil(b) * p.k()))
            .collect();

        // Phase 1: H_l = B_lᵀ C_l and out_l = lt(S_ll) C_l, per block.
        let mut tasks = Vec::new();
        for (pi, (out, h)) in outs.iter_mut().zip(hs.iter_mut()).enumerate() {
            for (l, (o, hb)) in row_blocks(out.rb_mut(), b)
                .into_iter()
                .zip(col_blocks(h.as_mut(), problems[pi].k()))
                .enumerate()
            {
                tasks.push(ForwardTask {
                    problem: pi,
                    block: l,
                    out: o,
                    h: hb,
                });
            }
        }
        run(
            tasks,
            par,
            || Scratch::new(b, m_max, r_max, false),
            |sc, t| {
                let p = &problems[t.problem];
                let (s, len) = (t.block * b, t.out.nrows());
                let c = p.c.subrows(s, len);
                let bl = p.b_rows(s, len, &mut sc.feat);
                gemm(t.h, bl.transpose(), c, T::one(), false, Par::Seq);
                let mut sb = sc.s.as_mut().submatrix_mut(0, 0, len, len);
                p.diagonal_scores(s, len, sb.rb_mut(), None);
                tri_matmul(
                    t.out,
                    BlockStructure::Rectangular,
                    Accum::Replace,
                    sb.as_ref(),
                    BlockStructure::TriangularLower,
                    c,
                    BlockStructure::Rectangular,
                    T::one(),
                    Par::Seq,
                );
            },
        );

        // Phase 2: Z_l = Σ_{j<l} H_j.
        for (p, h) in problems.iter().zip(hs.iter_mut()) {
            exclusive_block_prefix(h.as_mut(), p.k(), false, par);
        }

        // Phase 3: out_l += A_l Z_l (Z_0 = 0: skip the first block).
        let mut tasks = Vec::new();
        for (pi, out) in outs.iter_mut().enumerate() {
            for (l, o) in row_blocks(out.rb_mut(), b).into_iter().enumerate().skip(1) {
                tasks.push((pi, l, o));
            }
        }
        run(
            tasks,
            par,
            || Scratch::new(b, m_max, r_max, false),
            |sc, (pi, l, o)| {
                let p = &problems[pi];
                let al = p.a_rows(l * b, o.nrows(), &mut sc.feat);
                gemm(
                    o,
                    al,
                    hs[pi].as_ref().subcols(l * p.k(), p.k()),
                    T::one(),
                    true,
                    Par::Seq,
                );
            },
        );
        Ok(hs
            .into_iter()
            .map(|prefixes| Saved { prefixes, block: b })
            .collect())
    }

    /// Gradients of one problem given \\(\partial L/\partial\mathrm{out}\\) = `d_out` and the
    /// forward's [`Saved`] state.
    ///
    /// # Shapes
    /// `d_out: [n, k]`.
    ///
    /// # Errors
    /// Those of [`Problem::validate`]; shape mismatch or non-finite `d_out`; a `saved` from
    /// another shape or block size.
    pub fn backward<T: Scalar>(
        &self,
        problem: &Problem<'_, T>,
        saved: &Saved<T>,
        d_out: MatRef<'_, T>,
        par: Par,
    ) -> Result<Grads<T>> {
        let g = self.backward_batch(
            core::slice::from_ref(problem),
            core::slice::from_ref(saved),
            &[d_out],
            par,
        )?;
        Ok(g.into_iter().next().expect("one problem, one gradient"))
    }

    /// Backward of many independent problems at once (see [`forward_batch`](Self::forward_batch)).
    ///
    /// The reverse pass mirrors the forward: with \\(W_l = \sum_{j>l} A_j^\top
    /// \partial\mathrm{out}_j\\) (the same block prefix run from the last block back),
    /// \\[ \partial A_l = \partial\mathrm{out}_l Z_l^\top + \text{diag},\quad
    ///    \partial B_l = C_l W_l^\top + \text{diag},\quad
    ///    \partial C_l = B_l W_l + \mathrm{lt}(S_{ll})^\top\partial\mathrm{out}_l , \\]
    /// where "diag" is the diagonal block's own chain rule (through \\((XY^\top)^{\circ e}\\)),
    /// and feature gradients are chained through the tensor square for self-tensored inputs.
    ///
    /// # Errors
    /// As [`backward`](Self::backward).
    pub fn backward_batch<T: Scalar>(
        &self,
        problems: &[Problem<'_, T>],
        saved: &[Saved<T>],
        d_outs: &[MatRef<'_, T>],
        par: Par,
    ) -> Result<Vec<Grads<T>>> {
        const OP: &str = "lowtri::backward";
        if saved.len() != problems.len() || d_outs.len() != problems.len() {
            return Err(SketchError::ShapeMismatch {
                op: OP,
                expected: (problems.len(), 1),
                got: (saved.len().min(d_outs.len()), 1),
            });
        }
        let b = self.block;
        for ((p, s), d) in problems.iter().zip(saved).zip(d_outs) {
            p.validate(OP)?;
            check_shape(OP, *d, (p.n(), p.k()))?;
            check_finite(OP, "d_out", *d)?;
            check_shape(OP, s.prefixes.as_ref(), (p.m(), p.n().div_ceil(b) * p.k()))?;
            if s.block != b {
                return Err(SketchError::ShapeMismatch {
                    op: OP,
                    expected: (b, 1),
                    got: (s.block, 1),
                });
            }
        }
        let (m_max, r_max) = self.widths(problems);
        let mut grads: Vec<Grads<T>> = problems
            .iter()
            .map(|p| {
                let (n, w) = (p.n(), p.feature_input_width());
                let exact = p
                    .has_exact_diagonal()
                    .then(|| Mat::zeros(n, p.diagonal_width()));
                Grads {
                    d_a: Mat::zeros(n, w),
                    d_b: Mat::zeros(n, w),
                    d_c: Mat::zeros(n, p.k()),
                    d_q: exact.clone(),
                    d_k: exact,
                }
            })
            .collect();
        let mut ws: Vec<Mat<T>> = problems
            .iter()
            .map(|p| Mat::zeros(p.m(), p.n().div_ceil(b) * p.k()))
            .collect();

        // Phase 1: dZ_l = A_lᵀ dout_l; dA_l = dout_l Z_lᵀ; the diagonal block's gradients.
        let mut tasks = Vec::new();
        for (pi, (g, w)) in grads.iter_mut().zip(ws.iter_mut()).enumerate() {
            let p = &problems[pi];
            let n_blocks = p.n().div_ceil(b);
            let d_qs = optional_row_blocks(g.d_q.as_mut(), b, n_blocks);
            let d_ks = optional_row_blocks(g.d_k.as_mut(), b, n_blocks);
            let parts = col_blocks(w.as_mut(), p.k())
                .into_iter()
                .zip(row_blocks(g.d_a.as_mut(), b))
                .zip(row_blocks(g.d_b.as_mut(), b))
                .zip(row_blocks(g.d_c.as_mut(), b))
                .zip(d_qs.into_iter().zip(d_ks));
            for (l, ((((w, d_a), d_b), d_c), (d_q, d_k))) in parts.enumerate() {
                let d_out = d_outs[pi].subrows(l * b, d_a.nrows());
                tasks.push(BackwardTask {
                    problem: pi,
                    block: l,
                    d_out,
                    w,
                    d_a,
                    d_b,
                    d_c,
                    d_q,
                    d_k,
                });
            }
        }
        run(
            tasks,
            par,
            || Scratch::new(b, m_max, r_max, true),
            |sc, t| {
                let p = &problems[t.problem];
                let (m, s, len) = (p.m(), t.block * b, t.d_out.nrows());
                let c = p.c.subrows(s, len);
                let Scratch {
                    feat,
                    dfeat,
                    vjp,
                    s: sbuf,
                    g: gbuf,
                    ds,
                } = sc;
                {
                    // in the forward pass out_l += A_l Z_l, so dZ_l = A_lᵀ dout_l and dA_l = dout_l Z_lᵀ
                    let al = p.a_rows(s, len, feat);
                    gemm(t.w, al.transpose(), t.d_out, T::one(), false, Par::Seq);
                }
                let (mut d_a, d_b, mut d_c) = (t.d_a, t.d_b, t.d_c);
                if t.block > 0 {
                    let z = saved[t.problem]
                        .prefixes
                        .as_ref()
                        .subcols(t.block * p.k(), p.k());
                    let mut dfl = dfeat.as_mut().submatrix_mut(0, 0, len, m);
                    gemm(
                        dfl.rb_mut(),
                        t.d_out,
                        z.transpose(),
                        T::one(),
                        false,
                        Par::Seq,
                    );
                    p.feature_vjp(false, s, len, dfl.as_ref(), d_a.rb_mut(), vjp);
                }
                // in the forward pass out_l = lt(S) C_l, so dC_l = lt(S)ᵀ dout_l and dS = lt(dout_l C_lᵀ)
                let mut sb = sbuf.as_mut().submatrix_mut(0, 0, len, len);
                let mut gb = gbuf.as_mut().submatrix_mut(0, 0, len, len);
                p.diagonal_scores(s, len, sb.rb_mut(), Some(gb.rb_mut()));
                tri_matmul(
                    d_c.rb_mut(),
                    BlockStructure::Rectangular,
                    Accum::Replace,
                    sb.as_ref().transpose(),
                    BlockStructure::TriangularUpper,
                    t.d_out,
                    BlockStructure::Rectangular,
                    T::one(),
                    Par::Seq,
                );
                let mut dsb = ds.as_mut().submatrix_mut(0, 0, len, len);
                tri_matmul(
                    dsb.rb_mut(),
                    BlockStructure::TriangularLower,
                    Accum::Replace,
                    t.d_out,
                    BlockStructure::Rectangular,
                    c.transpose(),
                    BlockStructure::Rectangular,
                    T::one(),
                    Par::Seq,
                );
                match (t.d_q, t.d_k) {
                    (Some(dq), Some(dk)) => p.diagonal_backward(s, len, dsb, gb.as_ref(), dq, dk),
                    _ => p.diagonal_backward(s, len, dsb, gb.as_ref(), d_a, d_b),
                }
            },
        );

        // Phase 2: W_l = Σ_{j>l} dZ_j.
        for (p, w) in problems.iter().zip(ws.iter_mut()) {
            exclusive_block_prefix(w.as_mut(), p.k(), true, par);
        }

        // Phase 3: dC_l += B_l W_l and dB_l += C_l W_lᵀ (W of the last block is 0: skip it).
        let mut tasks = Vec::new();
        for (pi, g) in grads.iter_mut().enumerate() {
            let t = problems[pi].n().div_ceil(b);
            let parts = row_blocks(g.d_b.as_mut(), b)
                .into_iter()
                .zip(row_blocks(g.d_c.as_mut(), b));
            for (l, (d_b, d_c)) in parts.enumerate().take(t - 1) {
                tasks.push((pi, l, d_b, d_c));
            }
        }
        run(
            tasks,
            par,
            || Scratch::new(b, m_max, r_max, true),
            |sc, (pi, l, mut d_b, d_c)| {
                let p = &problems[pi];
                let (m, s, len) = (p.m(), l * b, d_c.nrows());
                let w = ws[pi].as_ref().subcols(l * p.k(), p.k());
                {
                    // in the forward pass H_l = B_lᵀ C_l feeds every later block, so dC_l += B_l W_l and dB_l = C_l W_lᵀ
                    let bl = p.b_rows(s, len, &mut sc.feat);
                    gemm(d_c, bl, w, T::one(), true, Par::Seq);
                }
                let mut dfl = sc.dfeat.as_mut().submatrix_mut(0, 0, len, m);
                gemm(
                    dfl.rb_mut(),
                    p.c.subrows(s, len),
                    w.transpose(),
                    T::one(),
                    false,
                    Par::Seq,
                );
                p.feature_vjp(true, s, len, dfl.as_ref(), d_b.rb_mut(), &mut sc.vjp);
            },
        );
        Ok(grads)
    }
}
