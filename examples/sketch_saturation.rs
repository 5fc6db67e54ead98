//! How saturated a trained model's learned sketches are, against the same model freshly
//! initialised: the diagnosis behind the book's "Reproducing the paper", \\(r = 64\\).
//!
//! ```sh
//! cargo run --release --example sketch_saturation -- \
//!     runs/paper/corpus/polysketch-learned-local-r32-s0 runs/paper/corpus/polysketch-learned-local-r64-s0
//! ```
//!
//! For every run (a run folder or checkpoint folder of a model with learned PolySketch
//! attention) and every layer, it draws `--rows` Gaussian rows \\(x \in \mathbb R^h\\), passes
//! them through the layer's query/key normalisation \\(\tilde x = \mathrm{LN}(x)/h^{1/4}\\) (the
//! checkpoint's gain and bias) and its learned sketch \\(L = \sqrt r \tanh(z)\\), and prints
//! the share of saturated entries ([`LearnedSketch::saturation`]: \\(|z| \ge 2\\)), the
//! median sketched score \\(\langle L_i, L_j\rangle^2\\) over pairs \\(i \ne j\\) with its
//! ceiling \\(r^4\\), and the median exact score \\(\langle\tilde x_i, \tilde x_j\rangle^p\\) of
//! the local blocks — for the checkpoint's weights and for the weights the same configuration
//! starts from. The rows are a stand-in for the model's queries and keys (Gaussian, not read
//! from text); what it shows is the sketch's state, which the inputs' normalisation makes
//! largely independent of them.

use std::path::PathBuf;

use clap::Parser;
use faer::{Mat, MatRef, Par};
use polysketch::attention::layernorm::{LnSaved, layernorm_forward};
use polysketch::attention::{AttentionKind, LearnedSketch, SketchKind};
use polysketch::core::{normal, seeded_rng};
use polysketch::gpt::run::load_model;
use polysketch::gpt::{Gpt, GptConfig};
use polysketch::sketch::PolySketch;

/// Saturation of the learned sketches of trained models.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Run folders (or checkpoint folders) of models with learned PolySketch attention.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Gaussian rows per layer.
    #[arg(long, default_value_t = 256)]
    rows: usize,
    /// Seed of the rows.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// One layer's figures.
struct Health {
    saturated: f64,
    sketched: f64,
    exact: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Pairwise scores \\(\langle a_i, a_j\rangle^p\\), \\(i < j\\), of the rows of `a`.
fn scores(a: MatRef<'_, f64>, p: i32) -> Vec<f64> {
    let g = a * a.transpose();
    (0..a.nrows())
        .flat_map(|i| (0..i).map(move |j| (i, j)))
        .map(|(i, j)| g[(i, j)].powi(p))
        .collect()
}

/// The figures of layer `layer` of `model` (PolySketch of degree `p`, sketch size `r`) on the
/// rows `x`.
fn health(
    model: &Gpt<f32>, layer: usize, x: MatRef<'_, f64>, p: usize, r: usize,
) -> Result<Health, Box<dyn std::error::Error>> {
    let h = x.ncols();
    let prefix = format!("h{layer}.attn.");
    let params = model.parameters();
    let get = |name: &str| -> Result<Vec<f64>, String> {
        params
            .iter()
            .find(|q| q.name == format!("{prefix}{name}"))
            .map(|q| q.data.iter().map(|&v| f64::from(v)).collect())
            .ok_or_else(|| format!("the checkpoint has no {prefix}{name}"))
    };
    let mut sketch = LearnedSketch::<f64>::new(h, r, p / 2, 0)?;
    for q in sketch.parameters_mut() {
        let values = get(&q.name)?;
        if values.len() != q.data.len() {
            return Err(format!(
                "{prefix}{}: {} values, expected {}",
                q.name,
                values.len(),
                q.data.len()
            )
            .into());
        }
        q.data.copy_from_slice(&values);
    }
    let mut xt = vec![0.0; x.nrows() * h];
    let scale = (h as f64).powf(-0.25);
    layernorm_forward(
        x,
        &get("ln.gain")?,
        &get("ln.bias")?,
        scale,
        &mut xt,
        &mut LnSaved::default(),
    );
    let xt = MatRef::from_row_major_slice(&xt, x.nrows(), h);
    let l = sketch.apply(xt, Par::Seq)?;
    Ok(Health {
        saturated: sketch.saturation(xt, Par::Seq)?,
        sketched: median(scores(l.as_ref(), 2)),
        exact: median(scores(xt, p as i32)),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    println!(
        "| run | layer | weights | saturated | sketched score (median) | ceiling r⁴ | exact score (median) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for run in &args.runs {
        let (meta, trained, _) = load_model(run)?;
        let config: &GptConfig = &meta.model;
        let ps = match config.attention {
            AttentionKind::PolySketch(ps) if ps.sketch == SketchKind::Learned => ps,
            other => {
                return Err(
                    format!("{}: {other} attention has no learned sketch", run.display()).into()
                );
            }
        };
        let initial = Gpt::<f32>::new(*config)?;
        let h = config.d_model / config.heads;
        let mut rng = seeded_rng(args.seed);
        let x = Mat::from_fn(args.rows, h, |_, _| normal(&mut rng));
        let name = run
            .file_name()
            .map_or_else(|| run.display().to_string(), |s| s.to_string_lossy().into());
        for layer in 0..config.layers {
            for (weights, model) in
                [("initial", &initial), (&*format!("step {}", meta.step), &trained)]
            {
                let f = health(model, layer, x.as_ref(), ps.p, ps.r)?;
                println!(
                    "| {name} | {layer} | {weights} | {:.1} % | {:.3e} | {:.3e} | {:.3e} |",
                    100.0 * f.saturated,
                    f.sketched,
                    (ps.r as f64).powi(4),
                    f.exact
                );
            }
        }
    }
    Ok(())
}
