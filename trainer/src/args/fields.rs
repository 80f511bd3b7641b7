//! Metadata of every training argument: its name, its kind of value and a
//! one-line help. One table drives unknown-key detection (with "did you mean"
//! suggestions), the coercion of CLI strings, type checks of JSON values and
//! the `taper train --help` text. Defaults are not repeated here: they come
//! from [`TrainingArguments::default`].

use super::TrainingArguments;

/// The kind of value an argument takes, as seen by JSON and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// `true`/`false`; on the CLI a bare `--flag` means `true`.
    Bool,
    /// A signed integer.
    Int,
    /// A non-negative integer.
    UInt,
    /// A finite number.
    Float,
    /// A string.
    Str,
    /// A string, or `null` (`none` on the CLI).
    OptStr,
    /// A finite number, or `null`.
    OptFloat,
    /// A non-negative integer, or `null`.
    OptUInt,
    /// A boolean, or `null`.
    OptBool,
    /// An [`IntervalStrategy`](super::IntervalStrategy) name: `no`, `steps`, `epoch`, `best`.
    Strategy,
    /// A list of strings; one string stands for a list of one.
    StrList,
    /// A JSON object (on the CLI, the object as JSON text).
    JsonMap,
}

impl FieldKind {
    /// What a value of this kind looks like, for error messages ("expects ...").
    pub fn expected(self) -> &'static str {
        match self {
            FieldKind::Bool => "a boolean (true or false)",
            FieldKind::Int => "an integer",
            FieldKind::UInt => "a non-negative integer",
            FieldKind::Float => "a number",
            FieldKind::Str => "a string",
            FieldKind::OptStr => "a string or null",
            FieldKind::OptFloat => "a number or null",
            FieldKind::OptUInt => "a non-negative integer or null",
            FieldKind::OptBool => "a boolean or null",
            FieldKind::Strategy => "one of `no`, `steps`, `epoch`, `best`",
            FieldKind::StrList => "a list of strings",
            FieldKind::JsonMap => "a JSON object",
        }
    }

    /// The short type name shown by `--help`.
    pub fn type_name(self) -> &'static str {
        match self {
            FieldKind::Bool => "bool",
            FieldKind::Int => "int",
            FieldKind::UInt => "uint",
            FieldKind::Float => "float",
            FieldKind::Str => "str",
            FieldKind::OptStr => "str|none",
            FieldKind::OptFloat => "float|none",
            FieldKind::OptUInt => "uint|none",
            FieldKind::OptBool => "bool|none",
            FieldKind::Strategy => "no|steps|epoch|best",
            FieldKind::StrList => "str...",
            FieldKind::JsonMap => "json",
        }
    }

    /// Whether `null` (`none`/`null` on the CLI) is a valid value.
    pub fn is_optional(self) -> bool {
        matches!(
            self,
            FieldKind::OptStr | FieldKind::OptFloat | FieldKind::OptUInt | FieldKind::OptBool
        )
    }
}

/// One training argument: its HF name, its kind of value and a one-line help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    /// The HF name, also the JSON key and the CLI flag (`--name`).
    pub name: &'static str,
    /// The kind of value it takes.
    pub kind: FieldKind,
    /// One line of help.
    pub help: &'static str,
}

const fn f(name: &'static str, kind: FieldKind, help: &'static str) -> FieldInfo {
    FieldInfo { name, kind, help }
}

use FieldKind::*;

/// Every field of [`TrainingArguments`], in declaration order.
#[rustfmt::skip] // a table: one field per line
pub const FIELDS: &[FieldInfo] = &[
    f("output_dir", Str, "Directory where checkpoints and predictions are written."),
    f("overwrite_output_dir", Bool, "Overwrite the content of output_dir."),
    f("do_train", Bool, "Whether to run training (read by scripts, not by the Trainer)."),
    f("do_eval", Bool, "Whether to run evaluation; set when eval_strategy is not `no`."),
    f("do_predict", Bool, "Whether to run predictions on the test set (read by scripts)."),
    f("eval_strategy", Strategy, "When to evaluate: no, steps (every eval_steps) or epoch. Old name: evaluation_strategy."),
    f("eval_steps", OptFloat, "Steps between evaluations (a value < 1 is a ratio of total steps); defaults to logging_steps."),
    f("eval_delay", Float, "Epochs or steps to wait before the first evaluation."),
    f("per_device_train_batch_size", UInt, "Batch size per device for training."),
    f("per_device_eval_batch_size", UInt, "Batch size per device for evaluation."),
    f("gradient_accumulation_steps", UInt, "Steps to accumulate gradients over before an optimizer step."),
    f("eval_accumulation_steps", OptUInt, "Prediction steps to accumulate before moving outputs to the CPU."),
    f("learning_rate", Float, "Initial (peak) learning rate."),
    f("weight_decay", Float, "Weight decay for all weights except biases and LayerNorm weights."),
    f("adam_beta1", Float, "Adam beta1, in [0, 1)."),
    f("adam_beta2", Float, "Adam beta2, in [0, 1)."),
    f("adam_epsilon", Float, "Adam epsilon."),
    f("max_grad_norm", Float, "Maximum gradient norm for clipping (0 disables clipping)."),
    f("num_train_epochs", Float, "Total training epochs (a fractional part trains part of the last epoch)."),
    f("max_steps", Int, "Total optimizer steps when > 0; overrides num_train_epochs (-1: use epochs)."),
    f("lr_scheduler_type", Str, "Learning-rate scheduler: linear, cosine, constant, ... (see the list on error)."),
    f("lr_scheduler_kwargs", JsonMap, "Extra scheduler arguments as a JSON object, e.g. '{\"num_cycles\": 2}'."),
    f("warmup_ratio", Float, "Share of total steps used for linear warmup, in [0, 1]."),
    f("warmup_steps", UInt, "Steps of linear warmup; overrides warmup_ratio when > 0."),
    f("logging_strategy", Strategy, "When to log: no, steps (every logging_steps) or epoch."),
    f("logging_steps", Float, "Steps between logs (a value < 1 is a ratio of total steps)."),
    f("logging_first_step", Bool, "Log (and evaluate) at the first global step."),
    f("logging_nan_inf_filter", Bool, "Leave NaN/inf losses out of the logged average."),
    f("save_strategy", Strategy, "When to save a checkpoint: no, steps (every save_steps), epoch or best."),
    f("save_steps", Float, "Steps between checkpoints (a value < 1 is a ratio of total steps)."),
    f("save_total_limit", OptUInt, "Keep at most this many checkpoints, deleting the oldest (none: keep all)."),
    f("seed", UInt, "Random seed set at the beginning of training."),
    f("data_seed", OptUInt, "Seed of the data samplers (none: use seed)."),
    f("dataloader_drop_last", Bool, "Drop the last incomplete batch."),
    f("optim", Str, "Optimizer: adamw_hf, adamw_torch, sgd, lion, ... (see the list on error)."),
    f("optim_args", OptStr, "Extra optimizer arguments as key=value,key=value."),
    f("label_smoothing_factor", Float, "Label smoothing factor in [0, 1); 0 means none."),
    f("disable_tqdm", Bool, "Disable the progress bars."),
    f("metric_for_best_model", OptStr, "Metric used to compare checkpoints; defaults to loss with load_best_model_at_end."),
    f("greater_is_better", OptBool, "Whether a greater metric is better; defaults from metric_for_best_model."),
    f("load_best_model_at_end", Bool, "Load the best checkpoint at the end (needs matching eval and save strategies)."),
    f("ignore_data_skip", Bool, "When resuming, do not skip the batches already seen."),
    f("run_name", OptStr, "A name for the run; defaults to output_dir."),
    f("report_to", StrList, "Integrations to report to: taper has none, so only `none` (or `all`)."),
    f("skip_memory_metrics", Bool, "Skip the memory profiler reports in metrics."),
    f("resume_from_checkpoint", OptStr, "Checkpoint folder to resume from (read by scripts)."),
    f("bf16", Bool, "bf16 mixed precision."),
    f("fp16", Bool, "fp16 mixed precision (needs a GPU)."),
    f("bf16_full_eval", Bool, "Evaluate entirely in bf16, not mixed."),
    f("fp16_full_eval", Bool, "Evaluate entirely in fp16, not mixed."),
    f("tf32", OptBool, "Let f32 matrix products on the GPU use TF32 tensor cores; unset keeps the process's setting (off)."),
    f("use_cpu", Bool, "Train on the CPU even when an accelerator is available. Old name: no_cuda."),
    f("log_level", Str, "Main process log level: debug, info, warning, error, critical or passive."),
    f("log_level_replica", Str, "Replica log level; same choices as log_level."),
];

/// Old HF names still accepted when parsing, with the field each stands for.
pub const ALIASES: &[(&str, &str)] = &[
    ("evaluation_strategy", "eval_strategy"),
    ("no_cuda", "use_cpu"),
];

/// The field called `name`, by its HF name or an old alias (see [`ALIASES`]).
pub fn lookup(name: &str) -> Option<&'static FieldInfo> {
    let canonical = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, target)| *target);
    FIELDS.iter().find(|field| field.name == canonical)
}

/// The candidate closest to `name`, if one is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(name, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// The problem message for a key that names no argument, with a suggestion.
pub(crate) fn unknown_key_message(key: &str) -> String {
    let names = FIELDS
        .iter()
        .map(|field| field.name)
        .chain(ALIASES.iter().map(|(alias, _)| *alias));
    match closest(key, names).and_then(lookup) {
        Some(field) => format!("unknown argument `{key}`; did you mean `{}`?", field.name),
        None => format!(
            "unknown argument `{key}`; `taper train --help` lists the {} arguments",
            FIELDS.len()
        ),
    }
}

/// A default value as `--help` shows it: strings bare, `null` as `none`.
fn display_default(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "none".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            // Small rates read better as `5e-5` than `0.00005`.
            Some(x) if n.is_f64() && x != 0.0 && x.abs() < 1e-3 => format!("{x:e}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// The `taper train --help` text: every argument with its type, default and help.
pub fn help_text() -> String {
    let defaults = TrainingArguments::default().to_json_value();
    let mut out = String::from(
        "Training arguments (Hugging Face names and defaults).\n\
         Give them as `--key value` or `--key=value`; booleans also as a bare `--flag`\n\
         or `--flag false`; optional values accept `none`.\n\n",
    );
    for field in FIELDS {
        let default = display_default(&defaults[field.name]);
        out.push_str(&format!(
            "  --{} <{}>  [default: {}]\n      {}\n",
            field.name,
            field.kind.type_name(),
            default,
            field.help
        ));
    }
    out.push_str("\nOld names accepted: ");
    let aliases: Vec<String> = ALIASES
        .iter()
        .map(|(alias, target)| format!("--{alias} (= --{target})"))
        .collect();
    out.push_str(&aliases.join(", "));
    out.push('\n');
    out
}
