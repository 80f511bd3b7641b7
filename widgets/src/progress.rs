//! The text of a progress bar, as Hugging Face's notebook tracker writes it.

use crate::format::format_duration;

/// Where a run is: `[ 42/100 00:10 < 00:14, 4.20 it/s, Epoch 1.50/3]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressText {
    /// Steps done.
    pub current: u64,
    /// Steps in all.
    pub total: u64,
    /// Seconds since the start.
    pub elapsed: f64,
    /// What follows the rate, e.g. `Epoch 1.50/3`.
    pub comment: String,
}

impl ProgressText {
    /// Steps per second so far (0 before the first step).
    pub fn rate(&self) -> f64 {
        if self.elapsed > 0.0 {
            self.current as f64 / self.elapsed
        } else {
            0.0
        }
    }
}

impl std::fmt::Display for ProgressText {
    /// ```
    /// let p = taper_widgets::ProgressText { current: 42, total: 100, elapsed: 10.0, comment: "Epoch 1.50/3".into() };
    /// assert_eq!(p.to_string(), "[ 42/100 00:10 < 00:13, 4.20 it/s, Epoch 1.50/3]");
    /// ```
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let width = self.total.to_string().len();
        let rate = self.rate();
        let remaining = if rate > 0.0 {
            format_duration((self.total.saturating_sub(self.current)) as f64 / rate)
        } else {
            "??:??".into()
        };
        write!(
            f,
            "[{:>width$}/{} {} < {}, {:.2} it/s",
            self.current,
            self.total,
            format_duration(self.elapsed),
            remaining,
            rate,
        )?;
        if !self.comment.is_empty() {
            write!(f, ", {}", self.comment)?;
        }
        write!(f, "]")
    }
}

impl ProgressText {
    /// The bar as HTML: a `<progress>` element and the text beside it, like
    /// Hugging Face's notebook bar.
    pub fn html(&self) -> String {
        format!(
            "<div class=\"taper-progress\"><progress value=\"{}\" max=\"{}\" style=\"width: 300px; height: 20px; vertical-align: middle;\"></progress>\n  {}</div>",
            self.current,
            self.total.max(1),
            crate::html::escape(&self.to_string())
        )
    }
}
