//! The portable path: PolySketch, polynomial, local, softmax and sliding-window attention in
//! burn tensor operations,
//! differentiated by burn's autodiff, on every backend. The reference the fast paths are
//! tested against.
//!
//! With \\(C = [V, \mathbf 1]\\) and the sequence cut into blocks of \\(b\\) tokens (padded with
//! zero rows of \\(C\\), which add nothing), PolySketch is, per block \\(B\\):
//! \\[ \mathrm{raw}_B = W_B C_B + \Phi(L_B)\,P_B, \quad S_B = \Phi(R_B)^\top C_B, \\]
//! with \\(W_B\\) the block's own scores — \\((\tilde Q_B\tilde K_B^\top)^{\circ p}\\) with
//! local blocks, \\((L_BR_B^\top)^{\circ 2}\\) without — lower-triangular when causal, and
//! \\(P_B = \sum_{B' < B} S_{B'}\\) (causal: a cumulative sum over blocks) or \\(\sum_{B' \ne B}
//! S_{B'}\\) (bidirectional); \\(\Phi\\) the rows' tensor squares (\\(r^2\\) features). Then
//! \\(\mathrm{out} = \mathrm{raw}[..h]/(1 + \mathrm{raw}[h])\\).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use polysketch_attention::{AttentionKind, SketchKind, layernorm::LN_EPS};

use crate::module::{Meta, RandomSketch};

/// `t^p` by squaring (exact for negative `t`, unlike a float power's backward).
fn ipow<B: Backend, const D: usize>(t: Tensor<B, D>, p: usize) -> Tensor<B, D> {
    let (mut acc, mut base, mut e) = (None::<Tensor<B, D>>, t, p);
    while e > 0 {
        if e & 1 == 1 {
            acc = Some(match acc {
                Some(a) => a * base.clone(),
                None => base.clone(),
            });
        }
        e >>= 1;
        if e > 0 {
            base = base.clone() * base;
        }
    }
    acc.expect("p ≥ 1")
}

/// The layer norm of the last dimension: \\(s(g \circ \hat x + \beta)\\), biased variance,
/// \\(\epsilon\\) = [`LN_EPS`].
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>, gain: Tensor<B, 1>, bias: Tensor<B, 1>, scale: f64,
) -> Tensor<B, D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    let xhat = (x - mean) / (var + LN_EPS).sqrt();
    let len = xhat.dims()[D - 1];
    let shape = |t: Tensor<B, 1>| t.reshape::<D, _>(broadcast_shape::<D>(len));
    (xhat * shape(gain) + shape(bias)) * scale
}

/// `[1, …, 1, len]`.
fn broadcast_shape<const D: usize>(len: usize) -> [usize; D] {
    let mut s = [1; D];
    s[D - 1] = len;
    s
}

/// gelu, tanh form (as the CPU layer's): \\(\tfrac12 x(1 + \tanh(\sqrt{2/\pi}(x +
/// 0.044715x^3)))\\).
fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let c = (2.0 / core::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone() * x.clone() * x.clone() * 0.044715) * c;
    x * (inner.tanh() + 1.0) * 0.5
}

/// `x W + b` for `x: [.., in]`, `w: [in, out]` flat, `b: [out]`.
fn dense<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 1>, b: Tensor<B, 1>) -> Tensor<B, 2> {
    let out = b.dims()[0];
    let inner = w.dims()[0] / out;
    x.matmul(w.reshape([inner, out])) + b.reshape([1, out])
}

/// The parameters of the layer by name.
pub(crate) struct Named<'a, B: Backend> {
    pub(crate) names: &'a [String],
    pub(crate) values: &'a [Tensor<B, 1>],
}

impl<B: Backend> Named<'_, B> {
    fn get(&self, name: &str) -> Tensor<B, 1> {
        let i = self.names.iter().position(|n| n == name).expect("the layer names its parameters");
        self.values[i].clone()
    }
}

/// A learned sketch of the rows of `x` (`[rows, h]` → `[rows, r]`), paper Algorithm 2: node
/// \\(i\\) (post-order) is \\(\sqrt r\tanh(f_1(M_1)\circ f_2(M_2)/\sqrt r)\\), each \\(f\\) =
/// LN, dense \\(8r\\), gelu, dense \\(r\\), LN, dense \\(8r\\), gelu, dense \\(r\\).
fn learned_sketch<B: Backend>(
    x: Tensor<B, 2>, degree: usize, r: usize, params: &Named<'_, B>,
) -> Tensor<B, 2> {
    let network = |m: usize, input: Tensor<B, 2>| {
        let name = |p: &str| format!("sketch.node{}.f{}.{p}", m / 2, m % 2 + 1);
        let y =
            layer_norm(input, params.get(&name("ln0.gain")), params.get(&name("ln0.bias")), 1.0);
        let z = gelu(dense(y, params.get(&name("w1")), params.get(&name("b1"))));
        let a2 = dense(z, params.get(&name("w2")), params.get(&name("b2")));
        let y2 = layer_norm(a2, params.get(&name("ln1.gain")), params.get(&name("ln1.bias")), 1.0);
        let z3 = gelu(dense(y2, params.get(&name("w3")), params.get(&name("b3"))));
        dense(z3, params.get(&name("w4")), params.get(&name("b4")))
    };
    fn node<B: Backend>(
        d: usize, next: &mut usize, x: &Tensor<B, 2>, r: usize,
        network: &dyn Fn(usize, Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        if d == 1 {
            return x.clone();
        }
        let m1 = node(d / 2, next, x, r, network);
        let m2 = node(d / 2, next, x, r, network);
        let i = *next;
        *next += 1;
        let s = (r as f64).sqrt();
        ((network(2 * i, m1) * network(2 * i + 1, m2)) / s).tanh() * s
    }
    node(degree, &mut 0, &x, r, &network)
}

/// A random sketch of the rows of `x` (`[rows, h]` → `[rows, r]`): the JL map for \\(p = 2\\),
/// else the Gaussian tree, level by level (node \\(j\\) = \\(\pi_{2j}(m_{2j}) \ast
/// \pi_{2j+1}(m_{2j+1})/\sqrt r\\), the children of the bottom level all \\(x\\)).
fn random_sketch<B: Backend>(x: Tensor<B, 2>, sketch: &RandomSketch) -> Tensor<B, 2> {
    let device = x.device();
    let mat = |(data, [rows, cols]): &(Vec<f32>, [usize; 2])| {
        Tensor::<B, 2>::from_data(TensorData::new(data.clone(), [*rows, *cols]), &device)
    };
    match sketch {
        RandomSketch::Linear(m) => x.matmul(mat(m)),
        RandomSketch::Tree { levels, r } => {
            let s = (*r as f64).sqrt();
            let mut children: Vec<Tensor<B, 2>> = vec![x];
            for level in levels {
                let input = |k: usize| children[if children.len() == 1 { 0 } else { k }].clone();
                let projected: Vec<Tensor<B, 2>> =
                    level.iter().enumerate().map(|(k, m)| input(k).matmul(mat(m))).collect();
                children = projected.chunks(2).map(|p| p[0].clone() * p[1].clone() / s).collect();
            }
            children.remove(0)
        }
        RandomSketch::Performer { .. } => unreachable!("a PolySketch layer has a sketch"),
    }
}

/// `[b, h, n, d]` → `[b·h·n, d]` and back.
fn rows<B: Backend>(x: Tensor<B, 4>) -> (Tensor<B, 2>, [usize; 4]) {
    let dims = x.dims();
    (x.reshape([dims[0] * dims[1] * dims[2], dims[3]]), dims)
}

/// The rows' tensor squares: `[.., r]` → `[.., r²]` (feature \\(ar + c\\) = \\(l_al_c\\)).
fn tensor_square<B: Backend>(l: Tensor<B, 5>) -> Tensor<B, 5> {
    let [a, b, c, d, r] = l.dims();
    let outer = l.clone().reshape([a, b, c, d, r, 1]) * l.reshape([a, b, c, d, 1, r]);
    outer.reshape([a, b, c, d, r * r])
}

/// `[batch, heads, n, w]` → `[batch, heads, blocks, b, w]`, zero rows appended to fill the
/// last block.
fn to_blocks<B: Backend>(x: Tensor<B, 4>, b: usize) -> Tensor<B, 5> {
    let [batch, heads, n, w] = x.dims();
    let blocks = n.div_ceil(b);
    let x = match blocks * b - n {
        0 => x,
        pad => {
            let zeros = Tensor::zeros([batch, heads, pad, w], &x.device());
            Tensor::cat(vec![x, zeros], 2)
        }
    };
    x.reshape([batch, heads, blocks, b, w])
}

/// Lower triangle (with the diagonal) of the last two dimensions when `causal`.
fn mask<B: Backend, const D: usize>(w: Tensor<B, D>, causal: bool) -> Tensor<B, D> {
    if causal { w.tril(0) } else { w }
}

/// The `[n, n]` mask of the keys each query may not see ([`AttentionConfig::sees`]: causality,
/// a local kind's blocks, a sliding window), broadcast to `dims`.
///
/// [`AttentionConfig::sees`]: polysketch_attention::AttentionConfig::sees
fn hidden<B: Backend>(
    config: &polysketch_attention::AttentionConfig, dims: [usize; 4], device: &B::Device,
) -> Tensor<B, 4, burn::tensor::Bool> {
    let n = dims[2];
    let data: Vec<bool> = (0..n * n).map(|x| !config.sees(x / n, x % n)).collect();
    Tensor::<B, 2, burn::tensor::Bool>::from_data(TensorData::new(data, [n, n]), device)
        .unsqueeze::<4>()
        .expand(dims)
}

/// \\(\mathrm{raw}[..h]/(c + \mathrm{raw}[h])\\): \\(c = 1\\) for the polynomial kinds, 0 for
/// Performer.
fn normalise<B: Backend>(raw: Tensor<B, 4>, h: usize, offset: f64) -> Tensor<B, 4> {
    let [b, hd, n, _] = raw.dims();
    let num = raw.clone().slice([0..b, 0..hd, 0..n, 0..h]);
    let den = raw.slice([0..b, 0..hd, 0..n, h..h + 1]) + offset;
    num / den
}

/// Performer's features of `x` (`[batch, heads, n, h]`, already scaled by \\(h^{-1/4}\\)):
/// \\(e^{x\Omega^\top - \|x\|^2/2 - c}/\sqrt m\\), \\(c\\) each row's maximum for queries and
/// the fixed shift for keys (see the attention crate's `performer` module).
fn favor<B: Backend>(x: Tensor<B, 4>, sketch: &RandomSketch, query: bool) -> Tensor<B, 4> {
    let RandomSketch::Performer { omega_t: (data, [h, m]), key_shift } = sketch else {
        unreachable!("a Performer layer keeps its features")
    };
    let (flat, [a, b, n, _]) = rows(x);
    let omega_t =
        Tensor::<B, 2>::from_data(TensorData::new(data.clone(), [*h, *m]), &flat.device());
    let z = flat.clone().matmul(omega_t) - flat.powi_scalar(2).sum_dim(1) * 0.5;
    let z = match query {
        true => z.clone() - z.max_dim(1).detach(),
        false => z - *key_shift as f64,
    };
    (z.exp() / (*m as f64).sqrt()).reshape([a, b, n, *m])
}

/// The portable forward of a layer: `q`, `k`, `v` `[batch, heads, n, h]` → the same.
pub(crate) fn forward<B: Backend>(
    meta: &Meta, params: &[Tensor<B, 1>], q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let config = &meta.config;
    let (h, causal) = (config.head_dim, config.causal);
    let named = Named { names: &meta.names, values: params };
    if config.kind.is_softmax() {
        let scores = q.matmul(k.swap_dims(2, 3)) / (h as f64).sqrt();
        let scores = match (causal, config.kind) {
            (false, AttentionKind::Softmax) => scores,
            _ => {
                let hide = hidden::<B>(config, scores.dims(), &scores.device());
                scores.mask_fill(hide, f32::NEG_INFINITY)
            }
        };
        return burn::tensor::activation::softmax(scores, 3).matmul(v);
    }
    // q̃, k̃: the layer norm scaled by h^{-1/4}, or the raw vectors
    let (qt, kt) = match meta.has_layernorm() {
        true => {
            let s = (h as f64).powf(-0.25);
            let (g, b) = (named.get("ln.gain"), named.get("ln.bias"));
            (layer_norm(q, g.clone(), b.clone(), s), layer_norm(k, g, b, s))
        }
        false => (q, k),
    };
    let [batch, heads, n, _] = v.dims();
    let c = Tensor::cat(vec![v.clone(), Tensor::ones([batch, heads, n, 1], &v.device())], 3);
    let raw = match config.kind {
        AttentionKind::Polynomial { p } => {
            mask(ipow(qt.matmul(kt.swap_dims(2, 3)), p), causal).matmul(c)
        }
        AttentionKind::Performer { .. } => {
            let sketch = meta.random.as_ref().expect("a Performer layer keeps its features");
            let s = (h as f64).powf(-0.25);
            let (fq, fk) = (favor(qt * s, sketch, true), favor(kt * s, sketch, false));
            mask(fq.matmul(fk.swap_dims(2, 3)), causal).matmul(c)
        }
        AttentionKind::Hedgehog { .. } => {
            // φ(x) = [softmax(xW + b), softmax(-xW - b)] with the named parameters
            let (w, b) = (named.get("hedgehog.w"), named.get("hedgehog.b"));
            let half = b.dims()[0];
            let phi = |x: Tensor<B, 4>| {
                let (flat, [a, bb, n, _]) = rows(x);
                let z = flat.matmul(w.clone().reshape([h, half])) + b.clone().reshape([1, half]);
                let sm = |z: Tensor<B, 2>| burn::tensor::activation::softmax(z, 1);
                Tensor::cat(vec![sm(z.clone()), sm(-z)], 1).reshape([a, bb, n, 2 * half])
            };
            mask(phi(qt).matmul(phi(kt).swap_dims(2, 3)), causal).matmul(c)
        }
        AttentionKind::Local { p, .. } => {
            let w = ipow(qt.matmul(kt.swap_dims(2, 3)), p);
            let hide = hidden::<B>(config, w.dims(), &w.device());
            w.mask_fill(hide, 0.0).matmul(c)
        }
        AttentionKind::PolySketch(ps) => {
            let sketch = |x: Tensor<B, 4>| {
                let (flat, [a, b, m, _]) = rows(x);
                let l = match ps.sketch {
                    SketchKind::Learned => learned_sketch(flat, ps.p / 2, ps.r, &named),
                    SketchKind::Random => random_sketch(
                        flat,
                        meta.random.as_ref().expect("a random PolySketch layer has its sketch"),
                    ),
                };
                l.reshape([a, b, m, ps.r])
            };
            let (l, r) = (sketch(qt.clone()), sketch(kt.clone()));
            let bsize = ps.block.min(n);
            let (lb, rb, cb) = (to_blocks(l, bsize), to_blocks(r, bsize), to_blocks(c, bsize));
            let own = match ps.local {
                true => {
                    let (qb, kb) = (to_blocks(qt, bsize), to_blocks(kt, bsize));
                    ipow(qb.matmul(kb.swap_dims(3, 4)), ps.p)
                }
                false => ipow(lb.clone().matmul(rb.clone().swap_dims(3, 4)), 2),
            };
            let sums = tensor_square(rb).swap_dims(3, 4).matmul(cb.clone());
            let others = match causal {
                true => sums.clone().cumsum(2) - sums,
                false => sums.clone().sum_dim(2) - sums,
            };
            let raw = mask(own, causal).matmul(cb) + tensor_square(lb).matmul(others);
            let [a, b, blocks, bs, w] = raw.dims();
            raw.reshape([a, b, blocks * bs, w]).slice([0..a, 0..b, 0..n, 0..w])
        }
        AttentionKind::Softmax | AttentionKind::Sliding { .. } => unreachable!("handled above"),
    };
    let offset = match config.kind {
        AttentionKind::Performer { .. } | AttentionKind::Hedgehog { .. } => 0.0,
        _ => 1.0,
    };
    normalise(raw, h, offset)
}
