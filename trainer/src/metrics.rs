//! Metrics: the dictionaries a run reports, how they are printed and saved,
//! and the built-in `compute_metrics` functions.
//!
//! Names and formats are Hugging Face's: `{split}_runtime`,
//! `{split}_samples_per_second`, the `***** train metrics *****` block of
//! `log_metrics`, and `{split}_results.json` / `all_results.json` of
//! `save_metrics`, so scripts that read HF's outputs read taper's.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor, D};
use indexmap::IndexMap;

use crate::error::{Error, Result};
use crate::loss::IGNORE_INDEX;

/// Named values in the order they were added (a Python dict of floats).
pub type Metrics = IndexMap<String, f64>;

/// What `compute_metrics` sees: the concatenated logits and labels of an evaluation, on the CPU.
#[derive(Debug, Clone)]
pub struct EvalPrediction {
    /// Logits, `(samples, classes)` or `(samples, seq, vocab)`; or what a
    /// [`PreprocessLogits`] function made of each batch's logits (e.g. the
    /// predicted ids of [`argmax_logits`]).
    pub predictions: Tensor,
    /// Labels, `(samples,)` or `(samples, seq)`, when the data had them.
    pub label_ids: Option<Tensor>,
}

/// A `compute_metrics` function: metrics (without prefix) from predictions.
pub type ComputeMetrics = dyn Fn(&EvalPrediction) -> Result<Metrics> + Send + Sync;

/// A `preprocess_logits_for_metrics` function (HF's name): called with each
/// evaluation batch's logits and labels, on the device, before they are
/// kept. Why: evaluation keeps every batch's output until
/// `compute_metrics`, and a language model's logits are
/// `samples x seq x vocab` (500 samples of the reference GPT: 8 GB in f32),
/// where the metric needs only the predicted ids.
pub type PreprocessLogits = dyn Fn(&Tensor, Option<&Tensor>) -> Result<Tensor> + Send + Sync;

/// The arg-max over the last dimension: predicted class or token ids
/// (`u32`), for `with_preprocess_logits_for_metrics`; [`accuracy`] takes
/// them as they are.
pub fn argmax_logits(logits: &Tensor, _labels: Option<&Tensor>) -> Result<Tensor> {
    Ok(logits.argmax(D::Minus1)?)
}

/// Accuracy of the arg-max prediction over labelled positions (labels of
/// `-100` are skipped): `{"accuracy": ...}`. Predictions with the labels'
/// shape are taken as ids already (from [`argmax_logits`]).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use taper::metrics::{accuracy, argmax_logits, EvalPrediction};
/// let logits = Tensor::new(&[[2f32, 1.0], [0.0, 3.0], [5.0, 1.0]], &Device::Cpu).unwrap();
/// let labels = Tensor::new(&[0i64, 1, 1], &Device::Cpu).unwrap();
/// let ids = argmax_logits(&logits, Some(&labels)).unwrap();
/// let m = accuracy(&EvalPrediction { predictions: logits, label_ids: Some(labels.clone()) }).unwrap();
/// assert!((m["accuracy"] - 2.0 / 3.0).abs() < 1e-12);
/// // The same from the predicted ids.
/// let m = accuracy(&EvalPrediction { predictions: ids, label_ids: Some(labels) }).unwrap();
/// assert!((m["accuracy"] - 2.0 / 3.0).abs() < 1e-12);
/// ```
pub fn accuracy(prediction: &EvalPrediction) -> Result<Metrics> {
    let labels = prediction.label_ids.as_ref().ok_or_else(|| {
        Error::Usage("accuracy needs labels; the evaluation data set has none".into())
    })?;
    let predictions = &prediction.predictions;
    let ids = if predictions.dims() == labels.dims() {
        predictions.clone()
    } else {
        predictions.argmax(D::Minus1)?
    };
    let predicted: Vec<i64> = ids.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
    let labels: Vec<i64> = labels.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
    let (mut correct, mut counted) = (0usize, 0usize);
    for (p, l) in predicted.iter().zip(&labels) {
        if *l != IGNORE_INDEX {
            counted += 1;
            correct += usize::from(p == l);
        }
    }
    let mut metrics = Metrics::new();
    metrics.insert("accuracy".into(), correct as f64 / counted.max(1) as f64);
    Ok(metrics)
}

/// The value of `metric_for_best_model` (default `loss`) in evaluation
/// `metrics`, with HF's rule that a name without the `eval_` prefix gets it.
/// The error lists the metrics there are.
pub fn metric_for_best(metric_for_best_model: Option<&str>, metrics: &Metrics) -> Result<f64> {
    let name = metric_for_best_model.unwrap_or("loss");
    let key = if name.starts_with("eval_") {
        name.to_string()
    } else {
        format!("eval_{name}")
    };
    metrics.get(&key).copied().ok_or_else(|| {
        Error::Usage(format!(
            "metric_for_best_model is `{name}`, but the evaluation reported only: {}; \
             pick one of those or add it in compute_metrics",
            metrics.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// True when `value` beats `best` in the direction `greater_is_better` says.
pub fn is_better(value: f64, best: f64, greater_is_better: bool) -> bool {
    if greater_is_better {
        value > best
    } else {
        value < best
    }
}

/// HF's `speed_metrics`: `{split}_runtime`, `{split}_samples_per_second` and,
/// given steps, `{split}_steps_per_second`.
pub fn speed_metrics(
    split: &str,
    start: Instant,
    num_samples: usize,
    num_steps: Option<usize>,
) -> Metrics {
    let runtime = start.elapsed().as_secs_f64();
    let mut metrics = Metrics::new();
    metrics.insert(format!("{split}_runtime"), round(runtime, 4));
    metrics.insert(
        format!("{split}_samples_per_second"),
        round(num_samples as f64 / runtime, 3),
    );
    if let Some(steps) = num_steps {
        metrics.insert(
            format!("{split}_steps_per_second"),
            round(steps as f64 / runtime, 3),
        );
    }
    metrics
}

/// Rounds to `digits` decimals, as Python's `round`.
pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// HF's `log_metrics` block, as text:
///
/// ```text
/// ***** train metrics *****
///   epoch                    =        3.0
///   train_runtime            = 0:00:01.23
/// ```
pub fn format_metrics_block(split: &str, metrics: &Metrics) -> String {
    let formatted: Vec<(String, String)> = {
        let mut keys: Vec<&String> = metrics.keys().collect();
        keys.sort();
        keys.into_iter()
            .map(|k| (k.clone(), format_metric(k, metrics[k])))
            .collect()
    };
    let key_width = formatted.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let value_width = formatted.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let mut out = format!("***** {split} metrics *****\n");
    for (key, value) in formatted {
        out.push_str(&format!("  {key:<key_width$} = {value:>value_width$}\n"));
    }
    out
}

/// HF's `metrics_format` for one value: memory in MB, runtimes as
/// `h:mm:ss.ss`, FLOs in GF, other floats rounded to 4 decimals.
fn format_metric(key: &str, value: f64) -> String {
    if key.contains("_mem_") {
        format!("{}MB", (value as i64) >> 20)
    } else if key.contains("_runtime") {
        // HF's `_secs2timedelta` truncates to hundredths: 59.999 s is `0:00:59.99`.
        let whole = value.max(0.0).trunc() as u64;
        let hundredths = ((value - value.trunc()) * 100.0) as u64;
        format!(
            "{}:{:02}:{:02}.{hundredths:02}",
            whole / 3600,
            (whole / 60) % 60,
            whole % 60
        )
    } else if key == "total_flos" {
        format!("{}GF", (value as u64) >> 30)
    } else {
        taper_widgets::format_value(round(value, 4))
    }
}

/// HF's `save_metrics`: writes `{split}_results.json` and merges the metrics
/// into `all_results.json` in `dir` (sorted keys, indent 4).
pub fn save_metrics(dir: &Path, split: &str, metrics: &Metrics) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let as_json = |m: &Metrics| -> serde_json::Map<String, serde_json::Value> {
        m.iter()
            .map(|(k, v)| (k.clone(), json_number(*v)))
            .collect()
    };
    write_json_sorted(
        &dir.join(format!("{split}_results.json")),
        &as_json(metrics),
    )?;
    let all_path = dir.join("all_results.json");
    let mut all: serde_json::Map<String, serde_json::Value> =
        match std::fs::read_to_string(&all_path) {
            Ok(text) => serde_json::from_str(&text)?,
            Err(_) => serde_json::Map::new(),
        };
    all.extend(as_json(metrics));
    write_json_sorted(&all_path, &all)
}

/// A metric as JSON; NaN and infinities, which JSON cannot hold, become null.
pub fn json_number(value: f64) -> serde_json::Value {
    serde_json::Number::from_f64(value)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

fn write_json_sorted(path: &Path, map: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
    // serde_json's map is ordered by key, which is what HF's sort_keys=True gives.
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    serde::Serialize::serialize(map, &mut ser)?;
    buf.push(b'\n');
    std::fs::write(path, buf)?;
    Ok(())
}
