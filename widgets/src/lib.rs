//! taper-widgets: what a person sees while taper trains, and the way any
//! cell draws live output in a notebook.
//!
//! - Views: [`ProgressText`] (the bar), [`MetricsTable`], [`MemoryTable`],
//!   [`LossChart`] (SVG) and [`TrainingView`] composing them. Each renders
//!   HTML and a plain-text twin.
//! - [`LiveOutput`] draws a view where the person is ([`Target`]): in a
//!   notebook through the kernel's display channel, updated in place; in a
//!   terminal with indicatif; in a log as plain lines; throttled by time.
//! - [`display`] / [`DisplayHandle::update`] / [`clear_output`] / [`input`]:
//!   the public display API for any cell, and [`protocol`], the display
//!   channel's messages, shared with the kernel.
//!
//! This crate knows neither candle nor Jupyter's wire protocol, so both the
//! trainer and the kernel depend on it and meet here.

mod channel;
mod chart;
mod display;
mod format;
pub mod html;
mod live;
mod memory;
mod progress;
pub mod protocol;
mod table;
mod training;

pub use chart::{LossChart, Scale};
pub use display::{clear_output, display, in_notebook, input, DisplayHandle};
pub use format::{format_duration, format_logs, format_value};
pub use live::{LiveOutput, Target, Throttle, REDRAW_INTERVAL};
pub use memory::{format_bytes, MemoryRow, MemoryTable};
pub use progress::ProgressText;
pub use protocol::MimeBundle;
pub use table::{Cell, MetricsTable};
pub use training::TrainingView;
