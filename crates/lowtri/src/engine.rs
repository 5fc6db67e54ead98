//! The block algorithm, forward and backward, batched over independent problems.

use std::any::Any;
use std::cell::RefCell;

use faer::linalg::matmul::triangular::{BlockStructure, matmul as tri_matmul};
use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use polysketch_core::bf16::{Operand, Products, gemm_seq};
use polysketch_core::linalg::row_blocks;
use polysketch_core::{
    Error as SketchError, Result, Scalar, check_finite, check_overflow, check_param_bytes,
    check_shape, linalg::gemm,
};
use rayon::prelude::*;

use crate::prefix::{exclusive_block_prefix, exclusive_scan_block};
use crate::{Features, Grads, Problem, Saved};

/// The block lower-triangular product engine with block size \\(b\\).
///
/// For \\(t = \lceil n/b\rceil\\) blocks of rows (the last one may be shorter),
/// \\[ H_l = B_l^\top C_l, \quad Z_l = \sum_{j<l} H_j, \quad
///    \mathrm{out}_l = A_l Z_l + \mathrm{lt}(S_{ll})\,C_l , \\]
/// in three phases: (1) per block in parallel, \\(H_l\\) and the diagonal term; (2) the
/// exclusive prefix \\(Z_l\\) over blocks, accumulated in `f64`, in parallel over its
/// \\(m \times k\\) entries; (3) per block in parallel, \\(A_l Z_l\\). Cost
/// \\(O(nb(m + k) + nmk)\\), linear in \\(n\\). When a batch holds enough problems to
/// keep every thread busy (e.g. 8 heads on 2 threads), the forward instead runs each problem's
/// blocks in order, one task per problem, doing (1), its step of (2) and (3) for a block
/// while \\(H_l\\) and \\(Z_l\\) are in cache (about 12 % faster at \\(n = 32\text{k}\\), 8
/// heads): the same arithmetic in the same order.
///
/// Work is cut by blocks, entries or problems, never by threads, and both orders give the same
/// values, so results are bitwise the same for any number of threads.
///
/// # Memory
/// Besides inputs and outputs: the prefixes \\(Z_l\\), \\(t \cdot m \cdot k\\) values, kept in
/// [`Saved`] for the backward; per worker, \\(b \times m\\) feature scratch (two in the
/// backward) and three \\(b \times b\\) score blocks, and in the forward by problem an
/// \\(m \times k\\) running sum in `f64`. Nothing of size \\(n \times m\\).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowTri {
    block: usize,
    /// Whether inputs are scanned for NaN and infinities and outputs for overflow (see
    /// [`LowTri::without_value_scans`]).
    scan_values: bool,
    /// Whether the forward's feature products take bf16 inputs (see
    /// [`LowTri::with_bf16_products`]).
    bf16: bool,
}

/// Per-worker scratch, allocated once per rayon split, never per block, and kept by each
/// thread between calls ([`with_scratch`]).
struct Scratch<T> {
    key: ScratchKey,
    feat: Mat<T>,
    dfeat: Mat<T>,
    vjp: Mat<T>,
    s: Mat<T>,
    g: Mat<T>,
    ds: Mat<T>,
    /// `[b, LANES]`: the last columns of a row-major destination ([`apart_last_columns`]).
    tail: Mat<T>,
    /// The running prefix of one problem in `f64` (`m·k`), when the forward goes by problem.
    acc: Vec<f64>,
    /// The sketch width and `(a, b, w)` of each self-tensored feature
    /// ([`polysketch_tensoring::feature_pairs`]), for products that generate the features.
    pairs: (usize, Vec<(usize, usize, T)>),
}

impl<T: Scalar> Scratch<T> {
    fn new(key: ScratchKey) -> Self {
        let ScratchKey { b, m, r, backward } = key;
        let z = |rows, cols| Mat::zeros(rows, cols);
        let (bb, bm) = if backward { (b, b) } else { (0, 0) };
        Self {
            key,
            feat: z(b, m),
            dfeat: z(bm, m),
            vjp: z(bm, r),
            s: z(b, b),
            g: z(b, b),
            ds: z(bb, bb),
            tail: z(b, LANES),
            acc: Vec::new(),
            pairs: (0, Vec::new()),
        }
    }
}

/// The shape of a [`Scratch`]: block rows `b`, feature width `m`, sketch width `r`, and
/// whether it holds the backward's extra buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScratchKey {
    b: usize,
    m: usize,
    r: usize,
    backward: bool,
}

/// How many scratches of other shapes a thread keeps between calls.
const POOL_SIZE: usize = 4;

thread_local! {
    /// Each thread's scratches from earlier calls (fresh ones per call cost page faults and
    /// zeroing: about 2 % of a PolySketch layer's time at n = 32k). At most [`POOL_SIZE`], the
    /// oldest dropped first; a few MiB each (`b(2m + r) + 3b²` values).
    static POOL: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch of shape `key`: this thread's from an earlier call if it has one,
/// else a new one; kept afterwards. Every task writes the scratch before reading it, so what an
/// earlier call left there never shows in a result.
fn with_scratch<T: Scalar, R>(key: ScratchKey, f: impl FnOnce(&mut Scratch<T>) -> R) -> R {
    let kept = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let at =
            pool.iter().position(|b| b.downcast_ref::<Scratch<T>>().is_some_and(|s| s.key == key));
        at.map(|i| pool.remove(i))
    });
    let mut s = match kept.map(|b| b.downcast::<Scratch<T>>()) {
        Some(Ok(s)) => *s,
        _ => Scratch::new(key),
    };
    let out = f(&mut s);
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() >= POOL_SIZE {
            pool.remove(0);
        }
        pool.push(Box::new(s));
    });
    out
}

/// Cuts `m` into consecutive column blocks of `size`.
fn col_blocks<T>(m: MatMut<'_, T>, size: usize) -> Vec<MatMut<'_, T>> {
    row_blocks(m.transpose_mut(), size).into_iter().map(|b| b.transpose_mut()).collect()
}

/// Row blocks of an optional matrix, or `count` `None`s.
fn optional_row_blocks<T>(
    m: Option<&mut Mat<T>>, size: usize, count: usize,
) -> Vec<Option<MatMut<'_, T>>> {
    match m {
        Some(m) => row_blocks(m.as_mut(), size).into_iter().map(Some).collect(),
        None => (0..count).map(|_| None).collect(),
    }
}

/// Runs `f` on every task, in parallel under `Par::Rayon`, with per-worker scratch.
fn run<T: Scalar, J: Send>(
    tasks: Vec<J>, par: Par, key: ScratchKey, f: impl Fn(&mut Scratch<T>, J) + Sync + Send,
) {
    match par {
        Par::Seq => with_scratch(key, |s| tasks.into_iter().for_each(|t| f(s, t))),
        Par::Rayon(_) => {
            // Two groups of consecutive tasks per thread: scratch is made once per group (it
            // is large, and zeroing it per task costs more than the work). Which thread runs
            // which group never changes what a task computes, so results stay the same.
            let groups = 2 * rayon::current_num_threads();
            let size = tasks.len().div_ceil(groups).max(1);
            let mut chunks: Vec<Vec<J>> = Vec::with_capacity(groups);
            let mut it = tasks.into_iter().peekable();
            while it.peek().is_some() {
                chunks.push(it.by_ref().take(size).collect());
            }
            chunks.into_par_iter().for_each(|chunk| {
                with_scratch(key, |s| chunk.into_iter().for_each(|t| f(s, t)));
            });
        }
    }
}

/// Whether the forward runs one task per problem (its blocks in order, the prefix summed as
/// it goes) rather than one task per block with the prefix as a separate pass: when every
/// thread gets the same number of problems (or at least four, so that an uneven last round
/// costs little). Both give the same values bit for bit (the same products, and each prefix
/// entry summed in `f64` in block order), so the choice never changes a result.
fn by_problem<T>(problems: &[Problem<'_, T>], threads: usize) -> bool {
    let count = problems.len();
    count >= threads && (count.is_multiple_of(threads) || count >= 4 * threads)
}

/// The self-tensored features of rows `s..s + len` of \\(L\\) (`right` false) or \\(R\\)
/// (`right` true) as [`Products`], generated by the bf16 kernel while it packs them; `None`
/// for explicit features.
fn tensored_rows<'s, T: Scalar>(
    pairs: &'s mut (usize, Vec<(usize, usize, T)>), p: &Problem<'s, T>, right: bool, s: usize,
    len: usize,
) -> Option<Products<'s, T>> {
    let Features::SelfTensored { l, r } = p.features else { return None };
    let rows = if right { r } else { l }.subrows(s, len);
    if pairs.1.is_empty() || pairs.0 != rows.ncols() {
        let layout = polysketch_tensoring::Layout::Symmetric;
        *pairs = (rows.ncols(), polysketch_tensoring::feature_pairs(rows.ncols(), layout));
    }
    Some(Products { l: rows, pairs: &pairs.1 })
}

/// The rows of faer's register tiles for `f32` with AVX-512 (16 lanes; 8 for `f64`).
const LANES: usize = 16;

/// Computes a product `dst (+)= X Y` given as `f(part, cols, accumulate)`, which computes
/// `part (+)= X Y[:, cols]`. faer computes a row-major destination as its transpose and covers
/// its `k` columns with tiles of 16 rows, so the engine's `[len, k]` outputs — the value
/// columns and the normaliser's, \\(k = 16q + 1\\) — took the work of \\(16(q + 1)\\) columns
/// (65 as 80: a quarter of a PolySketch forward's samples ran at 81 % of the kernel's rate; 33
/// as 48 at \\(h = 32\\)). A row-major `dst` with `k > LANES` and `k mod LANES ≠ 0` therefore
/// goes as two products: its first \\(16q\\) columns in place, the last `k mod LANES` in
/// `tail` (column-major, where they are the tiles' rows; with `accumulate`, starting from a copy
/// of them), then copied back. The first columns keep their values bit for bit; the last ones
/// are the same sums in faer's matrix-vector order, so they may differ in the last bit.
fn apart_last_columns<T: Scalar>(
    dst: MatMut<'_, T>, tail: &mut Mat<T>, accumulate: bool,
    mut f: impl FnMut(MatMut<'_, T>, std::ops::Range<usize>, bool),
) {
    let (rows, k) = (dst.nrows(), dst.ncols());
    let rest = k % LANES;
    if dst.col_stride() != 1 || k <= LANES || rest == 0 || rows > tail.nrows() {
        return f(dst, 0..k, accumulate);
    }
    let (head, mut last) = dst.split_at_col_mut(k - rest);
    f(head, 0..k - rest, accumulate);
    let mut t = tail.as_mut().submatrix_mut(0, 0, rows, rest);
    if accumulate {
        t.copy_from(last.as_ref());
    }
    f(t.rb_mut(), k - rest..k, accumulate);
    last.copy_from(t.as_ref());
}

/// Phase 1 for the block of rows `s..s + out.nrows()`: `h` \\(= H_l = B_l^\\top C_l\\)
/// (`[m, k]`) and `out` \\(= \\mathrm{lt}(S_{ll})\\,C_l\\) (`[len, k]`). With bf16 products
/// and self-tensored features, \\(H_l^\\top = C_l^\\top B_l\\) by the kernel that generates
/// \\(B_l\\) as it packs it, where it runs (the same values bit for bit as through
/// `sc.feat`).
fn block_sum_and_diagonal<T: Scalar>(
    sc: &mut Scratch<T>, p: &Problem<'_, T>, s: usize, out: MatMut<'_, T>, mut h: MatMut<'_, T>,
    bf16: bool,
) {
    let len = out.nrows();
    let c = p.c.subrows(s, len);
    let fused = bf16
        && tensored_rows(&mut sc.pairs, p, true, s, len).is_some_and(|b| {
            let ht = h.rb_mut().transpose_mut();
            T::gemm_bf16_products(ht, Operand::Dense(c.transpose()), Operand::Products(b), false)
        });
    if !fused {
        let bl = p.b_rows(s, len, &mut sc.feat);
        gemm_seq(h, bl.transpose(), c, false, bf16);
    }
    let mut sb = sc.s.as_mut().submatrix_mut(0, 0, len, len);
    p.diagonal_scores(s, len, sb.rb_mut(), None);
    let sb = sb.as_ref();
    apart_last_columns(out, &mut sc.tail, false, |part, cols, _| {
        tri_matmul(
            part,
            BlockStructure::Rectangular,
            Accum::Replace,
            sb,
            BlockStructure::TriangularLower,
            c.subcols(cols.start, cols.len()),
            BlockStructure::Rectangular,
            T::one(),
            Par::Seq,
        );
    });
}

/// Phase 3 for the block of rows `s..s + out.nrows()`: `out` \\(\\mathrel{+}= A_l Z_l\\) with
/// `z` \\(= Z_l\\) (`[m, k]`); with bf16 products and self-tensored features, \\(A_l\\)
/// generated as it is packed where that kernel runs (as in [`block_sum_and_diagonal`]).
fn add_earlier_blocks<T: Scalar>(
    sc: &mut Scratch<T>, p: &Problem<'_, T>, s: usize, mut out: MatMut<'_, T>, z: MatRef<'_, T>,
    bf16: bool,
) {
    let len = out.nrows();
    let fused = bf16
        && tensored_rows(&mut sc.pairs, p, false, s, len).is_some_and(|a| {
            T::gemm_bf16_products(out.rb_mut(), Operand::Products(a), Operand::Dense(z), true)
        });
    if !fused {
        let al = p.a_rows(s, len, &mut sc.feat);
        apart_last_columns(out, &mut sc.tail, true, |part, cols, acc| {
            gemm_seq(part, al, z.subcols(cols.start, cols.len()), acc, bf16);
        });
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
            return Err(SketchError::ZeroDimension { sketch: "LowTri", what: "block size b" });
        }
        Ok(Self { block, scan_values: true, bf16: false })
    }

    /// The same engine without its passes over the values: inputs (and `d_out`) are not
    /// scanned for NaN and infinities, nor outputs for overflow; shapes and sizes are still
    /// checked. For callers that check their own inputs and outputs, where these passes only
    /// repeat theirs: the attention layer checks `q`, `k`, `v` and every output it returns
    /// (a non-finite internal value reaches one of them); there the engine's scans were 1.5 %
    /// of a PolySketch layer's profile. Non-finite inputs then give non-finite outputs, never a
    /// panic.
    pub fn without_value_scans(self) -> Self {
        Self { scan_values: false, ..self }
    }

    /// The same engine with bf16 inputs for the forward's two feature products, \\(H_l =
    /// B_l^\top C_l\\) and \\(A_l Z_l\\) ([`Scalar::gemm_bf16`]: for `f32` on a CPU with AVX-512
    /// BF16, `vdpbf16ps` with sums in `f32`, 1.3–1.5× faster than faer's `f32` product on these
    /// shapes; elsewhere the inputs are rounded and multiplied in `T`). The prefixes \\(Z_l\\)
    /// are still summed in `f64`, the diagonal blocks (whose scores are powers, which would
    /// multiply the rounding error) and the backward stay in `T`.
    ///
    /// # Accuracy
    /// Each entry of the two products is within \\(2^{-7}\\) of the sum of the magnitudes of
    /// its terms (bf16 keeps 8 significant bits; see [`polysketch_core::bf16`]); on the
    /// attention layer's inputs the output is within about \\(2 \cdot 10^{-3}\\) of the `f64` result,
    /// relative (the tests check it).
    pub fn with_bf16_products(self, on: bool) -> Self {
        Self { bf16: on, ..self }
    }

    /// Whether the forward's feature products take bf16 inputs.
    pub fn bf16_products(&self) -> bool {
        self.bf16
    }

    /// The block size \\(b\\).
    pub fn block(&self) -> usize {
        self.block
    }

    /// Bytes of [`Saved`] for a problem of `n` rows, width `m` and `k` columns.
    pub fn saved_bytes<T>(&self, n: usize, m: usize, k: usize) -> u128 {
        polysketch_core::saturating_product(&[n.div_ceil(self.block), m, k, size_of::<T>()])
    }

    /// The scratch a worker needs for `problems`: the block rows it holds at once (the block
    /// size, or the longest problem when that is shorter), the widest features and feature
    /// inputs; refused when its `b × b` score tiles and `b × m` feature rows would pass
    /// [`MAX_PARAMETER_BYTES`](polysketch_core::MAX_PARAMETER_BYTES).
    fn widths<T: Scalar>(
        &self, op: &'static str, problems: &[Problem<'_, T>],
    ) -> Result<(usize, usize, usize)> {
        let m = problems.iter().map(|p| p.m()).max().unwrap_or(0);
        let r = problems.iter().map(|p| p.feature_input_width()).max().unwrap_or(0);
        let rows = problems.iter().map(|p| p.n()).max().unwrap_or(0).min(self.block);
        let (b, m128, r128) = (rows as u128, m as u128, r as u128);
        check_param_bytes(op, 4 * b * b + 2 * b * m128 + b * r128, size_of::<T>())?;
        Ok((rows, m, r))
    }

    /// \\(\mathrm{out} = \mathrm{lt}(S)\,C\\) for one problem.
    ///
    /// # Shapes
    /// `A, B: [n, m]` (or the inputs of the self-tensored and local forms), `C: [n, k]`
    /// → `out: [n, k]`.
    ///
    /// # Errors
    /// Those of [`Problem::validate`], and [`SketchError::TooLarge`] if the saved prefixes
    /// would exceed 4 GiB.
    ///
    /// ```
    /// use faer::{Mat, Par};
    /// use polysketch_lowtri::{LowTri, Problem, SketchError};
    ///
    /// // lt(A Bᵀ) C with A = B = 1 (n × 1), C = 1: row i sums i + 1 ones
    /// let ones = Mat::<f64>::ones(5, 1);
    /// let problem = Problem::general(ones.as_ref(), ones.as_ref(), ones.as_ref());
    /// let (out, _saved) = LowTri::new(2)?.forward(&problem, Par::Seq)?;
    /// assert_eq!(out[(4, 0)], 5.0);
    ///
    /// // C with another number of rows than A is refused, naming the input
    /// let short = Mat::<f64>::ones(4, 1);
    /// let bad = Problem::general(ones.as_ref(), ones.as_ref(), short.as_ref());
    /// assert!(matches!(LowTri::new(2)?.forward(&bad, Par::Seq), Err(SketchError::ShapeMismatch { .. })));
    /// # Ok::<(), SketchError>(())
    /// ```
    pub fn forward<T: Scalar>(
        &self, problem: &Problem<'_, T>, par: Par,
    ) -> Result<(Mat<T>, Saved<T>)> {
        let mut out = Mat::zeros(problem.n(), problem.k());
        let mut saved = Saved::new();
        self.forward_into(problem, out.as_mut(), &mut saved, par)?;
        Ok((out, saved))
    }

    /// Like [`forward`](Self::forward), into `out: [n, k]` and `saved`, whose memory is reused
    /// when the shapes are unchanged (what a training loop calls for one problem).
    ///
    /// # Errors
    /// As [`forward_batch_into`](Self::forward_batch_into).
    pub fn forward_into<T: Scalar>(
        &self, problem: &Problem<'_, T>, out: MatMut<'_, T>, saved: &mut Saved<T>, par: Par,
    ) -> Result<()> {
        let (problems, saved) = (core::slice::from_ref(problem), core::slice::from_mut(saved));
        self.forward_batch_into(problems, vec![out], saved, par)
    }

    /// Forward of many independent problems (e.g. batch × heads) at once, into new
    /// [`Saved`] states; see [`forward_batch_into`](Self::forward_batch_into).
    ///
    /// # Errors
    /// As [`forward_batch_into`](Self::forward_batch_into).
    pub fn forward_batch<T: Scalar>(
        &self, problems: &[Problem<'_, T>], outs: Vec<MatMut<'_, T>>, par: Par,
    ) -> Result<Vec<Saved<T>>> {
        let mut saved: Vec<Saved<T>> = problems.iter().map(|_| Saved::new()).collect();
        self.forward_batch_into(problems, outs, &mut saved, par)?;
        Ok(saved)
    }

    /// Forward of many independent problems at once, parallel over all their blocks. Result
    /// `i` is written into `outs[i]` (`[n_i, k_i]`, any strides, so they can be views into one
    /// caller-owned buffer) and its prefixes into `saved[i]`, whose memory is reused when the
    /// shape is unchanged. Inputs are views: nothing is copied.
    ///
    /// # Errors
    /// As [`forward`](Self::forward) for each problem; a shape mismatch if `outs` or `saved`
    /// does not have one entry per problem, or an output has the wrong shape.
    pub fn forward_batch_into<T: Scalar>(
        &self, problems: &[Problem<'_, T>], mut outs: Vec<MatMut<'_, T>>, saved: &mut [Saved<T>],
        par: Par,
    ) -> Result<()> {
        const OP: &str = "lowtri::forward";
        if outs.len() != problems.len() || saved.len() != problems.len() {
            let reason = format!(
                "`outs` and `saved` must have one entry per problem ({}), got {} and {}",
                problems.len(),
                outs.len(),
                saved.len()
            );
            return Err(SketchError::InvalidArgument { op: OP, reason });
        }
        let (b, bf16) = (self.block, self.bf16);
        for (p, out) in problems.iter().zip(&outs) {
            p.validate_with(OP, self.scan_values)?;
            check_shape(OP, "out", out.as_ref(), (p.n(), p.k()))?;
            check_param_bytes(
                "lowtri saved prefixes",
                self.saved_bytes::<u8>(p.n(), p.m(), p.k()),
                size_of::<T>(),
            )?;
        }
        let (rows, m_max, r_max) = self.widths(OP, problems)?;
        for (p, s) in problems.iter().zip(saved.iter_mut()) {
            s.shape_for(p.m(), p.n().div_ceil(b) * p.k());
            s.block = b;
            s.ready = false;
        }

        let key = ScratchKey { b: rows, m: m_max, r: r_max, backward: false };
        let threads = match par {
            Par::Seq => 1,
            Par::Rayon(_) => rayon::current_num_threads(),
        };
        if by_problem(problems, threads) {
            // one task per problem, its blocks in order: H_l is summed into the prefix and
            // used for A_l Z_l while it is still in cache (no pass over all prefixes)
            let mut tasks = Vec::new();
            for (pi, (out, s)) in outs.iter_mut().zip(saved.iter_mut()).enumerate() {
                tasks.push((pi, out.rb_mut(), s.prefixes.as_mut()));
            }
            run(tasks, par, key, |sc, (pi, mut out, mut prefixes)| {
                let (p, k) = (&problems[pi], problems[pi].k());
                sc.acc.clear();
                sc.acc.resize(p.m() * k, 0.0);
                let blocks = row_blocks(out.rb_mut(), b)
                    .into_iter()
                    .zip(col_blocks(prefixes.rb_mut(), k))
                    .enumerate();
                for (l, (mut o, mut z)) in blocks {
                    block_sum_and_diagonal(sc, p, l * b, o.rb_mut(), z.rb_mut(), bf16);
                    exclusive_scan_block(z.rb_mut(), &mut sc.acc);
                    if l > 0 {
                        add_earlier_blocks(sc, p, l * b, o, z.as_ref(), bf16);
                    }
                }
            });
        } else {
            // Phase 1: H_l = B_lᵀ C_l and out_l = lt(S_ll) C_l, per block.
            let mut tasks = Vec::new();
            for (pi, (out, s)) in outs.iter_mut().zip(saved.iter_mut()).enumerate() {
                let k = problems[pi].k();
                let blocks =
                    row_blocks(out.rb_mut(), b).into_iter().zip(col_blocks(s.prefixes.as_mut(), k));
                for (l, (o, hb)) in blocks.enumerate() {
                    tasks.push(ForwardTask { problem: pi, block: l, out: o, h: hb });
                }
            }
            run(tasks, par, key, |sc, t| {
                block_sum_and_diagonal(sc, &problems[t.problem], t.block * b, t.out, t.h, bf16);
            });

            // Phase 2: Z_l = Σ_{j<l} H_j.
            for (p, s) in problems.iter().zip(saved.iter_mut()) {
                exclusive_block_prefix(&mut s.prefixes, p.k(), false, par);
            }

            // Phase 3: out_l += A_l Z_l (Z_0 = 0: skip the first block).
            let mut tasks = Vec::new();
            for (pi, out) in outs.iter_mut().enumerate() {
                for (l, o) in row_blocks(out.rb_mut(), b).into_iter().enumerate().skip(1) {
                    tasks.push((pi, l, o));
                }
            }
            let filled: &[Saved<T>] = saved;
            run(tasks, par, key, |sc, (pi, l, o)| {
                let (p, k) = (&problems[pi], problems[pi].k());
                let z = filled[pi].prefixes.as_ref().subcols(l * k, k);
                add_earlier_blocks(sc, p, l * b, o, z, bf16);
            });
        }
        for s in saved.iter_mut() {
            s.ready = true;
        }
        // finite inputs whose products overflow the number format: a typed error, not a result
        // of infinities (one pass over the output)
        for (p, out) in problems.iter().zip(&outs).filter(|_| self.scan_values) {
            check_overflow(OP, p.inputs(), "out", out.as_ref())?;
        }
        Ok(())
    }

    /// Gradients of one problem given \\(\partial L/\partial\mathrm{out}\\) = `d_out` and the
    /// forward's [`Saved`] state, which is consumed (its memory holds the reverse prefixes
    /// afterwards).
    ///
    /// # Shapes
    /// `d_out: [n, k]`.
    ///
    /// # Errors
    /// Those of [`Problem::validate`]; shape mismatch or non-finite `d_out`; a `saved` that is
    /// empty, already consumed, or from another shape or block size.
    pub fn backward<T: Scalar>(
        &self, problem: &Problem<'_, T>, saved: &mut Saved<T>, d_out: MatRef<'_, T>, par: Par,
    ) -> Result<Grads<T>> {
        let mut grads = Grads::new();
        let one = core::slice::from_mut(&mut grads);
        self.backward_batch_into(
            core::slice::from_ref(problem),
            core::slice::from_mut(saved),
            &[d_out],
            one,
            par,
        )?;
        Ok(grads)
    }

    /// Backward of many independent problems at once, into new gradients; see
    /// [`backward_batch_into`](Self::backward_batch_into).
    ///
    /// # Errors
    /// As [`backward_batch_into`](Self::backward_batch_into).
    pub fn backward_batch<T: Scalar>(
        &self, problems: &[Problem<'_, T>], saved: &mut [Saved<T>], d_outs: &[MatRef<'_, T>],
        par: Par,
    ) -> Result<Vec<Grads<T>>> {
        let mut grads: Vec<Grads<T>> = problems.iter().map(|_| Grads::new()).collect();
        self.backward_batch_into(problems, saved, d_outs, &mut grads, par)?;
        Ok(grads)
    }

    /// Backward of many independent problems at once, writing into `grads` (memory reused when
    /// the shapes match).
    ///
    /// The reverse pass mirrors the forward: with \\(W_l = \sum_{j>l} A_j^\top
    /// \partial\mathrm{out}_j\\) (the same block prefix run from the last block back),
    /// \\[ \partial A_l = \partial\mathrm{out}_l Z_l^\top + \text{diag},\quad
    ///    \partial B_l = C_l W_l^\top + \text{diag},\quad
    ///    \partial C_l = B_l W_l + \mathrm{lt}(S_{ll})^\top\partial\mathrm{out}_l , \\]
    /// where "diag" is the diagonal block's own chain rule (through \\((XY^\top)^{\circ e}\\)),
    /// and feature gradients are chained through the tensor square for self-tensored inputs.
    /// Each block's \\(A_l^\top\partial\mathrm{out}_l\\) overwrites its \\(Z_l\\) in `saved`
    /// once \\(\partial A_l\\) has used it, and the reverse prefix runs in place.
    ///
    /// # Errors
    /// As [`backward`](Self::backward).
    pub fn backward_batch_into<T: Scalar>(
        &self, problems: &[Problem<'_, T>], saved: &mut [Saved<T>], d_outs: &[MatRef<'_, T>],
        grads: &mut [Grads<T>], par: Par,
    ) -> Result<()> {
        const OP: &str = "lowtri::backward";
        let count = problems.len();
        if saved.len() != count || d_outs.len() != count || grads.len() != count {
            let reason = format!(
                "`saved`, `d_outs` and `grads` must have one entry per problem ({count}), got {}, \
                 {} and {}",
                saved.len(),
                d_outs.len(),
                grads.len()
            );
            return Err(SketchError::InvalidArgument { op: OP, reason });
        }
        let b = self.block;
        for ((p, s), d) in problems.iter().zip(saved.iter()).zip(d_outs) {
            p.validate_with(OP, self.scan_values)?;
            check_shape(OP, "d_out", *d, (p.n(), p.k()))?;
            if self.scan_values {
                check_finite(OP, "d_out", *d)?;
            }
            if !s.ready {
                let reason =
                    "the saved state is empty or already used by a backward: run the forward again"
                        .into();
                return Err(SketchError::InvalidArgument { op: OP, reason });
            }
            let expected = (p.m(), p.n().div_ceil(b) * p.k());
            if s.block != b || (s.prefixes.nrows(), s.prefixes.ncols()) != expected {
                let reason = format!(
                    "the saved state comes from another problem or engine (block {} and prefixes \
                     {}x{}, expected block {b} and {}x{})",
                    s.block,
                    s.prefixes.nrows(),
                    s.prefixes.ncols(),
                    expected.0,
                    expected.1
                );
                return Err(SketchError::InvalidArgument { op: OP, reason });
            }
        }
        let (rows, m_max, r_max) = self.widths(OP, problems)?;
        for (g, p) in grads.iter_mut().zip(problems) {
            g.reset_for(p);
        }
        for s in saved.iter_mut() {
            s.ready = false;
        }

        // Phase 1: dA_l = dout_l Z_lᵀ, then dZ_l = A_lᵀ dout_l in Z_l's place; the diagonal
        // block's gradients.
        let mut tasks = Vec::new();
        for (pi, (g, s)) in grads.iter_mut().zip(saved.iter_mut()).enumerate() {
            let p = &problems[pi];
            let n_blocks = p.n().div_ceil(b);
            let d_qs = optional_row_blocks(g.d_q.as_mut(), b, n_blocks);
            let d_ks = optional_row_blocks(g.d_k.as_mut(), b, n_blocks);
            let parts = col_blocks(s.prefixes.as_mut(), p.k())
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
        let scratch = ScratchKey { b: rows, m: m_max, r: r_max, backward: true };
        run(tasks, par, scratch, |sc, t| {
            let p = &problems[t.problem];
            let (m, s, len) = (p.m(), t.block * b, t.d_out.nrows());
            let c = p.c.subrows(s, len);
            let Scratch { feat, dfeat, vjp, s: sbuf, g: gbuf, ds, .. } = sc;
            let (mut w, mut d_a, d_b, mut d_c) = (t.w, t.d_a, t.d_b, t.d_c);
            if t.block > 0 {
                // in the forward pass out_l += A_l Z_l, so dA_l = dout_l Z_lᵀ ...
                let mut dfl = dfeat.as_mut().submatrix_mut(0, 0, len, m);
                gemm(dfl.rb_mut(), t.d_out, w.as_ref().transpose(), T::one(), false, Par::Seq);
                p.feature_vjp(false, s, len, dfl.as_ref(), d_a.rb_mut(), vjp);
            }
            {
                // ... and dZ_l = A_lᵀ dout_l, written where Z_l was
                let al = p.a_rows(s, len, feat);
                gemm(w.rb_mut(), al.transpose(), t.d_out, T::one(), false, Par::Seq);
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
        });

        // Phase 2: W_l = Σ_{j>l} dZ_j, in place.
        for (p, s) in problems.iter().zip(saved.iter_mut()) {
            exclusive_block_prefix(&mut s.prefixes, p.k(), true, par);
        }

        // Phase 3: dC_l += B_l W_l and dB_l += C_l W_lᵀ (W of the last block is 0: skip it).
        let mut tasks = Vec::new();
        for (pi, g) in grads.iter_mut().enumerate() {
            let t = problems[pi].n().div_ceil(b);
            let parts =
                row_blocks(g.d_b.as_mut(), b).into_iter().zip(row_blocks(g.d_c.as_mut(), b));
            for (l, (d_b, d_c)) in parts.enumerate().take(t - 1) {
                tasks.push((pi, l, d_b, d_c));
            }
        }
        let suffixes: &[Saved<T>] = saved;
        run(
            tasks,
            par,
            ScratchKey { b: rows, m: m_max, r: r_max, backward: true },
            |sc, (pi, l, mut d_b, d_c)| {
                let p = &problems[pi];
                let (m, s, len) = (p.m(), l * b, d_c.nrows());
                let w = suffixes[pi].prefixes.as_ref().subcols(l * p.k(), p.k());
                {
                    // in the forward pass H_l = B_lᵀ C_l feeds every later block, so dC_l += B_l W_l and dB_l = C_l W_lᵀ
                    let bl = p.b_rows(s, len, &mut sc.feat);
                    gemm(d_c, bl, w, T::one(), true, Par::Seq);
                }
                let mut dfl = sc.dfeat.as_mut().submatrix_mut(0, 0, len, m);
                gemm(dfl.rb_mut(), p.c.subrows(s, len), w.transpose(), T::one(), false, Par::Seq);
                p.feature_vjp(true, s, len, dfl.as_ref(), d_b.rb_mut(), &mut sc.vjp);
            },
        );
        for (p, g) in problems.iter().zip(grads.iter()).filter(|_| self.scan_values) {
            let optional = [("d_q", g.d_q.as_ref()), ("d_k", g.d_k.as_ref())];
            let named = [("d_a", Some(&g.d_a)), ("d_b", Some(&g.d_b)), ("d_c", Some(&g.d_c))];
            for (name, m) in named.into_iter().chain(optional) {
                if let Some(m) = m {
                    check_overflow(OP, p.inputs(), name, m.as_ref())?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product by [`apart_last_columns`] equals faer's in one piece, within rounding, for
    /// every kind of width (below, at and above a tile, a multiple of it or not), both layouts
    /// of the destination and both accumulation modes.
    #[test]
    fn the_last_columns_apart_give_the_whole_product() {
        let (rows, inner) = (37, 29);
        let x = Mat::<f32>::from_fn(rows, inner, |i, j| ((i * 7 + j * 13) % 17) as f32 / 8.0 - 1.0);
        for k in [1, 5, 16, 17, 31, 33, 48, 65] {
            let y = Mat::<f32>::from_fn(inner, k, |i, j| ((i * 5 + j * 3) % 11) as f32 / 5.0 - 1.0);
            let start = Mat::<f32>::from_fn(rows, k, |i, j| ((i + 2 * j) % 7) as f32 - 3.0);
            for accumulate in [false, true] {
                let mut whole = start.clone();
                gemm(whole.as_mut(), x.as_ref(), y.as_ref(), 1.0, accumulate, Par::Seq);
                for row_major in [false, true] {
                    // a row-major destination: the transpose of a column-major one
                    let mut storage =
                        if row_major { start.transpose().to_owned() } else { start.clone() };
                    let dst =
                        if row_major { storage.as_mut().transpose_mut() } else { storage.as_mut() };
                    let mut tail = Mat::<f32>::zeros(rows, LANES);
                    apart_last_columns(dst, &mut tail, accumulate, |part, cols, acc| {
                        gemm(
                            part,
                            x.as_ref(),
                            y.subcols(cols.start, cols.len()),
                            1.0,
                            acc,
                            Par::Seq,
                        );
                    });
                    let got = if row_major { storage.transpose().to_owned() } else { storage };
                    let bound = inner as f32 * f32::EPSILON * 64.0;
                    for i in 0..rows {
                        for j in 0..k {
                            let (g, w) = (got[(i, j)], whole[(i, j)]);
                            assert!(
                                (g - w).abs() <= bound * w.abs().max(1.0),
                                "k {k}, accumulate {accumulate}, row-major {row_major}: \
                                 ({i}, {j}) {g} against {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}
