//! [`TrainingArgumentsBuilder`]: typed, chainable construction of
//! [`TrainingArguments`] from the defaults, one setter per field, ending in the
//! same validation as the JSON and CLI routes.

use serde_json::{Map, Value};

use super::{IntervalStrategy, TrainingArguments};
use crate::Result;

/// Builds [`TrainingArguments`]: start from [`TrainingArguments::builder`] (the
/// HF defaults), chain setters named like the fields, finish with
/// [`TrainingArgumentsBuilder::build`], which validates.
///
/// Setters of optional fields take the value itself and set `Some(value)`.
///
/// ```
/// use taper::TrainingArguments;
/// let args = TrainingArguments::builder()
///     .output_dir("runs/iris")
///     .learning_rate(1e-3)
///     .num_train_epochs(10.0)
///     .build()
///     .unwrap();
/// assert_eq!(args.run_name.as_deref(), Some("runs/iris"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TrainingArgumentsBuilder {
    args: TrainingArguments,
}

/// Generates one setter per field; the arms differ in how the value is taken.
macro_rules! setters {
    (value: $($name:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("Sets [`TrainingArguments::", stringify!($name), "`].")]
        pub fn $name(mut self, value: $ty) -> Self {
            self.args.$name = value;
            self
        }
    )*};
    (string: $($name:ident),* $(,)?) => {$(
        #[doc = concat!("Sets [`TrainingArguments::", stringify!($name), "`].")]
        pub fn $name(mut self, value: impl Into<String>) -> Self {
            self.args.$name = value.into();
            self
        }
    )*};
    (some: $($name:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("Sets [`TrainingArguments::", stringify!($name), "`] to `Some(value)`.")]
        pub fn $name(mut self, value: $ty) -> Self {
            self.args.$name = Some(value);
            self
        }
    )*};
    (some_string: $($name:ident),* $(,)?) => {$(
        #[doc = concat!("Sets [`TrainingArguments::", stringify!($name), "`] to `Some(value)`.")]
        pub fn $name(mut self, value: impl Into<String>) -> Self {
            self.args.$name = Some(value.into());
            self
        }
    )*};
}

impl TrainingArgumentsBuilder {
    /// A builder holding the default arguments.
    pub fn new() -> Self {
        Self::default()
    }

    setters!(value:
        overwrite_output_dir: bool,
        do_train: bool,
        do_eval: bool,
        do_predict: bool,
        eval_strategy: IntervalStrategy,
        eval_delay: f64,
        per_device_train_batch_size: usize,
        per_device_eval_batch_size: usize,
        gradient_accumulation_steps: usize,
        learning_rate: f64,
        weight_decay: f64,
        adam_beta1: f64,
        adam_beta2: f64,
        adam_epsilon: f64,
        max_grad_norm: f64,
        num_train_epochs: f64,
        max_steps: i64,
        lr_scheduler_kwargs: Map<String, Value>,
        warmup_ratio: f64,
        warmup_steps: usize,
        logging_strategy: IntervalStrategy,
        logging_steps: f64,
        logging_first_step: bool,
        logging_nan_inf_filter: bool,
        save_strategy: IntervalStrategy,
        save_steps: f64,
        seed: u64,
        dataloader_drop_last: bool,
        label_smoothing_factor: f64,
        disable_tqdm: bool,
        load_best_model_at_end: bool,
        ignore_data_skip: bool,
        skip_memory_metrics: bool,
        bf16: bool,
        fp16: bool,
        bf16_full_eval: bool,
        fp16_full_eval: bool,
        use_cpu: bool,
    );

    setters!(string: output_dir, lr_scheduler_type, optim, log_level, log_level_replica);

    setters!(some:
        eval_steps: f64,
        eval_accumulation_steps: usize,
        save_total_limit: usize,
        data_seed: u64,
        greater_is_better: bool,
        tf32: bool,
    );

    setters!(some_string: optim_args, metric_for_best_model, run_name, resume_from_checkpoint);

    /// Sets [`TrainingArguments::report_to`] (taper accepts only `none` or `all`).
    pub fn report_to<I, S>(mut self, value: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.report_to = value.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one entry to [`TrainingArguments::lr_scheduler_kwargs`].
    pub fn lr_scheduler_kwarg(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.args
            .lr_scheduler_kwargs
            .insert(key.into(), value.into());
        self
    }

    /// Validates and returns the arguments (see [`TrainingArguments::validate`]).
    pub fn build(self) -> Result<TrainingArguments> {
        let mut args = self.args;
        args.validate()?;
        Ok(args)
    }
}
