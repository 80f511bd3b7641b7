//! `TrainingArguments`: every knob of a run, with the Hugging Face names,
//! defaults and meanings, so a person can move a config between the two.
//!
//! Built three ways: [`TrainingArguments::from_json_file`] (or `_str`),
//! [`TrainingArguments::from_cli_args`] (`--key value` pairs) and
//! [`TrainingArguments::builder`]. All three end in the same validation, which
//! reports every problem at once.

use serde::{Deserialize, Serialize};

/// When to log, evaluate or save (HF's `IntervalStrategy` / `SaveStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntervalStrategy {
    /// Never.
    No,
    /// Every `*_steps` optimizer steps.
    Steps,
    /// At the end of every epoch.
    Epoch,
    /// Whenever a new best metric is reached (save_strategy only).
    Best,
}

/// The arguments of a training run. Field names, defaults and meanings follow
/// Hugging Face's `TrainingArguments`; see `shared/reference/training-arguments.txt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingArguments {
    pub output_dir: String,
    pub overwrite_output_dir: bool,
    pub do_train: bool,
    pub do_eval: bool,
    pub do_predict: bool,
    pub eval_strategy: IntervalStrategy,
    pub eval_steps: Option<f64>,
    pub eval_delay: f64,
    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub eval_accumulation_steps: Option<usize>,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub max_grad_norm: f64,
    pub num_train_epochs: f64,
    pub max_steps: i64,
    pub lr_scheduler_type: String,
    pub lr_scheduler_kwargs: serde_json::Map<String, serde_json::Value>,
    pub warmup_ratio: f64,
    pub warmup_steps: usize,
    pub logging_strategy: IntervalStrategy,
    pub logging_steps: f64,
    pub logging_first_step: bool,
    pub logging_nan_inf_filter: bool,
    pub save_strategy: IntervalStrategy,
    pub save_steps: f64,
    pub save_total_limit: Option<usize>,
    pub seed: u64,
    pub data_seed: Option<u64>,
    pub dataloader_drop_last: bool,
    pub optim: String,
    pub optim_args: Option<String>,
    pub label_smoothing_factor: f64,
    pub disable_tqdm: bool,
    pub metric_for_best_model: Option<String>,
    pub greater_is_better: Option<bool>,
    pub load_best_model_at_end: bool,
    pub ignore_data_skip: bool,
    pub run_name: Option<String>,
    pub report_to: Vec<String>,
    pub skip_memory_metrics: bool,
    pub resume_from_checkpoint: Option<String>,
    pub bf16: bool,
    pub fp16: bool,
    pub use_cpu: bool,
    pub log_level: String,
    pub log_level_replica: String,
}
