//! The display channel's server: live output from cell code.
//!
//! The server listens on a Unix socket in a private folder (mode 0700, so no
//! other user can draw in the notebook) and names it in `TAPER_DISPLAY`,
//! which the cell process and every process it or `%%launch` starts inherit.
//! Each connection sends [`ChannelMessage`] lines and gets one answer per
//! line from a [`DisplayHandler`]: the kernel's ([`IopubRelay`]) publishes
//! `display_data` / `update_display_data` / `clear_output` parented to the
//! running cell (or the last one, for output from a background thread) and
//! answers once the message is queued, so a cell's last update reaches
//! iopub before the cell's `execute_reply`; `Input` becomes an
//! `input_request` on the stdin socket. The REPL has a handler of its own
//! that draws in the terminal.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jupyter_protocol::JupyterMessage;
use serde_json::json;
use taper_widgets::protocol::{Ack, ChannelMessage};
use tokio::sync::mpsc::UnboundedSender;

use super::log;
use super::wire::reply;

/// A question for the notebook's user: sent as `input_request` on stdin;
/// the answer (or why there is none) goes back on `answer`.
pub struct InputQuestion {
    /// The execute request the question belongs to (its identities route it).
    pub parent: JupyterMessage,
    /// Shown before the input box.
    pub prompt: String,
    /// Hide what is typed.
    pub password: bool,
    /// Where the typed text goes.
    pub answer: std::sync::mpsc::Sender<Result<String, String>>,
}

/// The listening socket; the folder holding it is removed on drop.
pub struct DisplayServer {
    path: PathBuf,
    _folder: tempfile::TempDir,
}

/// What the server does with each message.
pub trait DisplayHandler: Send + Sync + 'static {
    /// Shows (or asks) what `message` says; the answer goes back to the sender.
    fn handle(&self, message: ChannelMessage) -> Ack;
}

impl DisplayServer {
    /// Listens in a new private folder and serves connections on threads.
    pub fn start(handler: Arc<dyn DisplayHandler>) -> std::io::Result<Self> {
        let folder = tempfile::Builder::new()
            .prefix("taper-display-")
            .tempdir()?;
        let path = folder.path().join("display.sock");
        let listener = UnixListener::bind(&path)?;
        std::thread::Builder::new()
            .name("taper-display".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let handler = handler.clone();
                    std::thread::spawn(move || serve(stream, handler.as_ref()));
                }
            })?;
        Ok(Self {
            path,
            _folder: folder,
        })
    }

    /// The socket's path, for `TAPER_DISPLAY`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Answers every line of one connection.
fn serve(stream: UnixStream, handler: &dyn DisplayHandler) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let ack = match serde_json::from_str::<ChannelMessage>(&line) {
            Ok(message) => handler.handle(message),
            Err(e) => {
                log(&format!("display: bad message: {e}"));
                Ack::Error {
                    message: format!("not a display channel message: {e}"),
                }
            }
        };
        let mut answer = serde_json::to_string(&ack).unwrap_or_default();
        answer.push('\n');
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The kernel's handler: display messages become iopub messages, input
/// questions go to the stdin socket.
pub struct IopubRelay {
    /// The running cell's request (set by the kernel around each cell).
    pub parent: Arc<Mutex<Option<JupyterMessage>>>,
    /// The last request seen, for output after its cell ended.
    pub last_parent: Mutex<Option<JupyterMessage>>,
    /// The iopub queue.
    pub iopub: UnboundedSender<JupyterMessage>,
    /// The stdin task's queue.
    pub questions: UnboundedSender<InputQuestion>,
}

impl DisplayHandler for IopubRelay {
    fn handle(&self, message: ChannelMessage) -> Ack {
        self.relay(message)
    }
}

impl IopubRelay {
    /// The running cell's request, else the last one seen.
    fn current_parent(&self) -> Option<JupyterMessage> {
        let running = self.parent.lock().unwrap().clone();
        let mut last = self.last_parent.lock().unwrap();
        if let Some(running) = running {
            *last = Some(running);
        }
        last.clone()
    }

    fn relay(&self, message: ChannelMessage) -> Ack {
        let Some(parent) = self.current_parent() else {
            return Ack::Error {
                message: "no cell has run yet, so there is nowhere to show output".into(),
            };
        };
        let (msg_type, content) = match message {
            ChannelMessage::Display { display_id, data } => (
                "display_data",
                json!({ "data": data, "metadata": {}, "transient": { "display_id": display_id } }),
            ),
            ChannelMessage::Update { display_id, data } => (
                "update_display_data",
                json!({ "data": data, "metadata": {}, "transient": { "display_id": display_id } }),
            ),
            ChannelMessage::Clear { wait } => ("clear_output", json!({ "wait": wait })),
            ChannelMessage::Input { prompt, password } => {
                return self.ask(parent, prompt, password);
            }
        };
        match jupyter_protocol::JupyterMessageContent::from_type_and_content(msg_type, content) {
            Ok(content) => {
                let _ = self.iopub.send(reply(content, &parent));
                Ack::Ok { value: None }
            }
            Err(e) => Ack::Error {
                message: format!("could not build {msg_type}: {e}"),
            },
        }
    }

    fn ask(&self, parent: JupyterMessage, prompt: String, password: bool) -> Ack {
        let (answer, typed) = std::sync::mpsc::channel();
        let question = InputQuestion {
            parent,
            prompt,
            password,
            answer,
        };
        if self.questions.send(question).is_err() {
            return Ack::Error {
                message: "the kernel's stdin channel is closed".into(),
            };
        }
        match typed.recv() {
            Ok(Ok(value)) => Ack::Ok { value: Some(value) },
            Ok(Err(message)) => Ack::Error { message },
            Err(_) => Ack::Error {
                message: "the kernel stopped waiting for input".into(),
            },
        }
    }
}
