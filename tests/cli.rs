//! The `polysketch` program as a user runs it: progress in a log, a closed pipe, run folders
//! where a checkpoint is asked for, `--threads`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn program() -> Command {
    Command::new(env!("CARGO_BIN_EXE_polysketch"))
}

fn run(args: &[&str]) -> Output {
    program().args(args).output().expect("the program starts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("polysketch-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A tiny training run into `out` (a second or two).
fn train_tiny(out: &Path) -> Output {
    let out = out.to_str().unwrap();
    run(&[
        "train",
        "--attention",
        "softmax",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--seq",
        "32",
        "--batch",
        "2",
        "--d-model",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--eval-batches",
        "1",
        "--sample-len",
        "5",
        "--threads",
        "1",
        "--out",
        out,
    ])
}

#[test]
fn training_into_a_log_prints_a_line_per_evaluation_and_run_folders_work_as_checkpoints() {
    let dir = scratch("train");
    let o = train_tiny(&dir);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // standard error is a pipe here, not a terminal: plain progress lines, no bar
    let err = text(&o.stderr);
    for step in ["step 2/4: loss", "step 4/4: loss"] {
        assert!(err.contains(step), "no {step:?} in {err:?}");
    }
    assert!(err.contains("tokens/s") && err.contains("eta 0:"), "{err}");
    // eval and sample take the run folder and the checkpoint folder alike
    let folder = dir.to_str().unwrap();
    let inner = dir.join("checkpoint");
    for ckpt in [folder, inner.to_str().unwrap()] {
        let o = run(&["eval", "--checkpoint", ckpt, "--batches", "1"]);
        assert!(o.status.success(), "eval {ckpt}: {}", text(&o.stderr));
        let out = text(&o.stdout);
        assert!(
            out.contains("over 1 batches") && out.contains("training evaluated over 1"),
            "{out}"
        );
        let o = run(&["sample", "--checkpoint", ckpt, "--tokens", "8", "--prompt", "The"]);
        assert!(o.status.success(), "sample {ckpt}: {}", text(&o.stderr));
        assert!(text(&o.stdout).starts_with("The") && o.stdout.ends_with(b"\n"));
    }
    // neither: says what was expected, in one line, without a backtrace
    let csv = dir.join("metrics.csv");
    let o = run(&["eval", "--checkpoint", csv.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("expected a checkpoint folder") && err.contains("or a run folder"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_closed_pipe_ends_the_program_quietly() {
    // `polysketch bench attention … | head -1`
    let mut child = program()
        .args(["bench", "attention", "--n", "64,128", "--heads", "1", "--reps", "1"])
        .args(["--threads", "1", "--out"])
        .arg(scratch("pipe"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("causal attention"), "{first}");
    // the reader is dropped: the pipe is closed
    let o = child.wait_with_output().unwrap();
    let err = text(&o.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
}

#[test]
fn bad_thread_counts_and_batch_counts_are_refused() {
    for args in
        [&["--threads", "0", "bench", "attention"][..], &["train", "--eval-batches", "0"][..]]
    {
        let o = run(args);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(err.starts_with("error:") && err.contains("at least 1"), "{args:?}: {err}");
    }
}
