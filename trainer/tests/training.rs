//! End-to-end training: the built-in recipes reach their stated accuracy,
//! gradient accumulation and clipping keep their HF meaning, and custom
//! models, data sets and losses plug in.

mod common;
use common::weights;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Tensor};
use taper::callbacks::TrainerCallback;
use taper::data::{Batch, Dataset, Field, Sample, VecDataset};
use taper::datasets::load_tabular;
use taper::metrics::{accuracy, argmax_logits, Metrics};
use taper::models::{Mlp, MlpConfig};
use taper::recipes::Recipe;
use taper::trainer::{TrainerControl, TrainerState};
use taper::{Model, ModelOutput, Trainer, TrainingArguments};

fn args(dir: &tempfile::TempDir, extra: &[&str]) -> TrainingArguments {
    let mut cli = vec!["--output_dir".to_string(), dir.path().display().to_string()];
    cli.extend(extra.iter().map(|s| s.to_string()));
    TrainingArguments::from_cli_args(&cli).expect("valid test arguments")
}

fn iris_mlp(seed: u64) -> (Mlp, VecDataset, VecDataset) {
    let data = load_tabular("iris", 0.2, 42).unwrap();
    let config = MlpConfig {
        input_dim: data.num_features,
        hidden: vec![16],
        num_classes: data.num_classes,
    };
    (
        Mlp::new(&config, seed, &Device::Cpu).unwrap(),
        data.train,
        data.test,
    )
}

/// The default `taper train` recipe: an MLP on the real wine-quality data.
/// Stated accuracy: at least 0.58 on the held-out 20%, where always
/// predicting the most frequent quality scores about 0.42.
#[test]
fn mlp_learns_wine_quality_well_above_the_majority_class() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = Recipe::new(None, None).unwrap();
    assert_eq!(
        (recipe.model.as_str(), recipe.dataset.as_str()),
        ("mlp", "winequality")
    );
    let run_args = recipe
        .arguments(
            None,
            &[
                "--output_dir".into(),
                dir.path().display().to_string(),
                "--disable_tqdm".into(),
            ],
        )
        .unwrap();
    let (train, eval) = recipe.run(run_args).unwrap();
    let majority = load_tabular("winequality", 0.2, 42)
        .unwrap()
        .majority_class_rate();
    let acc = eval["eval_accuracy"];
    assert!((0.35..0.5).contains(&majority), "majority rate {majority}");
    assert!(acc >= 0.58, "eval_accuracy {acc} below the stated 0.58");
    assert!(
        acc > majority + 0.1,
        "eval_accuracy {acc} vs majority {majority}"
    );
    assert!(train["train_loss"] < 1.0, "{train:?}");
    for file in [
        "model.safetensors",
        "train_results.json",
        "eval_results.json",
        "all_results.json",
        "trainer_state.json",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
}

/// A small GPT learns to reverse a sequence of 6 symbols: stated accuracy
/// at least 0.95 on the answer tokens of unseen sequences (chance is 0.1).
#[test]
fn gpt_learns_to_reverse_sequences() {
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (_, eval) = recipe.run(recipe.arguments(None, &cli).unwrap()).unwrap();
    assert!(eval["eval_accuracy"] >= 0.95, "{eval:?}");
}

/// One optimizer step on a batch of 8 equals two accumulated micro-batches of 4.
#[test]
fn accumulating_two_batches_of_four_equals_one_batch_of_eight() {
    let data: Vec<Sample> = load_tabular("iris", 0.2, 42).unwrap().train.samples()[..24].to_vec();
    let run = |batch: &str, accumulation: &str| {
        let dir = tempfile::tempdir().unwrap();
        let (model, _, _) = iris_mlp(3);
        let a = args(
            &dir,
            &[
                "--per_device_train_batch_size",
                batch,
                "--gradient_accumulation_steps",
                accumulation,
                "--max_steps",
                "3",
                "--learning_rate",
                "0.05",
                "--save_strategy",
                "no",
                "--disable_tqdm",
                "--logging_steps",
                "1",
            ],
        );
        let mut trainer = Trainer::new(a, model)
            .unwrap()
            .with_train_dataset(VecDataset::new(data.clone()));
        let out = trainer.train().unwrap();
        (out.training_loss, weights(trainer.model()))
    };
    let (loss_8, weights_8) = run("8", "1");
    let (loss_4x2, weights_4x2) = run("4", "2");
    assert!((loss_8 - loss_4x2).abs() < 1e-6, "{loss_8} vs {loss_4x2}");
    for ((name, a), (_, b)) in weights_8.iter().zip(&weights_4x2) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{name}: {x} vs {y}");
        }
    }
}

/// With plain SGD at lr 1, the update is the clipped gradient itself: its
/// global norm must equal max_grad_norm, and the logged grad_norm is the norm before clipping.
#[test]
fn clipping_makes_the_update_norm_equal_max_grad_norm() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train, _) = iris_mlp(5);
    let before = weights(&model);
    let a = args(
        &dir,
        &[
            "--optim",
            "sgd",
            "--learning_rate",
            "1",
            "--max_grad_norm",
            "0.01",
            "--max_steps",
            "1",
            "--lr_scheduler_type",
            "constant",
            "--logging_steps",
            "1",
            "--save_strategy",
            "no",
            "--disable_tqdm",
        ],
    );
    let mut trainer = Trainer::new(a, model).unwrap().with_train_dataset(train);
    trainer.train().unwrap();
    let after = weights(trainer.model());
    let update_norm: f64 = before
        .iter()
        .zip(&after)
        .flat_map(|((_, a), (_, b))| a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)))
        .sum::<f64>()
        .sqrt();
    assert!(
        (update_norm - 0.01).abs() < 1e-5,
        "update norm {update_norm}"
    );
    let logged = trainer.state.log_history[0]["grad_norm"].as_f64().unwrap();
    assert!(
        logged > 0.01,
        "grad_norm {logged} is the norm before clipping"
    );
}

/// Records every event, in order.
struct Recorder(Arc<Mutex<Vec<String>>>);

macro_rules! record {
    ($($event:ident),*) => {
        $(fn $event(&mut self, _: &TrainingArguments, _: &TrainerState, _: &mut TrainerControl) -> taper::Result<()> {
            self.0.lock().unwrap().push(stringify!($event).trim_start_matches("on_").to_string());
            Ok(())
        })*
    };
}

impl TrainerCallback for Recorder {
    record!(
        on_train_begin,
        on_train_end,
        on_epoch_begin,
        on_epoch_end,
        on_step_begin,
        on_substep_end,
        on_pre_optimizer_step,
        on_optimizer_step,
        on_step_end
    );
    fn on_prediction_step(
        &mut self,
        _: &TrainingArguments,
        _: &TrainerState,
        _: &mut TrainerControl,
        _: &taper::callbacks::PredictionProgress,
    ) -> taper::Result<()> {
        self.0.lock().unwrap().push("prediction_step".into());
        Ok(())
    }
    fn on_log(
        &mut self,
        _: &TrainingArguments,
        _: &TrainerState,
        _: &mut TrainerControl,
        _: &Metrics,
    ) -> taper::Result<()> {
        self.0.lock().unwrap().push("log".into());
        Ok(())
    }
    fn on_evaluate(
        &mut self,
        _: &TrainingArguments,
        _: &TrainerState,
        _: &mut TrainerControl,
        _: &Metrics,
    ) -> taper::Result<()> {
        self.0.lock().unwrap().push("evaluate".into());
        Ok(())
    }
}

#[test]
fn callbacks_see_hf_events_in_hf_order() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _, _) = iris_mlp(1);
    let data =
        VecDataset::new(load_tabular("iris", 0.2, 42).unwrap().train.samples()[..8].to_vec());
    let eval = VecDataset::new(data.samples()[..2].to_vec());
    let events = Arc::new(Mutex::new(Vec::new()));
    let a = args(
        &dir,
        &[
            "--per_device_train_batch_size",
            "2",
            "--per_device_eval_batch_size",
            "2",
            "--gradient_accumulation_steps",
            "2",
            "--num_train_epochs",
            "1",
            "--logging_steps",
            "1",
            "--eval_strategy",
            "epoch",
            "--save_strategy",
            "no",
        ],
    );
    let mut trainer = Trainer::new(a, model)
        .unwrap()
        .with_train_dataset(data)
        .with_eval_dataset(eval)
        .with_callback(Recorder(events.clone()));
    trainer.train().unwrap();
    let step = [
        "step_begin",
        "substep_end",
        "pre_optimizer_step",
        "optimizer_step",
        "step_end",
        "log",
    ];
    let mut expected = vec!["train_begin", "epoch_begin"];
    expected.extend(step);
    expected.extend(step);
    // As in HF, `evaluate` logs its metrics before calling `on_evaluate`.
    expected.extend([
        "epoch_end",
        "prediction_step",
        "log",
        "evaluate",
        "log",
        "train_end",
    ]);
    assert_eq!(*events.lock().unwrap(), expected);
}

#[test]
fn early_stopping_stops_after_patience_evaluations_without_improvement() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train, test) = iris_mlp(2);
    // A learning rate of 0 never improves eval_loss: the first evaluation sets
    // the best, the next two use up the patience of 2.
    let a = args(
        &dir,
        &[
            "--learning_rate",
            "0",
            "--max_steps",
            "50",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "1",
            "--metric_for_best_model",
            "eval_loss",
            "--save_strategy",
            "no",
            "--disable_tqdm",
        ],
    );
    let mut trainer = Trainer::new(a, model)
        .unwrap()
        .with_train_dataset(train)
        .with_eval_dataset(test)
        .with_callback(taper::callbacks::EarlyStoppingCallback::new(2, 0.0));
    let out = trainer.train().unwrap();
    assert_eq!(out.global_step, 3);
    assert_eq!(trainer.state.best_global_step, Some(1));
}

#[test]
fn early_stopping_without_a_metric_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train, test) = iris_mlp(2);
    let a = args(
        &dir,
        &[
            "--max_steps",
            "5",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "1",
            "--save_strategy",
            "no",
        ],
    );
    let err = Trainer::new(a, model)
        .unwrap()
        .with_train_dataset(train)
        .with_eval_dataset(test)
        .with_callback(taper::callbacks::EarlyStoppingCallback::new(2, 0.0))
        .train()
        .unwrap_err()
        .to_string();
    assert!(err.contains("metric_for_best_model"), "{err}");
}

/// Cross-entropy weighted per class: `sum w[y] * nll / sum w[y]`.
fn weighted_loss(
    class_weights: &[f32],
) -> impl Fn(&Mlp, &Batch, &ModelOutput) -> taper::Result<Tensor> + Send + 'static {
    let class_weights = class_weights.to_vec();
    move |_model, batch, output| {
        let labels = batch.labels.as_ref().unwrap();
        let weights = Tensor::new(class_weights.as_slice(), labels.device())?
            .index_select(&labels.to_dtype(DType::U32)?, 0)?;
        let log_probs = candle_nn::ops::log_softmax(&output.logits, 1)?;
        let nll = log_probs
            .gather(&labels.unsqueeze(1)?, 1)?
            .squeeze(1)?
            .neg()?;
        // A batch without any weighted class contributes nothing (not 0 / 0).
        let total = weights.sum_all()?.to_scalar::<f32>()?.max(1e-6);
        Ok((nll.mul(&weights)?.sum_all()? / total as f64)?)
    }
}

#[test]
fn a_custom_weighted_loss_drives_training() {
    let run = |class_weights: Option<&[f32]>| {
        let dir = tempfile::tempdir().unwrap();
        let (model, train, test) = iris_mlp(4);
        let a = args(
            &dir,
            &[
                "--learning_rate",
                "0.05",
                "--num_train_epochs",
                "30",
                "--save_strategy",
                "no",
                "--disable_tqdm",
            ],
        );
        let mut trainer = Trainer::new(a, model).unwrap().with_train_dataset(train);
        if let Some(w) = class_weights {
            trainer = trainer.with_compute_loss(weighted_loss(w));
        }
        let out = trainer.train().unwrap();
        let predicted: Vec<u32> = trainer
            .predict(test)
            .unwrap()
            .predictions
            .argmax(1)
            .unwrap()
            .to_vec1()
            .unwrap();
        (out.training_loss, predicted)
    };
    let (default_loss, _) = run(None);
    let (uniform_loss, _) = run(Some(&[1.0, 1.0, 1.0]));
    assert!(
        (default_loss - uniform_loss).abs() < 1e-5,
        "{default_loss} vs {uniform_loss}"
    );
    // Only class 2 counts: the model learns to answer 2 for everything.
    let (_, predicted) = run(Some(&[0.0, 0.0, 1.0]));
    let twos = predicted.iter().filter(|&&p| p == 2).count();
    assert!(
        twos as f64 >= 0.9 * predicted.len() as f64,
        "{twos} of {} predictions are class 2: {predicted:?}",
        predicted.len()
    );
}

/// A data set of points on the line y = 3x + 1, made on the fly.
struct Line(usize);

impl Dataset for Line {
    fn len(&self) -> usize {
        self.0
    }
    fn get(&self, index: usize) -> taper::Result<Sample> {
        let x = index as f32 / self.0 as f32 - 0.5;
        Ok(Sample {
            input: Field::F32(vec![x]),
            label: Some(Field::Scalar(3.0 * x + 1.0)),
        })
    }
}

/// A one-weight regression model written against the Model trait.
struct Regression {
    linear: candle_nn::Linear,
    varmap: candle_nn::VarMap,
}

impl Model for Regression {
    fn forward(&self, batch: &Batch, _train: bool) -> taper::Result<ModelOutput> {
        let logits = self.linear.forward(&batch.inputs)?.squeeze(1)?;
        let loss = match &batch.labels {
            Some(labels) => Some(candle_nn::loss::mse(&logits, labels)?),
            None => None,
        };
        Ok(ModelOutput { logits, loss })
    }
    fn varmap(&self) -> &candle_nn::VarMap {
        &self.varmap
    }
}

#[test]
fn a_custom_model_and_data_set_plug_in() {
    let dir = tempfile::tempdir().unwrap();
    let (varmap, vb) = taper::init::seeded_var_builder(0, DType::F32, &Device::Cpu);
    let model = Regression {
        linear: candle_nn::linear(1, 1, vb.pp("fc")).unwrap(),
        varmap,
    };
    let a = args(
        &dir,
        &[
            "--optim",
            "sgd",
            "--learning_rate",
            "0.5",
            "--num_train_epochs",
            "40",
            "--lr_scheduler_type",
            "constant",
            "--per_device_train_batch_size",
            "16",
            "--save_strategy",
            "no",
            "--disable_tqdm",
        ],
    );
    let mut trainer = Trainer::new(a, model).unwrap().with_train_dataset(Line(64));
    trainer.train().unwrap();
    let w = weights(trainer.model());
    assert_eq!(w[0].0, "fc.bias");
    assert!(
        (w[0].1[0] - 1.0).abs() < 1e-2 && (w[1].1[0] - 3.0).abs() < 1e-2,
        "{w:?}"
    );
}

/// A Trainer for 5 steps of the iris MLP with accuracy as its metric, and
/// the test split (also its evaluation data).
fn short_iris_run(dir: &tempfile::TempDir, seed: u64) -> (Trainer<Mlp>, VecDataset) {
    let (model, train, test) = iris_mlp(seed);
    let a = args(
        dir,
        &[
            "--max_steps",
            "5",
            "--save_strategy",
            "no",
            "--disable_tqdm",
        ],
    );
    let trainer = Trainer::new(a, model)
        .unwrap()
        .with_train_dataset(train)
        .with_eval_dataset(test.clone())
        .with_compute_metrics(accuracy);
    (trainer, test)
}

#[test]
fn evaluate_and_predict_report_hf_metric_names() {
    let dir = tempfile::tempdir().unwrap();
    let (mut trainer, test) = short_iris_run(&dir, 6);
    let n_test = test.len();
    let out = trainer.train().unwrap();
    for key in [
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "train_loss",
        "total_flos",
        "epoch",
    ] {
        assert!(
            out.metrics.contains_key(key),
            "{key} missing from {:?}",
            out.metrics
        );
    }
    let eval = trainer.evaluate().unwrap();
    for key in [
        "eval_loss",
        "eval_accuracy",
        "eval_runtime",
        "eval_samples_per_second",
        "eval_steps_per_second",
    ] {
        assert!(eval.contains_key(key), "{key} missing from {eval:?}");
    }
    let prediction = trainer.predict(test).unwrap();
    assert_eq!(prediction.predictions.dims(), &[n_test, 3]);
    assert_eq!(prediction.label_ids.unwrap().dims(), &[n_test]);
    assert!((prediction.metrics["test_loss"] - eval["eval_loss"]).abs() < 1e-9);
    assert!(prediction.metrics.contains_key("test_accuracy"));
}

/// HF's `preprocess_logits_for_metrics`: each batch's logits are reduced
/// before they are kept, `compute_metrics` and `predict` see the reduced
/// tensor, and accuracy from predicted ids equals accuracy from logits.
#[test]
fn preprocessed_logits_are_what_evaluation_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let trained = |preprocess: bool| {
        let (trainer, test) = short_iris_run(&dir, 8);
        let calls = Arc::new(Mutex::new(0usize));
        let seen = calls.clone();
        let mut trainer = if preprocess {
            trainer.with_preprocess_logits_for_metrics(move |logits, labels| {
                // The batch's labels come along, with the logits' rows.
                assert_eq!(labels.unwrap().dim(0)?, logits.dim(0)?);
                *seen.lock().unwrap() += 1;
                argmax_logits(logits, labels)
            })
        } else {
            trainer
        };
        trainer.train().unwrap();
        let eval = trainer.evaluate().unwrap();
        let prediction = trainer.predict(test).unwrap();
        let calls = *calls.lock().unwrap();
        (eval, prediction, calls)
    };
    let (eval, prediction, calls) = trained(false);
    let (eval_ids, prediction_ids, calls_ids) = trained(true);
    assert_eq!(calls, 0);
    assert!(calls_ids > 0, "the function was never called");
    let n_test = prediction.label_ids.as_ref().unwrap().dim(0).unwrap();
    assert_eq!(prediction.predictions.dims(), &[n_test, 3]);
    assert_eq!(prediction_ids.predictions.dims(), &[n_test]);
    assert_eq!(
        prediction
            .predictions
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap(),
        prediction_ids.predictions.to_vec1::<u32>().unwrap()
    );
    assert_eq!(eval["eval_accuracy"], eval_ids["eval_accuracy"]);
    assert_eq!(eval["eval_loss"], eval_ids["eval_loss"]);
}

#[test]
fn training_without_data_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _, _) = iris_mlp(6);
    let err = Trainer::new(args(&dir, &[]), model)
        .unwrap()
        .train()
        .unwrap_err()
        .to_string();
    assert!(err.contains("with_train_dataset"), "{err}");
}

/// A loss whose value is NaN at the third micro-batch while its gradient
/// stays finite (the NaN is a detached constant added to it).
fn nan_at_third_call(
) -> impl Fn(&Mlp, &Batch, &ModelOutput) -> taper::Result<Tensor> + Send + 'static {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    move |_model, _batch, output| {
        let loss = output.loss.clone().unwrap();
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
            return Ok(((loss.detach() * f64::NAN)? + &loss)?);
        }
        Ok(loss)
    }
}

#[test]
fn logging_nan_inf_filter_keeps_a_non_finite_loss_out_of_the_log() {
    let run = |filter: &str| {
        let dir = tempfile::tempdir().unwrap();
        let (model, train, _) = iris_mlp(8);
        let a = args(
            &dir,
            &[
                "--max_steps",
                "4",
                "--logging_steps",
                "4",
                "--save_strategy",
                "no",
                "--disable_tqdm",
                "--logging_nan_inf_filter",
                filter,
            ],
        );
        let mut trainer = Trainer::new(a, model)
            .unwrap()
            .with_train_dataset(train)
            .with_compute_loss(nan_at_third_call());
        trainer.train().unwrap();
        trainer.state.log_history[0]["loss"].clone()
    };
    let filtered = run("true");
    assert!(filtered.as_f64().is_some_and(f64::is_finite), "{filtered}");
    assert!(
        run("false").is_null(),
        "without the filter the NaN is logged (null in JSON)"
    );
}
