//! Checkpoints: HF's layout and state schema, rotation that protects the
//! best, exact resume (with early-stopping state), the best model at the end,
//! and clear errors for damaged checkpoints.

mod common;
use common::weights;
use std::path::{Path, PathBuf};

use candle_core::Device;
use taper::callbacks::EarlyStoppingCallback;
use taper::checkpoint::{self, rotate_checkpoints, sorted_checkpoints};
use taper::data::VecDataset;
use taper::datasets::load_tabular;
use taper::metrics::accuracy;
use taper::models::{Mlp, MlpConfig};
use taper::{Model, Trainer, TrainingArguments};

fn args(dir: &Path, extra: &[&str]) -> TrainingArguments {
    let mut cli = vec![
        "--output_dir".to_string(),
        dir.display().to_string(),
        "--disable_tqdm".into(),
    ];
    cli.extend(extra.iter().map(|s| s.to_string()));
    TrainingArguments::from_cli_args(&cli).expect("valid test arguments")
}

fn data() -> (VecDataset, VecDataset) {
    let d = load_tabular("winequality", 0.2, 42).unwrap();
    (d.train, d.test)
}

fn mlp() -> Mlp {
    let config = MlpConfig {
        input_dim: 11,
        hidden: vec![32],
        num_classes: 6,
    };
    Mlp::new(&config, 9, &Device::Cpu).unwrap()
}

fn trainer(a: TrainingArguments) -> Trainer<Mlp> {
    let (train, eval) = data();
    Trainer::new(a, mlp())
        .unwrap()
        .with_train_dataset(train)
        .with_eval_dataset(eval)
        .with_compute_metrics(accuracy)
}

fn steps(dir: &Path) -> Vec<usize> {
    sorted_checkpoints(dir)
        .unwrap()
        .iter()
        .map(|p| checkpoint::checkpoint_step(p).unwrap())
        .collect()
}

fn read_json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn a_checkpoint_holds_every_file_and_hf_trainer_state_keys() {
    let dir = tempfile::tempdir().unwrap();
    trainer(args(dir.path(), &["--max_steps", "4", "--save_steps", "4"]))
        .train()
        .unwrap();
    let ckpt = dir.path().join("checkpoint-4");
    assert!(
        checkpoint::problems(&ckpt).is_empty(),
        "{:?}",
        checkpoint::problems(&ckpt)
    );
    for file in checkpoint::CHECKPOINT_FILES {
        assert!(ckpt.join(file).is_file(), "{file}");
    }
    let text = std::fs::read_to_string(ckpt.join("trainer_state.json")).unwrap();
    assert!(
        text.starts_with("{\n  \"best_global_step\""),
        "sorted keys, indent 2:\n{text}"
    );
    let state = read_json(ckpt.join("trainer_state.json"));
    let mut keys: Vec<&str> = state
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    // The fields of transformers' TrainerState dataclass.
    let mut hf = vec![
        "epoch",
        "global_step",
        "max_steps",
        "logging_steps",
        "eval_steps",
        "save_steps",
        "train_batch_size",
        "num_train_epochs",
        "num_input_tokens_seen",
        "total_flos",
        "log_history",
        "best_metric",
        "best_global_step",
        "best_model_checkpoint",
        "is_local_process_zero",
        "is_world_process_zero",
        "is_hyper_param_search",
        "trial_name",
        "trial_params",
        "stateful_callbacks",
    ];
    hf.sort();
    assert_eq!(keys, hf);
    assert_eq!(state["global_step"], 4);
    assert!(
        state["stateful_callbacks"]["TrainerControl"]["args"]["should_training_stop"]
            .as_bool()
            .unwrap()
    );
    // AdamW's moments are saved per parameter.
    let opt =
        candle_core::safetensors::load(ckpt.join("optimizer.safetensors"), &Device::Cpu).unwrap();
    assert!(
        opt.contains_key("exp_avg.layers.0.weight") && opt.contains_key("exp_avg_sq.layers.1.bias"),
        "{:?}",
        opt.keys()
    );
    assert_eq!(read_json(ckpt.join("optimizer.json"))["scalars"]["step"], 4);
}

#[test]
fn rotation_follows_hf_rules_and_protects_the_best() {
    let make = |steps: &[usize]| {
        let dir = tempfile::tempdir().unwrap();
        for s in steps {
            std::fs::create_dir(dir.path().join(format!("checkpoint-{s}"))).unwrap();
        }
        std::fs::create_dir(dir.path().join(".checkpoint-60.tmp-1")).unwrap(); // an unfinished save
        dir
    };
    let all = [10, 20, 30, 40, 50];
    let cases: [(Option<usize>, Option<usize>, &[usize]); 6] = [
        (Some(2), None, &[40, 50]),
        (Some(1), None, &[50]),
        (Some(2), Some(20), &[20, 50]),
        (Some(1), Some(20), &[20, 50]), // limit 1, best not newest: two kept, so the run can resume
        (Some(1), Some(50), &[50]),
        (None, Some(20), &[10, 20, 30, 40, 50]),
    ];
    for (limit, best, kept) in cases {
        let dir = make(&all);
        let best_path = best.map(|b| dir.path().join(format!("checkpoint-{b}")));
        rotate_checkpoints(dir.path(), limit, best_path.as_deref()).unwrap();
        assert_eq!(steps(dir.path()), kept, "limit {limit:?}, best {best:?}");
        assert!(
            dir.path().join(".checkpoint-60.tmp-1").exists(),
            "temporary folders are not checkpoints"
        );
    }
}

#[test]
fn training_rotates_and_keeps_the_best_with_limit_one() {
    // greater_is_better on eval_loss makes the first (worst) evaluation the best one.
    let dir = tempfile::tempdir().unwrap();
    let a = args(
        dir.path(),
        &[
            "--max_steps",
            "20",
            "--learning_rate",
            "0.01",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "5",
            "--save_steps",
            "5",
            "--save_total_limit",
            "1",
            "--metric_for_best_model",
            "eval_loss",
            "--greater_is_better",
            "true",
        ],
    );
    let mut t = trainer(a);
    t.train().unwrap();
    assert_eq!(t.state.best_global_step, Some(5));
    assert!(t
        .state
        .best_model_checkpoint
        .as_deref()
        .unwrap()
        .ends_with("checkpoint-5"));
    // During training the newest is kept beside the best; at the end only the best remains (HF).
    assert_eq!(steps(dir.path()), [5]);
}

#[test]
fn load_best_model_at_end_restores_the_best_weights() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(
        dir.path(),
        &[
            "--max_steps",
            "20",
            "--learning_rate",
            "0.01",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "5",
            "--save_steps",
            "5",
            "--load_best_model_at_end",
            "--metric_for_best_model",
            "eval_loss",
            "--greater_is_better",
            "true",
        ],
    );
    let mut t = trainer(a);
    t.train().unwrap();
    let best = mlp();
    best.varmap()
        .clone()
        .load(dir.path().join("checkpoint-5/model.safetensors"))
        .unwrap();
    assert_eq!(weights(t.model()), weights(&best));
}

#[test]
fn save_strategy_epoch_and_best() {
    let dir = tempfile::tempdir().unwrap();
    // 1279 samples / 128 = 10 batches per epoch.
    trainer(args(
        dir.path(),
        &[
            "--num_train_epochs",
            "3",
            "--per_device_train_batch_size",
            "128",
            "--save_strategy",
            "epoch",
        ],
    ))
    .train()
    .unwrap();
    assert_eq!(steps(dir.path()), [10, 20, 30]);

    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(args(
        dir.path(),
        &[
            "--max_steps",
            "30",
            "--learning_rate",
            "0.01",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "5",
            "--save_strategy",
            "best",
            "--metric_for_best_model",
            "eval_loss",
        ],
    ));
    t.train().unwrap();
    let saved = steps(dir.path());
    let bests: Vec<usize> = t
        .state
        .log_history
        .iter()
        .filter(|e| e.contains_key("eval_loss"))
        .scan(f64::INFINITY, |best, e| {
            let loss = e["eval_loss"].as_f64().unwrap();
            let step = e["step"].as_u64().unwrap() as usize;
            Some(if loss < *best {
                *best = loss;
                Some(step)
            } else {
                None
            })
        })
        .flatten()
        .collect();
    assert_eq!(
        saved, bests,
        "a checkpoint at each new best eval_loss, and only then"
    );
}

#[test]
fn resuming_continues_exactly_with_early_stopping_state() {
    let dir = tempfile::tempdir().unwrap();
    let common = [
        "--max_steps",
        "200",
        "--learning_rate",
        "0.003",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "5",
        "--save_steps",
        "5",
        "--metric_for_best_model",
        "accuracy",
        "--gradient_accumulation_steps",
        "2",
        "--per_device_train_batch_size",
        "64",
        "--logging_steps",
        "5",
    ];
    let mut full =
        trainer(args(dir.path(), &common)).with_callback(EarlyStoppingCallback::new(4, 0.0));
    let out = full.train().unwrap();
    assert!(
        out.global_step < 200,
        "early stopping ended the run at {}",
        out.global_step
    );
    // A checkpoint in the middle of a patience streak, in a later epoch than the first.
    let middle = sorted_checkpoints(dir.path())
        .unwrap()
        .into_iter()
        .find(|c| {
            let state = read_json(c.join("trainer_state.json"));
            let counter = &state["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"]
                ["early_stopping_patience_counter"];
            counter.as_u64().unwrap() > 0 && state["global_step"].as_u64().unwrap() > 10
        })
        .expect("a checkpoint with a patience count");
    let resume_dir = tempfile::tempdir().unwrap();
    let mut resume_args = args(resume_dir.path(), &common);
    resume_args.resume_from_checkpoint = Some(middle.display().to_string());
    let mut resumed = trainer(resume_args).with_callback(EarlyStoppingCallback::new(4, 0.0));
    let out2 = resumed.train().unwrap();
    assert_eq!(out2.global_step, out.global_step, "stops at the same step");
    assert_eq!(
        weights(resumed.model()),
        weights(full.model()),
        "bitwise the same weights"
    );
    let after = |h: &[serde_json::Map<String, serde_json::Value>]| -> Vec<serde_json::Value> {
        let from = checkpoint::checkpoint_step(&middle).unwrap() as u64;
        h.iter()
            .filter(|e| e["step"].as_u64().unwrap() > from && e.contains_key("loss"))
            .map(|e| e["loss"].clone())
            .collect()
    };
    assert_eq!(
        after(&resumed.state.log_history),
        after(&full.state.log_history)
    );
    assert!(!after(&full.state.log_history).is_empty());
}

#[test]
fn damaged_checkpoints_are_named_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    trainer(args(
        dir.path(),
        &["--max_steps", "15", "--save_steps", "5"],
    ))
    .train()
    .unwrap();
    std::fs::remove_file(dir.path().join("checkpoint-15/optimizer.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("checkpoint-10/scheduler.json"),
        "{ not json",
    )
    .unwrap();
    let newest = checkpoint::resolve("true", dir.path()).unwrap();
    assert!(newest.ends_with("checkpoint-5"), "{}", newest.display());
    let err = checkpoint::resolve(
        &dir.path().join("checkpoint-15").display().to_string(),
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("missing optimizer.safetensors") && err.contains("checkpoint-5"),
        "{err}"
    );
    assert!(
        !err.contains("checkpoint-10,") && !err.ends_with("checkpoint-10"),
        "checkpoint-10 is not usable: {err}"
    );
    let err = checkpoint::resolve(
        &dir.path().join("checkpoint-10").display().to_string(),
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("scheduler.json is damaged"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = checkpoint::resolve("true", empty.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no usable checkpoint"), "{err}");
}

#[test]
fn ignore_data_skip_restarts_the_epoch_instead_of_skipping() {
    // 1279 samples / 128 = 10 batches an epoch; resume at 5, in the middle of epoch 0.
    let common = [
        "--max_steps",
        "8",
        "--per_device_train_batch_size",
        "128",
        "--save_steps",
        "5",
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut full = trainer(args(dir.path(), &common));
    full.train().unwrap();
    let resume = |extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let mut a = args(out.path(), &[&common[..], extra].concat());
        a.resume_from_checkpoint = Some(dir.path().join("checkpoint-5").display().to_string());
        let mut t = trainer(a);
        t.train().unwrap();
        weights(t.model())
    };
    assert_eq!(
        resume(&[]),
        weights(full.model()),
        "skipping seen batches repeats the run"
    );
    assert_ne!(
        resume(&["--ignore_data_skip"]),
        weights(full.model()),
        "re-reading epoch 0 from its start differs"
    );
}
