//! Recurrent state: decoding token by token and long sequences in chunks (prefill, then
//! decode), with the numbers of one causal forward over the whole sequence.
//!
//! For PolySketch attention the state of a head is constant in size, whatever the context:
//! \\[ S = \sum_{j \text{ folded}} \phi'(\tilde k_j)\,[v_j, 1]^\top \in \mathbb R^{m \times (h+1)},
//!     \quad m = r(r+1)/2, \\]
//! kept in `f64`, plus (with exact local blocks) the keys, key sketches and values of the
//! current, unfinished block of \\(b\\) tokens. Token \\(i\\) reads \\(\phi'(\tilde q_i)^\top S\\)
//! and, with local blocks, \\(\sum_{j \in \text{open block}, j \le i}\langle\tilde q_i, \tilde
//! k_j\rangle^p [v_j, 1]\\); a block is folded into \\(S\\) when it completes. Each token costs
//! \\(O(m h + b h)\\) — \\(O(1)\\) in the context length — and a chunk of \\(n\\) tokens runs
//! through the lowtri engine like a forward, plus \\(\phi'(\tilde Q) S\\).
//!
//! Softmax and polynomial attention keep the ordinary KV cache (keys — after the layer norm for
//! polynomial — and values of every token so far): token \\(i\\) costs \\(O(i h)\\).

use faer::{Mat, MatRef, Par};
use polysketch_core::Scalar;
use polysketch_core::linalg::{dot, gemm, ipow};
use polysketch_lowtri::{Features, LowTri, Problem};
use polysketch_tensoring::{Layout, feature_dim, tensor_square};
use rayon::prelude::*;

use crate::checks::{check_len, check_positive, check_qkv, head_matrix, shape_of};
use crate::kernel::normalise;
use crate::layernorm::LnSaved;
use crate::learned::LearnedSaved;
use crate::performer::Side;
use crate::{Attention, MAX_STATE_BYTES};
use crate::{AttentionError, Result};
use crate::{AttentionKind, PolySketchConfig};

/// The recurrent state of a layer over `batch` sequences: what the tokens seen so far leave for
/// the ones to come (see the [module documentation](self)). Made by [`Attention::new_state`],
/// advanced by [`Attention::forward_chunk`] and [`Attention::decode_step`].
#[derive(Clone)]
pub struct State<T: Scalar> {
    kind: AttentionKind,
    batch: usize,
    heads: usize,
    head_dim: usize,
    position: usize,
    per_head: Vec<HeadState<T>>,
}

impl<T: Scalar> core::fmt::Debug for State<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("State")
            .field("kind", &self.kind)
            .field("batch", &self.batch)
            .field("position", &self.position)
            .finish()
    }
}

impl<T: Scalar> State<T> {
    /// The number of tokens consumed so far (per sequence).
    pub fn position(&self) -> usize {
        self.position
    }

    /// The number of sequences.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The memory the state holds, in bytes: constant for PolySketch, growing with the position
    /// for the KV caches of softmax and polynomial attention.
    pub fn bytes(&self) -> usize {
        self.per_head
            .iter()
            .map(|s| match s {
                HeadState::Sketch(s) => {
                    s.s.len() * size_of::<f64>()
                        + (s.open_k.len() + s.open_r.len() + s.open_v.len()) * size_of::<T>()
                }
                HeadState::Cache { k, v } => (k.len() + v.len()) * size_of::<T>(),
            })
            .sum()
    }
}

#[derive(Clone)]
enum HeadState<T> {
    Sketch(SketchState<T>),
    /// Row-major `[position, h]`: keys (after the layer norm, for polynomial attention) and
    /// values.
    Cache {
        k: Vec<T>,
        v: Vec<T>,
    },
}

#[derive(Clone)]
struct SketchState<T> {
    /// Row-major `[m, h + 1]`: \\(\sum_j \phi'(\tilde k_j)[v_j, 1]^\top\\) over folded tokens.
    s: Vec<f64>,
    /// The open local block: \\(\tilde k_j\\) `[len, h]`, their sketches `[len, r]`, \\(v_j\\)
    /// `[len, h]`.
    open_k: Vec<T>,
    open_r: Vec<T>,
    open_v: Vec<T>,
}

/// One head's index, state and output rows.
type HeadWork<'a, T> = (usize, (&'a mut HeadState<T>, &'a mut [T]));

/// The rows of a row-major buffer as a matrix view.
fn rows<T>(x: &[T], cols: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(x, x.len() / cols, cols)
}

impl<T: Scalar> Attention<T> {
    /// Decoding continues a causal sequence: a bidirectional layer has no state.
    fn check_causal(&self, op: &'static str) -> Result<()> {
        match self.config.causal {
            true => Ok(()),
            false => Err(AttentionError::InvalidConfig(format!(
                "{op}: decoding is causal; this layer is bidirectional (run `forward` on the whole \
                 sequence)"
            ))),
        }
    }

    /// An empty state for `batch` sequences (position 0).
    ///
    /// # Errors
    /// [`AttentionError::InvalidConfig`] for a bidirectional layer;
    /// [`AttentionError::InvalidArgument`] if `batch` is 0; [`AttentionError::TooLarge`] if the
    /// state of `batch · heads` heads would pass [`MAX_STATE_BYTES`] (checked before allocating).
    pub fn new_state(&self, batch: usize) -> Result<State<T>> {
        const OP: &str = "Attention::new_state";
        self.check_causal(OP)?;
        check_positive(OP, batch, 1)?;
        let (heads, h) = (self.config.heads, self.config.head_dim);
        // per head: the running sums of PolySketch (f64), or an empty cache; in u128
        let per_head = match self.config.kind {
            AttentionKind::PolySketch(c) => {
                (feature_dim(c.r, Layout::Symmetric) as u128 * (h as u128 + 1)).saturating_mul(8)
            }
            AttentionKind::Performer { features, .. }
            | AttentionKind::Hedgehog { features, .. } => {
                (features as u128 * (h as u128 + 1)).saturating_mul(8)
            }
            _ => 0,
        } + size_of::<HeadState<T>>() as u128;
        let bytes = (batch as u128).saturating_mul(heads as u128).saturating_mul(per_head);
        if bytes > MAX_STATE_BYTES {
            return Err(AttentionError::TooLarge { op: OP, bytes, limit: MAX_STATE_BYTES });
        }
        let head = match self.config.kind {
            AttentionKind::PolySketch(c) => HeadState::Sketch(SketchState {
                s: vec![0.0; feature_dim(c.r, Layout::Symmetric) * (h + 1)],
                open_k: Vec::new(),
                open_r: Vec::new(),
                open_v: Vec::new(),
            }),
            AttentionKind::Performer { features, .. }
            | AttentionKind::Hedgehog { features, .. } => HeadState::Sketch(SketchState {
                s: vec![0.0; features * (h + 1)],
                open_k: Vec::new(),
                open_r: Vec::new(),
                open_v: Vec::new(),
            }),
            _ => HeadState::Cache { k: Vec::new(), v: Vec::new() },
        };
        Ok(State {
            kind: self.config.kind,
            batch,
            heads,
            head_dim: h,
            position: 0,
            per_head: vec![head; batch * heads],
        })
    }

    /// The next token of every sequence: `q`, `k`, `v` and `out` are `[batch, heads, 1, h]`.
    /// The same as [`forward_chunk`](Self::forward_chunk) with `n = 1`.
    ///
    /// # Errors
    /// As [`forward_chunk`](Self::forward_chunk).
    pub fn decode_step(
        &self, q: &[T], k: &[T], v: &[T], out: &mut [T], state: &mut State<T>,
    ) -> Result<()> {
        let batch = state.batch;
        self.forward_chunk(q, k, v, batch, 1, out, state, Par::Seq)
    }

    /// The next `n` tokens of every sequence, continuing from `state` and advancing it:
    /// the outputs are those that the causal forward of the whole sequence gives its rows
    /// `position .. position + n` (up to rounding). Inference only (no backward).
    ///
    /// # Shapes
    /// `q`, `k`, `v`, `out`: `[batch, heads, n, h]` row-major.
    ///
    /// # Errors
    /// A bidirectional layer; wrong lengths, `n` of 0, non-finite values, a state of another
    /// layer kind, shape or
    /// batch, a KV cache that would grow past [`MAX_STATE_BYTES`] (these leave `state` as it
    /// was); [`AttentionError::Overflow`] when the scores leave the number format, after which
    /// `state` may hold part of the chunk: start a new one.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_chunk(
        &self, q: &[T], k: &[T], v: &[T], batch: usize, n: usize, out: &mut [T],
        state: &mut State<T>, par: Par,
    ) -> Result<()> {
        const OP: &str = "Attention::forward_chunk";
        self.check_causal(OP)?;
        let (heads, h) = (self.config.heads, self.config.head_dim);
        if state.kind != self.config.kind
            || state.heads != heads
            || state.head_dim != h
            || state.batch != batch
        {
            return Err(AttentionError::InvalidState {
                op: OP,
                reason: format!(
                    "the state is for {:?} with {} heads of {} over batch {}, the call for {:?} with {heads} heads of {h} over batch {batch}",
                    state.kind, state.heads, state.head_dim, state.batch, self.config.kind
                ),
            });
        }
        check_positive(OP, batch, n)?;
        let total = check_qkv(OP, &self.config, [q, k, v], batch, n, Par::Seq)?;
        check_len(OP, "out", out, total, shape_of(&self.config, batch, n))?;
        self.check_parameters(OP)?;
        if !matches!(
            self.config.kind,
            AttentionKind::PolySketch(_)
                | AttentionKind::Performer { .. }
                | AttentionKind::Hedgehog { .. }
        ) {
            // the cache after this chunk, in u128: no product of sizes can wrap
            let bytes = [state.position as u128 + n as u128, batch as u128, heads as u128]
                .into_iter()
                .chain([2 * h as u128, size_of::<T>() as u128])
                .fold(1, u128::saturating_mul);
            if bytes > MAX_STATE_BYTES {
                return Err(AttentionError::TooLarge { op: OP, bytes, limit: MAX_STATE_BYTES });
            }
        }
        let position = state.position;
        let work: Vec<HeadWork<'_, T>> =
            state.per_head.iter_mut().zip(out.chunks_mut(n * h)).enumerate().collect();
        let run = |(idx, (st, o)): HeadWork<'_, T>| -> Result<()> {
            let (qh, kh, vh) =
                (head_matrix(q, idx, n, h), head_matrix(k, idx, n, h), head_matrix(v, idx, n, h));
            match (st, self.config.kind) {
                (HeadState::Sketch(s), AttentionKind::PolySketch(c)) => {
                    self.sketch_chunk(&c, qh, kh, vh, s, o)
                }
                (
                    HeadState::Sketch(s),
                    AttentionKind::Performer { .. } | AttentionKind::Hedgehog { .. },
                ) => self.features_chunk(qh, kh, vh, &mut s.s, o),
                (HeadState::Cache { k: ck, v: cv }, kind) => {
                    self.cache_chunk(kind, qh, kh, vh, position, ck, cv, o);
                    Ok(())
                }
                _ => Err(AttentionError::InvalidState {
                    op: OP,
                    reason: "internal: state of another kind".into(),
                }),
            }
        };
        let done: Vec<Result<()>> = match par {
            Par::Seq => work.into_iter().map(run).collect(),
            Par::Rayon(_) => work.into_par_iter().map(run).collect(),
        };
        let result = done.into_iter().collect::<Result<Vec<()>>>().map(drop);
        self.blame_overflow(OP, result, &[("q", q), ("k", k)], &[("out", out)], Par::Seq)?;
        state.position += n;
        Ok(())
    }

    /// \\(\tilde x = \mathrm{LN}(x)/h^{1/4}\\) of every row, row-major.
    fn normalised(&self, x: MatRef<'_, T>) -> Vec<T> {
        let mut out = vec![T::zero(); x.nrows() * x.ncols()];
        self.qk_forward(x, &mut out, &mut LnSaved::default());
        out
    }

    /// The sketch \\(L\\) of the rows of `x` (random or learned), `[n, r]`.
    fn sketch_of(&self, x: MatRef<'_, T>, r: usize) -> Result<Mat<T>> {
        let mut l = Mat::zeros(x.nrows(), r);
        match (&self.learned, self.sketch.as_deref()) {
            (Some(ls), _) => ls.forward(x, l.as_mut(), &mut LearnedSaved::default()),
            (None, Some(s)) => s.apply_into(x, l.as_mut(), Par::Seq)?,
            (None, None) => {
                return Err(AttentionError::InvalidState {
                    op: "Attention::forward_chunk",
                    reason: "internal: a PolySketch layer without a sketch".into(),
                });
            }
        }
        Ok(l)
    }

    /// One head's chunk of PolySketch attention (see the module documentation).
    #[allow(clippy::too_many_arguments)]
    fn sketch_chunk(
        &self, c: &PolySketchConfig, q: MatRef<'_, T>, k: MatRef<'_, T>, v: MatRef<'_, T>,
        st: &mut SketchState<T>, out: &mut [T],
    ) -> Result<()> {
        let (n, h, r, b) = (q.nrows(), q.ncols(), c.r, c.block);
        let (qt, kt) = (self.normalised(q), self.normalised(k));
        let (l, rk) = (self.sketch_of(rows(&qt, h), r)?, self.sketch_of(rows(&kt, h), r)?);
        // with local blocks, the tokens that finish the open block go one by one
        let mut start = 0;
        if c.local {
            while start < n && !st.open_k.is_empty() {
                let i = start;
                st.open_k.extend_from_slice(&kt[i * h..(i + 1) * h]);
                st.open_r.extend((0..r).map(|j| rk[(i, j)]));
                st.open_v.extend((0..h).map(|j| v[(i, j)]));
                let mut num = self.read_state(st, l.as_ref().subrows(i, 1), h);
                // exact scores against the open block, this token included
                let qi = &qt[i * h..(i + 1) * h];
                let open = st.open_k.chunks_exact(h).zip(st.open_v.chunks_exact(h));
                add_exact(&mut num, qi, open, c.p);
                normalise(&num, &mut out[i * h..(i + 1) * h], 1.0);
                if st.open_k.len() / h == b {
                    fold(&mut st.s, rows(&st.open_r, r), rows(&st.open_v, h));
                    st.open_k.clear();
                    st.open_r.clear();
                    st.open_v.clear();
                }
                start += 1;
            }
        }
        if start == n {
            return Ok(());
        }
        // the rest starts a block: the lowtri engine within it, φ'(Q̃) S from before it
        let count = n - start;
        let (qs, ks) = (rows(&qt[start * h..], h), rows(&kt[start * h..], h));
        let (ls, rs) = (l.as_ref().subrows(start, count), rk.as_ref().subrows(start, count));
        let cm =
            Mat::from_fn(count, h + 1, |i, j| if j < h { v[(start + i, j)] } else { T::one() });
        let problem = if c.local {
            Problem::local_exact(Features::SelfTensored { l: ls, r: rs }, qs, ks, c.p, cm.as_ref())
        } else {
            Problem::self_tensored(ls, rs, cm.as_ref())
        };
        let (raw, _) = LowTri::new(b)?.forward(&problem, Par::Seq)?;
        let from_state = self.read_state_rows(st, ls, h);
        for i in 0..count {
            let num: Vec<f64> =
                (0..=h).map(|j| raw[(i, j)].as_f64() + from_state[(i, j)]).collect();
            normalise(&num, &mut out[(start + i) * h..(start + i + 1) * h], 1.0);
        }
        // fold the finished blocks (every token, without local blocks); keep the rest open
        let folded = if c.local { count / b * b } else { count };
        if folded > 0 {
            fold(&mut st.s, rs.subrows(0, folded), v.subrows(start, folded));
        }
        for i in folded..count {
            st.open_k.extend_from_slice(&kt[(start + i) * h..(start + i + 1) * h]);
            st.open_r.extend((0..r).map(|j| rs[(i, j)]));
            st.open_v.extend((0..h).map(|j| v[(start + i, j)]));
        }
        Ok(())
    }

    /// \\(\phi'(l)^\top S\\) for one row `l` (`[1, r]`), in `f64`: `h + 1` numbers.
    fn read_state(&self, st: &SketchState<T>, l: MatRef<'_, T>, h: usize) -> Vec<f64> {
        let m = self.read_state_rows(st, l, h);
        (0..=h).map(|j| m[(0, j)]).collect()
    }

    /// \\(\phi'(L) S\\) for the rows of `l`, in `f64`: `[n, h + 1]`.
    fn read_state_rows(&self, st: &SketchState<T>, l: MatRef<'_, T>, h: usize) -> Mat<f64> {
        let (n, r) = (l.nrows(), l.ncols());
        let m = feature_dim(r, Layout::Symmetric);
        let mut f = Mat::<T>::zeros(n, m);
        tensor_square(l, Layout::Symmetric, f.as_mut());
        let f64s = Mat::<f64>::from_fn(n, m, |i, j| f[(i, j)].as_f64());
        let mut out = Mat::<f64>::zeros(n, h + 1);
        gemm(out.as_mut(), f64s.as_ref(), rows(&st.s, h + 1), 1.0, false, Par::Seq);
        out
    }

    /// One head's chunk of Performer or Hedgehog attention: token by token, \\(S \mathrel{+}=
    /// \phi(\tilde k_t)[v_t, 1]^\top\\) (`s`: `[m, h + 1]`, `f64`), then \\(\mathrm{out}_t =
    /// \phi(\tilde q_t)S\\) normalised by its last entry.
    fn features_chunk(
        &self, q: MatRef<'_, T>, k: MatRef<'_, T>, v: MatRef<'_, T>, s: &mut [f64], out: &mut [T],
    ) -> Result<()> {
        let (n, h, scale) = (q.nrows(), q.ncols(), self.scale());
        let features = |x: MatRef<'_, T>, side| match (&self.favor, &self.hedgehog) {
            (Some(favor), _) => {
                // Performer: q̃ = q/h^¼
                let scaled = Mat::from_fn(n, h, |i, j| x[(i, j)] * scale);
                let mut f = Mat::zeros(n, favor.features());
                favor.apply(scaled.as_ref(), side, f.as_mut());
                Ok(f)
            }
            (None, Some(map)) => {
                let mut f = Mat::zeros(n, map.features());
                map.apply(x, f.as_mut());
                Ok(f)
            }
            (None, None) => Err(AttentionError::InvalidState {
                op: "Attention::forward_chunk",
                reason: "internal: a feature-map layer without its features".into(),
            }),
        };
        let (fq, fk) = (features(q, Side::Query)?, features(k, Side::Key)?);
        for i in 0..n {
            for (f, row) in s.chunks_exact_mut(h + 1).enumerate() {
                let a = fk[(i, f)].as_f64();
                row[..h].iter_mut().enumerate().for_each(|(j, x)| *x += a * v[(i, j)].as_f64());
                row[h] += a;
            }
            let mut num = vec![0.0f64; h + 1];
            for (f, row) in s.chunks_exact(h + 1).enumerate() {
                let a = fq[(i, f)].as_f64();
                num.iter_mut().zip(row).for_each(|(x, r)| *x += a * r);
            }
            normalise(&num, &mut out[i * h..(i + 1) * h], 0.0);
        }
        Ok(())
    }

    /// One head's chunk with a KV cache: softmax, or polynomial attention.
    #[allow(clippy::too_many_arguments)]
    fn cache_chunk(
        &self, kind: AttentionKind, q: MatRef<'_, T>, k: MatRef<'_, T>, v: MatRef<'_, T>,
        position: usize, ck: &mut Vec<T>, cv: &mut Vec<T>, out: &mut [T],
    ) {
        let (n, h) = (q.nrows(), q.ncols());
        let (qs, ks) = match kind {
            AttentionKind::Polynomial { .. } | AttentionKind::Local { .. } => {
                (self.normalised(q), self.normalised(k))
            }
            _ => {
                let copy = |x: MatRef<'_, T>| -> Vec<T> {
                    (0..n).flat_map(|i| (0..h).map(move |j| x[(i, j)])).collect()
                };
                (copy(q), copy(k))
            }
        };
        ck.extend_from_slice(&ks);
        cv.extend((0..n).flat_map(|i| (0..h).map(move |j| v[(i, j)])));
        let inv_sqrt_h = 1.0 / (h as f64).sqrt();
        for i in 0..n {
            let qi = &qs[i * h..(i + 1) * h];
            // the keys token t sees: from the start, its block's or its window's first
            let t = position + i;
            let first = match kind {
                AttentionKind::Local { block, .. } => t / block * block,
                AttentionKind::Sliding { window } => (t + 1).saturating_sub(window),
                _ => 0,
            };
            let keys = ck[first * h..(t + 1) * h].chunks_exact(h);
            let vals = cv[first * h..(t + 1) * h].chunks_exact(h);
            let mut num = vec![0.0f64; h + 1];
            match kind {
                AttentionKind::Softmax | AttentionKind::Sliding { .. } => {
                    let s: Vec<f64> = keys.map(|kj| dot(qi, kj).as_f64() * inv_sqrt_h).collect();
                    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    for (sj, vj) in s.iter().zip(vals) {
                        let w = (sj - max).exp();
                        num[h] += w;
                        num[..h].iter_mut().zip(vj).for_each(|(a, x)| *a += w * x.as_f64());
                    }
                    // softmax normalises by the sum alone (no 1 +)
                    let o = &mut out[i * h..(i + 1) * h];
                    o.iter_mut().zip(&num[..h]).for_each(|(o, a)| *o = T::of(a / num[h]));
                }
                AttentionKind::Polynomial { p } | AttentionKind::Local { p, .. } => {
                    add_exact(&mut num, qi, keys.zip(vals), p);
                    normalise(&num, &mut out[i * h..(i + 1) * h], 1.0);
                }
                AttentionKind::PolySketch(_)
                | AttentionKind::Performer { .. }
                | AttentionKind::Hedgehog { .. } => {
                    unreachable!("PolySketch and the feature maps keep a running state")
                }
            }
        }
    }
}

/// `num[..h] += Σ_j ⟨q, k_j⟩^p v_j` and `num[h] += Σ_j ⟨q, k_j⟩^p` over `(k_j, v_j)`, in `f64`.
fn add_exact<'a, T: Scalar>(
    num: &mut [f64], q: &[T], keys_values: impl Iterator<Item = (&'a [T], &'a [T])>, p: usize,
) {
    let h = q.len();
    for (kj, vj) in keys_values {
        let s = ipow(dot(q, kj), p as u32).as_f64();
        num[h] += s;
        num[..h].iter_mut().zip(vj).for_each(|(a, x)| *a += s * x.as_f64());
    }
}

/// \\(S \mathrel{+}= \phi'(R)^\top [V, 1]\\) for the rows of `r` (`[n, r]`) and `v` (`[n, h]`),
/// in `f64`.
fn fold<T: Scalar>(s: &mut [f64], r: MatRef<'_, T>, v: MatRef<'_, T>) {
    let (n, h) = (v.nrows(), v.ncols());
    let m = feature_dim(r.ncols(), Layout::Symmetric);
    let mut f = Mat::<T>::zeros(n, m);
    tensor_square(r, Layout::Symmetric, f.as_mut());
    let f64s = Mat::<f64>::from_fn(n, m, |i, j| f[(i, j)].as_f64());
    let c = Mat::<f64>::from_fn(n, h + 1, |i, j| if j < h { v[(i, j)].as_f64() } else { 1.0 });
    let s = faer::MatMut::from_row_major_slice_mut(s, m, h + 1);
    gemm(s, f64s.transpose(), c.as_ref(), 1.0, true, Par::Seq);
}
