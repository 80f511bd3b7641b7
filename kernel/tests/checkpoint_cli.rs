//! Checkpoints across processes: a run resumed in a new `taper train`
//! process is bitwise the uninterrupted one, and a SIGKILL in the middle of a
//! save leaves every earlier checkpoint usable.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn taper(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taper"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("taper runs")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Losses logged after `step`, as written to trainer_state.json.
fn losses_after(state: &serde_json::Value, step: u64) -> Vec<(u64, f64)> {
    state["log_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("loss").is_some() && e["step"].as_u64().unwrap() > step)
        .map(|e| (e["step"].as_u64().unwrap(), e["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_resumed_process_repeats_the_uninterrupted_run_bitwise() {
    // 1279 samples in batches of 32 are 40 micro-batches, 20 optimizer steps
    // an epoch with accumulation 2: resuming at 30 crosses the epoch boundary at 40.
    let dir = tempfile::tempdir().unwrap();
    let common = [
        "train",
        "--max_steps",
        "60",
        "--save_steps",
        "10",
        "--logging_steps",
        "5",
        "--gradient_accumulation_steps",
        "2",
        "--disable_tqdm",
    ];
    let full = dir.path().join("full");
    let run = |extra: &[&str]| {
        let mut all: Vec<&str> = common.to_vec();
        all.extend(extra);
        let out = taper(&all, dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    run(&["--output_dir", full.to_str().unwrap()]);
    let resumed = dir.path().join("resumed");
    copy_dir(&full.join("checkpoint-30"), &resumed.join("checkpoint-30"));
    let out = run(&[
        "--output_dir",
        resumed.to_str().unwrap(),
        "--resume_from_checkpoint",
        "true",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resuming from"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let a = std::fs::read(full.join("model.safetensors")).unwrap();
    let b = std::fs::read(resumed.join("model.safetensors")).unwrap();
    assert!(a == b, "the final model.safetensors files differ");
    let (sa, sb) = (
        json(&full.join("trainer_state.json")),
        json(&resumed.join("trainer_state.json")),
    );
    let (la, lb) = (losses_after(&sa, 30), losses_after(&sb, 30));
    assert_eq!(la.len(), 6);
    assert_eq!(la, lb);
    // Later checkpoints match file for file too.
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "scheduler.json",
    ] {
        let a = std::fs::read(full.join("checkpoint-60").join(file)).unwrap();
        let b = std::fs::read(resumed.join("checkpoint-60").join(file)).unwrap();
        assert!(a == b, "checkpoint-60/{file} differs");
    }
}

#[test]
fn changed_arguments_on_resume_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = taper(
        &[
            "train",
            "--max_steps",
            "10",
            "--save_steps",
            "5",
            "--output_dir",
            "o",
            "--disable_tqdm",
        ],
        dir.path(),
    );
    assert!(out.status.success());
    let out = taper(
        &[
            "train",
            "--max_steps",
            "12",
            "--save_steps",
            "5",
            "--output_dir",
            "o",
            "--disable_tqdm",
            "--resume_from_checkpoint",
            "true",
            "--per_device_train_batch_size",
            "16",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("changed arguments: per_device_train_batch_size 16 (checkpoint: 32)"),
        "{stderr}"
    );
}

#[test]
fn resuming_from_a_damaged_checkpoint_names_the_file_and_the_usable_ones() {
    let dir = tempfile::tempdir().unwrap();
    assert!(taper(
        &[
            "train",
            "--max_steps",
            "10",
            "--save_steps",
            "5",
            "--output_dir",
            "o"
        ],
        dir.path()
    )
    .status
    .success());
    std::fs::remove_file(dir.path().join("o/checkpoint-10/trainer_state.json")).unwrap();
    let out = taper(
        &[
            "train",
            "--output_dir",
            "o",
            "--resume_from_checkpoint",
            "o/checkpoint-10",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("missing trainer_state.json") && stderr.contains("o/checkpoint-5"),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn sigkill_during_a_save_leaves_earlier_checkpoints_whole() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "train",
        "--max_steps",
        "40",
        "--save_steps",
        "5",
        "--output_dir",
        "o",
        "--disable_tqdm",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_taper"))
        .args(args)
        .current_dir(dir.path())
        .env("TAPER_TEST_PAUSE_IN_SAVE_MS", "400")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = dir.path().join("o");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Wait until two saves are complete and a third is half written.
    loop {
        assert!(Instant::now() < deadline, "no third save started");
        let done = taper::checkpoint::sorted_checkpoints(&out)
            .unwrap_or_default()
            .len();
        let partial = std::fs::read_dir(&out)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            })
            .unwrap_or(false);
        if done >= 2 && partial {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let complete = taper::checkpoint::sorted_checkpoints(&out).unwrap();
    assert!(complete.len() >= 2);
    for c in &complete {
        assert!(
            taper::checkpoint::problems(c).is_empty(),
            "{} is not whole: {:?}",
            c.display(),
            taper::checkpoint::problems(c)
        );
    }
    let newest = complete.last().unwrap().clone();
    let resumed = taper(
        &[
            "train",
            "--max_steps",
            "40",
            "--save_steps",
            "5",
            "--output_dir",
            "o",
            "--disable_tqdm",
            "--resume_from_checkpoint",
            "true",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "resuming from {}",
            Path::new("o").join(newest.file_name().unwrap()).display()
        )),
        "{stderr}"
    );
    assert_eq!(json(&out.join("trainer_state.json"))["global_step"], 40);
}
