//! `TrainingArguments`: every knob of a run, with the Hugging Face names,
//! defaults and meanings, so a person can move a config between the two.
//!
//! Built three ways: [`TrainingArguments::from_json_file`] (or `_str`),
//! [`TrainingArguments::from_cli_args`] (`--key value` pairs) and
//! [`TrainingArguments::builder`]. All three end in the same validation, which
//! reports every problem at once.
//!
//! The pieces live in sub-modules: [`fields`] (the metadata table behind
//! unknown-key detection, CLI coercion and `--help`), `parse` (JSON and CLI
//! input), `validate` (the checks and HF's `__post_init__` resolution) and
//! [`builder`] (the typed builder).

use serde::{Deserialize, Serialize};

pub mod builder;
pub mod fields;
mod parse;
mod validate;

pub use builder::TrainingArgumentsBuilder;
pub use fields::{help_text, FieldInfo, FieldKind, ALIASES, FIELDS};
pub use validate::LOG_LEVELS;

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

impl IntervalStrategy {
    /// Every strategy name, in HF's spelling.
    pub const NAMES: &'static [&'static str] = &["no", "steps", "epoch", "best"];

    /// The strategy with this HF name (`"no"`, `"steps"`, `"epoch"`, `"best"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "no" => Some(Self::No),
            "steps" => Some(Self::Steps),
            "epoch" => Some(Self::Epoch),
            "best" => Some(Self::Best),
            _ => None,
        }
    }

    /// The HF name of the strategy.
    pub fn name(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Steps => "steps",
            Self::Epoch => "epoch",
            Self::Best => "best",
        }
    }
}

impl std::fmt::Display for IntervalStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The arguments of a training run. Field names, defaults and meanings follow
/// Hugging Face's `TrainingArguments`; see `shared/reference/training-arguments.txt`.
///
/// Construct it with [`TrainingArguments::from_json_file`],
/// [`TrainingArguments::from_cli_args`] or [`TrainingArguments::builder`]; each
/// runs [`TrainingArguments::validate`], which also fills in the values HF
/// derives in `__post_init__` (`do_eval`, `eval_steps`, `metric_for_best_model`,
/// `greater_is_better`, `run_name`, `report_to`). A value built by hand (struct
/// literal or [`Default`]) has not been validated until `validate` is called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingArguments {
    /// Directory where checkpoints and predictions are written. Default `"trainer_output"`.
    pub output_dir: String,
    /// Overwrite the content of `output_dir`. Default `false`.
    pub overwrite_output_dir: bool,
    /// Whether to run training (for scripts; the Trainer does not read it). Default `false`.
    pub do_train: bool,
    /// Whether to run evaluation; set to `true` by validation when `eval_strategy` is not `no`.
    pub do_eval: bool,
    /// Whether to run predictions on the test set (for scripts). Default `false`.
    pub do_predict: bool,
    /// When to evaluate during training: `no` (default), `steps` or `epoch`.
    /// The old name `evaluation_strategy` is accepted when parsing.
    pub eval_strategy: IntervalStrategy,
    /// Update steps between two evaluations with `eval_strategy = steps`; a value
    /// below 1 is a ratio of the total training steps. Defaults to `logging_steps`.
    pub eval_steps: Option<f64>,
    /// Epochs or steps (per `eval_strategy`) to wait before the first evaluation. Default `0`.
    pub eval_delay: f64,
    /// Batch size per device for training. Default `8`.
    pub per_device_train_batch_size: usize,
    /// Batch size per device for evaluation. Default `8`.
    pub per_device_eval_batch_size: usize,
    /// Update steps to accumulate gradients over before an optimizer step. Default `1`.
    pub gradient_accumulation_steps: usize,
    /// Prediction steps to accumulate outputs over before moving them to the CPU.
    /// Default unset (accumulate everything on the device).
    pub eval_accumulation_steps: Option<usize>,
    /// Initial (peak) learning rate. Default `5e-5`.
    pub learning_rate: f64,
    /// Weight decay for all weights except biases and LayerNorm weights. Default `0`.
    pub weight_decay: f64,
    /// Adam's beta1. Default `0.9`.
    pub adam_beta1: f64,
    /// Adam's beta2. Default `0.999`.
    pub adam_beta2: f64,
    /// Adam's epsilon. Default `1e-8`.
    pub adam_epsilon: f64,
    /// Maximum gradient norm for clipping; `0` disables clipping. Default `1.0`.
    pub max_grad_norm: f64,
    /// Total epochs (a fractional part trains that share of the last epoch). Default `3.0`.
    pub num_train_epochs: f64,
    /// Total optimizer steps when positive; overrides `num_train_epochs`. Default `-1`.
    pub max_steps: i64,
    /// Scheduler name (see [`crate::schedule::SchedulerType::NAMES`]). Default `"linear"`.
    pub lr_scheduler_type: String,
    /// Extra arguments for the scheduler, e.g. `{"num_cycles": 2}`. Default `{}`.
    pub lr_scheduler_kwargs: serde_json::Map<String, serde_json::Value>,
    /// Share of the total steps used for linear warmup, in `[0, 1]`. Default `0`.
    pub warmup_ratio: f64,
    /// Steps of linear warmup; overrides `warmup_ratio` when positive. Default `0`.
    pub warmup_steps: usize,
    /// When to log: `no`, `steps` (default) or `epoch`.
    pub logging_strategy: IntervalStrategy,
    /// Update steps between two logs with `logging_strategy = steps`; a value
    /// below 1 is a ratio of the total training steps. Default `500`.
    pub logging_steps: f64,
    /// Log (and evaluate) at the first global step. Default `false`.
    pub logging_first_step: bool,
    /// Leave NaN/inf losses out of the logged average. Default `true`.
    pub logging_nan_inf_filter: bool,
    /// When to save a checkpoint: `no`, `steps` (default), `epoch` or `best`.
    pub save_strategy: IntervalStrategy,
    /// Update steps between two saves with `save_strategy = steps`; a value
    /// below 1 is a ratio of the total training steps. Default `500`.
    pub save_steps: f64,
    /// Keep at most this many checkpoints in `output_dir`, deleting the oldest.
    /// Default unset (keep all).
    pub save_total_limit: Option<usize>,
    /// Random seed set at the beginning of training. Default `42`.
    pub seed: u64,
    /// Seed of the data samplers; defaults to `seed` when unset.
    pub data_seed: Option<u64>,
    /// Drop the last incomplete batch. Default `false`.
    pub dataloader_drop_last: bool,
    /// Optimizer name (see [`crate::optim::OPTIMIZER_NAMES`]). Default `"adamw_hf"`.
    pub optim: String,
    /// Extra optimizer arguments as `key=value,key=value`. Default unset.
    pub optim_args: Option<String>,
    /// Label smoothing factor in `[0, 1)`; `0` means none. Default `0`.
    pub label_smoothing_factor: f64,
    /// Disable the progress bars. Default `false`.
    pub disable_tqdm: bool,
    /// Metric used to compare checkpoints (with or without the `eval_` prefix).
    /// Defaults to `"loss"` with `load_best_model_at_end` or `reduce_lr_on_plateau`.
    pub metric_for_best_model: Option<String>,
    /// Whether a greater `metric_for_best_model` is better. Defaults to `false` for
    /// `loss`/`eval_loss`, `true` for any other metric.
    pub greater_is_better: Option<bool>,
    /// Load the best checkpoint at the end of training. Default `false`.
    pub load_best_model_at_end: bool,
    /// When resuming, do not skip the batches already seen. Default `false`.
    pub ignore_data_skip: bool,
    /// A name for the run; defaults to `output_dir`.
    pub run_name: Option<String>,
    /// Integrations to report to. taper has none: only `none`, `all` or an empty
    /// list are accepted, and validation empties the list. Default `[]`.
    pub report_to: Vec<String>,
    /// Skip the memory profiler reports in metrics. Default `true`.
    pub skip_memory_metrics: bool,
    /// Checkpoint folder to resume from (for scripts). Default unset.
    pub resume_from_checkpoint: Option<String>,
    /// bf16 mixed precision. Default `false`.
    pub bf16: bool,
    /// fp16 mixed precision (needs a GPU). Default `false`.
    pub fp16: bool,
    /// Evaluate entirely in bf16 (weights and activations), not mixed. Default `false`.
    pub bf16_full_eval: bool,
    /// Evaluate entirely in fp16 (weights and activations), not mixed. Default `false`.
    pub fp16_full_eval: bool,
    /// Let f32 matrix products on the GPU use TF32 tensor cores (inputs
    /// rounded to a 10-bit mantissa, f32 accumulation), as HF's `tf32`:
    /// `Some(true)` on, `Some(false)` off, unset (default) leaves the
    /// process's setting, which is off unless something turned it on (as
    /// PyTorch's default for matrix products). Needs a GPU.
    pub tf32: Option<bool>,
    /// Train on the CPU even when an accelerator is available. Default `false`.
    /// The old name `no_cuda` is accepted when parsing.
    pub use_cpu: bool,
    /// Log level of the main process: `debug`, `info`, `warning`, `error`,
    /// `critical` or `passive` (default; keep the current level).
    pub log_level: String,
    /// Log level of replicas; same choices as `log_level`. Default `"warning"`.
    pub log_level_replica: String,
}

impl Default for TrainingArguments {
    /// Hugging Face's defaults (with `output_dir = "trainer_output"` as newer HF
    /// versions have it). Not yet validated: `do_eval`, `run_name` and the other
    /// derived values are filled in by [`TrainingArguments::validate`].
    fn default() -> Self {
        Self {
            output_dir: "trainer_output".to_string(),
            overwrite_output_dir: false,
            do_train: false,
            do_eval: false,
            do_predict: false,
            eval_strategy: IntervalStrategy::No,
            eval_steps: None,
            eval_delay: 0.0,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 8,
            gradient_accumulation_steps: 1,
            eval_accumulation_steps: None,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            num_train_epochs: 3.0,
            max_steps: -1,
            lr_scheduler_type: "linear".to_string(),
            lr_scheduler_kwargs: serde_json::Map::new(),
            warmup_ratio: 0.0,
            warmup_steps: 0,
            logging_strategy: IntervalStrategy::Steps,
            logging_steps: 500.0,
            logging_first_step: false,
            logging_nan_inf_filter: true,
            save_strategy: IntervalStrategy::Steps,
            save_steps: 500.0,
            save_total_limit: None,
            seed: 42,
            data_seed: None,
            dataloader_drop_last: false,
            optim: "adamw_hf".to_string(),
            optim_args: None,
            label_smoothing_factor: 0.0,
            disable_tqdm: false,
            metric_for_best_model: None,
            greater_is_better: None,
            load_best_model_at_end: false,
            ignore_data_skip: false,
            run_name: None,
            report_to: Vec::new(),
            skip_memory_metrics: true,
            resume_from_checkpoint: None,
            bf16: false,
            fp16: false,
            bf16_full_eval: false,
            fp16_full_eval: false,
            tf32: None,
            use_cpu: false,
            log_level: "passive".to_string(),
            log_level_replica: "warning".to_string(),
        }
    }
}

impl TrainingArguments {
    /// A builder starting from the defaults; [`TrainingArgumentsBuilder::build`] validates.
    pub fn builder() -> TrainingArgumentsBuilder {
        TrainingArgumentsBuilder::new()
    }

    /// The arguments as a JSON object (every field, HF names).
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("TrainingArguments always serializes to JSON")
    }

    /// The arguments as pretty JSON (indent 2), the content of a checkpoint's
    /// `training_args.json`. [`TrainingArguments::from_json_str`] reads it back.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(self).expect("TrainingArguments always serializes to JSON")
    }

    /// Writes [`TrainingArguments::to_json_string`] to `path` (with a final newline).
    pub fn to_json_file(&self, path: impl AsRef<std::path::Path>) -> crate::Result<()> {
        let mut text = self.to_json_string();
        text.push('\n');
        std::fs::write(path, text)?;
        Ok(())
    }
}
