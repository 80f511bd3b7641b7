//! HF's `EarlyStoppingCallback`: stop when `metric_for_best_model` has not
//! improved by more than `threshold` for `patience` evaluations.

use super::TrainerCallback;
use crate::args::TrainingArguments;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::trainer::{TrainerControl, TrainerState};

/// Stops training after `patience` evaluations without improvement.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStoppingCallback {
    /// Evaluations without improvement before stopping.
    pub patience: usize,
    /// The least change that counts as an improvement.
    pub threshold: f64,
    /// Evaluations without improvement so far.
    pub patience_counter: usize,
}

impl EarlyStoppingCallback {
    /// A callback with HF's parameters `early_stopping_patience` and `early_stopping_threshold`.
    pub fn new(patience: usize, threshold: f64) -> Self {
        Self {
            patience,
            threshold,
            patience_counter: 0,
        }
    }
}

impl TrainerCallback for EarlyStoppingCallback {
    fn state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "args": {
                "early_stopping_patience": self.patience,
                "early_stopping_threshold": self.threshold,
            },
            "attributes": { "early_stopping_patience_counter": self.patience_counter },
        }))
    }

    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        let counter = state["attributes"]["early_stopping_patience_counter"]
            .as_u64()
            .ok_or_else(|| {
                Error::Usage("saved EarlyStoppingCallback state has no patience counter".into())
            })?;
        self.patience_counter = counter as usize;
        Ok(())
    }

    fn on_train_begin(
        &mut self,
        args: &TrainingArguments,
        _state: &TrainerState,
        _control: &mut TrainerControl,
    ) -> Result<()> {
        if args.metric_for_best_model.is_none() {
            return Err(Error::Usage(
                "EarlyStoppingCallback needs metric_for_best_model (e.g. `--metric_for_best_model eval_loss`)".into(),
            ));
        }
        if args.eval_strategy == crate::args::IntervalStrategy::No {
            return Err(Error::Usage(
                "EarlyStoppingCallback needs evaluations: set eval_strategy to `steps` or `epoch`"
                    .into(),
            ));
        }
        Ok(())
    }

    fn on_evaluate(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
        metrics: &Metrics,
    ) -> Result<()> {
        let value =
            crate::metrics::metric_for_best(args.metric_for_best_model.as_deref(), metrics)?;
        let greater_is_better = args.greater_is_better.unwrap_or(false);
        let improved = match state.best_metric {
            None => true,
            Some(best) => {
                let better = crate::metrics::is_better(value, best, greater_is_better);
                better && (value - best).abs() > self.threshold
            }
        };
        if improved {
            self.patience_counter = 0;
        } else {
            self.patience_counter += 1;
        }
        if self.patience_counter >= self.patience {
            control.should_training_stop = true;
        }
        Ok(())
    }
}
