//! The run's state (HF's `TrainerState`), the control flags callbacks set
//! (HF's `TrainerControl`), and the plan of steps and epochs.

use serde::{Deserialize, Serialize};

use crate::args::TrainingArguments;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Where a run is; saved as `trainer_state.json` with HF's schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Epochs done, fractional inside an epoch.
    pub epoch: Option<f64>,
    /// Optimizer steps done.
    pub global_step: usize,
    /// Optimizer steps planned.
    pub max_steps: usize,
    /// Steps between logs (ratios resolved).
    pub logging_steps: usize,
    /// Steps between evaluations (ratios resolved).
    pub eval_steps: usize,
    /// Steps between saves (ratios resolved).
    pub save_steps: usize,
    /// Samples per device per micro-batch.
    pub train_batch_size: usize,
    /// Epochs planned (whole).
    pub num_train_epochs: usize,
    /// Input tokens seen (HF counts them only when asked; taper does not yet).
    pub num_input_tokens_seen: u64,
    /// Floating-point operations so far, when the model counts them.
    pub total_flos: f64,
    /// Every log: training logs, evaluation metrics, the final train metrics.
    pub log_history: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The best value of `metric_for_best_model` so far.
    pub best_metric: Option<f64>,
    /// The step that reached it.
    pub best_global_step: Option<usize>,
    /// The checkpoint folder of the best model.
    pub best_model_checkpoint: Option<String>,
    /// This process is the first on its node.
    pub is_local_process_zero: bool,
    /// This process is the first of the world.
    pub is_world_process_zero: bool,
    /// Part of a hyper-parameter search (always false in taper).
    pub is_hyper_param_search: bool,
    /// The trial's name in a search.
    pub trial_name: Option<String>,
    /// The trial's parameters in a search.
    pub trial_params: Option<serde_json::Value>,
    /// Saved state of callbacks that have some (early stopping counters).
    pub stateful_callbacks: serde_json::Map<String, serde_json::Value>,
}

impl TrainerState {
    /// Appends a log entry (`logs` plus `step`), as HF's `Trainer.log` does.
    pub fn push_log(&mut self, logs: &Metrics) {
        let mut entry: serde_json::Map<String, serde_json::Value> = logs
            .iter()
            .map(|(k, v)| (k.clone(), crate::metrics::json_number(*v)))
            .collect();
        entry.insert("step".into(), self.global_step.into());
        self.log_history.push(entry);
    }
}

/// What callbacks ask the loop to do next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrainerControl {
    /// Stop training now.
    pub should_training_stop: bool,
    /// Stop this epoch now.
    pub should_epoch_stop: bool,
    /// Save a checkpoint at this step.
    pub should_save: bool,
    /// Evaluate at this step.
    pub should_evaluate: bool,
    /// Log at this step.
    pub should_log: bool,
}

/// The result of [`TrainerCore::train`](crate::trainer::TrainerCore::train).
#[derive(Debug, Clone)]
pub struct TrainOutput {
    /// Optimizer steps done.
    pub global_step: usize,
    /// Mean training loss over the run.
    pub training_loss: f64,
    /// `train_runtime`, `train_samples_per_second`, `train_loss`, ...
    pub metrics: Metrics,
}

/// How many batches, updates and epochs a run has (HF's arithmetic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainingPlan {
    /// Micro-batches per epoch.
    pub batches_per_epoch: usize,
    /// Micro-batches per optimizer step.
    pub accumulation: usize,
    /// Optimizer steps per epoch (a short tail of micro-batches makes one more).
    pub updates_per_epoch: usize,
    /// Optimizer steps in the run.
    pub max_steps: usize,
    /// Epochs the loop may enter.
    pub num_epochs: usize,
    /// Samples per optimizer step, over all devices.
    pub total_batch_size: usize,
}

impl TrainingPlan {
    /// The plan for `batches_per_epoch` micro-batches per epoch.
    pub fn new(
        args: &TrainingArguments,
        batches_per_epoch: usize,
        world_size: usize,
    ) -> Result<Self> {
        if batches_per_epoch == 0 {
            return Err(Error::Usage(
                "the training data gives no batch: it is empty, or smaller than the batch size with dataloader_drop_last"
                    .into(),
            ));
        }
        let accumulation = args.gradient_accumulation_steps.max(1);
        let updates_per_epoch = batches_per_epoch.div_ceil(accumulation);
        let (max_steps, num_epochs) = if args.max_steps > 0 {
            let max_steps = args.max_steps as usize;
            (max_steps, max_steps.div_ceil(updates_per_epoch))
        } else {
            let max_steps = (args.num_train_epochs * updates_per_epoch as f64).ceil() as usize;
            (max_steps, args.num_train_epochs.ceil() as usize)
        };
        Ok(Self {
            batches_per_epoch,
            accumulation,
            updates_per_epoch,
            max_steps,
            num_epochs,
            total_batch_size: args.per_device_train_batch_size * accumulation * world_size,
        })
    }

    /// The micro-batches of update `update` within an epoch.
    pub fn micro_batches(&self, update: usize) -> std::ops::Range<usize> {
        let start = update * self.accumulation;
        start..(start + self.accumulation).min(self.batches_per_epoch)
    }

    /// HF's `*_steps` value: a ratio of `max_steps` when below 1, else a step count.
    pub fn resolve_steps(&self, value: f64) -> usize {
        if value > 0.0 && value < 1.0 {
            (self.max_steps as f64 * value).ceil() as usize
        } else {
            value as usize
        }
    }
}
