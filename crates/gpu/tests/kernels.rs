//! Every kernel against the CPU crates (or an `f64` reference where the CPU code lives in a
//! crate that depends on this one), on random inputs, generic over the cubecl runtime.
//!
//! The suite runs on wgpu (Mesa's lavapipe in CI) and, behind the `cuda` feature and
//! `--ignored`, on CUDA. Tolerances: the device computes in `f32` and the references in `f64`;
//! products of `k` terms agree to a few `k·ε₃₂` of their scale, so the bounds are relative to
//! the largest entry of the reference: 1e-5 for the matmul and the layer norm, 1e-4 for sums
//! over blocks and the whole layer.

use faer::{Mat, MatRef, Par};
use polysketch_core::seeded_rng;
use polysketch_gpu::{
    Buffer, DiagonalGpu, Gpu, GpuError, LearnedSketchGpu, LtShape, PolySketchGpu,
    PolySketchGpuConfig, Runtime, SketchWeights, Strided, TreeSketchGpu,
};
use polysketch_lowtri::{Features, Problem, reference};
use polysketch_sketch::{GaussianJl, PolySketch, TreeSketch};
use polysketch_tensoring::{Layout, tensor_square};
use rand_distr::{Distribution, StandardNormal};

fn normal(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = seeded_rng(seed);
    (0..len)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            z as f32
        })
        .collect()
}

fn download<R: Runtime>(gpu: &Gpu<R>, b: &Buffer<R>) -> Vec<f64> {
    gpu.download(b).expect("download").into_iter().map(f64::from).collect()
}

/// `max |got − expected| ≤ rtol · max |expected|`.
fn assert_close(got: &[f64], expected: &[f64], rtol: f64, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let scale = expected.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-30);
    let diff = got.iter().zip(expected).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        got.iter().all(|x| x.is_finite()) && diff <= rtol * scale,
        "{what}: max difference {diff:e} > {rtol:e} × {scale:e}"
    );
}

fn mat_rows(m: MatRef<'_, f64>) -> Vec<f64> {
    (0..m.nrows()).flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)])).collect()
}

fn of_rows(x: &[f32], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| f64::from(x[i * cols + j]))
}

// ---------------------------------------------------------------- matmul

fn matmul<R: Runtime>(gpu: &Gpu<R>) {
    for (case, &(m, n, k, count)) in
        [(1, 1, 1, 1), (17, 33, 5, 1), (40, 3, 64, 3), (16, 16, 16, 2)].iter().enumerate()
    {
        for (ta, tb, beta) in [(false, false, 0.0), (true, false, 1.0), (false, true, 0.5)] {
            let seed = 10 * case as u64;
            let (a, b, c0) = (
                normal(count * m * k, seed),
                normal(count * k * n, seed + 1),
                normal(count * m * n, seed + 2),
            );
            // A stored as [m, k] or, transposed, as [k, m]
            let sa = if ta { Strided::row_major(k, m).t() } else { Strided::row_major(m, k) };
            let sb = if tb { Strided::row_major(n, k).t() } else { Strided::row_major(k, n) };
            let (ga, gb, gc) =
                (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap(), gpu.upload(&c0).unwrap());
            gpu.matmul(
                (m, n, k, count),
                (&ga, sa),
                (&gb, sb),
                (&gc, Strided::row_major(m, n)),
                1.5,
                beta,
            )
            .unwrap();
            let mut expected = vec![0.0f64; count * m * n];
            for z in 0..count {
                for i in 0..m {
                    for j in 0..n {
                        let mut s = 0.0f64;
                        for p in 0..k {
                            let av = a[z * sa.batch + i * sa.row + p * sa.col];
                            let bv = b[z * sb.batch + p * sb.row + j * sb.col];
                            s += f64::from(av) * f64::from(bv);
                        }
                        let at = z * m * n + i * n + j;
                        expected[at] = 1.5 * s + beta as f64 * f64::from(c0[at]);
                    }
                }
            }
            assert_close(
                &download(gpu, &gc),
                &expected,
                1e-5,
                &format!("matmul {m}x{n}x{k}x{count} ta {ta} tb {tb}"),
            );
        }
    }
}

fn matmul_rejects_out_of_range<R: Runtime>(gpu: &Gpu<R>) {
    let a = gpu.upload(&[1.0f32; 6]).unwrap();
    let err = gpu
        .matmul(
            (3, 3, 3, 1),
            (&a, Strided::row_major(3, 3)),
            (&a, Strided::row_major(3, 3)),
            (&a, Strided::row_major(3, 3)),
            1.0,
            0.0,
        )
        .unwrap_err();
    assert!(matches!(err, GpuError::Shape { input: "a", .. }), "{err}");
}

// ---------------------------------------------------------------- layer norm

/// `y = s (g ∘ (x − μ)/√(σ² + ε) + β)` per row, in f64.
fn layernorm_ref(x: &[f64], g: &[f64], b: &[f64], s: f64) -> Vec<f64> {
    let h = g.len();
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(h).zip(y.chunks_mut(h)) {
        let mean = xr.iter().sum::<f64>() / h as f64;
        let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / h as f64;
        let rs = 1.0 / (var + 1e-5).sqrt();
        for j in 0..h {
            yr[j] = s * (g[j] * (xr[j] - mean) * rs + b[j]);
        }
    }
    y
}

/// Central differences of `⟨w, f(x)⟩` in f64, step `eps`.
fn fd_grad(x: &[f64], w: &[f64], eps: f64, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let keep = x[i];
            x[i] = keep + eps;
            let plus: f64 = f(&x).iter().zip(w).map(|(a, b)| a * b).sum();
            x[i] = keep - eps;
            let minus: f64 = f(&x).iter().zip(w).map(|(a, b)| a * b).sum();
            x[i] = keep;
            (plus - minus) / (2.0 * eps)
        })
        .collect()
}

fn wide(x: &[f32]) -> Vec<f64> {
    x.iter().copied().map(f64::from).collect()
}

fn layernorm<R: Runtime>(gpu: &Gpu<R>) {
    for (rows, h) in [(37, 24), (5, 1), (3, 65)] {
        let x: Vec<f32> = normal(rows * h, 1).iter().map(|v| 3.0 * v + 1.0).collect();
        let g: Vec<f32> = normal(h, 2).iter().map(|v| 1.0 + 0.3 * v).collect();
        let b = normal(h, 3);
        let dy = normal(rows * h, 4);
        let s = 0.7f32;
        let (gx, gg, gb, gdy) = (
            gpu.upload(&x).unwrap(),
            gpu.upload(&g).unwrap(),
            gpu.upload(&b).unwrap(),
            gpu.upload(&dy).unwrap(),
        );
        let (y, state) = gpu.layernorm_forward(&gx, &gg, &gb, s, 1e-5).unwrap();
        let (xw, gw, bw, dyw) = (wide(&x), wide(&g), wide(&b), wide(&dy));
        let yref = layernorm_ref(&xw, &gw, &bw, f64::from(s));
        assert_close(&download(gpu, &y), &yref, 1e-5, "layernorm forward");
        let (dx, dgain, dbias) = gpu.layernorm_backward(&gdy, &state, &gg).unwrap();
        let dx_fd = fd_grad(&xw, &dyw, 1e-6, |x| layernorm_ref(x, &gw, &bw, f64::from(s)));
        assert_close(&download(gpu, &dx), &dx_fd, 1e-4, "layernorm dx");
        let dg_fd = fd_grad(&gw, &dyw, 1e-6, |g| layernorm_ref(&xw, g, &bw, f64::from(s)));
        assert_close(&wide(&dgain), &dg_fd, 1e-4, "layernorm dgain");
        let db_fd = fd_grad(&bw, &dyw, 1e-6, |b| layernorm_ref(&xw, &gw, b, f64::from(s)));
        assert_close(&wide(&dbias), &db_fd, 1e-4, "layernorm dbias");
    }
}

// ---------------------------------------------------------------- tree sketch

/// A CPU sketch of degree `q` (JL for `q = 1`) and its dense levels as row-major `f32`.
fn levels_of(h: usize, r: usize, q: usize, seed: u64) -> (Box<dyn PolySketch<f64>>, Vec<Vec<f32>>) {
    let s: Box<dyn PolySketch<f64>> = if q == 1 {
        Box::new(GaussianJl::<f64>::new(h, r, seed).unwrap())
    } else {
        Box::new(TreeSketch::<f64>::gaussian(h, r, q, seed).unwrap())
    };
    let levels = s
        .dense_levels()
        .unwrap()
        .iter()
        .map(|m| mat_rows(m.as_ref()).into_iter().map(|x| x as f32).collect())
        .collect();
    (s, levels)
}

fn tree_sketch<R: Runtime>(gpu: &Gpu<R>) {
    let (rows, h, r) = (29, 12, 5);
    for q in [1, 2, 4, 8] {
        let (cpu, levels) = levels_of(h, r, q, 7 + q as u64);
        // the device gets f32 weights: compare with the CPU sketch of the same rounded weights
        // by keeping inputs small and the tolerance at f32 level
        let sk = TreeSketchGpu::new(gpu, h, r, q, &levels).unwrap();
        let x = normal(rows * h, 20 + q as u64);
        let dout = normal(rows * r, 30 + q as u64);
        let (out, saved) = sk.forward(gpu, &gpu.upload(&x).unwrap()).unwrap();
        let xm = of_rows(&x, rows, h);
        let expected = cpu.apply(xm.as_ref(), Par::Seq).unwrap();
        assert_close(
            &download(gpu, &out),
            &mat_rows(expected.as_ref()),
            1e-4,
            &format!("sketch degree {q} forward"),
        );
        let dx = sk.backward(gpu, &saved, &gpu.upload(&dout).unwrap()).unwrap();
        let vjp = cpu.vjp(xm.as_ref(), of_rows(&dout, rows, r).as_ref(), Par::Seq).unwrap();
        assert_close(
            &download(gpu, &dx),
            &mat_rows(vjp.as_ref()),
            1e-4,
            &format!("sketch degree {q} backward"),
        );
    }
}

fn tree_sketch_rejects_bad_input<R: Runtime>(gpu: &Gpu<R>) {
    let bad = |r: Result<TreeSketchGpu<R>, GpuError>| r.unwrap_err();
    assert!(matches!(
        bad(TreeSketchGpu::new(gpu, 4, 2, 3, &[vec![0.0; 16]])),
        GpuError::InvalidArgument(_)
    ));
    assert!(matches!(
        bad(TreeSketchGpu::new(gpu, 4, 2, 2, &[vec![0.0; 15]])),
        GpuError::Shape { .. }
    ));
    let mut w = vec![0.0f32; 16];
    w[5] = f32::NAN;
    assert!(matches!(
        bad(TreeSketchGpu::new(gpu, 4, 2, 2, &[w])),
        GpuError::NonFinite { index: 5, .. }
    ));
    let sk = TreeSketchGpu::new(gpu, 4, 2, 2, &[vec![0.5; 16]]).unwrap();
    let x = gpu.upload(&[1.0f32; 7]).unwrap();
    assert!(matches!(sk.forward(gpu, &x).unwrap_err(), GpuError::Shape { .. }));
}

fn refs(v: &[Vec<f32>]) -> Vec<&[f32]> {
    v.iter().map(|x| x.as_slice()).collect()
}

/// The learned sketch's numbers are checked against the CPU `LearnedSketch` through the whole
/// layer in `polysketch-attention` (`tests/device.rs`); here, its typed errors.
fn learned_sketch_rejects_bad_input<R: Runtime>(gpu: &Gpu<R>) {
    let (h, r) = (3, 2);
    let w = 8 * r;
    // one node, two networks on the rows: [h, h, h·w, w, w·r, r, r, r, r·w, w, w·r, r]
    let sizes = [h, h, h * w, w, w * r, r, r, r, r * w, w, w * r, r];
    let good: Vec<Vec<f32>> = sizes.iter().chain(&sizes).map(|&n| vec![0.1; n]).collect();
    assert!(LearnedSketchGpu::new(gpu, h, r, 2, &refs(&good)).is_ok());
    assert!(matches!(
        LearnedSketchGpu::new(gpu, h, r, 3, &refs(&good)).unwrap_err(),
        GpuError::InvalidArgument(_)
    ));
    assert!(matches!(
        LearnedSketchGpu::new(gpu, h, r, 2, &refs(&good[..23])).unwrap_err(),
        GpuError::InvalidArgument(_)
    ));
    let mut short = good.clone();
    short[2].pop();
    assert!(matches!(
        LearnedSketchGpu::new(gpu, h, r, 2, &refs(&short)).unwrap_err(),
        GpuError::Shape { .. }
    ));
    let mut nan = good.clone();
    nan[14][3] = f32::NAN;
    assert!(matches!(
        LearnedSketchGpu::new(gpu, h, r, 2, &refs(&nan)).unwrap_err(),
        GpuError::NonFinite { index: 3, .. }
    ));
    let sk = LearnedSketchGpu::new(gpu, h, r, 2, &refs(&good)).unwrap();
    let x = gpu.upload(&[1.0f32; 7]).unwrap();
    assert!(matches!(sk.forward(gpu, &x).unwrap_err(), GpuError::Shape { .. }));
    let (_, saved) = sk.forward(gpu, &gpu.upload(&[1.0f32; 9]).unwrap()).unwrap();
    let bad = gpu.upload(&[1.0f32; 5]).unwrap();
    assert!(matches!(sk.backward(gpu, &saved, &bad).unwrap_err(), GpuError::Shape { .. }));
}

// ---------------------------------------------------------------- block products

fn lowtri<R: Runtime>(gpu: &Gpu<R>) {
    let (heads, r, k, d, p) = (3, 4, 5, 6, 4);
    // n = 1; n < b; ragged last block; whole blocks; blocks wider than the kernels' score chunk
    for (n, block) in [(1, 4), (7, 16), (45, 8), (64, 16), (300, 160)] {
        for local in [false, true] {
            let seed = (n * 100 + block) as u64 + local as u64;
            let (l, rr, c, q, kk, g) = (
                normal(heads * n * r, seed),
                normal(heads * n * r, seed + 1),
                normal(heads * n * k, seed + 2),
                normal(heads * n * d, seed + 3),
                normal(heads * n * d, seed + 4),
                normal(heads * n * k, seed + 5),
            );
            let up = |x: &[f32]| gpu.upload(x).unwrap();
            let (gl, gr, gc, gq, gk, gg) = (up(&l), up(&rr), up(&c), up(&q), up(&kk), up(&g));
            let diag = if local {
                DiagonalGpu::LocalExact { q: &gq, k: &gk, d, p }
            } else {
                DiagonalGpu::SelfTensored
            };
            let shape = LtShape { heads, n, r, k, block };
            let (out, saved) = gpu.lowtri_forward(&shape, &gl, &gr, &gc, diag).unwrap();
            let grads = gpu.lowtri_backward(&shape, &gl, &gr, &gc, diag, &saved, &gg).unwrap();
            let got = [
                download(gpu, &out),
                download(gpu, &grads.dl),
                download(gpu, &grads.dr),
                download(gpu, &grads.dc),
            ];
            let got_local = grads.dq_dk.as_ref().map(|(a, b)| (download(gpu, a), download(gpu, b)));
            assert_eq!(got_local.is_some(), local);
            for z in 0..heads {
                let part = |x: &[f32], w: usize| of_rows(&x[z * n * w..(z + 1) * n * w], n, w);
                let (lm, rm, cm, qm, km, gm) = (
                    part(&l, r),
                    part(&rr, r),
                    part(&c, k),
                    part(&q, d),
                    part(&kk, d),
                    part(&g, k),
                );
                let features = Features::SelfTensored { l: lm.as_ref(), r: rm.as_ref() };
                let problem = if local {
                    Problem::local_exact(features, qm.as_ref(), km.as_ref(), p, cm.as_ref())
                } else {
                    Problem::self_tensored(lm.as_ref(), rm.as_ref(), cm.as_ref())
                };
                let what = format!("lowtri n {n} b {block} local {local} head {z}");
                let expected = reference::forward_reference(&problem, block);
                let head = |x: &[f64], w: usize| x[z * n * w..(z + 1) * n * w].to_vec();
                assert_close(&head(&got[0], k), &mat_rows(expected.as_ref()), 1e-4, &what);
                let eg = reference::backward_reference(&problem, block, gm.as_ref());
                for (name, x, e, w) in [
                    ("dl", &got[1], &eg.d_a, r),
                    ("dr", &got[2], &eg.d_b, r),
                    ("dc", &got[3], &eg.d_c, k),
                ] {
                    assert_close(
                        &head(x, w),
                        &mat_rows(e.as_ref()),
                        1e-4,
                        &format!("{what} {name}"),
                    );
                }
                if let Some((dq, dk)) = &got_local {
                    let (eq, ek) = (eg.d_q.as_ref().unwrap(), eg.d_k.as_ref().unwrap());
                    assert_close(&head(dq, d), &mat_rows(eq.as_ref()), 1e-4, &format!("{what} dq"));
                    assert_close(&head(dk, d), &mat_rows(ek.as_ref()), 1e-4, &format!("{what} dk"));
                }
            }
        }
    }
}

/// The block states, scanned: `Z_l = Σ_{j<l} φ'(R_j)ᵀ C_j` with φ' the tensoring crate's full
/// layout, formed explicitly on the CPU (the device never forms it).
fn block_states_are_tensored_prefixes<R: Runtime>(gpu: &Gpu<R>) {
    let (heads, n, r, k, block) = (2, 45, 3, 4, 8);
    let (l, rr, c) = (normal(heads * n * r, 1), normal(heads * n * r, 2), normal(heads * n * k, 3));
    let up = |x: &[f32]| gpu.upload(x).unwrap();
    let shape = LtShape { heads, n, r, k, block };
    let (_, saved) =
        gpu.lowtri_forward(&shape, &up(&l), &up(&rr), &up(&c), DiagonalGpu::SelfTensored).unwrap();
    let got: Vec<f64> = saved.prefixes().iter().flat_map(|b| download(gpu, b)).collect();
    let blocks = n.div_ceil(block);
    let size = r * r * k;
    assert_eq!(got.len(), heads * blocks * size);
    let mut expected = vec![0.0f64; got.len()];
    for z in 0..heads {
        let rm = of_rows(&rr[z * n * r..(z + 1) * n * r], n, r);
        let cm = of_rows(&c[z * n * k..(z + 1) * n * k], n, k);
        let mut phi = Mat::<f64>::zeros(n, r * r);
        tensor_square(rm.as_ref(), Layout::Full, phi.as_mut());
        let mut run = vec![0.0f64; size];
        for b in 0..blocks {
            let at = (z * blocks + b) * size;
            expected[at..at + size].copy_from_slice(&run);
            for i in b * block..((b + 1) * block).min(n) {
                for f in 0..r * r {
                    for j in 0..k {
                        run[f * k + j] += phi[(i, f)] * cm[(i, j)];
                    }
                }
            }
        }
    }
    assert_close(&got, &expected, 1e-5, "block state prefixes");
}

/// Heads processed in groups of bounded state memory give the same numbers, bit for bit.
fn state_groups_give_the_same_numbers<R: Runtime>(gpu: &Gpu<R>) {
    let (heads, n, r, k, block): (usize, usize, usize, usize, usize) = (5, 37, 3, 4, 8);
    let per_head = n.div_ceil(block) * r * r * k;
    let (l, rr, c, g) = (
        normal(heads * n * r, 1),
        normal(heads * n * r, 2),
        normal(heads * n * k, 3),
        normal(heads * n * k, 4),
    );
    let shape = LtShape { heads, n, r, k, block };
    let run = |gpu: &Gpu<R>| {
        let up = |x: &[f32]| gpu.upload(x).unwrap();
        let (gl, gr, gc, gg) = (up(&l), up(&rr), up(&c), up(&g));
        let d = DiagonalGpu::SelfTensored;
        let (out, saved) = gpu.lowtri_forward(&shape, &gl, &gr, &gc, d).unwrap();
        let groups = saved.prefixes().len();
        let grads = gpu.lowtri_backward(&shape, &gl, &gr, &gc, d, &saved, &gg).unwrap();
        let got: Vec<Vec<f32>> = [&out, &grads.dl, &grads.dr, &grads.dc]
            .iter()
            .map(|b| gpu.download(b).unwrap())
            .collect();
        (groups, got)
    };
    let (one, whole) = run(gpu);
    assert_eq!(one, 1);
    for (limit, groups) in [(2 * per_head + 1, 3), (per_head / 2, 5)] {
        let (count, split) = run(&gpu.clone().with_state_limit(limit));
        assert_eq!(count, groups, "limit {limit}");
        assert_eq!(split, whole, "limit {limit}");
    }
}

/// More row tiles than wgpu's 65,535 cubes per axis (n > 8 · 65,535): the grid spreads them
/// over two axes. Checked against the CPU block engine (itself checked against the O(n²)
/// reference in its crate).
fn lowtri_many_row_tiles<R: Runtime>(gpu: &Gpu<R>) {
    let (n, r, k, block) = (8 * 65_535 + 40, 2, 2, 16);
    let (l, rr, c, g) = (normal(n * r, 1), normal(n * r, 2), normal(n * k, 3), normal(n * k, 4));
    let up = |x: &[f32]| gpu.upload(x).unwrap();
    let (gl, gr, gc, gg) = (up(&l), up(&rr), up(&c), up(&g));
    let shape = LtShape { heads: 1, n, r, k, block };
    let d = DiagonalGpu::SelfTensored;
    let (out, saved) = gpu.lowtri_forward(&shape, &gl, &gr, &gc, d).unwrap();
    let grads = gpu.lowtri_backward(&shape, &gl, &gr, &gc, d, &saved, &gg).unwrap();
    let (lm, rm, cm, gm) =
        (of_rows(&l, n, r), of_rows(&rr, n, r), of_rows(&c, n, k), of_rows(&g, n, k));
    let problem = Problem::self_tensored(lm.as_ref(), rm.as_ref(), cm.as_ref());
    let engine = polysketch_lowtri::LowTri::new(block).unwrap();
    let (expected, mut cpu_saved) = engine.forward(&problem, Par::Seq).unwrap();
    let eg = engine.backward(&problem, &mut cpu_saved, gm.as_ref(), Par::Seq).unwrap();
    // the prefixes sum up to n/b blocks in f32: relative 1e-3 of the largest entry
    assert_close(&download(gpu, &out), &mat_rows(expected.as_ref()), 1e-3, "many tiles: out");
    assert_close(&download(gpu, &grads.dl), &mat_rows(eg.d_a.as_ref()), 1e-3, "many tiles: dl");
    assert_close(&download(gpu, &grads.dr), &mat_rows(eg.d_b.as_ref()), 1e-3, "many tiles: dr");
    assert_close(&download(gpu, &grads.dc), &mat_rows(eg.d_c.as_ref()), 1e-3, "many tiles: dc");
}

fn lowtri_rejects_bad_input<R: Runtime>(gpu: &Gpu<R>) {
    let shape = LtShape { heads: 2, n: 5, r: 3, k: 2, block: 4 };
    let ok = gpu.upload(&[0.5f32; 30]).unwrap();
    let c = gpu.upload(&[0.5f32; 20]).unwrap();
    let short = gpu.upload(&[0.5f32; 29]).unwrap();
    let d = DiagonalGpu::SelfTensored;
    assert!(matches!(
        gpu.lowtri_forward(&shape, &short, &ok, &c, d).unwrap_err(),
        GpuError::Shape { input: "l", .. }
    ));
    let zero = LtShape { block: 0, ..shape };
    assert!(matches!(
        gpu.lowtri_forward(&zero, &ok, &ok, &c, d).unwrap_err(),
        GpuError::InvalidArgument(_)
    ));
    let bad_p = DiagonalGpu::LocalExact { q: &ok, k: &ok, d: 3, p: 0 };
    assert!(matches!(
        gpu.lowtri_forward(&shape, &ok, &ok, &c, bad_p).unwrap_err(),
        GpuError::InvalidArgument(_)
    ));
}

// ---------------------------------------------------------------- the layer

struct LayerCase {
    config: PolySketchGpuConfig,
    batch: usize,
    n: usize,
    seed: u64,
}

/// The layer in f64 from the CPU crates: layer norm, the CPU sketch, the lowtri reference sum,
/// normalisation. `x = [q, k, v]` concatenated.
fn layer_ref(
    case: &LayerCase, sketch: &dyn PolySketch<f64>, gain: &[f64], bias: &[f64], x: &[f64],
) -> Vec<f64> {
    let c = case.config;
    let (h, n) = (c.head_dim, case.n);
    let len = case.batch * c.heads * n * h;
    let s = (h as f64).powf(-0.25);
    let qt = layernorm_ref(&x[..len], gain, bias, s);
    let kt = layernorm_ref(&x[len..2 * len], gain, bias, s);
    let v = &x[2 * len..];
    let mut out = vec![0.0; len];
    for z in 0..case.batch * c.heads {
        let part = |y: &[f64]| Mat::from_fn(n, h, |i, j| y[(z * n + i) * h + j]);
        let (qm, km) = (part(&qt), part(&kt));
        let cm = Mat::from_fn(n, h + 1, |i, j| if j < h { v[(z * n + i) * h + j] } else { 1.0 });
        let lm = sketch.apply(qm.as_ref(), Par::Seq).unwrap();
        let rm = sketch.apply(km.as_ref(), Par::Seq).unwrap();
        let features = Features::SelfTensored { l: lm.as_ref(), r: rm.as_ref() };
        let problem = if c.local {
            Problem::local_exact(features, qm.as_ref(), km.as_ref(), c.p, cm.as_ref())
        } else {
            Problem::self_tensored(lm.as_ref(), rm.as_ref(), cm.as_ref())
        };
        let raw = reference::forward_reference(&problem, c.block);
        for i in 0..n {
            let den = 1.0 + raw[(i, h)];
            for j in 0..h {
                out[(z * n + i) * h + j] = raw[(i, j)] / den;
            }
        }
    }
    out
}

fn layer<R: Runtime>(gpu: &Gpu<R>) {
    let cases = [
        (4, 3, 5, false, 1, 9),
        (4, 3, 4, true, 2, 11),
        (2, 4, 16, true, 1, 7),
        (8, 2, 4, false, 1, 6),
    ];
    for (i, &(p, r, block, local, batch, n)) in cases.iter().enumerate() {
        let case = LayerCase {
            config: PolySketchGpuConfig { heads: 2, head_dim: 4, p, r, block, local },
            batch,
            n,
            seed: 100 + i as u64,
        };
        let h = case.config.head_dim;
        let len = batch * case.config.heads * n * h;
        let (cpu, levels) = levels_of(h, r, p / 2, case.seed);
        let gain: Vec<f32> = normal(h, case.seed + 1).iter().map(|v| 1.0 + 0.2 * v).collect();
        let bias: Vec<f32> = normal(h, case.seed + 2).iter().map(|v| 0.1 * v).collect();
        let layer =
            PolySketchGpu::new(gpu, case.config, &gain, &bias, SketchWeights::Random(&levels))
                .unwrap();
        let x = normal(3 * len, case.seed + 3);
        let w = normal(len, case.seed + 4);
        let up = |y: &[f32]| gpu.upload(y).unwrap();
        let (q, k, v) = (up(&x[..len]), up(&x[len..2 * len]), up(&x[2 * len..]));
        let (out, saved) = layer.forward(gpu, &q, &k, &v, batch, n).unwrap();
        let (xw, gw, bw) = (wide(&x), wide(&gain), wide(&bias));
        let expected = layer_ref(&case, cpu.as_ref(), &gw, &bw, &xw);
        let what = format!("layer p {p} r {r} b {block} local {local} batch {batch} n {n}");
        assert_close(&download(gpu, &out), &expected, 1e-4, &format!("{what} forward"));
        let grads = layer.backward(gpu, &saved, &up(&w)).unwrap();
        let ww = wide(&w);
        let dx = fd_grad(&xw, &ww, 1e-5, |x| layer_ref(&case, cpu.as_ref(), &gw, &bw, x));
        let got: Vec<f64> =
            [&grads.dq, &grads.dk, &grads.dv].iter().flat_map(|b| download(gpu, b)).collect();
        assert_close(&got, &dx, 1e-3, &format!("{what} dq, dk, dv"));
        let dg = fd_grad(&gw, &ww, 1e-5, |g| layer_ref(&case, cpu.as_ref(), g, &bw, &xw));
        assert_close(&wide(&grads.d_gain), &dg, 1e-3, &format!("{what} d_gain"));
        let db = fd_grad(&bw, &ww, 1e-5, |b| layer_ref(&case, cpu.as_ref(), &gw, b, &xw));
        assert_close(&wide(&grads.d_bias), &db, 1e-3, &format!("{what} d_bias"));
    }
}

fn layer_rejects_bad_input<R: Runtime>(gpu: &Gpu<R>) {
    let config = PolySketchGpuConfig { heads: 1, head_dim: 2, p: 4, r: 2, block: 4, local: false };
    let w = vec![vec![0.5f32; 8]];
    let bad = PolySketchGpuConfig { p: 6, ..config };
    assert!(matches!(
        PolySketchGpu::new(gpu, bad, &[1.0; 2], &[0.0; 2], SketchWeights::Random(&w)).unwrap_err(),
        GpuError::InvalidArgument(_)
    ));
    assert!(matches!(
        PolySketchGpu::new(gpu, config, &[1.0; 3], &[0.0; 2], SketchWeights::Random(&w))
            .unwrap_err(),
        GpuError::Shape { input: "ln_gain", .. }
    ));
    assert!(matches!(
        PolySketchGpu::new(
            gpu,
            config,
            &[f32::INFINITY, 1.0],
            &[0.0; 2],
            SketchWeights::Random(&w)
        )
        .unwrap_err(),
        GpuError::NonFinite { .. }
    ));
    let layer =
        PolySketchGpu::new(gpu, config, &[1.0; 2], &[0.0; 2], SketchWeights::Random(&w)).unwrap();
    let x = gpu.upload(&[0.5f32; 10]).unwrap();
    assert!(matches!(
        layer.forward(gpu, &x, &x, &x, 1, 0).unwrap_err(),
        GpuError::InvalidArgument(_)
    ));
    assert!(matches!(
        layer.forward(gpu, &x, &x, &x, 1, 4).unwrap_err(),
        GpuError::Shape { input: "q", .. }
    ));
    let (_, saved) = layer.forward(gpu, &x, &x, &x, 1, 5).unwrap();
    let short = gpu.upload(&[0.5f32; 9]).unwrap();
    assert!(matches!(
        layer.backward(gpu, &saved, &short).unwrap_err(),
        GpuError::Shape { input: "d_out", .. }
    ));
}

/// `bf16` inputs give the `f32` layer's result to `bf16` precision where the device has `bf16`
/// (CUDA); elsewhere (the software Vulkan driver) a typed `Unsupported` error, not a panic.
fn layer_bf16<R: Runtime>(gpu: &Gpu<R>) {
    use polysketch_gpu::bf16;
    let config = PolySketchGpuConfig { heads: 2, head_dim: 8, p: 4, r: 4, block: 8, local: true };
    let (_, levels) = levels_of(8, 4, 2, 3);
    let layer =
        PolySketchGpu::new(gpu, config, &[1.0; 8], &[0.0; 8], SketchWeights::Random(&levels))
            .unwrap();
    let n = 50;
    let x: Vec<f32> =
        normal(2 * n * 8, 9).into_iter().map(|v| bf16::from_f32(v).to_f32()).collect();
    let xb: Vec<bf16> = x.iter().map(|v| bf16::from_f32(*v)).collect();
    let xf = gpu.upload(&x).unwrap();
    let xh = gpu.upload(&xb).unwrap();
    if !gpu.supports::<bf16>() {
        let err = layer.forward(gpu, &xh, &xh, &xh, 1, n).unwrap_err();
        assert!(matches!(err, GpuError::Unsupported { .. }), "{err}");
        return;
    }
    let (out32, _) = layer.forward(gpu, &xf, &xf, &xf, 1, n).unwrap();
    let (out16, _) = layer.forward(gpu, &xh, &xh, &xh, 1, n).unwrap();
    let got: Vec<f64> =
        gpu.download(&out16).unwrap().iter().map(|v| f64::from(v.to_f32())).collect();
    assert_close(&got, &download(gpu, &out32), 1e-2, "bf16 layer");
}

macro_rules! one_test {
    ([$($attr:meta)*], $runtime:ty, $test:ident) => {
        #[test]
        $(#[$attr])*
        fn $test() {
            let name = concat!(stringify!($test), " (", stringify!($runtime), ")");
            if let Some(gpu) = polysketch_gpu::testing::device_or_skip::<$runtime>(name) {
                super::$test(&gpu);
            }
        }
    };
}

/// The whole suite on one runtime, each test with the attributes `$attrs`.
macro_rules! suite {
    ($module:ident, $runtime:ty, $attrs:tt) => {
        mod $module {
            one_test!($attrs, $runtime, matmul);
            one_test!($attrs, $runtime, matmul_rejects_out_of_range);
            one_test!($attrs, $runtime, layernorm);
            one_test!($attrs, $runtime, tree_sketch);
            one_test!($attrs, $runtime, tree_sketch_rejects_bad_input);
            one_test!($attrs, $runtime, learned_sketch_rejects_bad_input);
            one_test!($attrs, $runtime, lowtri);
            one_test!($attrs, $runtime, lowtri_rejects_bad_input);
            one_test!($attrs, $runtime, lowtri_many_row_tiles);
            one_test!($attrs, $runtime, block_states_are_tensored_prefixes);
            one_test!($attrs, $runtime, state_groups_give_the_same_numbers);
            one_test!($attrs, $runtime, layer);
            one_test!($attrs, $runtime, layer_rejects_bad_input);
            one_test!($attrs, $runtime, layer_bf16);
        }
    };
}

#[cfg(feature = "wgpu")]
suite!(wgpu, polysketch_gpu::Wgpu, []);

#[cfg(feature = "cuda")]
suite!(
    cuda,
    polysketch_gpu::Cuda,
    [ignore = "needs an NVIDIA GPU: cargo test -p polysketch-gpu --features cuda -- --ignored"]
);
