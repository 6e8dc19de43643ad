//! `mpirun -np 2 pipeline train` against one process with the same global batch
//! and seed. Built only with `--features mpi` (Open MPI's headers and libclang:
//! Debian's openmpi-bin libopenmpi-dev libclang-dev), in the main target folder
//! with the other tests' dependencies: `cargo test --release --features mpi
//! --test mpi`. `.ci/run` installs Open MPI, runs it when `mpirun -np 2 true`
//! works, and otherwise prints that it skipped it and why.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// Open MPI refuses root without the first two; containers often lack the
/// kernel's cross-memory attach, which the shared-memory transport tries.
fn open_mpi_env(cmd: &mut Command) -> &mut Command {
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
}

fn metrics(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("metrics.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", run.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn mpirun_with_two_ranks_matches_one_process() {
    let mpirun = on_path("mpirun").expect("built with --features mpi, but no mpirun on PATH");
    let probe = open_mpi_env(Command::new(&mpirun).args(["--oversubscribe", "-np", "2", "true"]))
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "`mpirun -np 2 true` fails on this machine: Open MPI cannot start processes here\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pipeline"));

    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    common::write_small_ml100k(&raw.join("ml-100k"), 60, 50);
    let cfg = tmp.path().join("run.toml");
    let p = |x: &Path| format!("{:?}", x.display().to_string());
    std::fs::write(
        &cfg,
        format!(
            "[data]\nrecipe = \"ml100k-occupation\"\nraw_dir = {}\nprepared_dir = {}\nfetch = false\n\
             [model]\nname = \"cgc\"\n[train]\nepochs = 3\nbatch_size = 64\nlr = 0.003\nruns_dir = {}\n",
            p(&raw),
            p(&tmp.path().join("prepared")),
            p(&tmp.path().join("runs"))
        ),
    )
    .unwrap();
    let run = |cmd: &mut Command| {
        let start = Instant::now();
        let out = open_mpi_env(cmd.env("RAYON_NUM_THREADS", "1"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{:?}\n{}\n{}",
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (
            start.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (t1, _) = run(Command::new(&bin)
        .args(["train", "-c"])
        .arg(&cfg)
        .args(["--run-name", "one"]));
    let (t2, stdout) = run(Command::new(&mpirun)
        .args(["--oversubscribe", "-np", "2"])
        .arg(&bin)
        .args(["train", "-c"])
        .arg(&cfg)
        .args(["--run-name", "two"]));
    // Rank 0 alone prints the final line.
    assert_eq!(stdout.matches("test AUC").count(), 1, "{stdout}");
    let (one, two) = (
        metrics(&tmp.path().join("runs/one")),
        metrics(&tmp.path().join("runs/two")),
    );
    let f = |m: &serde_json::Value, k: &str| m["test"][k].as_f64().unwrap();
    let (da, dl) = (
        (f(&one, "auc") - f(&two, "auc")).abs(),
        (f(&one, "logloss") - f(&two, "logloss")).abs(),
    );
    eprintln!(
        "one process {t1:.1} s, mpirun -np 2 {t2:.1} s; |Δ test AUC| {da:.2e}, |Δ logloss| {dl:.2e}"
    );
    assert!(da < 1e-6 && dl < 1e-6, "{one}\n{two}");
    assert_eq!(one["best_epoch"], two["best_epoch"]);
}
