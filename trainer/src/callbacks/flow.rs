//! HF's `DefaultFlowCallback`: turns the logging, evaluation and save
//! strategies into control flags, and stops at `max_steps`.

use super::TrainerCallback;
use crate::args::{IntervalStrategy, TrainingArguments};
use crate::error::Result;
use crate::trainer::{TrainerControl, TrainerState};

/// Decides when to log, evaluate, save and stop; always the first callback.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultFlowCallback;

impl TrainerCallback for DefaultFlowCallback {
    fn on_step_end(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        let step = state.global_step;
        let every = |n: usize| n > 0 && step % n == 0;
        if step == 1 && args.logging_first_step {
            control.should_log = true;
        }
        if args.logging_strategy == IntervalStrategy::Steps && every(state.logging_steps) {
            control.should_log = true;
        }
        if args.eval_strategy == IntervalStrategy::Steps
            && every(state.eval_steps)
            && args.eval_delay <= step as f64
        {
            control.should_evaluate = true;
        }
        if args.save_strategy == IntervalStrategy::Steps && every(state.save_steps) {
            control.should_save = true;
        }
        if step >= state.max_steps {
            control.should_training_stop = true;
            // HF saves at the end of training under the `steps` strategy.
            if args.save_strategy == IntervalStrategy::Steps {
                control.should_save = true;
            }
        }
        Ok(())
    }

    fn on_epoch_end(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        control: &mut TrainerControl,
    ) -> Result<()> {
        if args.logging_strategy == IntervalStrategy::Epoch {
            control.should_log = true;
        }
        if args.eval_strategy == IntervalStrategy::Epoch
            && args.eval_delay <= state.epoch.unwrap_or(0.0)
        {
            control.should_evaluate = true;
        }
        if args.save_strategy == IntervalStrategy::Epoch {
            control.should_save = true;
        }
        Ok(())
    }
}
