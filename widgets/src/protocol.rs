//! The display channel's messages: what a cell process (or a process the
//! launcher started) sends to the kernel, one JSON object per line.
//!
//! The kernel listens on a Unix socket whose path is in [`DISPLAY_ENV`];
//! every message is answered by one line ([`Ack`]) once the kernel has queued
//! what it asked for on iopub. Waiting for that answer is what makes a cell's
//! last update arrive before its `execute_reply`, so a saved notebook holds
//! the final state. The kernel and this crate share these types, so the two
//! ends cannot drift apart.

use serde::{Deserialize, Serialize};

/// The environment variable naming the kernel's display socket.
pub const DISPLAY_ENV: &str = "TAPER_DISPLAY";

/// A MIME bundle: `{"text/html": "...", "text/plain": "..."}`.
///
/// ```
/// let bundle = taper_widgets::MimeBundle::html("<b>hi</b>", "hi");
/// assert_eq!(bundle.text_plain(), "hi");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MimeBundle(pub serde_json::Map<String, serde_json::Value>);

impl MimeBundle {
    /// HTML with its plain-text twin (consoles and saved notebooks show the text).
    pub fn html(html: &str, text: &str) -> Self {
        Self::text(text).with("text/html", html)
    }

    /// Plain text only.
    pub fn text(text: &str) -> Self {
        Self::default().with("text/plain", text)
    }

    /// Adds (or replaces) the representation for `mime`.
    pub fn with(mut self, mime: &str, value: impl Into<serde_json::Value>) -> Self {
        self.0.insert(mime.into(), value.into());
        self
    }

    /// The `text/plain` representation ("" when there is none).
    pub fn text_plain(&self) -> &str {
        self.0
            .get("text/plain")
            .and_then(|v| v.as_str())
            .unwrap_or("")
    }
}

/// A request on the display channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChannelMessage {
    /// Show a new output (Jupyter's `display_data`).
    Display {
        /// Names the output for later updates.
        display_id: String,
        /// The MIME bundle.
        data: MimeBundle,
    },
    /// Replace what an earlier `Display` showed (`update_display_data`).
    Update {
        /// The id given to `Display`.
        display_id: String,
        /// The new MIME bundle.
        data: MimeBundle,
    },
    /// Clear the cell's output (`clear_output`); with `wait`, only when the
    /// next output arrives, which avoids flicker.
    Clear {
        /// Wait for the next output before clearing.
        wait: bool,
    },
    /// Ask the notebook's user for a line of text (`input_request`).
    Input {
        /// Shown before the input box.
        prompt: String,
        /// Hide what is typed.
        password: bool,
    },
}

/// The kernel's answer to a [`ChannelMessage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Ack {
    /// Done; for `Input`, what the user typed.
    Ok {
        /// The text the user typed (`Input` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    },
    /// Not done, and why.
    Error {
        /// What went wrong.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json_lines() {
        let data = MimeBundle::text("hi");
        let message = ChannelMessage::Display {
            display_id: "d1".into(),
            data,
        };
        let line = serde_json::to_string(&message).unwrap();
        assert_eq!(
            line,
            r#"{"op":"display","display_id":"d1","data":{"text/plain":"hi"}}"#
        );
        assert_eq!(
            serde_json::from_str::<ChannelMessage>(&line).unwrap(),
            message
        );
        let ack: Ack = serde_json::from_str(r#"{"status":"ok","value":"42"}"#).unwrap();
        assert_eq!(
            ack,
            Ack::Ok {
                value: Some("42".into())
            }
        );
    }
}
