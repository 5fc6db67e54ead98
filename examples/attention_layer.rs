//! The attention layer inside a model that is not ours: a user-defined two-layer residual model
//! (its own projections, written with faer) that swaps softmax attention for PolySketch
//! attention by changing one config value, takes one SGD step on a next-step prediction task,
//! and saves and reloads its attention parameters as safetensors.
//!
//! ```text
//! cargo run --release --example attention_layer
//! ```
//!
//! For each kind it prints the loss before and after the step (the step must lower it), and
//! the parameter file it wrote.

use std::path::PathBuf;

use clap::Parser;
use faer::{Mat, MatRef, Par};
use polysketch::attention::{
    Attention, AttentionConfig, AttentionKind, PolySketchConfig, SketchKind, load_safetensors,
    save_safetensors,
};
use polysketch::core::{normal, seeded_rng};

const D_MODEL: usize = 32;
const HEADS: usize = 2;
const HEAD_DIM: usize = D_MODEL / HEADS;
const N: usize = 256;
const LR: f32 = 0.05;

/// One residual block of the user's model: `x + (attention(x Wq, x Wk, x Wv)) Wo`.
struct Block {
    attention: Attention<f32>,
    /// `[d, d]` projections, `y = x W`.
    w: [Mat<f32>; 4],
}

/// What one block's backward needs.
struct BlockSaved {
    x: Mat<f32>,
    heads_out: Mat<f32>,
    saved: polysketch::attention::Saved<f32>,
}

/// `[n, d]` → `[heads, n, h]` row-major (head `j` is columns `j h .. (j + 1) h`).
fn split_heads(x: MatRef<'_, f32>) -> Vec<f32> {
    let mut out = Vec::with_capacity(N * D_MODEL);
    for hd in 0..HEADS {
        for i in 0..N {
            out.extend((0..HEAD_DIM).map(|c| x[(i, hd * HEAD_DIM + c)]));
        }
    }
    out
}

/// The inverse of [`split_heads`].
fn merge_heads(x: &[f32]) -> Mat<f32> {
    Mat::from_fn(N, D_MODEL, |i, j| {
        let (hd, c) = (j / HEAD_DIM, j % HEAD_DIM);
        x[(hd * N + i) * HEAD_DIM + c]
    })
}

impl Block {
    fn new(kind: AttentionKind, seed: u64) -> polysketch::attention::Result<Self> {
        let mut rng = seeded_rng(seed);
        let scale = 1.0 / (D_MODEL as f64).sqrt();
        let mut w = || Mat::from_fn(D_MODEL, D_MODEL, |_, _| (scale * normal(&mut rng)) as f32);
        Ok(Self {
            attention: Attention::new(AttentionConfig {
                heads: HEADS,
                head_dim: HEAD_DIM,
                kind,
                qk_norm: Default::default(),
                causal: true,
            })?,
            w: [w(), w(), w(), w()],
        })
    }

    fn forward(&self, x: &Mat<f32>) -> polysketch::attention::Result<(Mat<f32>, BlockSaved)> {
        let [q, k, v] = [0, 1, 2].map(|i| split_heads((x * &self.w[i]).as_ref()));
        let (o, saved) = self.attention.forward(&q, &k, &v, 1, N, Par::rayon(0))?;
        let heads_out = merge_heads(&o);
        let y = x + &heads_out * &self.w[3];
        let saved = BlockSaved { x: x.clone(), heads_out, saved };
        Ok((y, saved))
    }

    /// Given `dy`, returns `dx` and applies the SGD step to every weight of the block.
    fn backward_and_step(
        &mut self, s: &mut BlockSaved, dy: &Mat<f32>,
    ) -> polysketch::attention::Result<Mat<f32>> {
        // y = x + O Wo
        let d_wo = s.heads_out.transpose() * dy;
        let d_o = dy * self.w[3].transpose();
        let g = self.attention.backward(&mut s.saved, &split_heads(d_o.as_ref()), Par::rayon(0))?;
        let mut dx = dy.clone();
        let mut d_w = Vec::new();
        for (i, d) in [&g.dq, &g.dk, &g.dv].into_iter().enumerate() {
            let d = merge_heads(d);
            dx += &d * self.w[i].transpose();
            d_w.push(s.x.transpose() * &d);
        }
        d_w.push(d_wo);
        for (w, d) in self.w.iter_mut().zip(&d_w) {
            *w -= d * faer::Scale(LR);
        }
        // the attention layer's own parameters, by name (layer norm, learned sketch)
        for (p, (name, d)) in self.attention.parameters_mut().into_iter().zip(&g.params) {
            assert_eq!(&p.name, name, "gradients come in the order of the parameters");
            p.data.iter_mut().zip(d).for_each(|(w, d)| *w -= LR * d);
        }
        Ok(dx)
    }
}

/// Mean squared error and its gradient.
fn mse(pred: &Mat<f32>, target: &Mat<f32>) -> (f32, Mat<f32>) {
    let diff = pred - target;
    let count = (N * D_MODEL) as f32;
    let loss = diff.squared_norm_l2() / count;
    (loss, diff * faer::Scale(2.0 / count))
}

fn run(name: &str, kind: AttentionKind) -> Result<(), Box<dyn std::error::Error>> {
    // a smooth multichannel signal; the task is to predict the next step of each channel
    let signal = |t: usize, c: usize| ((t as f32) * (0.05 + 0.01 * c as f32) + c as f32).sin();
    let x = Mat::from_fn(N, D_MODEL, signal);
    let target = Mat::from_fn(N, D_MODEL, |t, c| signal(t + 1, c));
    let mut blocks = [Block::new(kind, 1)?, Block::new(kind, 2)?];
    let loss_of = |blocks: &[Block; 2]| -> polysketch::attention::Result<f32> {
        let (h1, _) = blocks[0].forward(&x)?;
        let (h2, _) = blocks[1].forward(&h1)?;
        Ok(mse(&h2, &target).0)
    };
    let before = loss_of(&blocks)?;
    // one training step: forward, backward through both blocks, SGD
    let (h1, mut s1) = blocks[0].forward(&x)?;
    let (h2, mut s2) = blocks[1].forward(&h1)?;
    let (_, d_h2) = mse(&h2, &target);
    let d_h1 = blocks[1].backward_and_step(&mut s2, &d_h2)?;
    blocks[0].backward_and_step(&mut s1, &d_h1)?;
    let after = loss_of(&blocks)?;
    println!("{name:<28} loss before {before:.5}  after one step {after:.5}");
    assert!(after < before, "one SGD step must lower the loss");
    // save the attention parameters of both blocks under prefixed names, and read them back
    let path = PathBuf::from("runs/attention_layer")
        .join(format!("{}.safetensors", name.replace(['+', ' '], "_")));
    let mut params = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        for mut p in b.attention.parameters() {
            p.name = format!("block{i}.{}", p.name);
            params.push(p);
        }
    }
    save_safetensors(&path, &params)?;
    let mut fresh = [Block::new(kind, 1)?, Block::new(kind, 2)?];
    for (i, b) in fresh.iter_mut().enumerate() {
        let mut ps = b.attention.parameters_mut();
        for p in ps.iter_mut() {
            p.name = format!("block{i}.{}", p.name);
        }
        load_safetensors(&path, &mut ps)?;
    }
    for (a, b) in blocks.iter().zip(&fresh) {
        assert_eq!(
            a.attention.parameters().iter().map(|p| p.data).collect::<Vec<_>>(),
            b.attention.parameters().iter().map(|p| p.data).collect::<Vec<_>>()
        );
    }
    println!(
        "{:<28} {} parameters saved to {} and reloaded",
        "",
        params.iter().map(|p| p.data.len()).sum::<usize>(),
        path.display()
    );
    Ok(())
}

/// The attention layer inside a user's own model: a two-layer residual model that swaps
/// softmax for PolySketch attention (random or learned sketches, with exact local blocks) by
/// changing one config value, takes one SGD step, and saves and reloads its attention
/// parameters as safetensors. Prints the loss before and after the step for each kind.
#[derive(Parser, Debug)]
#[command(long_about = None)]
struct Args {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    Args::parse();
    // the one config value that changes between the models
    let polysketch = |sketch, local| {
        AttentionKind::PolySketch(PolySketchConfig {
            r: 16,
            block: 64,
            sketch,
            local,
            ..Default::default()
        })
    };
    run("softmax", AttentionKind::Softmax)?;
    run("polysketch random+local", polysketch(SketchKind::Random, true))?;
    run("polysketch learned+local", polysketch(SketchKind::Learned, true))?;
    Ok(())
}
