//! Built-in data that needs no download: real tabular data shipped inside the
//! `linfa-datasets` crate, and synthetic sequence tasks for language models.

mod synthetic;
mod tabular;

pub use synthetic::{SequenceTask, SequenceTaskConfig};
pub use tabular::{load_tabular, TabularData, TABULAR_DATASETS};
