//! Live progress: HF's `NotebookProgressCallback` and `ProgressCallback` in one.
//!
//! The callback fills a [`TrainingView`] (the bar, a nested evaluation bar,
//! the metrics table as HF's notebook tracker writes it, the memory table
//! and the loss chart) and a [`LiveOutput`] draws it where the person is: in
//! a taper notebook, HTML updated in place; in a terminal, indicatif bars;
//! in a pipe or a log, the progress text with each log line. Redraws are
//! throttled by time and forced after evaluations and at the end, so the
//! final state is always drawn. Only the world's first process draws.

use std::time::Instant;

use taper_widgets::{
    format_logs, Cell, LiveOutput, MemoryRow, MemoryTable, MetricsTable, ProgressText, Target,
    TrainingView,
};

use super::printer::visible;
use super::{PredictionProgress, TrainerCallback};
use crate::args::{IntervalStrategy, TrainingArguments};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::trainer::{TrainerControl, TrainerState};

/// Draws a run's progress live (see the module docs).
pub struct ProgressCallback {
    output: LiveOutput,
    view: TrainingView,
    start: Option<Instant>,
    evaluation_start: Option<Instant>,
    first_column: &'static str,
    training: bool,
}

impl Default for ProgressCallback {
    /// Draws where [`Target::detect`] says.
    fn default() -> Self {
        Self::new(Target::detect())
    }
}

impl ProgressCallback {
    /// Draws on `target`.
    pub fn new(target: Target) -> Self {
        Self::with_output(LiveOutput::new(target))
    }

    /// Draws through `output` (to choose its redraw interval).
    pub fn with_output(output: LiveOutput) -> Self {
        Self {
            output,
            view: TrainingView::default(),
            start: None,
            evaluation_start: None,
            first_column: "Step",
            training: false,
        }
    }

    /// What the callback shows now.
    pub fn view(&self) -> &TrainingView {
        &self.view
    }

    fn set_progress(&mut self, state: &TrainerState) {
        self.view.progress = ProgressText {
            current: state.global_step as u64,
            total: state.max_steps as u64,
            elapsed: self.start.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            comment: format!(
                "Epoch {:.2}/{}",
                state.epoch.unwrap_or(0.0),
                state.num_train_epochs
            ),
        };
    }

    /// Redraws if due; memory is read only for frames that are drawn.
    fn redraw(&mut self, force: bool) {
        if force || self.output.due() {
            self.view.memory = Some(memory_table());
            self.output.refresh(&self.view, force);
        }
    }
}

/// The process's memory as the live table shows it.
fn memory_table() -> MemoryTable {
    let snapshot = crate::memory::snapshot();
    let mut rows = vec![MemoryRow {
        device: "CPU (RSS)".into(),
        current: snapshot.cpu_rss,
        peak: Some(snapshot.cpu_peak_rss),
        total: None,
    }];
    rows.extend(snapshot.gpus.iter().map(|gpu| MemoryRow {
        device: format!("GPU {}", gpu.device),
        current: gpu.used,
        peak: Some(gpu.peak),
        total: None,
    }));
    MemoryTable { rows }
}

/// HF's column name for an evaluation metric: `eval_f1_macro` -> `F1 Macro`,
/// `eval_loss` -> `Validation Loss`.
fn column_name(key: &str) -> String {
    let name = key
        .split('_')
        .skip(1)
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().collect::<String>() + &chars.as_str().to_lowercase()
            })
        })
        .collect::<Vec<_>>()
        .join(" ");
    if name == "Loss" {
        "Validation Loss".into()
    } else {
        name
    }
}

impl TrainerCallback for ProgressCallback {
    fn on_train_begin(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        _control: &mut TrainerControl,
    ) -> Result<()> {
        if !state.is_world_process_zero {
            return Ok(());
        }
        self.start = Some(Instant::now());
        self.training = true;
        self.first_column = if args.eval_strategy == IntervalStrategy::Epoch {
            "Epoch"
        } else {
            "Step"
        };
        let mut columns = vec![self.first_column, "Training Loss"];
        if args.eval_strategy != IntervalStrategy::No {
            columns.push("Validation Loss");
        }
        self.view.table = MetricsTable::new(&columns);
        self.set_progress(state);
        self.redraw(true);
        Ok(())
    }

    fn on_step_end(
        &mut self,
        _args: &TrainingArguments,
        state: &TrainerState,
        _control: &mut TrainerControl,
    ) -> Result<()> {
        if state.is_world_process_zero && self.training {
            self.set_progress(state);
            self.redraw(false);
        }
        Ok(())
    }

    fn on_prediction_step(
        &mut self,
        _args: &TrainingArguments,
        state: &TrainerState,
        _control: &mut TrainerControl,
        progress: &PredictionProgress,
    ) -> Result<()> {
        if !state.is_world_process_zero || !self.training {
            return Ok(());
        }
        let start = *self.evaluation_start.get_or_insert_with(Instant::now);
        self.view.evaluation = Some(ProgressText {
            current: progress.done as u64,
            total: progress.total as u64,
            elapsed: start.elapsed().as_secs_f64(),
            comment: String::new(),
        });
        self.redraw(false);
        Ok(())
    }

    fn on_log(
        &mut self,
        args: &TrainingArguments,
        state: &TrainerState,
        _control: &mut TrainerControl,
        logs: &Metrics,
    ) -> Result<()> {
        if !state.is_world_process_zero {
            return Ok(());
        }
        self.set_progress(state);
        let step = state.global_step as f64;
        if let Some(&loss) = logs.get("loss") {
            self.view.chart.push_training(step, loss);
            // HF writes a row per log only when there is no evaluation.
            if args.eval_strategy == IntervalStrategy::No {
                self.view.table.write_line(&[
                    ("Step", Cell::Int(state.global_step as i64)),
                    ("Training Loss", Cell::Float(loss)),
                ]);
            }
        }
        if let Some(&loss) = logs.get("eval_loss") {
            self.view.chart.push_evaluation(step, loss);
        }
        let line = match self.output.target() {
            Target::Plain => format!("{} {}", self.view.progress, format_logs(visible(logs))),
            _ => format_logs(visible(logs)),
        };
        self.output.line(&line);
        self.redraw(false);
        Ok(())
    }

    fn on_evaluate(
        &mut self,
        _args: &TrainingArguments,
        state: &TrainerState,
        _control: &mut TrainerControl,
        metrics: &Metrics,
    ) -> Result<()> {
        if !state.is_world_process_zero || !self.training {
            return Ok(());
        }
        let last_loss = state
            .log_history
            .iter()
            .rev()
            .find_map(|log| log.get("loss").and_then(|v| v.as_f64()));
        let mut values: Vec<(String, Cell)> = vec![
            (
                self.first_column.to_string(),
                if self.first_column == "Epoch" {
                    Cell::Int(state.epoch.unwrap_or(0.0) as i64)
                } else {
                    Cell::Int(state.global_step as i64)
                },
            ),
            (
                "Training Loss".into(),
                last_loss.map_or(Cell::Text("No log".into()), Cell::Float),
            ),
        ];
        // HF drops the bookkeeping figures and names the rest from the key.
        let prefix = metrics
            .keys()
            .find_map(|k| k.strip_suffix("_loss"))
            .unwrap_or("eval")
            .to_string();
        let skipped =
            ["runtime", "samples_per_second", "steps_per_second"].map(|s| format!("{prefix}_{s}"));
        for (key, value) in metrics {
            if key == "epoch" || key == "total_flos" || skipped.contains(key) {
                continue;
            }
            values.push((column_name(key), Cell::Float(*value)));
        }
        let values: Vec<(&str, Cell)> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        self.view.table.write_line(&values);
        self.view.evaluation = None;
        self.evaluation_start = None;
        // An evaluation is a natural point to show: force the redraw.
        self.redraw(true);
        Ok(())
    }

    fn on_train_end(
        &mut self,
        _args: &TrainingArguments,
        state: &TrainerState,
        _control: &mut TrainerControl,
    ) -> Result<()> {
        if !state.is_world_process_zero || !self.training {
            return Ok(());
        }
        self.set_progress(state);
        self.view.evaluation = None;
        self.view.memory = Some(memory_table());
        self.output.finish(&self.view);
        self.training = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::column_name;

    #[test]
    fn metric_columns_are_named_as_hf_names_them() {
        assert_eq!(column_name("eval_loss"), "Validation Loss");
        assert_eq!(column_name("eval_accuracy"), "Accuracy");
        assert_eq!(column_name("eval_f1_macro"), "F1 Macro");
    }
}
