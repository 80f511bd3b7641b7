//! taper: a Hugging Face style `Trainer` on candle.
//!
//! What it is for: training a candle model from a notebook, a terminal or a
//! script, with the names, defaults and behaviour of Hugging Face's `Trainer`
//! and `TrainingArguments`: train / evaluate / predict, callbacks, optimizers
//! and schedulers with saveable state, gradient accumulation and clipping.
//! What it is not: a model zoo (two small built-in models serve examples and
//! benchmarks) or a Jupyter kernel (that is the `taper-kernel` crate, which
//! knows nothing of candle).
//!
//! ```no_run
//! use taper::{datasets, metrics, models, Trainer, TrainingArguments};
//! # fn main() -> taper::Result<()> {
//! let data = datasets::load_tabular("iris", 0.2, 42)?;
//! let config = models::MlpConfig { input_dim: data.num_features, hidden: vec![32], num_classes: data.num_classes };
//! let model = models::Mlp::new(&config, 42, &candle_core::Device::Cpu)?;
//! let args = TrainingArguments::builder().learning_rate(1e-2).num_train_epochs(20.0).build()?;
//! let mut trainer = Trainer::new(args, model)?
//!     .with_train_dataset(data.train)
//!     .with_eval_dataset(data.test)
//!     .with_compute_metrics(metrics::accuracy);
//! trainer.train()?;
//! println!("{:?}", trainer.evaluate()?);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod args;
pub mod callbacks;
pub mod checkpoint;
pub mod data;
pub mod datasets;
pub mod device;
pub mod dist;
pub mod error;
pub mod init;
pub mod interrupt;
pub mod log;
pub mod loss;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod models;
pub mod ops;
pub mod optim;
pub mod precision;
pub mod recipes;
pub mod schedule;
pub mod tensor_ids;
pub mod trainer;

// Re-exported so a notebook needs only `:dep taper`.
pub use candle_core;
pub use candle_nn;
/// The widgets and the display API (`taper::widgets::display`), for live output from any cell.
pub use taper_widgets as widgets;

pub use args::TrainingArguments;
pub use error::{Error, Result};
pub use model::{AnyModel, Model, ModelOutput};
pub use trainer::{Trainer, TrainerCore};
