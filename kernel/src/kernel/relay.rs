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
    /// Relays the engine's outputs to `iopub`, as children of `parent`,
    /// once `outputs` says the engine is up.
    pub fn start(
        outputs: std::sync::mpsc::Receiver<Result<EvalContextOutputs, String>>,
        parent: Arc<Mutex<Option<JupyterMessage>>>,
        iopub: UnboundedSender<JupyterMessage>,
    ) -> Self {
        let panic = Arc::new(Mutex::new(None));
        let (flushers, flush_receivers): (Vec<_>, Vec<_>) =
            (0..2).map(|_| bounded::<Sender<()>>(1)).unzip();
        let relay_panic = panic.clone();
        std::thread::spawn(move || {
            // Without an engine there is nothing to relay; dropping the flush
            // receivers makes `flush` return at once.
            let Ok(Ok(outputs)) = outputs.recv() else {
                return;
            };
            let streams = [("stdout", outputs.stdout), ("stderr", outputs.stderr)];
            for ((name, lines), flush_rx) in streams.into_iter().zip(flush_receivers) {
                let (parent, iopub, panic) = (parent.clone(), iopub.clone(), relay_panic.clone());
                std::thread::spawn(move || relay(name, lines, flush_rx, parent, iopub, panic));
            }
        });
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
            let (text, newline) = crate::cell_stdout::split_partial(&line);
            let text = if newline {
                format!("{text}\n")
            } else {
                text.to_string()
            };
            let content = serde_json::json!({ "name": name, "text": text });
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
