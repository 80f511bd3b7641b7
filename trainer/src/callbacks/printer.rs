//! [`PrinterCallback`] (chosen by `disable_tqdm`) prints the logs alone, as
//! HF's `PrinterCallback` does. Only the world's first process prints.

use taper_widgets::format_logs;

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

/// HF leaves `total_flos` out of printed logs.
pub(super) fn visible(logs: &Metrics) -> impl Iterator<Item = (&str, f64)> {
    logs.iter()
        .filter(|(k, _)| k.as_str() != "total_flos")
        .map(|(k, v)| (k.as_str(), *v))
}
