//! Data-parallel training on CPUs with real processes: `taper launch` with 2
//! ranks trains as one process with twice the batch, as 2 nodes too, and
//! resumes from its own checkpoints; a rank that never joins is named.
#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Output};

const TAPER: &str = env!("CARGO_BIN_EXE_taper");

fn run(args: &[&str], dir: &Path) -> Output {
    let out = Command::new(TAPER)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn losses(dir: &Path) -> Vec<f64> {
    json(&dir.join("trainer_state.json"))["log_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("loss").and_then(|l| l.as_f64()))
        .collect()
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let mut all: Vec<(String, Vec<f32>)> = tensors
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn assert_close(a: &Path, b: &Path, tolerance: f32) {
    for ((name, x), (_, y)) in weights(a).iter().zip(weights(b)) {
        let worst = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst <= tolerance, "{name} differs by {worst}");
    }
}

const TRAIN: &[&str] = &[
    "train",
    "--max_steps",
    "16",
    "--logging_steps",
    "2",
    "--learning_rate",
    "0.01",
    "--disable_tqdm",
];

fn train_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = TRAIN.to_vec();
    all.extend(extra);
    all
}

#[test]
fn two_processes_match_one_with_twice_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    run(
        &train_args(&[
            "--per_device_train_batch_size",
            "32",
            "--output_dir",
            "single",
        ]),
        dir.path(),
    );
    let mut launch = vec!["launch", "--nproc-per-node", "2", "--", TAPER];
    launch.extend(train_args(&[
        "--per_device_train_batch_size",
        "16",
        "--output_dir",
        "dp",
    ]));
    let out = run(&launch, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[rank0]: taper train: mlp on winequality (output_dir dp, world size 2)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("[rank1]: {'loss'"),
        "only rank 0 logs:\n{stdout}"
    );

    let (single, dp) = (dir.path().join("single"), dir.path().join("dp"));
    let (a, b) = (losses(&single), losses(&dp));
    assert_eq!(a.len(), 8);
    for (x, y) in a.iter().zip(&b) {
        // Logged losses are rounded to 4 places, as HF rounds them.
        assert!((x - y).abs() <= 1e-4 + 1e-9, "{a:?} vs {b:?}");
    }
    let train_loss = |d: &Path| {
        json(&d.join("train_results.json"))["train_loss"]
            .as_f64()
            .unwrap()
    };
    assert!((train_loss(&single) - train_loss(&dp)).abs() < 1e-5);
    assert_close(
        &single.join("model.safetensors"),
        &dp.join("model.safetensors"),
        1e-5,
    );
    let eval = |d: &Path| {
        json(&d.join("eval_results.json"))["eval_accuracy"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        eval(&single),
        eval(&dp),
        "evaluation gathered from both ranks sees every sample"
    );
}

#[test]
fn two_launchers_as_two_nodes_train_together() {
    let dir = tempfile::tempdir().unwrap();
    run(
        &train_args(&[
            "--per_device_train_batch_size",
            "32",
            "--output_dir",
            "single",
        ]),
        dir.path(),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let node = |rank: &str| {
        let mut args = vec![
            "launch",
            "--nnodes",
            "2",
            "--node-rank",
            rank,
            "--nproc-per-node",
            "1",
            "--master-port",
            &port,
            "--",
            TAPER,
        ];
        args.extend(train_args(&[
            "--per_device_train_batch_size",
            "16",
            "--output_dir",
            "nodes",
        ]));
        Command::new(TAPER)
            .args(args)
            .current_dir(dir.path())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (node("0"), node("1"));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    assert_close(
        &dir.path().join("single/model.safetensors"),
        &dir.path().join("nodes/model.safetensors"),
        1e-5,
    );
}

#[test]
fn a_two_process_run_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let launch = |out: &str, extra: &[&str]| {
        let mut args = vec!["launch", "--nproc-per-node", "2", "--", TAPER];
        args.extend(train_args(&[
            "--per_device_train_batch_size",
            "16",
            "--save_steps",
            "8",
            "--output_dir",
            out,
        ]));
        args.extend(extra);
        run(&args, dir.path())
    };
    launch("full", &[]);
    let copy_checkpoint = |to: &str| {
        let resumed = dir.path().join(to).join("checkpoint-8");
        std::fs::create_dir_all(&resumed).unwrap();
        for entry in std::fs::read_dir(dir.path().join("full/checkpoint-8")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), resumed.join(entry.file_name())).unwrap();
        }
        resumed
    };
    let resumed = copy_checkpoint("resumed");
    assert_eq!(
        json(&resumed.join("taper_loop_state.json"))["world_size"],
        2
    );
    let out = launch("resumed", &["--resume_from_checkpoint", "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Rank 0 prints at log_level (passive: info); the replica at
    // log_level_replica, `warning` by default, so it says nothing here.
    assert!(stderr.contains("[rank0]: taper: resuming from"), "{stderr}");
    assert!(
        !stderr.contains("[rank1]: taper: resuming from"),
        "{stderr}"
    );
    assert!(!stderr.contains("changed arguments"), "{stderr}");
    copy_checkpoint("resumed-loud");
    let out = launch(
        "resumed-loud",
        &[
            "--resume_from_checkpoint",
            "true",
            "--log_level_replica",
            "info",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[rank1]: taper: resuming from"), "{stderr}");
    assert_eq!(
        losses(&dir.path().join("full"))[4..],
        losses(&dir.path().join("resumed"))[4..]
    );
    assert_close(
        &dir.path().join("full/model.safetensors"),
        &dir.path().join("resumed/model.safetensors"),
        0.0,
    );
}

#[test]
fn a_rank_that_never_joins_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let out = Command::new(TAPER)
        .args(["train", "--max_steps", "2"])
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .env("MASTER_PORT", &port)
        .env("TAPER_DIST_TIMEOUT", "1")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rank 1 did not join barrier `join` within 1 s (1 of 2 ranks arrived)"),
        "{stderr}"
    );
}
