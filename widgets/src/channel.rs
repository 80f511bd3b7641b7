//! The client end of the display channel: one connection per process,
//! opened on first use and shared by every thread.
//!
//! Nothing here is fatal. Without `TAPER_DISPLAY`, or when the kernel cannot
//! be reached, [`request`] says so and callers fall back to plain output: a
//! training run never fails because a progress bar could not be drawn.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use crate::protocol::{Ack, ChannelMessage, DISPLAY_ENV};

/// How long to wait for the kernel's answer to anything but `Input`: the
/// kernel answers as soon as the message is queued, so this only matters
/// when the kernel is gone or stuck.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

struct Connection {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

enum State {
    Untried,
    Connected(Connection),
    /// Not set, or it failed: plain output from now on.
    Unavailable,
}

static CHANNEL: Mutex<State> = Mutex::new(State::Untried);

fn connect() -> State {
    let Some(path) = std::env::var_os(DISPLAY_ENV) else {
        return State::Unavailable;
    };
    match UnixStream::connect(&path).and_then(|s| Ok((s.try_clone()?, s))) {
        Ok((writer, reader)) => State::Connected(Connection {
            writer,
            reader: BufReader::new(reader),
        }),
        Err(e) => {
            eprintln!(
                "taper: cannot reach the kernel's display channel at {} ({e}); \
                 showing plain text instead",
                std::path::Path::new(&path).display()
            );
            State::Unavailable
        }
    }
}

/// Whether this process talks to a kernel's display channel (connecting on
/// the first call).
pub fn is_available() -> bool {
    let mut state = CHANNEL.lock().unwrap_or_else(|p| p.into_inner());
    if matches!(*state, State::Untried) {
        *state = connect();
    }
    matches!(*state, State::Connected(_))
}

/// Sends `message` and waits for the kernel's answer. `None` when there is
/// no channel (or it just broke; the error is printed once).
pub fn request(message: &ChannelMessage) -> Option<Ack> {
    let mut state = CHANNEL.lock().unwrap_or_else(|p| p.into_inner());
    if matches!(*state, State::Untried) {
        *state = connect();
    }
    let State::Connected(connection) = &mut *state else {
        return None;
    };
    match exchange(connection, message) {
        Ok(ack) => Some(ack),
        Err(e) => {
            eprintln!("taper: the display channel broke ({e}); showing plain text instead");
            *state = State::Unavailable;
            None
        }
    }
}

fn exchange(connection: &mut Connection, message: &ChannelMessage) -> std::io::Result<Ack> {
    let mut line = serde_json::to_string(message)?;
    line.push('\n');
    let timeout = match message {
        ChannelMessage::Input { .. } => None,
        _ => Some(ACK_TIMEOUT),
    };
    connection.reader.get_ref().set_read_timeout(timeout)?;
    connection.writer.write_all(line.as_bytes())?;
    let mut answer = String::new();
    if connection.reader.read_line(&mut answer)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the kernel closed the channel",
        ));
    }
    Ok(serde_json::from_str(&answer)?)
}
