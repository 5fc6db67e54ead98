//! Checkpoints: a folder with `model.safetensors` (the named parameters), `optimizer.safetensors`
//! (AdamW's moments, `m.<name>` and `v.<name>`), `checkpoint.json` ([`Meta`]: the model and run
//! configuration, step, what was trained on; versioned by [`FORMAT`]) and, for a BPE model, `tokenizer.json`. The folder is written beside its place as
//! `<dir>.tmp` and then renamed over it, so a crash leaves the previous checkpoint whole.

use std::path::{Path, PathBuf};

use polysketch_attention::{load_safetensors, save_safetensors};
use polysketch_core::io::write_atomic;
use serde::{Deserialize, Serialize};

use crate::data::Tokenizer;
use crate::run::RunConfig;
use crate::{AdamW, Gpt, GptConfig, GptError, Result, views, views_mut};

/// Version of the checkpoint layout this crate writes.
///
/// - 2: `checkpoint.json` holds the typed [`RunConfig`] under `train` and AdamW's step count
///   as `adam_t` beside it.
/// - 1: the same, with `adam_t` inside `train`. Read (and converted) still; others are refused.
pub const FORMAT: u32 = 2;

/// The JSON part of a checkpoint (`checkpoint.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// [`FORMAT`] of the writer.
    pub format: u32,
    /// The model.
    pub model: GptConfig,
    /// Steps taken.
    pub step: usize,
    /// The run: optimisation, data, evaluation, tokenizer.
    #[serde(rename = "train")]
    pub run: RunConfig,
    /// AdamW's step count (its bias correction).
    pub adam_t: u64,
    /// Tokenizer: `bytes`, or `bpe` (then `tokenizer.json` holds it).
    pub tokenizer: String,
}

fn file_err(path: &Path, reason: impl ToString) -> GptError {
    GptError::File { path: path.display().to_string(), reason: reason.to_string() }
}

/// Writes a checkpoint folder at `dir` (replacing one that is there).
///
/// # Errors
/// [`GptError::File`] if a file cannot be written; non-finite parameters.
pub fn save(
    dir: &Path, model: &Gpt<f32>, opt: &AdamW<f32>, tokenizer: &Tokenizer, meta: &Meta,
) -> Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", dir.display()));
    let old = PathBuf::from(format!("{}.old", dir.display()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| file_err(&tmp, e))?;
    save_safetensors(&tmp.join("model.safetensors"), &model.parameters())?;
    let mut both = views(&opt.m, model.table(), "m");
    both.extend(views(&opt.v, model.table(), "v"));
    save_safetensors(&tmp.join("optimizer.safetensors"), &both)?;
    let mut meta = meta.clone();
    meta.adam_t = opt.t;
    meta.tokenizer = match tokenizer.to_json()? {
        None => "bytes".into(),
        Some(json) => {
            let path = tmp.join("tokenizer.json");
            write_atomic(&path, json.as_bytes()).map_err(|e| file_err(&path, e))?;
            "bpe".into()
        }
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| file_err(dir, e))?;
    write_atomic(&tmp.join("checkpoint.json"), &json).map_err(|e| file_err(&tmp, e))?;
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dir, &old).map_err(|e| file_err(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| file_err(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// `" (a write was interrupted: …)"` when a crash during [`save`] left the previous checkpoint
/// of `dir` at `dir.old`.
fn interrupted_write(dir: &Path) -> Option<String> {
    let old = PathBuf::from(format!("{}.old", dir.display()));
    old.is_dir().then(|| {
        format!(" (a write was interrupted: the previous checkpoint is at {})", old.display())
    })
}

/// The checkpoint folder that `path` names: `path` itself when it holds `checkpoint.json`, or
/// `path/checkpoint` when `path` is a run folder (what `polysketch train` writes: `metrics.csv`,
/// `loss.svg` and `checkpoint/`). Every command that asks for a checkpoint accepts both.
///
/// # Errors
/// [`GptError::File`] saying which was expected when `path` is neither (with a hint when an
/// interrupted write left `path.old`).
pub fn locate(path: &Path) -> Result<PathBuf> {
    if path.join("checkpoint.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let inner = path.join("checkpoint");
    if inner.join("checkpoint.json").is_file() {
        return Ok(inner);
    }
    for dir in [path, inner.as_path()] {
        if let Some(hint) = interrupted_write(dir) {
            return Err(file_err(dir, format!("no checkpoint here{hint}")));
        }
    }
    let what = if path.is_dir() {
        "holds neither checkpoint.json nor checkpoint/checkpoint.json"
    } else if path.exists() {
        "is a file"
    } else {
        "does not exist"
    };
    Err(file_err(
        path,
        format!(
            "{what}: expected a checkpoint folder (with checkpoint.json) or a run folder \
             (with checkpoint/), e.g. runs/train-1 or runs/train-1/checkpoint"
        ),
    ))
}

/// Reads the JSON part of the checkpoint at `dir`.
///
/// # Errors
/// [`GptError::File`]: missing, unreadable, not this format.
pub fn read_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join("checkpoint.json");
    if !dir.is_dir() {
        let hint = interrupted_write(dir).unwrap_or_default();
        return Err(file_err(dir, format!("no checkpoint folder here{hint}")));
    }
    let bytes = std::fs::read(&path).map_err(|e| file_err(&path, e))?;
    let not_one = |e: serde_json::Error| file_err(&path, format!("not a checkpoint ({e})"));
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).map_err(not_one)?;
    match json.get("format").and_then(|f| f.as_u64()) {
        Some(1) => {
            // format 1 kept AdamW's step count inside the run configuration
            let t = json.pointer("/train/adam_t").cloned();
            json["adam_t"] = t.unwrap_or(serde_json::Value::Null);
        }
        Some(f) if f == u64::from(FORMAT) => {}
        Some(f) => {
            return Err(file_err(
                &path,
                format!("checkpoint format {f}: this version reads formats 1 and {FORMAT}"),
            ));
        }
        None => return Err(file_err(&path, "not a checkpoint (no format)")),
    }
    let mut meta: Meta = serde_json::from_value(json).map_err(not_one)?;
    meta.format = FORMAT;
    meta.model.validate()?;
    Ok(meta)
}

/// Loads a checkpoint: the model (built from its configuration, then its weights) and, when
/// asked, the optimiser state.
///
/// # Errors
/// [`GptError::File`] for a missing or corrupt file or tensors that do not fit the configuration.
pub fn load(
    dir: &Path, with_optimizer: Option<(f64, f64, f64, f64)>,
) -> Result<(Meta, Gpt<f32>, Option<AdamW<f32>>)> {
    let meta = read_meta(dir)?;
    let mut model = Gpt::<f32>::new(meta.model)?;
    model.with_parameters_mut(|views| load_safetensors(&dir.join("model.safetensors"), views))?;
    let opt = match with_optimizer {
        None => None,
        Some((b1, b2, eps, wd)) => {
            let mut opt = AdamW::new(model.num_params(), b1, b2, eps, wd);
            let mut both = views_mut(&mut opt.m, model.table(), "m");
            both.extend(views_mut(&mut opt.v, model.table(), "v"));
            load_safetensors(&dir.join("optimizer.safetensors"), &mut both)?;
            opt.t = meta.adam_t;
            Some(opt)
        }
    };
    Ok((meta, model, opt))
}

/// The tokenizer of the checkpoint at `dir` (as its `meta` names it).
///
/// # Errors
/// [`GptError::File`] for an unknown name or a missing or corrupt `tokenizer.json`; a
/// vocabulary that is not the model's.
pub fn load_tokenizer(dir: &Path, meta: &Meta) -> Result<Tokenizer> {
    let tok = match meta.tokenizer.as_str() {
        "bytes" => Tokenizer::Bytes,
        "bpe" => {
            let path = dir.join("tokenizer.json");
            let json = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
            Tokenizer::from_json(&json).map_err(|e| file_err(&path, e))?
        }
        other => {
            return Err(file_err(
                &dir.join("checkpoint.json"),
                format!("unknown tokenizer {other:?}"),
            ));
        }
    };
    Ok(tok)
}
