//! What the Trainer prints to stderr, by level, as `log_level` and
//! `log_level_replica` decide.
//!
//! Why levels at all: under `taper launch` every rank runs the same code, so
//! a warning (a non-finite loss, a resume with changed arguments) would come
//! once per rank. As in Hugging Face's Trainer, the main process (rank 0)
//! prints at `log_level` and the replicas at `log_level_replica`, whose
//! default `warning` keeps their informational lines (such as "resuming
//! from") out of the job's output.
//!
//! `passive` leaves the level to the library in HF; taper's own default for
//! it is `info`, since taper prints few lines and each is meant to be seen
//! (HF's default, transformers' `warning`, would hide "resuming from").
//!
//! The level lives in the Trainer ([`Log`] is a small copyable value), not
//! in a global: in a notebook every cell carries its own copy of taper's
//! statics, and a level set by the cell that built the Trainer would not be
//! seen by the cell that trains it.

use std::fmt::Display;

use crate::args::TrainingArguments;

/// How important a line is, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Details for debugging.
    Debug,
    /// What the Trainer is doing (a resume).
    Info,
    /// Something that may not be what the user wanted.
    Warning,
    /// A failure.
    Error,
    /// A failure that ends the run.
    Critical,
}

impl Level {
    /// A level by its `log_level` name; `passive` is taper's default, `info`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "debug" => Self::Debug,
            "info" | "passive" => Self::Info,
            "warning" => Self::Warning,
            "error" => Self::Error,
            "critical" => Self::Critical,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Self::Debug => "debug: ",
            Self::Info => "",
            Self::Warning => "warning: ",
            Self::Error => "error: ",
            Self::Critical => "critical: ",
        }
    }
}

/// The lowest level this process prints.
///
/// ```
/// use taper::log::{Level, Log};
/// let args = taper::TrainingArguments::default();
/// assert!(Log::for_rank(&args, 0).enabled(Level::Info)); // rank 0: log_level passive
/// assert!(!Log::for_rank(&args, 1).enabled(Level::Info)); // replicas: warning
/// assert!(Log::for_rank(&args, 1).enabled(Level::Warning));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    threshold: Level,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            threshold: Level::Info,
        }
    }
}

impl Log {
    /// `log_level` for rank 0, `log_level_replica` for the others (names the
    /// arguments' validation has checked; an unknown one means `info`).
    pub fn for_rank(args: &TrainingArguments, rank: usize) -> Self {
        let name = if rank == 0 {
            &args.log_level
        } else {
            &args.log_level_replica
        };
        Self {
            threshold: Level::from_name(name).unwrap_or(Level::Info),
        }
    }

    /// Whether a line of `level` is printed.
    pub fn enabled(&self, level: Level) -> bool {
        level >= self.threshold
    }

    /// Prints `message` at `level` (as `taper: warning: ...`) if enabled.
    pub fn print(&self, level: Level, message: impl Display) {
        if self.enabled(level) {
            eprintln!("taper: {}{message}", level.label());
        }
    }

    /// [`Log::print`] at [`Level::Info`].
    pub fn info(&self, message: impl Display) {
        self.print(Level::Info, message);
    }

    /// [`Log::print`] at [`Level::Warning`].
    pub fn warning(&self, message: impl Display) {
        self.print(Level::Warning, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_hf_names_and_order() {
        assert_eq!(Level::from_name("passive"), Some(Level::Info));
        assert_eq!(Level::from_name("critical"), Some(Level::Critical));
        assert_eq!(Level::from_name("loud"), None);
        assert!(Level::Debug < Level::Info && Level::Error < Level::Critical);
        let mut args = TrainingArguments {
            log_level: "error".into(),
            log_level_replica: "debug".into(),
            ..Default::default()
        };
        assert!(!Log::for_rank(&args, 0).enabled(Level::Warning));
        assert!(Log::for_rank(&args, 0).enabled(Level::Error));
        assert!(Log::for_rank(&args, 3).enabled(Level::Debug));
        args.log_level_replica = "critical".into();
        assert!(!Log::for_rank(&args, 3).enabled(Level::Error));
    }
}
