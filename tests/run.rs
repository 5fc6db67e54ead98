//! The training driver: exact resumption, checkpoints, generation and their errors.

use std::path::{Path, PathBuf};

use polysketch::attention::{PolySketchConfig, SketchKind};
use polysketch::gpt::data::TokenizerSpec;
use polysketch::gpt::tasks::Task;
use polysketch::gpt::{AttentionKind, Decay, GptConfig, TrainConfig};
use polysketch::run::{self, RunConfig, Source};

fn tiny(attention: AttentionKind, vocab: usize) -> GptConfig {
    GptConfig { vocab, context: 32, d_model: 16, layers: 2, heads: 2, attention, seed: 3 }
}

/// Learned + local PolySketch at the tiny model's size (r = 8, blocks of 8).
fn learned_local() -> AttentionKind {
    AttentionKind::PolySketch(PolySketchConfig {
        p: 4,
        r: 8,
        block: 8,
        sketch: SketchKind::Learned,
        local: true,
        seed: 0,
    })
}

fn run_config(source: Source, steps: usize) -> RunConfig {
    RunConfig {
        train: TrainConfig {
            batch: 4,
            seq: 32,
            steps,
            lr: 3e-3,
            warmup: 2,
            decay: Decay::Linear,
            seed: 7,
            ..TrainConfig::default()
        },
        source,
        eval_every: 3,
        eval_batches: 2,
        tokenizer: TokenizerSpec::Bytes,
        stop_at_accuracy: None,
    }
}

fn text_source() -> Source {
    Source::Text { path: run::default_data(), val_fraction: 0.1 }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("polysketch-run-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A two-step softmax run on the corpus in a fresh scratch folder: the folder and its checkpoint.
fn two_step_run(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let cfg = run_config(text_source(), 2);
    run::train(tiny(AttentionKind::Softmax, 256), cfg, &dir, None, None, true).unwrap();
    let ckpt = dir.join("checkpoint");
    (dir, ckpt)
}

fn column(csv: &Path, i: usize) -> Vec<String> {
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(i).unwrap().to_string())
        .collect()
}

#[test]
fn a_resumed_run_reproduces_the_uninterrupted_one() {
    let spec = learned_local();
    let (a, b) = (scratch("a"), scratch("b"));
    let cfg = || run_config(text_source(), 8);
    let full = run::train(tiny(spec, 256), cfg(), &a, None, None, true).unwrap();
    let part = run::train(tiny(spec, 256), cfg(), &b, None, Some(5), true).unwrap();
    assert_eq!(part.step, 5);
    let ckpt = b.join("checkpoint");
    let rest = run::train(tiny(spec, 256), cfg(), &b, Some(&ckpt), None, true).unwrap();
    assert_eq!(rest.step, 8);
    assert_eq!(
        column(&a.join("metrics.csv"), 2),
        column(&b.join("metrics.csv"), 2),
        "training losses differ"
    );
    assert_eq!(full.val_loss, rest.val_loss);
    assert!(full.losses.last().unwrap().1 < full.losses[0].1);
    assert!(a.join("loss.svg").exists());
    // a finished run cannot be resumed
    assert!(run::train(tiny(spec, 256), cfg(), &b, Some(&ckpt), None, true).is_err());
    // generation with the recurrent state, and evaluation, from the checkpoint
    let (_, model, tok) = run::load_model(&a.join("checkpoint")).unwrap();
    let g1 = run::generate(&model, &tok, "Emma", 40, 0.8, 1).unwrap();
    assert_eq!(g1, run::generate(&model, &tok, "Emma", 40, 0.8, 1).unwrap());
    let run::EvalReport { loss, tokens, .. } = run::eval(&a.join("checkpoint"), None, 2).unwrap();
    assert!((loss - full.val_loss).abs() < 1e-9, "{loss} vs {}", full.val_loss);
    assert_eq!(tokens, 2 * 4 * 32);
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn missing_and_corrupt_checkpoints_get_errors() {
    let (dir, ckpt) = two_step_run("corrupt");
    let load = |p: &Path| polysketch::gpt::checkpoint::load(p, None).map(|_| ());
    assert!(load(&dir.join("nothing")).is_err());
    // a truncated weights file
    let w = ckpt.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    assert!(load(&ckpt).is_err());
    std::fs::write(&w, &bytes).unwrap();
    assert!(load(&ckpt).is_ok());
    // a JSON file of another shape
    let j = ckpt.join("checkpoint.json");
    let json = std::fs::read_to_string(&j).unwrap();
    std::fs::write(&j, json.replace("\"d_model\": 16", "\"d_model\": 32")).unwrap();
    assert!(load(&ckpt).is_err(), "weights of another shape accepted");
    std::fs::write(&j, "{ not json").unwrap();
    assert!(load(&ckpt).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn task_runs_report_exact_accuracy() {
    let dir = scratch("task");
    let source = Source::Task { task: Task::Induction, held_out: 16 };
    let cfg = run_config(source, 3);
    let model = tiny(AttentionKind::Softmax, Task::Induction.vocab());
    let s = run::train(model, cfg.clone(), &dir, None, None, true).unwrap();
    let acc = s.accuracy.unwrap();
    assert!((0.0..=1.0).contains(&acc));
    // stopping at an accuracy: the first evaluation (step 3 of 6) already reaches 0
    let mut early = cfg.clone();
    early.train.steps = 6;
    early.stop_at_accuracy = Some(0.0);
    let model = tiny(AttentionKind::Softmax, Task::Induction.vocab());
    let e = run::train(model, early, &dir.join("early"), None, None, true).unwrap();
    assert_eq!(e.step, 3);
    // a task with the wrong vocabulary is refused
    let wrong = tiny(AttentionKind::Softmax, 256);
    assert!(run::train(wrong, cfg, &dir.join("x"), None, None, true).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bpe_run_trains_its_tokenizer_and_keeps_it_in_the_checkpoint() {
    let dir = scratch("bpe");
    let mut cfg = run_config(text_source(), 2);
    cfg.tokenizer = TokenizerSpec::Bpe { vocab: 400 };
    let s = run::train(tiny(AttentionKind::Softmax, 256), cfg, &dir, None, None, true).unwrap();
    assert!(s.val_loss.is_finite());
    let (meta, model, tok) = run::load_model(&dir.join("checkpoint")).unwrap();
    assert_eq!(meta.tokenizer, "bpe");
    assert_eq!(model.config().vocab, tok.vocab());
    assert!(tok.vocab() > 256 && tok.vocab() <= 400);
    let text = "Emma Woodhouse, handsome, clever, and rich";
    let ids = tok.encode(text).unwrap();
    assert!(ids.len() < text.len(), "BPE did not merge anything");
    assert_eq!(tok.decode(&ids), text);
    assert!(run::generate(&model, &tok, "Emma", 10, 0.8, 1).is_ok());
    assert!(run::eval(&dir.join("checkpoint"), None, 1).is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn checkpoints_are_versioned_and_format_1_is_still_read() {
    let (dir, ckpt) = two_step_run("format");
    let json_path = ckpt.join("checkpoint.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(json["format"], 2);
    let (meta, _, opt) =
        polysketch::gpt::checkpoint::load(&ckpt, Some((0.9, 0.95, 1e-8, 0.1))).unwrap();
    let adam_t = opt.unwrap().t;
    assert_eq!((meta.step as u64, meta.adam_t), (adam_t, adam_t));
    // the layout of format 1: AdamW's step count inside the run configuration
    let mut old = json.clone();
    old["format"] = 1.into();
    old["train"]["adam_t"] = old["adam_t"].clone();
    old.as_object_mut().unwrap().remove("adam_t");
    std::fs::write(&json_path, serde_json::to_vec(&old).unwrap()).unwrap();
    let (meta1, _, opt1) =
        polysketch::gpt::checkpoint::load(&ckpt, Some((0.9, 0.95, 1e-8, 0.1))).unwrap();
    assert_eq!((meta1.run.clone(), opt1.unwrap().t), (meta.run.clone(), adam_t));
    // a format this version does not know is refused, saying which it reads
    let mut future = json;
    future["format"] = 99.into();
    std::fs::write(&json_path, serde_json::to_vec(&future).unwrap()).unwrap();
    let err = polysketch::gpt::checkpoint::load(&ckpt, None).unwrap_err().to_string();
    assert!(err.contains("format 99") && err.contains("reads formats 1 and 2"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_paper_studies_run_quick_write_their_tables_and_reuse_finished_runs() {
    use polysketch::paper::{self, Options, Study};
    let root = scratch("paper");
    let opts = |seeds, only: &[&str]| Options {
        quick: true,
        seeds,
        first_seed: 0,
        root: root.clone(),
        only: only.iter().map(|s| s.to_string()).collect(),
        context: None,
        quiet: true,
        report: false,
    };
    for study in Study::ALL {
        let seeds = if study == Study::Corpus { 2 } else { 1 };
        let results = paper::run_study(study, &opts(seeds, &[])).unwrap();
        let full = paper::arms(study, false, None).unwrap();
        assert_eq!(results.len(), full.len(), "{study:?}: the quick variant has every arm");
        let table = std::fs::read_to_string(root.join(format!("{}.md", study.name()))).unwrap();
        let csv = std::fs::read_to_string(root.join(format!("{}.csv", study.name()))).unwrap();
        assert_eq!(table.lines().count(), 2 + full.len(), "{table}");
        assert_eq!(csv.lines().count(), 1 + full.len() * seeds as usize, "{csv}");
        // eight fields per row, labels with commas quoted (RFC 4180)
        for line in csv.lines() {
            let (mut fields, mut quoted) = (1, false);
            for c in line.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => fields += 1,
                    _ => {}
                }
            }
            assert_eq!(fields, 8, "{line}");
        }
        assert!(root.join(format!("{}.svg", study.name())).is_file());
        // a spread with two seeds; one seed's value alone (no "± 0")
        let rows_with_sd = table.lines().skip(2).filter(|l| l.contains(" ± ")).count();
        assert_eq!(rows_with_sd, if seeds == 2 { full.len() } else { 0 }, "{table}");
        for r in &results {
            assert_eq!(r.outcomes.len(), seeds as usize);
            for o in &r.outcomes {
                assert_eq!(o.step, r.arm.last_step(), "{}", r.arm.label);
                assert!(o.val_loss.is_finite() && o.tokens_per_s > 0.0, "{o:?}");
                // tasks report an exact accuracy, the corpus does not
                let task = matches!(study, Study::Copying | Study::Induction);
                assert_eq!(o.accuracy.is_some(), task, "{o:?}");
            }
            assert!(table.contains(&format!("| {} |", r.arm.label)), "{table}");
        }
        // two seeds differ (the spread is measured, not zero)
        if seeds == 2 {
            let first = &results[0].outcomes;
            assert_ne!(first[0].val_loss, first[1].val_loss);
        }
    }
    // a second call reads the finished runs back: same outcomes, files untouched
    let metrics = root.join("corpus-quick/softmax-s0/metrics.csv");
    let before = std::fs::read(&metrics).unwrap();
    let again = paper::run_study(Study::Corpus, &opts(1, &["softmax"])).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(std::fs::read(&metrics).unwrap(), before);
    assert_eq!(again[0].outcomes[0], paper::read_outcome(&metrics, 0).unwrap());
    // an interrupted run resumes to the same end as an uninterrupted one
    let arm = &paper::arms(Study::Corpus, true, None).unwrap()[0];
    let other = scratch("paper-resumed");
    let dir = other.join(format!("{}-s0", arm.folder));
    run::train(arm.model, arm.run.clone(), &dir, None, Some(4), true).unwrap();
    let resumed =
        paper::run_study(Study::Corpus, &Options { root: other.clone(), ..opts(1, &["softmax"]) })
            .unwrap();
    let mut expected = again[0].outcomes[0].clone();
    (expected.metrics, expected.tokens_per_s) =
        (dir.join("metrics.csv"), resumed[0].outcomes[0].tokens_per_s);
    assert_eq!(resumed[0].outcomes[0], expected);
    // refused: a folder holding another configuration, unknown arms, no seeds
    let arms = paper::arms(Study::Corpus, true, None).unwrap();
    let poly = other.join(format!("{}-s0", arms[1].folder));
    run::train(arm.model, arm.run.clone(), &poly, None, None, true).unwrap();
    let only_poly = Options { root: other.clone(), ..opts(1, &["polynomial-p4"]) };
    let err = paper::run_study(Study::Corpus, &only_poly).unwrap_err().to_string();
    assert!(err.contains("another configuration"), "{err}");
    let err = paper::run_study(Study::Corpus, &opts(1, &["nope"])).unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("softmax"), "{err}");
    // a report trains nothing: the copying study ran seed 0 only, so seed 1 is left out
    let report = Options { report: true, ..opts(2, &["softmax"]) };
    let reported = paper::run_study(Study::Copying, &report).unwrap();
    assert_eq!(reported[0].outcomes.len(), 1);
    assert!(!root.join("copying-quick/softmax-s1").exists());
    let table = std::fs::read_to_string(root.join("copying.md")).unwrap();
    assert!(table.contains("| softmax | 0 |"), "{table}");
    let empty = Options { report: true, root: scratch("paper-empty"), ..opts(1, &[]) };
    assert!(
        paper::run_study(Study::Induction, &empty).unwrap().iter().all(|r| r.outcomes.is_empty())
    );
    let table = std::fs::read_to_string(empty.root.join("induction.md")).unwrap();
    assert_eq!(table.matches("not run yet").count(), 4, "{table}");
    // the full copying study at another context: its own files, the default ones left alone
    let at_256 = Options { quick: false, context: Some(256), ..empty.clone() };
    assert!(
        paper::run_study(Study::Copying, &at_256).unwrap().iter().all(|r| r.outcomes.is_empty())
    );
    let table = std::fs::read_to_string(empty.root.join("copying-n256.md")).unwrap();
    assert_eq!(table.matches("not run yet").count(), 7, "{table}");
    assert!(!empty.root.join("copying.md").exists() && !empty.root.join("copying-n256").exists());
    let _ = std::fs::remove_dir_all(&empty.root);
    let other_context = Options { context: Some(256), ..opts(1, &[]) };
    let err = paper::run_study(Study::Corpus, &other_context).unwrap_err().to_string();
    assert!(err.contains("--context"), "{err}");
    let err = paper::run_study(Study::Corpus, &opts(0, &[])).unwrap_err().to_string();
    assert!(err.contains("seeds"), "{err}");
    let overflow = Options { first_seed: u64::MAX, ..opts(1, &[]) };
    let err = paper::run_study(Study::Corpus, &overflow).unwrap_err().to_string();
    assert!(err.contains("--first-seed"), "{err}");
    // a second seed alone: its own folder and row, seed 0's left alone
    let second = Options { first_seed: 1, ..opts(1, &["softmax"]) };
    let only_1 = paper::run_study(Study::Induction, &second).unwrap();
    assert_eq!(only_1[0].outcomes.iter().map(|o| o.seed).collect::<Vec<_>>(), [1]);
    assert!(root.join("induction-quick/softmax-s1/metrics.csv").is_file());
    let table = std::fs::read_to_string(root.join("induction.md")).unwrap();
    assert!(table.contains("| softmax | 1 |"), "{table}");
    assert_eq!(paper::spread(&[1.0, 3.0]), (2.0, 2f64.sqrt(), 1.0, 3.0));
    let _ = std::fs::remove_dir_all(root);
    let _ = std::fs::remove_dir_all(other);
}

/// `TrainConfig::bf16` reaches the layers, is kept in the checkpoint and survives a resume: a
/// bf16 run interrupted and resumed reproduces the uninterrupted bf16 run exactly, and differs
/// from the f32 run by the rounding only (the losses within 1 %, not equal).
#[test]
fn a_bf16_run_resumes_exactly_and_stays_near_the_f32_run() {
    let spec = learned_local();
    let (a, b, c) = (scratch("bf16-a"), scratch("bf16-b"), scratch("bf16-f32"));
    let cfg = |bf16: bool| {
        let mut r = run_config(text_source(), 6);
        r.train.bf16 = bf16;
        r
    };
    let full = run::train(tiny(spec, 256), cfg(true), &a, None, None, true).unwrap();
    run::train(tiny(spec, 256), cfg(true), &b, None, Some(3), true).unwrap();
    let ckpt = b.join("checkpoint");
    let rest = run::train(tiny(spec, 256), cfg(true), &b, Some(&ckpt), None, true).unwrap();
    assert_eq!(column(&a.join("metrics.csv"), 2), column(&b.join("metrics.csv"), 2));
    assert_eq!(full.val_loss, rest.val_loss);
    let plain = run::train(tiny(spec, 256), cfg(false), &c, None, None, true).unwrap();
    let rel = (full.val_loss - plain.val_loss).abs() / plain.val_loss;
    assert!(rel > 0.0 && rel < 1e-2, "bf16 {} against f32 {}", full.val_loss, plain.val_loss);
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}
