//! Live output from any cell: show a MIME bundle, then update it in place.
//!
//! In a taper notebook these become Jupyter `display_data` and
//! `update_display_data` messages (through the display channel), so a cell
//! can redraw its own output while it runs. Anywhere else (a terminal, a
//! script, a test) the `text/plain` part is printed instead.
//!
//! ```no_run
//! use taper_widgets::{display, MimeBundle};
//! let handle = display(MimeBundle::html("<b>starting</b>", "starting"));
//! for i in 1..=3 {
//!     handle.update(MimeBundle::html(&format!("<b>step {i}</b>"), &format!("step {i}")));
//! }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use crate::channel;
use crate::protocol::{Ack, ChannelMessage};

pub use crate::protocol::MimeBundle;

/// An output shown by [`display`], to update in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayHandle {
    id: String,
}

impl DisplayHandle {
    /// The display id the notebook knows this output by.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Replaces the output with `data`.
    pub fn update(&self, data: MimeBundle) {
        let fallback = data.text_plain().to_string();
        let message = ChannelMessage::Update {
            display_id: self.id.clone(),
            data,
        };
        if !sent(&message) {
            println!("{fallback}");
        }
    }
}

/// Shows `data` as a new output of the running cell; returns the handle
/// that updates it.
pub fn display(data: MimeBundle) -> DisplayHandle {
    let handle = DisplayHandle { id: new_id() };
    let fallback = data.text_plain().to_string();
    let message = ChannelMessage::Display {
        display_id: handle.id.clone(),
        data,
    };
    if !sent(&message) {
        println!("{fallback}");
    }
    handle
}

/// Clears the running cell's output; with `wait`, when the next output comes.
pub fn clear_output(wait: bool) {
    sent(&ChannelMessage::Clear { wait });
}

/// Asks the notebook's user for a line (an input box under the cell); in a
/// terminal, reads a line from stdin.
pub fn input(prompt: &str) -> std::io::Result<String> {
    let message = ChannelMessage::Input {
        prompt: prompt.into(),
        password: false,
    };
    match channel::request(&message) {
        Some(Ack::Ok { value }) => Ok(value.unwrap_or_default()),
        Some(Ack::Error { message }) => Err(std::io::Error::other(message)),
        None => {
            use std::io::Write;
            print!("{prompt}");
            std::io::stdout().flush()?;
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            Ok(line.trim_end_matches(['\r', '\n']).to_string())
        }
    }
}

/// Whether outputs go to a notebook (a kernel's display channel).
pub fn in_notebook() -> bool {
    channel::is_available()
}

fn sent(message: &ChannelMessage) -> bool {
    match channel::request(message) {
        Some(Ack::Ok { .. }) => true,
        Some(Ack::Error { message }) => {
            eprintln!("taper: the kernel refused a display message: {message}");
            true
        }
        None => false,
    }
}

/// Unique within the notebook: process id, a counter and the start time.
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "taper-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
