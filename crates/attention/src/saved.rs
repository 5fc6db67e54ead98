//! What a forward keeps for its backward ([`Saved`]), per head and per kind, and the
//! gradients a backward returns ([`Grads`]).

use faer::{Mat, MatMut, MatRef};
use polysketch_core::Scalar;
use polysketch_lowtri::{Grads as LtGrads, Saved as LtSaved};

use crate::layernorm::LnSaved;
use crate::learned::LearnedSaved;

/// A row-major matrix: rows are contiguous slices, which the layer norm and the normalisation
/// loops read and write, while faer sees it through [`Rows::as_ref`] / [`Rows::as_mut`] views.
#[derive(Default)]
pub(crate) struct Rows<T> {
    pub(crate) data: Vec<T>,
    pub(crate) cols: usize,
}

impl<T: Scalar> Rows<T> {
    /// Makes it `[rows, cols]`, keeping the memory when the size is unchanged (contents are then
    /// stale: callers overwrite them).
    pub(crate) fn reshape(&mut self, rows: usize, cols: usize) {
        self.data.resize(rows * cols, T::zero());
        self.cols = cols;
    }
    pub(crate) fn nrows(&self) -> usize {
        self.data.len().checked_div(self.cols).unwrap_or(0)
    }
    pub(crate) fn as_ref(&self) -> MatRef<'_, T> {
        MatRef::from_row_major_slice(&self.data, self.nrows(), self.cols)
    }
    pub(crate) fn as_mut(&mut self) -> MatMut<'_, T> {
        let rows = self.nrows();
        MatMut::from_row_major_slice_mut(&mut self.data, rows, self.cols)
    }
    pub(crate) fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
    pub(crate) fn row_mut(&mut self, i: usize) -> &mut [T] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// A column-major `[rows, cols]` buffer, reusing `m`'s memory when the shape is unchanged.
pub(crate) fn reshape_mat<T: Scalar>(m: &mut Mat<T>, rows: usize, cols: usize) {
    if (m.nrows(), m.ncols()) != (rows, cols) {
        *m = Mat::zeros(rows, cols);
    }
}

/// What one head's backward needs (PolySketch and polynomial attention).
pub(crate) struct HeadSaved<T: Scalar> {
    pub(crate) ln_q: LnSaved<T>,
    pub(crate) ln_k: LnSaved<T>,
    /// `[n, h]`: \\(\tilde q\\), \\(\tilde k\\).
    pub(crate) qt: Rows<T>,
    pub(crate) kt: Rows<T>,
    /// `[n, r]`: the degree-\\(p/2\\) sketches (empty for exact polynomial attention).
    pub(crate) l: Mat<T>,
    pub(crate) r: Mat<T>,
    /// `[n, h + 1]`: \\([V, \mathbf 1]\\).
    pub(crate) c: Rows<T>,
    /// `[n, h + 1]`: the product \\(\sum_{j \le i} s_{ij}[v_j, 1]\\) (over every \\(j\\) when
    /// bidirectional).
    pub(crate) raw: Rows<T>,
    /// `[n, h]`: the output.
    pub(crate) out: Rows<T>,
    /// `[n]`: \\(1 + \sum_{j \le i} s_{ij}\\) (every \\(j\\) when bidirectional).
    pub(crate) den: Vec<T>,
    /// Backward buffers: `[n, h + 1]` gradient of `raw`; `∂q̃`, `∂k̃` (`[n, h]`); `∂C`.
    pub(crate) draw: Rows<T>,
    pub(crate) dqt: Rows<T>,
    pub(crate) dkt: Rows<T>,
    pub(crate) dc: Rows<T>,
    /// A learned sketch's state for \(\tilde q\) and \(\tilde k\), and this head's share of
    /// its parameter gradients.
    pub(crate) learned_q: LearnedSaved<T>,
    pub(crate) learned_k: LearnedSaved<T>,
    pub(crate) d_learned: Vec<Vec<T>>,
}

impl<T: Scalar> Default for HeadSaved<T> {
    fn default() -> Self {
        Self {
            ln_q: LnSaved::default(),
            ln_k: LnSaved::default(),
            qt: Rows::default(),
            kt: Rows::default(),
            l: Mat::zeros(0, 0),
            r: Mat::zeros(0, 0),
            c: Rows::default(),
            raw: Rows::default(),
            out: Rows::default(),
            den: Vec::new(),
            draw: Rows::default(),
            dqt: Rows::default(),
            dkt: Rows::default(),
            dc: Rows::default(),
            learned_q: LearnedSaved::default(),
            learned_k: LearnedSaved::default(),
            d_learned: Vec::new(),
        }
    }
}

/// What [`Attention::backward`](crate::Attention::backward) needs from [`Attention::forward`](crate::Attention::forward); reusable: a training loop
/// that keeps one `Saved` (and one [`Grads`]) per layer allocates nothing after its first step
/// ([`Attention::forward_into`](crate::Attention::forward_into), [`Attention::backward_into`](crate::Attention::backward_into)).
pub struct Saved<T: Scalar> {
    pub(crate) batch: usize,
    pub(crate) n: usize,
    /// `(heads, head_dim)` of the layer whose forward filled it.
    pub(crate) layer: (usize, usize),
    /// The layout of the forward's inputs: the backward takes and gives the same.
    pub(crate) layout: crate::HeadLayout,
    pub(crate) inner: Inner<T>,
}

impl<T: Scalar> core::fmt::Debug for Saved<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Saved").field("batch", &self.batch).field("n", &self.n).finish()
    }
}

impl<T: Scalar> Default for Saved<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Scalar> Saved<T> {
    /// An empty state, to be filled by a forward.
    pub fn new() -> Self {
        Self {
            batch: 0,
            n: 0,
            layer: (0, 0),
            layout: crate::HeadLayout::HeadsFirst,
            inner: Inner::Empty,
        }
    }
}

/// The kind-specific part of [`Saved`].
pub(crate) enum Inner<T: Scalar> {
    Empty,
    /// PolySketch or exact polynomial attention: per-head state and the causal product's.
    Kernel {
        heads: Vec<HeadSaved<T>>,
        core: Core<T>,
    },
    /// The inputs (row-major, as given), the output, and its log-sum-exp per row; `used` once a
    /// backward consumed it.
    Softmax {
        q: Vec<T>,
        k: Vec<T>,
        v: Vec<T>,
        out: Vec<T>,
        lse: Vec<T>,
        used: bool,
    },
}

/// The causal product's own state.
pub(crate) enum Core<T: Scalar> {
    /// The lowtri engine's prefixes and gradients, one per head.
    Sketch { lowtri: Vec<LtSaved<T>>, grads: Vec<LtGrads<T>> },
    /// The exact tiled product keeps nothing but its degree; `used` once a backward ran.
    Exact { p: usize, used: bool },
    /// Bidirectional PolySketch keeps its gradients' memory; `used` once a backward ran.
    Bidirectional { grads: Vec<LtGrads<T>>, used: bool },
}

impl<T: Scalar> Core<T> {
    pub(crate) fn is_ready(&self) -> bool {
        match self {
            Core::Sketch { lowtri, .. } => lowtri.iter().all(|s| s.is_ready()),
            Core::Exact { used, .. } | Core::Bidirectional { used, .. } => !used,
        }
    }
}

/// Gradients of a layer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Grads<T> {
    /// \\(\partial L/\partial q\\), `[batch, heads, n, h]`.
    pub dq: Vec<T>,
    /// \\(\partial L/\partial k\\), same shape.
    pub dk: Vec<T>,
    /// \\(\partial L/\partial v\\), same shape.
    pub dv: Vec<T>,
    /// Gradients of the named parameters, in the order of [`Attention::parameters`](crate::Attention::parameters).
    pub params: Vec<(String, Vec<T>)>,
}

impl<T> Grads<T> {
    /// The gradient of the parameter `name` (as listed by
    /// [`Attention::parameters`](crate::Attention::parameters): `ln.gain`, `ln.bias`,
    /// `sketch.node0.f1.w1`, …), or `None` if the layer has no such parameter.
    ///
    /// ```
    /// use faer::Par;
    /// use polysketch_attention::{Attention, AttentionConfig, AttentionError};
    ///
    /// let kind = "polynomial:p=4".parse()?;
    /// let layer = Attention::<f64>::new(AttentionConfig::new(1, 4, kind))?;
    /// let x: Vec<f64> = (0..4 * 6).map(|i| (i as f64 * 0.3).sin()).collect();
    /// let (out, mut saved) = layer.forward(&x, &x, &x, 1, 6, Par::Seq)?;
    /// let grads = layer.backward(&mut saved, &out, Par::Seq)?;
    /// assert_eq!(grads.param("ln.gain").map(<[f64]>::len), Some(4));
    /// assert!(grads.param("ln.scale").is_none());
    /// # Ok::<(), AttentionError>(())
    /// ```
    pub fn param(&self, name: &str) -> Option<&[T]> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, g)| g.as_slice())
    }
}
