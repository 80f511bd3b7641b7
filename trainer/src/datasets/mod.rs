//! Built-in data that needs no download: real tabular data compiled into
//! taper (`trainer/data/`), and synthetic sequence tasks for language models.

mod synthetic;
mod tabular;

pub use synthetic::{SequenceTask, SequenceTaskConfig};
pub use tabular::{load_tabular, TabularData, TABULAR_DATASETS};
