//! The smallest complete burn model with PolySketch attention: a block and a read-out, trained
//! with burn's Adam for 20 steps to predict a running mean (`cargo run -p polysketch-burn
//! --example burn_minimal`).
use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Distribution, Tensor, backend::Backend};
use polysketch_burn::{PolySketchMultiHead, PolySketchMultiHeadConfig};

#[derive(Module, Debug)]
struct Model<B: Backend> {
    attention: PolySketchMultiHead<B>,
    readout: Linear<B>,
}

fn main() -> Result<(), polysketch_burn::polysketch_attention::AttentionError> {
    type B = Autodiff<NdArray>;
    let device = Default::default();
    let kind = "learned+local:r=8,block=32".parse()?; // "softmax" for the baseline
    let mut model = Model::<B> {
        attention: PolySketchMultiHeadConfig::new(32, 4).with_kind(kind).try_init(&device)?,
        readout: LinearConfig::new(32, 1).init(&device),
    };
    let x = Tensor::<B, 3>::random([8, 128, 32], Distribution::Normal(0.0, 1.0), &device);
    let steps = Tensor::<B, 1, burn::tensor::Int>::arange(1..129, &device).float();
    let target = x.clone().narrow(2, 0, 1).cumsum(1) / steps.reshape([1, 128, 1]);
    let mut adam = AdamConfig::new().init();
    for step in 0..20 {
        let pred = model.readout.forward(model.attention.try_forward(x.clone())?);
        let loss = (pred - target.clone()).powi_scalar(2).mean();
        println!("step {step:2}: loss {:.4}", loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = adam.step(1e-2, model, grads);
    }
    Ok(())
}
