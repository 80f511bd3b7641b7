//! Plain-text progress: what a run prints in a log file or a pipe.
//!
//! [`ProgressCallback`] prints the HF progress text with every log, and
//! [`PrinterCallback`] (chosen by `disable_tqdm`) prints the logs alone, as
//! HF's `PrinterCallback` does. Only the world's first process prints.

use std::time::Instant;

use taper_widgets::{format_logs, ProgressText};

use super::TrainerCallback;
use crate::args::TrainingArguments;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::trainer::{TrainerControl, TrainerState};

/// Prints each log as a Python dict, like HF's `PrinterCallback`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrinterCallback;

impl TrainerCallback for PrinterCallback {
    fn on_log(
        &mut self,
        _args: &TrainingArguments,
        state: &TrainerState,
        _control: &mut TrainerControl,
        logs: &Metrics,
    ) -> Result<()> {
        if state.is_world_process_zero {
            println!("{}", format_logs(visible(logs)));
        }
        Ok(())
    }
}

/// Prints the progress text with every log line.
#[derive(Debug, Clone, Default)]
pub struct ProgressCallback {
    start: Option<Instant>,
}

impl TrainerCallback for ProgressCallback {
    fn on_train_begin(
        &mut self,
        _args: &TrainingArguments,
        _state: &TrainerState,
        _control: &mut TrainerControl,
    ) -> Result<()> {
        self.start = Some(Instant::now());
        Ok(())
    }

    fn on_log(
        &mut self,
        _args: &TrainingArguments,
        state: &TrainerState,
        _control: &mut TrainerControl,
        logs: &Metrics,
    ) -> Result<()> {
        if !state.is_world_process_zero {
            return Ok(());
        }
        let progress = ProgressText {
            current: state.global_step as u64,
            total: state.max_steps as u64,
            elapsed: self.start.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            comment: format!(
                "Epoch {:.2}/{}",
                state.epoch.unwrap_or(0.0),
                state.num_train_epochs
            ),
        };
        println!("{progress} {}", format_logs(visible(logs)));
        Ok(())
    }
}

/// HF leaves `total_flos` out of printed logs.
fn visible(logs: &Metrics) -> impl Iterator<Item = (&str, f64)> {
    logs.iter()
        .filter(|(k, _)| k.as_str() != "total_flos")
        .map(|(k, v)| (k.as_str(), *v))
}
