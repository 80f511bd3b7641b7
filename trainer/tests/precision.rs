//! Mixed precision on the CPU: bf16 trains the small GPT as f32 does, fp16's
//! loss scaler skips a step with an inf gradient, halves its scale, logs it
//! and keeps its state across a checkpoint, and the models compute in the
//! dtype they are told while their weights stay f32.

mod common;
use common::weights;

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use taper::data::{default_collate, Batch};
use taper::datasets::load_tabular;
use taper::models::{Gpt, GptConfig, Mlp, MlpConfig};
use taper::precision::Precision;
use taper::recipes::Recipe;
use taper::{Model, ModelOutput, Trainer, TrainingArguments};

fn args(dir: &tempfile::TempDir, extra: &[&str]) -> TrainingArguments {
    let mut cli = vec!["--output_dir".to_string(), dir.path().display().to_string()];
    cli.extend(extra.iter().map(|s| s.to_string()));
    TrainingArguments::from_cli_args(&cli).expect("valid test arguments")
}

fn iris_mlp() -> (Mlp, taper::data::VecDataset) {
    let data = load_tabular("iris", 0.2, 42).unwrap();
    let config = MlpConfig {
        input_dim: data.num_features,
        hidden: vec![16],
        num_classes: data.num_classes,
    };
    (Mlp::new(&config, 3, &Device::Cpu).unwrap(), data.train)
}

/// A loss that is inf at the first call (its gradient inf or NaN too), then
/// the model's own.
fn inf_at_first_call(
) -> impl Fn(&Mlp, &Batch, &ModelOutput) -> taper::Result<Tensor> + Send + 'static {
    let calls = AtomicUsize::new(0);
    move |_model, _batch, output| {
        let loss = output.loss.clone().unwrap();
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Ok((loss * f64::INFINITY)?);
        }
        Ok(loss)
    }
}

fn fp16_trainer(
    dir: &tempfile::TempDir,
    extra: &[&str],
) -> (Trainer<Mlp>, Vec<(String, Vec<f32>)>) {
    let (model, train) = iris_mlp();
    let before = weights(&model);
    let mut cli = vec![
        "--fp16",
        "true",
        "--disable_tqdm",
        "--learning_rate",
        "0.01",
    ];
    cli.extend(extra);
    let trainer = Trainer::new(args(dir, &cli), model)
        .unwrap()
        .with_train_dataset(train)
        .with_compute_loss(inf_at_first_call());
    (trainer, before)
}

/// The part of the overflow test that runs in a child process, so that the
/// parent can read the log line from its stderr.
fn overflow_run() {
    let dir = tempfile::tempdir().unwrap();
    let (mut trainer, before) = fp16_trainer(&dir, &["--max_steps", "1", "--save_strategy", "no"]);
    assert_eq!(trainer.loss_scale(), Some(65536.0));
    let out = trainer.train().unwrap();
    // HF counts the skipped step; the weights did not move; the scheduler waited.
    assert_eq!(out.global_step, 1);
    assert_eq!(
        weights(trainer.model()),
        before,
        "the skipped step changed weights"
    );
    assert_eq!(trainer.loss_scale(), Some(32768.0));
    // A linear schedule over one step would be at 0 after it; it did not step.
    assert_eq!(trainer.learning_rate(), Some(0.01));

    // The next, finite step does update, at the halved scale.
    let dir = tempfile::tempdir().unwrap();
    let (mut trainer, before) = fp16_trainer(&dir, &["--max_steps", "2", "--save_strategy", "no"]);
    trainer.train().unwrap();
    assert_ne!(weights(trainer.model()), before);
    assert_eq!(trainer.loss_scale(), Some(32768.0));
}

#[test]
fn fp16_overflow_skips_the_step_halves_the_scale_and_logs_it() {
    if std::env::var_os("TAPER_PRECISION_CHILD").is_some() {
        overflow_run();
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fp16_overflow_skips_the_step_halves_the_scale_and_logs_it",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TAPER_PRECISION_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&child.stderr);
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "child failed:\n{stdout}\n{stderr}");
    let overflow_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("overflow: skipping step"))
        .collect();
    // One per run of the child, each exactly the GradScaler-style line.
    assert_eq!(
        overflow_lines,
        vec!["taper: overflow: skipping step, loss scale 65536 -> 32768"; 2],
        "{stderr}"
    );
}

#[test]
fn the_loss_scale_is_saved_in_checkpoints_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut trainer, _) = fp16_trainer(&dir, &["--max_steps", "2", "--save_steps", "1"]);
    trainer.train().unwrap();
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("checkpoint-1/taper_loop_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["loss_scaler"]["scale"], 32768.0, "{saved}");
    assert_eq!(saved["loss_scaler"]["growth_tracker"], 0, "{saved}");

    // Resumed at step 1, the run goes on at scale 32768 (a fresh scaler
    // would be at 65536: the inf is only at the first call of the original run).
    let resumed_dir = dir.path().join("checkpoint-1").display().to_string();
    let (model, train) = iris_mlp();
    let cli = [
        "--fp16",
        "true",
        "--disable_tqdm",
        "--max_steps",
        "2",
        "--save_strategy",
        "no",
        "--resume_from_checkpoint",
        &resumed_dir,
    ];
    let mut resumed = Trainer::new(args(&dir, &cli), model)
        .unwrap()
        .with_train_dataset(train);
    resumed.train().unwrap();
    assert_eq!(resumed.loss_scale(), Some(32768.0));
}

/// The reverse task of `training.rs`'s f32 GPT test, in bf16 mixed
/// precision: the same stated accuracy, at least 0.95 (chance is 0.1).
#[test]
fn bf16_gpt_learns_to_reverse_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = Recipe::new(Some("gpt"), Some("reverse")).unwrap();
    let cli: Vec<String> = [
        "--output_dir",
        &dir.path().display().to_string(),
        "--max_steps",
        "250",
        "--eval_steps",
        "250",
        "--disable_tqdm",
        "--bf16",
        "true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (train, eval) = recipe.run(recipe.arguments(None, &cli).unwrap()).unwrap();
    assert!(eval["eval_accuracy"] >= 0.95, "{eval:?} {train:?}");
}

#[test]
fn models_compute_in_the_precision_they_are_given_with_f32_weights() {
    let config = GptConfig {
        vocab_size: 16,
        max_seq_len: 8,
        n_layer: 2,
        n_head: 2,
        d_model: 16,
    };
    let mut gpt = Gpt::new(&config, 1, &Device::Cpu).unwrap();
    let tokens = Tensor::new(&[[1u32, 2, 3, 4, 5, 6, 7, 8]], &Device::Cpu).unwrap();
    let f32_logits = gpt.logits(&tokens).unwrap();
    assert_eq!(f32_logits.dtype(), DType::F32);
    for precision in [Precision::Mixed(DType::BF16), Precision::Full(DType::BF16)] {
        gpt.set_precision(precision);
        let logits = gpt.logits(&tokens).unwrap();
        assert_eq!(logits.dtype(), DType::BF16, "{precision:?}");
        let diff = (logits.to_dtype(DType::F32).unwrap() - &f32_logits)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // bf16 keeps 8 bits of mantissa: close to f32, but not equal.
        assert!(diff > 0.0 && diff < 0.1, "{precision:?}: max diff {diff}");
    }
    // Gradients of the bf16 forward reach the f32 weights, in f32.
    gpt.set_precision(Precision::Mixed(DType::BF16));
    let batch = Batch {
        inputs: tokens.clone(),
        labels: Some(Tensor::new(&[[2i64, 3, 4, 5, 6, 7, 8, 9]], &Device::Cpu).unwrap()),
        size: 1,
    };
    let loss = gpt.forward(&batch, true).unwrap().loss.unwrap();
    assert_eq!(loss.dtype(), DType::F32);
    let grads = loss.backward().unwrap();
    for var in gpt.varmap().all_vars() {
        assert_eq!(var.dtype(), DType::F32);
        let grad = grads
            .get(var.as_tensor())
            .expect("every weight gets a gradient");
        assert_eq!(grad.dtype(), DType::F32);
    }

    let (mut mlp, train) = iris_mlp();
    let batch = default_collate(&train.samples()[..4], &Device::Cpu).unwrap();
    mlp.set_precision(Precision::Mixed(DType::BF16));
    let output = mlp.forward(&batch, false).unwrap();
    assert_eq!(output.logits.dtype(), DType::BF16);
    assert_eq!(output.loss.unwrap().dtype(), DType::F32);
}

#[test]
fn tf32_on_the_cpu_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = iris_mlp();
    let err = match Trainer::new(args(&dir, &["--tf32", "true"]), model) {
        Ok(_) => panic!("a Trainer on the CPU accepted tf32"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("tf32 needs an NVIDIA GPU"), "{err}");
    // Off (or unset) is fine anywhere.
    let (model, _) = iris_mlp();
    assert!(Trainer::new(args(&dir, &["--tf32", "false"]), model).is_ok());
}
