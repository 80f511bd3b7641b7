//! Live output: the cell process's stdout and stderr, relayed to iopub as
//! `stream` messages parented to the running request.
//!
//! One thread per stream forwards lines as they come. Before a cell's reply
//! goes out, [`Relays::flush`] waits until both threads have published every
//! line received so far, so output never arrives after the reply.

use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use evcxr::EvalContextOutputs;
use jupyter_protocol::JupyterMessage;
use tokio::sync::mpsc::UnboundedSender;

/// The two relay threads.
pub struct Relays {
    flushers: Vec<Sender<Sender<()>>>,
    panic: Arc<Mutex<Option<String>>>,
}

impl Relays {
    /// Starts relaying `outputs` to `iopub`, as children of `parent`.
    pub fn start(
        outputs: EvalContextOutputs,
        parent: Arc<Mutex<Option<JupyterMessage>>>,
        iopub: UnboundedSender<JupyterMessage>,
    ) -> Self {
        let panic = Arc::new(Mutex::new(None));
        let flushers = [("stdout", outputs.stdout), ("stderr", outputs.stderr)]
            .into_iter()
            .map(|(name, lines)| {
                let (flush_tx, flush_rx) = bounded::<Sender<()>>(1);
                let (parent, iopub, panic) = (parent.clone(), iopub.clone(), panic.clone());
                std::thread::spawn(move || relay(name, lines, flush_rx, parent, iopub, panic));
                flush_tx
            })
            .collect();
        Self { flushers, panic }
    }

    /// The panic message the cell printed, if it panicked (evcxr catches
    /// panics and keeps the variables, so this is how a panic is seen).
    pub fn take_panic(&self) -> Option<String> {
        self.panic.lock().unwrap().take()
    }

    /// Returns once every line received so far has been published.
    pub fn flush(&self) {
        for flusher in &self.flushers {
            let (done_tx, done_rx) = bounded(1);
            if flusher.send(done_tx).is_ok() {
                let _ = done_rx.recv();
            }
        }
    }
}

fn relay(
    name: &'static str,
    lines: Receiver<String>,
    flush: Receiver<Sender<()>>,
    parent: Arc<Mutex<Option<JupyterMessage>>>,
    iopub: UnboundedSender<JupyterMessage>,
    panic: Arc<Mutex<Option<String>>>,
) {
    // Rust prints `thread '...' panicked at FILE:LINE:COL:` then the message.
    let mut after_panic_line = false;
    let mut watch = |line: &str| {
        if name != "stderr" {
            return;
        }
        if after_panic_line {
            if let Some(text) = panic.lock().unwrap().as_mut() {
                text.push('\n');
                text.push_str(line);
            }
            after_panic_line = false;
        } else if line.contains(" panicked at ") {
            *panic.lock().unwrap() = Some(line.to_string());
            after_panic_line = true;
        }
    };
    let publish = |line: String| {
        if let Some(parent) = parent.lock().unwrap().as_ref() {
            let content = serde_json::json!({ "name": name, "text": format!("{line}\n") });
            if let Ok(content) =
                jupyter_protocol::JupyterMessageContent::from_type_and_content("stream", content)
            {
                let _ = iopub.send(super::wire::reply(content, parent));
            }
        }
    };
    loop {
        select! {
            recv(lines) -> line => match line {
                Ok(line) => {
                    watch(&line);
                    publish(line);
                }
                Err(_) => return,
            },
            recv(flush) -> done => {
                while let Ok(line) = lines.try_recv() {
                    watch(&line);
                    publish(line);
                }
                if let Ok(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }
}
