//! The one error type of the crate.
//!
//! Configuration problems are collected and reported together (a person fixes a
//! config file once, not once per typo), so [`Error::InvalidArguments`] carries
//! a list; everything else wraps the error of the layer that failed.

/// Everything that can go wrong in taper.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The training arguments are wrong: every problem found, one per entry.
    #[error("invalid training arguments ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, bullet_list(.0))]
    InvalidArguments(Vec<String>),
    /// A configuration that is wrong in a way that is not an argument (scheduler
    /// kwargs, optimizer arguments, a recipe): the message says what and how to fix it.
    #[error("{0}")]
    Config(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON could not be read or written.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Training or evaluation was asked for something it cannot do (no train
    /// dataset, a metric that was never computed, ...).
    #[error("{0}")]
    Usage(String),
    /// The kernel interrupted the cell; the notebook's state is kept.
    #[error("interrupted (the notebook's variables are kept)")]
    Interrupted,
}

fn bullet_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("  - {item}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
