//! taper-widgets: what a person sees while taper trains.
//!
//! For now: the progress text Hugging Face's notebook tracker shows
//! (`[ 42/100 00:10 < 00:14, 4.20 it/s, Epoch 1.50/3]`) and values printed the
//! way Python prints them, so log lines read like HF's. The live HTML views,
//! the terminal bars and the display channel to the kernel come next; this
//! crate stays free of candle and of Jupyter, so both the trainer and the
//! kernel can depend on it.

mod format;
mod progress;

pub use format::{format_duration, format_logs, format_value};
pub use progress::ProgressText;
