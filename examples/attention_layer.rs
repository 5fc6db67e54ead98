//! The attention layer inside a model that is not ours: a user's two-block residual model built
//! on [`MultiHead`] swaps softmax for PolySketch by changing one config value, takes a few SGD
//! steps on a next-step prediction task (the loss must fall), and saves and reloads its
//! parameters as safetensors (in the system's temporary folder).
//!
//! ```text
//! cargo run --release --example attention_layer
//! ```

use faer::Par;
use polysketch::attention::{
    AttentionKind, MultiHead, MultiHeadConfig, load_safetensors, save_safetensors,
};

/// Model width, heads, sequence length, SGD step size.
const C: usize = 32;
const HEADS: usize = 2;
const N: usize = 256;
const LR: f32 = 0.05;

/// The user's model: `h = x + A(x)`, `y = h + B(h)`.
fn blocks(kind: AttentionKind) -> polysketch::attention::Result<[MultiHead<f32>; 2]> {
    let config = MultiHeadConfig::new(C, HEADS, kind); // the one value that changes
    Ok([MultiHead::new(config, 1)?, MultiHead::new(config, 2)?])
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

fn run(kind: &str) -> Result<(), Box<dyn std::error::Error>> {
    // a smooth multichannel signal; the task is to predict each channel's next step
    let signal = |t: usize, c: usize| ((t as f32) * (0.05 + 0.01 * c as f32) + c as f32).sin();
    let x: Vec<f32> = (0..N * C).map(|i| signal(i / C, i % C)).collect();
    let target: Vec<f32> = (0..N * C).map(|i| signal(i / C + 1, i % C)).collect();
    let mut model = blocks(kind.parse()?)?;
    let mut losses = vec![];
    for _ in 0..5 {
        let (a, mut sa) = model[0].forward(&x, 1, N, Par::rayon(0))?;
        let h = add(&x, &a);
        let (b, mut sb) = model[1].forward(&h, 1, N, Par::rayon(0))?;
        let diff: Vec<f32> = add(&h, &b).iter().zip(&target).map(|(y, t)| y - t).collect();
        losses.push(diff.iter().map(|d| d * d).sum::<f32>() / diff.len() as f32);
        let dy: Vec<f32> = diff.iter().map(|d| 2.0 * d / diff.len() as f32).collect();
        // backward through both residual blocks, then SGD on every named parameter
        let gb = model[1].backward(&mut sb, &dy, Par::rayon(0))?;
        let ga = model[0].backward(&mut sa, &add(&dy, &gb.dx), Par::rayon(0))?;
        for (block, grads) in model.iter_mut().zip([ga, gb]) {
            for (p, (_, g)) in block.parameters_mut().into_iter().zip(&grads.params) {
                p.data.iter_mut().zip(g).for_each(|(w, g)| *w -= LR * g);
            }
        }
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    println!("{kind:<28} loss {first:.5} → {last:.5} after {} SGD steps", losses.len());
    assert!(last < first, "training must lower the loss");
    // both blocks' parameters under prefixed names, saved, then loaded into a fresh model
    let path =
        std::env::temp_dir().join(format!("attention_layer-{}.safetensors", std::process::id()));
    let prefixed = |i: usize, name: &str| format!("block{i}.{name}");
    let mut params = vec![];
    for (i, block) in model.iter().enumerate() {
        params.extend(block.parameters().into_iter().map(|mut p| {
            p.name = prefixed(i, &p.name);
            p
        }));
    }
    save_safetensors(&path, &params)?;
    let mut fresh = blocks(kind.parse()?)?;
    let mut ps: Vec<_> = (fresh.iter_mut().enumerate())
        .flat_map(|(i, block)| {
            block.parameters_mut().into_iter().map(move |mut p| {
                p.name = prefixed(i, &p.name);
                p
            })
        })
        .collect();
    load_safetensors(&path, &mut ps)?;
    drop(ps);
    assert!(fresh.iter().zip(&model).all(|(a, b)| a.parameters() == b.parameters()));
    let count: usize = params.iter().map(|p| p.data.len()).sum();
    println!("{:<28} {count} parameters saved to {} and reloaded", "", path.display());
    std::fs::remove_file(&path)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for kind in ["softmax", "random+local:r=16,block=64", "learned+local:r=16,block=64"] {
        run(kind)?;
    }
    Ok(())
}
