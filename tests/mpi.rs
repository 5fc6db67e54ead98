//! Data-parallel training over MPI (feature `mpi`): 1, 2 and 3 ranks give the same run bit for
//! bit, a checkpoint of one rank count resumes on another, and an error ends every rank.
//! Needs OpenMPI's `mpirun` (`apt-get install openmpi-bin libopenmpi-dev libclang-dev`); run
//! with `cargo build --features mpi --example ridge_mpi && cargo test --features mpi --test mpi`.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `mpirun -np <ranks> polysketch --threads 1 <args>` (as root OpenMPI needs
/// `--allow-run-as-root`; `--oversubscribe` lets 3 ranks share fewer cores).
fn mpirun(ranks: usize, args: &[&str]) -> Output {
    Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string()])
        .arg(env!("CARGO_BIN_EXE_polysketch"))
        .args(["--threads", "1"])
        .args(args)
        .output()
        .expect("mpirun starts (OpenMPI installed?)")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("polysketch-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A tiny model whose sketched part is used (blocks of 16 in sequences of 32); 6 sequences
/// per step in pieces of 1, so 1, 2 and 3 ranks share them.
const TINY: &[&str] = &[
    "train",
    "--steps",
    "4",
    "--batch",
    "6",
    "--seq",
    "32",
    "--piece",
    "1",
    "--d-model",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--block",
    "16",
    "--eval-every",
    "2",
    "--eval-batches",
    "3",
    "--sample-len",
    "0",
    "--quiet",
];

fn train(ranks: usize, out: &Path, extra: &[&str]) {
    let mut args = TINY.to_vec();
    args.extend_from_slice(&["--out", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let o = mpirun(ranks, &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{ranks} ranks {extra:?}: {err}");
}

/// The columns train_loss, val_loss and grad_norm of `metrics.csv`, as text.
fn columns(dir: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    csv.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!("{},{},{},{}", f[0], f[2], f[3], f[7])
        })
        .collect()
}

fn bytes(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join("checkpoint").join(file)).unwrap()
}

#[test]
fn one_two_and_three_ranks_train_the_same_model_bit_for_bit() {
    let dirs: Vec<PathBuf> = (1..=3).map(|r| scratch(&format!("ranks{r}"))).collect();
    for (r, dir) in dirs.iter().enumerate() {
        train(r + 1, dir, &[]);
    }
    let one = columns(&dirs[0]);
    assert_eq!(one.len(), 5, "{one:?}");
    for dir in &dirs[1..] {
        assert_eq!(columns(dir), one, "{}", dir.display());
        for file in ["model.safetensors", "optimizer.safetensors"] {
            assert!(bytes(dir, file) == bytes(&dirs[0], file), "{file} of {}", dir.display());
        }
    }
    dirs.iter().for_each(|d| drop(std::fs::remove_dir_all(d)));
}

#[test]
fn a_checkpoint_of_two_ranks_resumes_on_three_exactly() {
    let (whole, split) = (scratch("whole"), scratch("split"));
    train(1, &whole, &[]);
    train(2, &split, &["--stop-after", "2"]);
    let o =
        mpirun(3, &["train", "--resume", split.to_str().unwrap(), "--quiet", "--sample-len", "0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(columns(&split), columns(&whole));
    assert!(bytes(&split, "model.safetensors") == bytes(&whole, "model.safetensors"));
    for d in [whole, split] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn an_error_ends_every_rank_and_names_the_rank() {
    let dir = scratch("bad");
    // 3 ranks cannot share 4 sequences
    let mut args: Vec<&str> = TINY.iter().map(|&a| if a == "6" { "4" } else { a }).collect();
    args.extend_from_slice(&["--out", dir.to_str().unwrap()]);
    let started = std::time::Instant::now();
    let o = mpirun(3, &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("error (rank ") && err.contains("do not divide the batch"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(started.elapsed().as_secs() < 60, "took {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(dir);
}

/// `target/<profile>/examples/ridge_mpi` (`cargo build --features mpi --example ridge_mpi`
/// first: a test cannot ask cargo for an example's program).
fn ridge_example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/..");
    profile.join("examples").join("ridge_mpi")
}

/// The numbers of the ridge example's `weights` line.
fn ridge_weights(ranks: usize) -> Vec<f64> {
    let o = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string()])
        .arg(ridge_example())
        .args(["--threads", "1", "--rows", "3001", "--features", "64", "--test-rows", "500"])
        .args(["--chunk", "256"])
        .output()
        .expect("mpirun starts");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = out.lines().find(|l| l.starts_with("weights ")).expect("a weights line");
    line.split_whitespace().filter_map(|t| t.parse().ok()).collect()
}

#[test]
fn sketched_ridge_over_ranks_matches_one_rank_to_rounding() {
    if !ridge_example().exists() {
        panic!("build the example first: cargo build --features mpi --example ridge_mpi");
    }
    let one = ridge_weights(1);
    assert_eq!(one.len(), 3, "{one:?}");
    for ranks in [2, 3] {
        let got = ridge_weights(ranks);
        for (a, b) in one.iter().zip(&got) {
            assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{ranks} ranks: {b} vs {a}");
        }
    }
}
