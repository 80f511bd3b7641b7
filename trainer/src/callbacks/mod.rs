//! Callbacks: how features hang off the training loop instead of living in it.
//!
//! The loop only counts steps and calls events; whether to log, evaluate,
//! save or stop is decided by callbacks that set [`TrainerControl`] flags, as
//! in Hugging Face's Trainer. The events and their order are HF's. Every
//! event has a default that does nothing, so a callback implements only what
//! it needs, and returns a `Result` so a callback can stop a run with a reason.

mod early_stopping;
mod flow;
mod printer;
mod progress;

pub use early_stopping::EarlyStoppingCallback;
pub use flow::DefaultFlowCallback;
pub use printer::PrinterCallback;
pub use progress::ProgressCallback;

use crate::args::TrainingArguments;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::trainer::{TrainerControl, TrainerState};

/// The events of a run. `args` and `state` are read-only; `control` carries
/// what the callback asks the loop to do.
#[allow(unused_variables)]
pub trait TrainerCallback: Send {
    /// A name for messages and for saved state (defaults to the type name).
    fn name(&self) -> String {
        std::any::type_name::<Self>()
            .rsplit("::")
            .next()
            .unwrap_or("callback")
            .to_string()
    }
    /// State to save with checkpoints (HF's `ExportableState`: `{"args": .., "attributes": ..}`);
    /// `None` for callbacks that have none.
    fn state(&self) -> Option<serde_json::Value> {
        None
    }
    /// Restores what [`TrainerCallback::state`] saved, when resuming.
    fn load_state(&mut self, state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
    /// At the end of the Trainer's construction.
    fn on_init_end(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        Ok(())
    }
    /// Before the first step.
    fn on_train_begin(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        Ok(())
    }
    /// After the last step.
    fn on_train_end(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        Ok(())
    }
    /// At the start of an epoch.
    fn on_epoch_begin(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        Ok(())
    }
    /// At the end of an epoch.
    fn on_epoch_end(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        Ok(())
    }
    /// Before an optimizer step's first micro-batch.
    fn on_step_begin(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        Ok(())
    }
    /// After each micro-batch but the last of an optimizer step.
    fn on_substep_end(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        Ok(())
    }
    /// After clipping, before the optimizer step.
    fn on_pre_optimizer_step(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        Ok(())
    }
    /// After the optimizer step, before the scheduler step.
    fn on_optimizer_step(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        Ok(())
    }
    /// After an optimizer step (`state.global_step` already counts it).
    fn on_step_end(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        Ok(())
    }
    /// After an evaluation, with its metrics.
    fn on_evaluate(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
        metrics: &Metrics,
    ) -> Result<()> {
        Ok(())
    }
    /// After a prediction run, with its metrics.
    fn on_predict(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
        metrics: &Metrics,
    ) -> Result<()> {
        Ok(())
    }
    /// After a checkpoint is saved.
    fn on_save(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        Ok(())
    }
    /// After something is logged.
    fn on_log(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
        logs: &Metrics,
    ) -> Result<()> {
        Ok(())
    }
    /// After each evaluation or prediction batch; `progress` says how far
    /// the pass is (HF hands its callbacks the data loader for the same).
    fn on_prediction_step(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
        progress: &PredictionProgress,
    ) -> Result<()> {
        Ok(())
    }
}

/// How far an evaluation or prediction pass is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictionProgress {
    /// Batches done.
    pub done: usize,
    /// Batches in the pass.
    pub total: usize,
}

/// The callbacks of a Trainer, called in the order they were added.
#[derive(Default)]
pub struct CallbackHandler {
    callbacks: Vec<Box<dyn TrainerCallback>>,
}

impl CallbackHandler {
    /// Adds a callback at the end.
    pub fn add(&mut self, callback: Box<dyn TrainerCallback>) {
        self.callbacks.push(callback);
    }

    /// Removes and returns the first callback named `name`.
    pub fn pop(&mut self, name: &str) -> Option<Box<dyn TrainerCallback>> {
        let index = self.callbacks.iter().position(|c| c.name() == name)?;
        Some(self.callbacks.remove(index))
    }

    /// The names of the callbacks, in order.
    pub fn names(&self) -> Vec<String> {
        self.callbacks.iter().map(|c| c.name()).collect()
    }

    /// The saved state of every callback that has one, by name (for `stateful_callbacks`).
    pub fn states(&self) -> serde_json::Map<String, serde_json::Value> {
        self.callbacks
            .iter()
            .filter_map(|c| c.state().map(|state| (c.name(), state)))
            .collect()
    }

    /// Restores saved states into the callbacks of the same name; a saved
    /// state with no matching callback is reported, not silently dropped.
    pub fn load_states(
        &mut self,
        states: &serde_json::Map<String, serde_json::Value>,
        log: &crate::log::Log,
    ) -> Result<()> {
        for (name, state) in states {
            match self.callbacks.iter_mut().find(|c| &c.name() == name) {
                Some(callback) => callback.load_state(state)?,
                None if name == "TrainerControl" => {}
                None => log.warning(format_args!(
                    "the checkpoint has state for callback {name}, which this Trainer does not have; it is ignored"
                )),
            }
        }
        Ok(())
    }

    /// Calls `event` on every callback in order, stopping at the first error.
    pub fn call(
        &mut self,
        mut event: impl FnMut(&mut (dyn TrainerCallback + 'static)) -> Result<()>,
    ) -> Result<()> {
        for callback in &mut self.callbacks {
            event(callback.as_mut())?;
        }
        Ok(())
    }
}
