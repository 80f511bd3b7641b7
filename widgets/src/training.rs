//! The training view: the bar, a nested evaluation bar, the metrics table,
//! the memory table and the loss chart, drawn as one output.

use crate::chart::LossChart;
use crate::memory::MemoryTable;
use crate::progress::ProgressText;
use crate::protocol::MimeBundle;
use crate::table::MetricsTable;

/// Everything a training run shows; the trainer fills it in, a
/// [`crate::LiveOutput`] draws it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingView {
    /// Optimizer steps.
    pub progress: ProgressText,
    /// Evaluation batches, while an evaluation runs.
    pub evaluation: Option<ProgressText>,
    /// One row per log or evaluation.
    pub table: MetricsTable,
    /// Memory of this process's devices, when known.
    pub memory: Option<MemoryTable>,
    /// Training and evaluation loss.
    pub chart: LossChart,
}

impl TrainingView {
    /// The view as HTML.
    pub fn html(&self) -> String {
        let mut html = String::from("<div class=\"taper-training\">\n");
        html.push_str(&self.progress.html());
        if let Some(evaluation) = &self.evaluation {
            html.push_str("\n<div style=\"margin-left: 16px;\">");
            html.push_str(&evaluation.html());
            html.push_str("</div>");
        }
        if !self.table.rows().is_empty() {
            html.push('\n');
            html.push_str(&self.table.html());
        }
        html.push_str(
            "\n<div style=\"display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start;\">",
        );
        html.push_str(&self.chart.svg());
        if let Some(memory) = &self.memory {
            html.push_str(&memory.html());
        }
        html.push_str("</div>\n</div>");
        html
    }

    /// The view as text: the same parts, one after the other.
    pub fn text(&self) -> String {
        let percent = 100 * self.progress.current / self.progress.total.max(1);
        let mut parts = vec![format!("{percent:>3}% {}", self.progress)];
        if let Some(evaluation) = &self.evaluation {
            parts.push(format!("  evaluation {evaluation}"));
        }
        if !self.table.rows().is_empty() {
            parts.push(self.table.text());
        }
        parts.push(self.chart.text());
        if let Some(memory) = &self.memory {
            parts.push(memory.text());
        }
        parts.join("\n")
    }

    /// The view as a MIME bundle (HTML and its text twin).
    pub fn bundle(&self) -> MimeBundle {
        MimeBundle::html(&self.html(), &self.text())
    }
}
