//! taper: a Hugging Face style `Trainer` on candle.
pub mod args;
pub mod error;
pub mod optim;
pub mod schedule;

pub use args::TrainingArguments;
pub use error::{Error, Result};
