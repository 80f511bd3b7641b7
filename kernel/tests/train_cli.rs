//! `taper train` as a person runs it: a real process, real files on disk.

use std::process::{Command, Output};

fn taper(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taper"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the taper binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn default_recipe_trains_prints_metrics_and_writes_output_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = taper(
        &["train", "--num_train_epochs", "3", "--logging_steps", "20"],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("taper train: mlp on winequality"),
        "{stdout}"
    );
    assert!(stdout.contains("***** train metrics *****"), "{stdout}");
    assert!(stdout.contains("***** eval metrics *****"), "{stdout}");
    assert!(
        stdout.contains("[120/120 "),
        "the progress text reaches the last step:\n{stdout}"
    );
    // The loss falls: the first logged loss is above the last.
    let losses: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.split("'loss': ").nth(1))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 6, "a loss every 20 of 120 steps:\n{stdout}");
    assert!(losses[0] > losses[5], "the loss falls: {losses:?}");
    let output_dir = dir.path().join("taper_output/mlp-winequality");
    for file in [
        "model.safetensors",
        "training_args.json",
        "trainer_state.json",
        "all_results.json",
    ] {
        assert!(output_dir.join(file).is_file(), "{file} missing");
    }
    let all: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(output_dir.join("all_results.json")).unwrap(),
    )
    .unwrap();
    assert!(all["eval_accuracy"].as_f64().unwrap() > 0.45, "{all}");
}

#[test]
fn arguments_come_from_config_file_then_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.json");
    std::fs::write(
        &config,
        r#"{"max_steps": 7, "learning_rate": 0.5, "output_dir": "from_file", "logging_steps": 7}"#,
    )
    .unwrap();
    let out = taper(
        &[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--learning_rate",
            "0.01",
            "--disable_tqdm",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("from_file/training_args.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["max_steps"], 7);
    assert_eq!(saved["learning_rate"], 0.01);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("from_file/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["global_step"], 7);
}

#[test]
fn bad_arguments_are_all_reported_at_once_with_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let out = taper(
        &[
            "train",
            "--learnig_rate",
            "1e-3",
            "--per_device_train_batch_size",
            "0",
            "--optim",
            "adamm",
            "--lr_scheduler_type",
            "cosinus",
            "--max_grad_norm",
            "lots",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for needle in [
        "learnig_rate",
        "did you mean `learning_rate`",
        "per_device_train_batch_size",
        "adamm",
        "cosinus",
        "max_grad_norm",
    ] {
        assert!(
            stderr.contains(needle),
            "`{needle}` missing from:\n{stderr}"
        );
    }
    assert!(
        !dir.path().join("taper_output").exists(),
        "nothing is written on bad input"
    );
}

#[test]
fn unknown_recipe_names_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = taper(&["train", "--model", "resnet"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("built-in models: mlp, gpt"),
        "{}",
        text(&out.stderr)
    );
    let out = taper(
        &["train", "--model", "gpt", "--dataset", "iris"],
        dir.path(),
    );
    assert!(
        text(&out.stderr).contains("reverse, copy, modular_addition"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_lists_recipes_data_sets_and_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out = taper(&["train", "--help"], dir.path());
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for needle in [
        "mlp",
        "gpt",
        "winequality",
        "iris",
        "reverse",
        "--learning_rate",
        "--lr_scheduler_type",
        "--eval_strategy",
    ] {
        assert!(stdout.contains(needle), "`{needle}` missing from help");
    }
}
