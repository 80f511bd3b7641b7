//! Tests of metrics (accuracy, speed metrics, HF's `log_metrics` block and
//! `save_metrics` files), the cross-entropy loss with ignored labels and label
//! smoothing, the TrainingPlan's step and epoch arithmetic, and seeded init.

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use taper::init::seeded_var_builder;
use taper::loss::{cross_entropy, IGNORE_INDEX};
use taper::metrics::{
    accuracy, format_metrics_block, round, save_metrics, speed_metrics, EvalPrediction, Metrics,
};
use taper::trainer::TrainingPlan;
use taper::{Error, TrainingArguments};

fn metrics(entries: &[(&str, f64)]) -> Metrics {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_string(), *v))
        .collect()
}

#[test]
fn accuracy_of_2d_logits() {
    let logits = Tensor::new(
        &[
            [2f32, 1.0, 0.0],
            [0.0, 3.0, 1.0],
            [1.0, 0.0, 5.0],
            [4.0, 4.5, 0.0],
        ],
        &Device::Cpu,
    )
    .unwrap();
    // Predictions 0, 1, 2, 1.
    let labels = Tensor::new(&[0i64, 1, 0, 1], &Device::Cpu).unwrap();
    let m = accuracy(&EvalPrediction {
        predictions: logits,
        label_ids: Some(labels),
    })
    .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m["accuracy"], 0.75);
}

#[test]
fn accuracy_of_3d_logits_skips_ignored_labels() {
    // (2 samples, 3 positions, 2 classes); predictions [[0, 1, 0], [1, 1, 0]].
    let logits = Tensor::new(
        &[
            [[1f32, 0.0], [0.0, 1.0], [1.0, 0.0]],
            [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let labels = Tensor::new(
        &[[0i64, IGNORE_INDEX, 1], [1, 0, IGNORE_INDEX]],
        &Device::Cpu,
    )
    .unwrap();
    let m = accuracy(&EvalPrediction {
        predictions: logits,
        label_ids: Some(labels),
    })
    .unwrap();
    // 4 labelled positions, 2 right.
    assert_eq!(m["accuracy"], 0.5);
}

#[test]
fn accuracy_needs_labels() {
    let logits = Tensor::new(&[[1f32, 0.0]], &Device::Cpu).unwrap();
    match accuracy(&EvalPrediction {
        predictions: logits,
        label_ids: None,
    }) {
        Err(Error::Usage(msg)) => assert!(msg.contains("labels"), "{msg}"),
        other => panic!("expected a Usage error, got {other:?}"),
    }
}

/// log-softmax of one row, in f64.
fn log_softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    row.iter().map(|x| x - lse).collect()
}

fn loss_value(logits: &Tensor, labels: &Tensor, epsilon: f64) -> f64 {
    let loss = cross_entropy(logits, labels, epsilon).unwrap();
    assert_eq!(loss.dims(), &[] as &[usize]);
    f64::from(loss.to_scalar::<f32>().unwrap())
}

const ROWS: [[f64; 3]; 3] = [[1.0, 2.0, 3.0], [1.0, 0.0, -1.0], [0.5, 0.5, -2.0]];

fn rows_tensor() -> Tensor {
    let flat: Vec<f32> = ROWS.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_vec(flat, (3, 3), &Device::Cpu).unwrap()
}

#[test]
fn cross_entropy_matches_a_hand_computation() {
    let labels = Tensor::new(&[2i64, 0, 1], &Device::Cpu).unwrap();
    let expected =
        -(log_softmax(&ROWS[0])[2] + log_softmax(&ROWS[1])[0] + log_softmax(&ROWS[2])[1]) / 3.0;
    // Spelled out for the first row: -log(e^3 / (e + e^2 + e^3)).
    let first = -(3f64.exp() / (1f64.exp() + 2f64.exp() + 3f64.exp())).ln();
    assert!((first - 0.407_605_964).abs() < 1e-8);
    assert!((-log_softmax(&ROWS[0])[2] - first).abs() < 1e-12);
    let actual = loss_value(&rows_tensor(), &labels, 0.0);
    assert!((actual - expected).abs() < 1e-6, "{actual} vs {expected}");
}

#[test]
fn cross_entropy_ignores_minus_100() {
    let labels = Tensor::new(&[2i64, IGNORE_INDEX, 1], &Device::Cpu).unwrap();
    let expected = -(log_softmax(&ROWS[0])[2] + log_softmax(&ROWS[2])[1]) / 2.0;
    let actual = loss_value(&rows_tensor(), &labels, 0.0);
    assert!((actual - expected).abs() < 1e-6, "{actual} vs {expected}");

    // The same through a (batch, seq, classes) shape.
    let logits = rows_tensor().reshape((1, 3, 3)).unwrap();
    let labels = labels.reshape((1, 3)).unwrap();
    let actual = loss_value(&logits, &labels, 0.0);
    assert!((actual - expected).abs() < 1e-6, "{actual} vs {expected}");
}

#[test]
fn cross_entropy_with_label_smoothing() {
    let eps = 0.1;
    let labels = Tensor::new(&[2i64, IGNORE_INDEX, 1], &Device::Cpu).unwrap();
    let active = [(0usize, 2usize), (2, 1)];
    let nll = active
        .iter()
        .map(|&(r, l)| -log_softmax(&ROWS[r])[l])
        .sum::<f64>()
        / 2.0;
    // mean over active rows and classes of -log p.
    let smooth = active
        .iter()
        .map(|&(r, _)| log_softmax(&ROWS[r]).iter().map(|x| -x).sum::<f64>())
        .sum::<f64>()
        / (2.0 * 3.0);
    let expected = (1.0 - eps) * nll + eps * smooth;
    let actual = loss_value(&rows_tensor(), &labels, eps);
    assert!((actual - expected).abs() < 1e-6, "{actual} vs {expected}");
    // Smoothing changes the value.
    assert!((actual - nll).abs() > 1e-3);
}

#[test]
fn format_metrics_block_matches_hugging_face() {
    // Expected text produced by transformers' `log_metrics` / `metrics_format`
    // on the same dict.
    let m = metrics(&[
        ("train_runtime", 1.2345),
        ("train_samples_per_second", 123.456789),
        ("epoch", 3.0),
        ("train_loss", 0.693172),
        ("init_mem_cpu_alloc_delta", ((5u64 << 20) + 12345) as f64),
        ("total_flos", ((3u64 << 30) + 5) as f64),
    ]);
    let expected = "***** train metrics *****\n\
                    \x20 epoch                    =        3.0\n\
                    \x20 init_mem_cpu_alloc_delta =        5MB\n\
                    \x20 total_flos               =        3GF\n\
                    \x20 train_loss               =     0.6932\n\
                    \x20 train_runtime            = 0:00:01.23\n\
                    \x20 train_samples_per_second =   123.4568\n";
    assert_eq!(format_metrics_block("train", &m), expected);

    let m = metrics(&[
        ("eval_loss", 1.0 / 3.0),
        ("eval_accuracy", 0.87654321),
        ("eval_runtime", 62.071),
        ("epoch", 1.5),
    ]);
    let expected = "***** eval metrics *****\n\
                    \x20 epoch         =        1.5\n\
                    \x20 eval_accuracy =     0.8765\n\
                    \x20 eval_loss     =     0.3333\n\
                    \x20 eval_runtime  = 0:01:02.07\n";
    assert_eq!(format_metrics_block("eval", &m), expected);
}

#[test]
fn format_metrics_block_runtime_truncates_like_hugging_face() {
    // HF's `_secs2timedelta`: `timedelta(seconds=int(secs))` then
    // `int(frac * 100)` hundredths: truncated, never carried into the seconds.
    let mut wrong = Vec::new();
    for (secs, text) in [
        (0.5, "0:00:00.50"),
        (12.0, "0:00:12.00"),
        (3725.5, "1:02:05.50"),
        (1.239, "0:00:01.23"),
        (59.999, "0:00:59.99"),
        (86399.99, "23:59:59.99"),
    ] {
        let block = format_metrics_block("train", &metrics(&[("train_runtime", secs)]));
        let expected = format!("***** train metrics *****\n  train_runtime = {text}\n");
        if block != expected {
            wrong.push(format!("{secs}: got {block:?}, expected {expected:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn round_and_speed_metrics() {
    assert_eq!(round(0.123_456, 4), 0.1235);
    assert_eq!(round(2.5e-5, 4), 0.0);
    assert_eq!(round(123.456_789, 3), 123.457);

    let start = Instant::now() - Duration::from_secs(2);
    let m = speed_metrics("eval", start, 100, Some(10));
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "eval_runtime",
            "eval_samples_per_second",
            "eval_steps_per_second"
        ]
    );
    let runtime = m["eval_runtime"];
    assert!((2.0..3.0).contains(&runtime), "{runtime}");
    assert_eq!(runtime, round(runtime, 4));
    assert!((m["eval_samples_per_second"] - 100.0 / runtime).abs() < 1e-2);
    assert!((m["eval_steps_per_second"] - 10.0 / runtime).abs() < 1e-2);

    let m = speed_metrics("train", start, 4, None);
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["train_runtime", "train_samples_per_second"]);
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn save_metrics_writes_split_and_merges_all_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let train = metrics(&[("train_loss", 0.5), ("epoch", 3.0), ("train_runtime", 1.25)]);
    save_metrics(&out, "train", &train).unwrap();

    let train_json = read_json(&out.join("train_results.json"));
    assert_eq!(
        train_json,
        serde_json::json!({"epoch": 3.0, "train_loss": 0.5, "train_runtime": 1.25})
    );
    // json.dump(indent=4, sort_keys=True).
    let text = std::fs::read_to_string(out.join("train_results.json")).unwrap();
    assert!(
        text.starts_with(
            "{\n    \"epoch\": 3.0,\n    \"train_loss\": 0.5,\n    \"train_runtime\": 1.25\n}"
        ),
        "{text}"
    );
    assert_eq!(read_json(&out.join("all_results.json")), train_json);

    let eval = metrics(&[
        ("eval_loss", 0.75),
        ("epoch", 4.0),
        ("eval_accuracy", f64::NAN),
    ]);
    save_metrics(&out, "eval", &eval).unwrap();
    assert_eq!(
        read_json(&out.join("eval_results.json")),
        serde_json::json!({"epoch": 4.0, "eval_accuracy": null, "eval_loss": 0.75})
    );
    // all_results.json: the union, later values winning.
    assert_eq!(
        read_json(&out.join("all_results.json")),
        serde_json::json!({
            "epoch": 4.0,
            "eval_accuracy": null,
            "eval_loss": 0.75,
            "train_loss": 0.5,
            "train_runtime": 1.25
        })
    );
    // The split file of the first call is untouched.
    assert_eq!(read_json(&out.join("train_results.json")), train_json);
}

fn plan_args() -> taper::args::TrainingArgumentsBuilder {
    TrainingArguments::builder().per_device_train_batch_size(8)
}

#[test]
fn plan_by_epochs_with_accumulation_remainder() {
    let args = plan_args()
        .gradient_accumulation_steps(4)
        .num_train_epochs(2.0)
        .build()
        .unwrap();
    let plan = TrainingPlan::new(&args, 10, 1).unwrap();
    assert_eq!(plan.batches_per_epoch, 10);
    assert_eq!(plan.accumulation, 4);
    assert_eq!(plan.updates_per_epoch, 3);
    assert_eq!(plan.max_steps, 6);
    assert_eq!(plan.num_epochs, 2);
    assert_eq!(plan.total_batch_size, 32);
    assert_eq!(plan.micro_batches(0), 0..4);
    assert_eq!(plan.micro_batches(1), 4..8);
    assert_eq!(plan.micro_batches(2), 8..10);

    // Over two processes the global batch doubles.
    let plan = TrainingPlan::new(&args, 10, 2).unwrap();
    assert_eq!(plan.total_batch_size, 64);
}

#[test]
fn plan_by_max_steps() {
    let args = plan_args()
        .gradient_accumulation_steps(4)
        .num_train_epochs(100.0)
        .max_steps(7)
        .build()
        .unwrap();
    let plan = TrainingPlan::new(&args, 10, 1).unwrap();
    // max_steps wins over num_train_epochs; 3 updates per epoch -> 3 epochs.
    assert_eq!(plan.updates_per_epoch, 3);
    assert_eq!(plan.max_steps, 7);
    assert_eq!(plan.num_epochs, 3);

    let args = plan_args().max_steps(8).build().unwrap();
    let plan = TrainingPlan::new(&args, 4, 1).unwrap();
    assert_eq!((plan.max_steps, plan.num_epochs), (8, 2));
}

#[test]
fn plan_with_fractional_epochs() {
    let args = plan_args().num_train_epochs(2.5).build().unwrap();
    let plan = TrainingPlan::new(&args, 4, 1).unwrap();
    assert_eq!(plan.updates_per_epoch, 4);
    assert_eq!(plan.max_steps, 10);
    assert_eq!(plan.num_epochs, 3);

    // ceil(0.3 * 4) = 2 steps in 1 epoch.
    let args = plan_args().num_train_epochs(0.3).build().unwrap();
    let plan = TrainingPlan::new(&args, 4, 1).unwrap();
    assert_eq!((plan.max_steps, plan.num_epochs), (2, 1));
}

#[test]
fn plan_resolves_step_ratios() {
    let args = plan_args().max_steps(95).build().unwrap();
    let plan = TrainingPlan::new(&args, 10, 1).unwrap();
    assert_eq!(plan.resolve_steps(0.1), 10);
    assert_eq!(plan.resolve_steps(0.5), 48);
    assert_eq!(plan.resolve_steps(500.0), 500);
    assert_eq!(plan.resolve_steps(1.0), 1);
    assert_eq!(plan.resolve_steps(25.0), 25);
}

#[test]
fn plan_needs_a_batch() {
    let args = plan_args().build().unwrap();
    match TrainingPlan::new(&args, 0, 1) {
        Err(Error::Usage(msg)) => assert!(msg.contains("no batch"), "{msg}"),
        other => panic!("expected a Usage error, got {other:?}"),
    }
}

/// The weights of a seeded `linear(4, 3)` as bit patterns, by name.
fn seeded_linear(seed: u64) -> Vec<(String, Vec<u32>)> {
    let (varmap, vb) = seeded_var_builder(seed, DType::F32, &Device::Cpu);
    let _layer = candle_nn::linear(4, 3, vb.pp("fc")).unwrap();
    let data = varmap.data().lock().unwrap();
    let mut named: Vec<(String, Vec<u32>)> = data
        .iter()
        .map(|(name, var)| {
            let values: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            (name.clone(), values.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    named.sort();
    named
}

#[test]
fn seeded_init_is_reproducible() {
    let a = seeded_linear(7);
    let b = seeded_linear(7);
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["fc.bias", "fc.weight"]);
    assert_eq!(a[0].1.len(), 3);
    assert_eq!(a[1].1.len(), 12);
    assert_eq!(a, b);

    let c = seeded_linear(8);
    assert_ne!(a[0].1, c[0].1);
    assert_ne!(a[1].1, c[1].1);

    // candle-nn's linear init: bias uniform in +-1/sqrt(in_dim) = +-0.5; the
    // weights are not constant.
    let bias: Vec<f32> = a[0].1.iter().map(|&b| f32::from_bits(b)).collect();
    assert!(bias.iter().all(|b| b.abs() <= 0.5), "{bias:?}");
    let weight: Vec<f32> = a[1].1.iter().map(|&b| f32::from_bits(b)).collect();
    assert!(weight.iter().any(|&w| w != weight[0]), "{weight:?}");
}
