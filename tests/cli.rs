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

/// The tiny model's flags (a second of training), shared by the runs below.
const TINY: &[&str] = &[
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
    "--threads",
    "1",
];

/// A tiny training run into `out` (a second or two).
fn train_tiny(out: &Path) -> Output {
    let head = ["train", "--attention", "softmax", "--steps", "4", "--eval-every", "2"];
    let tail = ["--sample-len", "5", "--out", out.to_str().unwrap()];
    run(&head.iter().chain(TINY).chain(&tail).copied().collect::<Vec<_>>())
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
fn bench_attention_measures_the_kinds_asked_for() {
    let dir = scratch("kinds");
    let o = run(&[
        "bench",
        "attention",
        "--n",
        "300",
        "--heads",
        "1",
        "--reps",
        "1",
        "--kinds",
        "softmax,learned+local:r=8,learned+local:p=8",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // rows name the options that differ from the defaults, so variants of a kind differ
    let rows = ["softmax", "polysketch learned+local r=8", "polysketch learned+local p=8"];
    assert!(rows.iter().all(|r| out.contains(&format!("\n{r} "))), "{out}");
    assert!(!out.contains("polynomial") && !out.contains("random"), "{out}");
    // the closing line is the first learned + local kind's
    let last = out.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("speedup 300 ") && last.contains("(polysketch learned+local r=8 "),
        "{last}"
    );
    assert_refused(&["bench", "attention", "--kinds", "cosine"], "invalid value");
    let _ = std::fs::remove_dir_all(&dir);
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

/// Asserts the program refused `args`: exit status 1 (status 2 for arguments that do not
/// parse), one line on standard error that starts with `error:` and contains `expected`, no
/// panic and no backtrace.
fn assert_refused(args: &[&str], expected: &str) {
    let o = run(args);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded: {}", text(&o.stdout));
    let status = if expected.starts_with("unexpected") || expected.starts_with("invalid value") {
        2
    } else {
        1
    };
    assert_eq!(o.status.code(), Some(status), "{args:?}: {err}");
    assert!(err.starts_with("error:"), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{args:?}: {err}");
    assert!(err.contains(expected), "{args:?}: {expected:?} not in {err}");
}

/// Bad arguments, and bad files where a checkpoint or a text is expected: each gets a
/// one-line error, never a panic, a NaN or a silent fallback; nothing a user made is lost.
#[test]
fn bad_arguments_and_files_get_a_one_line_error() {
    let dir = scratch("bad");
    let good = dir.join("good");
    let o = train_tiny(&good);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let good_s = good.to_str().unwrap();
    let fresh = dir.join("fresh");
    let fresh_s = fresh.to_str().unwrap();
    let tiny = |extra: &[&str]| -> Vec<String> {
        // softmax unless the case names its own attention
        let softmax: &[&str] =
            if extra.contains(&"--attention") { &[] } else { &["--attention", "softmax"] };
        // into the scratch folder unless the case names its own
        let out: &[&str] = if extra.contains(&"--out") { &[] } else { &["--out", fresh_s] };
        let quiet: &[&str] = &["--sample-len", "0", "--quiet"];
        let all = ["train"].iter().chain(softmax).chain(TINY).chain(quiet).chain(out).chain(extra);
        all.map(|s| s.to_string()).collect()
    };
    let table: Vec<(Vec<String>, &str)> = vec![
        (tiny(&["--warmup", "100", "--steps", "10"]), "warm-up of 100 steps"),
        (tiny(&["--stop-after", "0", "--out", fresh_s]), "stop_after 0"),
        (tiny(&["--lr", "1e30", "--steps", "20", "--out", fresh_s]), "training diverged at step"),
        (tiny(&["--out", good_s]), "already holds a run"),
        (tiny(&["--attention", "cubic"]), "cubic"),
        (tiny(&["--attention", "polynomial:p=3"]), "p"),
        (tiny(&["--decay", "wobbly"]), "unknown decay"),
        (tiny(&["--tokenizer", "words"]), "unknown tokenizer"),
        (tiny(&["--data", "/nonexistent/text.txt"]), "/nonexistent/text.txt"),
        (tiny(&["--resume", "/nonexistent/run"]), "does not exist"),
        (
            ["task", "copying", "--held-out", "0", "--quiet"].map(String::from).to_vec(),
            "held_out must be at least 1",
        ),
        (["task", "copying", "--until", "1.5"].map(String::from).to_vec(), "--until 1.5"),
        (["task", "sorting"].map(String::from).to_vec(), "unknown task"),
        // arguments that do not parse: clap's message, on one line
        (tiny(&["--steps", "abc"]), "invalid value 'abc' for '--steps <STEPS>'"),
        (tiny(&["--bogus"]), "unexpected argument '--bogus'"),
        (
            ["sample", "--checkpoint", good_s, "--temperature", "-1"].map(String::from).to_vec(),
            "unexpected argument '-1'",
        ),
        (
            ["eval", "--checkpoint", good_s, "--batches", "0"].map(String::from).to_vec(),
            "at least 1",
        ),
        (
            ["sample", "--checkpoint", good_s, "--temperature=-1"].map(String::from).to_vec(),
            "temperature",
        ),
        (
            ["--threads", "0", "sample", "--checkpoint", good_s].map(String::from).to_vec(),
            "--threads",
        ),
    ];
    for (args, expected) in &table {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_refused(&args, expected);
        let _ = std::fs::remove_dir_all(&fresh);
    }
    // the refused --out kept its run; --force replaces it
    let before = std::fs::read_to_string(good.join("metrics.csv")).unwrap();
    assert_eq!(before.lines().count(), 5, "{before}");
    // diverged: the metrics up to the failing step are kept, no checkpoint was made up
    let o = run(&tiny(&["--lr", "1e30", "--steps", "20", "--out", fresh_s])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(!o.status.success() && fresh.join("metrics.csv").is_file());
    assert!(!fresh.join("checkpoint").exists());
    // checkpoint files that are missing, empty, binary, truncated or edited
    let edit = |name: &str, f: &dyn Fn(&Path)| -> PathBuf {
        let copy = dir.join(name);
        copy_dir(&good, &copy);
        f(&copy.join("checkpoint"));
        copy
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (dir.join("missing"), "does not exist"),
        (
            edit("empty-json", &|c| std::fs::write(c.join("checkpoint.json"), b"").unwrap()),
            "not a checkpoint",
        ),
        (
            edit("binary-json", &|c| {
                std::fs::write(c.join("checkpoint.json"), [0u8, 159, 146, 150, 7]).unwrap()
            }),
            "not a checkpoint",
        ),
        (
            edit("truncated-model", &|c| {
                let p = c.join("model.safetensors");
                let bytes = std::fs::read(&p).unwrap();
                std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            }),
            "not a safetensors file",
        ),
        (
            edit("no-model", &|c| std::fs::remove_file(c.join("model.safetensors")).unwrap()),
            "model.safetensors",
        ),
        (
            edit("polysketch-json", &|c| {
                let p = c.join("checkpoint.json");
                let json = std::fs::read_to_string(&p).unwrap();
                let edited = json.replace(
                    "\"kind\": \"softmax\"",
                    "\"kind\": \"polysketch\", \"p\": 4, \"r\": 8, \"block\": 8, \"learned\": false, \"local\": true",
                );
                assert_ne!(json, edited);
                std::fs::write(&p, edited).unwrap();
            }),
            "no tensor named",
        ),
        (
            edit("wider-json", &|c| {
                let p = c.join("checkpoint.json");
                let json = std::fs::read_to_string(&p).unwrap();
                std::fs::write(&p, json.replace("\"d_model\": 16", "\"d_model\": 32")).unwrap();
            }),
            "in the file",
        ),
    ];
    for (ckpt, expected) in &cases {
        let ckpt = ckpt.to_str().unwrap();
        assert_refused(&["sample", "--checkpoint", ckpt, "--tokens", "4"], expected);
        assert_refused(&["eval", "--checkpoint", ckpt, "--batches", "1"], expected);
    }
    // text files that cannot be trained on: empty, binary
    for (name, bytes) in [("empty.txt", &b""[..]), ("binary.txt", &[0xffu8, 0xfe, 0x00, 0x80][..])]
    {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let o = run(&tiny(&["--data", path.to_str().unwrap(), "--out", fresh_s])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        let err = text(&o.stderr);
        assert!(!o.status.success() && err.starts_with("error:"), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
    }
    let o = run(&tiny(&["--out", good_s, "--force", "--steps", "2"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(good.join("metrics.csv")).unwrap().lines().count(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `sample` prints the text as it is generated: the first characters of a request of a
/// billion tokens arrive at once (the process is then ended).
#[test]
fn sampling_streams_its_text() {
    let dir = scratch("stream");
    assert!(train_tiny(&dir).status.success());
    let mut child = program()
        .args(["sample", "--checkpoint", dir.to_str().unwrap(), "--prompt", "Emma"])
        .args(["--tokens", "1000000000", "--threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the program starts");
    let mut stdout = child.stdout.take().unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = [0u8; 24];
        let got = std::io::Read::read_exact(&mut stdout, &mut first).map(|()| first);
        let _ = send.send(got);
    });
    let first = receive.recv_timeout(std::time::Duration::from_secs(60));
    child.kill().unwrap();
    let _ = child.wait();
    let first = first.expect("24 bytes within a minute").unwrap();
    assert!(first.starts_with(b"Emma"), "{}", text(&first));
    let _ = std::fs::remove_dir_all(&dir);
}
