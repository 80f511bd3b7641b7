//! Drawing a [`TrainingView`] where the person is: a notebook (through the
//! kernel's display channel, updated in place), a terminal (indicatif bars)
//! or a log (plain lines).
//!
//! Redraws are throttled by time ([`Throttle`]) and forced by the caller
//! after an evaluation and at the end, so drawing costs a training loop
//! well under 1% and the final state is always drawn.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::display::{display, in_notebook, DisplayHandle};
use crate::training::TrainingView;

/// Where output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A kernel's display channel: HTML updated in place.
    Notebook,
    /// An interactive terminal: indicatif bars.
    Terminal,
    /// A pipe or a file: plain lines.
    Plain,
}

impl Target {
    /// The display channel when the kernel set one, else a terminal when
    /// stdout is one, else plain lines.
    pub fn detect() -> Self {
        if in_notebook() {
            Target::Notebook
        } else if std::io::stdout().is_terminal() {
            Target::Terminal
        } else {
            Target::Plain
        }
    }
}

/// Lets an action through at most once per interval, unless forced.
#[derive(Debug, Clone)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
}

impl Throttle {
    /// At most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// Whether to act now; `force` always says yes. Records the time when it does.
    pub fn ready(&mut self, force: bool) -> bool {
        let now = Instant::now();
        let due = self.last.is_none_or(|last| now - last >= self.interval);
        if force || due {
            self.last = Some(now);
        }
        force || due
    }
}

/// How often the notebook view and the terminal bars redraw: HF's
/// notebook bar uses the same 0.2 s.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(200);

/// A training view drawn live on a [`Target`].
pub struct LiveOutput {
    target: Target,
    throttle: Throttle,
    notebook: Option<DisplayHandle>,
    terminal: Option<TerminalBars>,
}

struct TerminalBars {
    multi: MultiProgress,
    main: ProgressBar,
    evaluation: Option<ProgressBar>,
}

impl LiveOutput {
    /// Draws on `target`, redrawing at most every [`REDRAW_INTERVAL`].
    pub fn new(target: Target) -> Self {
        Self::with_interval(target, REDRAW_INTERVAL)
    }

    /// Draws on `target`, redrawing at most every `interval`.
    pub fn with_interval(target: Target, interval: Duration) -> Self {
        Self {
            target,
            throttle: Throttle::new(interval),
            notebook: None,
            terminal: None,
        }
    }

    /// Where this output draws.
    pub fn target(&self) -> Target {
        self.target
    }

    /// Redraws `view` if the interval has passed (always when `force`);
    /// returns whether it drew. Plain output draws nothing here: its lines
    /// come from [`LiveOutput::line`].
    pub fn refresh(&mut self, view: &TrainingView, force: bool) -> bool {
        if self.target == Target::Plain || !self.throttle.ready(force) {
            return false;
        }
        match self.target {
            Target::Notebook => match &self.notebook {
                Some(handle) => handle.update(view.bundle()),
                None => self.notebook = Some(display(view.bundle())),
            },
            Target::Terminal => self.draw_terminal(view),
            Target::Plain => {}
        }
        true
    }

    /// Whether the next [`LiveOutput::refresh`] without force would draw:
    /// lets a caller skip gathering figures (memory) for a frame that will
    /// not be drawn.
    pub fn due(&self) -> bool {
        self.target != Target::Plain
            && self
                .throttle
                .last
                .is_none_or(|last| last.elapsed() >= self.throttle.interval)
    }

    /// A line of log text: printed above the bars in a terminal, as is in
    /// plain output, and left out of a notebook (its table shows the logs).
    pub fn line(&mut self, text: &str) {
        match self.target {
            Target::Notebook => {}
            Target::Terminal => match &self.terminal {
                Some(bars) => bars.main.println(text),
                None => println!("{text}"),
            },
            Target::Plain => println!("{text}"),
        }
    }

    /// Draws the final state and lets go of the bars.
    pub fn finish(&mut self, view: &TrainingView) {
        self.refresh(view, true);
        if let Some(bars) = self.terminal.take() {
            if let Some(evaluation) = bars.evaluation {
                evaluation.finish_and_clear();
            }
            bars.main.finish();
        }
    }

    fn draw_terminal(&mut self, view: &TrainingView) {
        let bars = self.terminal.get_or_insert_with(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let main = multi.add(ProgressBar::new(view.progress.total).with_style(bar_style()));
            TerminalBars {
                multi,
                main,
                evaluation: None,
            }
        });
        bars.main.set_length(view.progress.total);
        bars.main.set_position(view.progress.current);
        bars.main.set_message(view.progress.comment.clone());
        match (&view.evaluation, &bars.evaluation) {
            (Some(progress), Some(bar)) => {
                bar.set_length(progress.total);
                bar.set_position(progress.current);
            }
            (Some(progress), None) => {
                let bar = bars
                    .multi
                    .add(ProgressBar::new(progress.total).with_style(bar_style()));
                bar.set_message("evaluation");
                bar.set_position(progress.current);
                bars.evaluation = Some(bar);
            }
            (None, Some(_)) => {
                if let Some(bar) = bars.evaluation.take() {
                    bar.finish_and_clear();
                }
            }
            (None, None) => {}
        }
    }
}

/// tqdm's look, which HF users know: `42%|████▎     | 42/100 [00:10<00:14, 4.20it/s] Epoch 1.50/3`.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{percent:>3}%|{wide_bar}| {pos}/{len} [{elapsed_precise}<{eta_precise}, {rate}] {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key(
        "rate",
        |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.2}it/s", state.per_sec());
        },
    )
    .progress_chars("█▉▊▋▌▍▎▏ ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_interval_unless_forced() {
        let mut throttle = Throttle::new(Duration::from_secs(3600));
        assert!(throttle.ready(false), "the first call draws");
        assert!(!throttle.ready(false));
        assert!(throttle.ready(true));
        let mut fast = Throttle::new(Duration::ZERO);
        assert!(fast.ready(false) && fast.ready(false));
    }
}
