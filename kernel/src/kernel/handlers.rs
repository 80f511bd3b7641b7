//! What the kernel answers: one function per request type.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jupyter_protocol::{JupyterMessage, JupyterMessageContent as Content};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;
use zeromq::{SocketRecv, SocketSend};

use super::text::{byte_offset, char_offset, completeness, Completeness};
use super::wire::{reply, Wire};
use super::{log, Engine, Kernel};

/// The cell running now (0: none), so a late interrupt does not hit the next cell.
static RUNNING_CELL: AtomicU64 = AtomicU64::new(0);
/// Cells started so far: each gets its own number, so a grace period that
/// ends during a later cell never takes that cell for the interrupted one.
static CELLS_STARTED: AtomicU64 = AtomicU64::new(0);

/// Builds message content from its type and JSON (the spec's field names).
pub(super) fn content(msg_type: &str, value: Value) -> Content {
    Content::from_type_and_content(msg_type, value)
        .unwrap_or_else(|e| panic!("taper builds valid {msg_type} content: {e}"))
}

fn status(state: &str, parent: &JupyterMessage) -> JupyterMessage {
    reply(
        content("status", json!({ "execution_state": state })),
        parent,
    )
}

/// JEP 65's welcome on a new iopub subscription.
pub fn iopub_welcome(topic: &str) -> JupyterMessage {
    let mut message = JupyterMessage::new(
        content("iopub_welcome", json!({ "subscription": topic })),
        None,
    );
    message.header.username = "taper".into();
    message.header.version = "5.4".into();
    message
}

fn kernel_info() -> Content {
    content(
        "kernel_info_reply",
        json!({
            "status": "ok",
            "protocol_version": "5.4",
            "implementation": "taper",
            "implementation_version": env!("CARGO_PKG_VERSION"),
            "language_info": {
                "name": "rust",
                "version": rustc_version(),
                "mimetype": "text/rust",
                "file_extension": ".rs",
                "pygments_lexer": "rust",
                "codemirror_mode": "rust",
            },
            "banner": format!("taper {}: Rust in notebook cells, with a candle trainer (`:dep taper`)", env!("CARGO_PKG_VERSION")),
            "help_links": [
                { "text": "The Rust book", "url": "https://doc.rust-lang.org/book/" },
                { "text": "candle", "url": "https://github.com/huggingface/candle" },
            ],
            "debugger": false,
        }),
    )
}

fn rustc_version() -> String {
    std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

impl Kernel {
    /// Answers one shell request; returns the replies to send on shell.
    pub async fn handle_shell(&mut self, request: JupyterMessage) -> Vec<JupyterMessage> {
        let _ = self.iopub.send(status("busy", &request));
        let answer = match &request.content {
            Content::KernelInfoRequest(_) => Some(kernel_info()),
            Content::ExecuteRequest(execute) => Some(
                self.execute(
                    &request,
                    execute.code.clone(),
                    execute.silent,
                    execute.store_history,
                )
                .await,
            ),
            Content::IsCompleteRequest(r) => Some(match completeness(&r.code) {
                Completeness::Complete => {
                    content("is_complete_reply", json!({ "status": "complete" }))
                }
                Completeness::Incomplete => content(
                    "is_complete_reply",
                    json!({ "status": "incomplete", "indent": "    " }),
                ),
                Completeness::Invalid => {
                    content("is_complete_reply", json!({ "status": "invalid" }))
                }
            }),
            Content::CompleteRequest(r) => Some(self.complete(&r.code, r.cursor_pos).await),
            Content::InspectRequest(r) => Some(self.inspect(&r.code, r.cursor_pos).await),
            Content::HistoryRequest(r) => Some(
                self.history
                    .reply(&serde_json::to_value(r).unwrap_or_default()),
            ),
            Content::UnknownMessage(u) if u.msg_type == "history_request" => {
                Some(self.history.reply(&u.content))
            }
            Content::CommInfoRequest(_) => Some(content(
                "comm_info_reply",
                json!({ "status": "ok", "comms": {} }),
            )),
            Content::CommOpen(open) => {
                // No comm targets yet: close it politely, as the spec asks.
                let close = reply(
                    content("comm_close", json!({ "comm_id": open.comm_id, "data": {} })),
                    &request,
                );
                let _ = self.iopub.send(close);
                None
            }
            Content::CommMsg(_) | Content::CommClose(_) => None,
            other => {
                log(&format!("shell: no handler for {}", other.message_type()));
                None
            }
        };
        let replies = answer.map(|a| reply(a, &request)).into_iter().collect();
        let _ = self.iopub.send(status("idle", &request));
        replies
    }

    async fn execute(
        &mut self,
        request: &JupyterMessage,
        code: String,
        silent: bool,
        store: bool,
    ) -> Content {
        if !silent {
            self.execution_count += 1;
        }
        let count = self.execution_count;
        if !silent {
            let _ = self.iopub.send(reply(
                content(
                    "execute_input",
                    json!({ "code": code, "execution_count": count }),
                ),
                request,
            ));
        }
        if store && !silent {
            self.history.push(count, &code);
        }
        if let Some(magic) = super::magics::parse(&code) {
            return self.run_magic(request, count, magic).await;
        }
        if let Some(launch) = super::launch_cell::parse(&code) {
            return self.run_launch(request, count, launch).await;
        }
        *self.parent.lock().unwrap() = Some(request.clone());
        let _ = self.relays.take_panic();
        let cell = CELLS_STARTED.fetch_add(1, Ordering::SeqCst) + 1;
        RUNNING_CELL.store(cell, Ordering::SeqCst);
        let engine = self.engine.clone();
        let code = super::resolve_taper_dep(&code);
        let to_run = code.clone();
        let result = tokio::task::spawn_blocking(move || engine.execute(&to_run)).await;
        RUNNING_CELL.store(0, Ordering::SeqCst);
        log(&format!("cell {cell} (execution count {count}) finished"));
        self.relays.flush();
        *self.parent.lock().unwrap() = None;
        let panic = self.relays.take_panic();
        let outcome = match result {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                return self.error(
                    request,
                    count,
                    "KernelError",
                    &e.to_string(),
                    vec![e.to_string()],
                )
            }
            Err(e) => {
                return self.error(
                    request,
                    count,
                    "KernelError",
                    &e.to_string(),
                    vec![e.to_string()],
                )
            }
        };
        match outcome {
            Ok(_) if panic.is_some() => {
                let message = panic.unwrap_or_default();
                let kept =
                    "The cell panicked; the notebook's variables from earlier cells were kept.";
                self.error(
                    request,
                    count,
                    "Panic",
                    &message,
                    vec![message.clone(), kept.to_string()],
                )
            }
            Ok(outputs) => {
                self.remember_deps(&code);
                if !outputs.content_by_mime_type.is_empty() && !silent {
                    let data: serde_json::Map<String, Value> = outputs
                        .content_by_mime_type
                        .into_iter()
                        .map(|(mime, text)| (mime, Value::String(text)))
                        .collect();
                    if let Some(Value::String(text)) = data.get("text/plain") {
                        self.history.set_output(count, text);
                    }
                    let result = json!({ "execution_count": count, "data": data, "metadata": {}, "transient": {} });
                    let _ = self
                        .iopub
                        .send(reply(content("execute_result", result), request));
                }
                content(
                    "execute_reply",
                    json!({ "status": "ok", "execution_count": count, "payload": [], "user_expressions": {} }),
                )
            }
            Err(evcxr::Error::CompilationErrors(errors)) => {
                let rendered: Vec<String> = errors.iter().map(|e| e.rendered()).collect();
                let first = errors.first().map(|e| e.message()).unwrap_or_default();
                self.error(request, count, "CompilationError", &first, rendered)
            }
            Err(evcxr::Error::SubprocessTerminated(why)) => {
                let text = self.engine.process_ended_message(&why);
                self.error(
                    request,
                    count,
                    "CellProcessEnded",
                    &text,
                    vec![text.clone()],
                )
            }
            Err(evcxr::Error::TypeRedefinedVariablesLost(vars)) => {
                let text = format!(
                    "these variables were lost because a type they use was redefined: {}",
                    vars.join(", ")
                );
                self.error(request, count, "VariablesLost", &text, vec![text.clone()])
            }
            Err(e) => {
                let text = e.to_string();
                let ename = if text.contains("panicked") {
                    "Panic"
                } else {
                    "Error"
                };
                self.error(request, count, ename, &text, vec![text.clone()])
            }
        }
    }

    /// Publishes an `error` and returns the error `execute_reply`.
    pub(super) fn error(
        &self,
        request: &JupyterMessage,
        count: usize,
        ename: &str,
        evalue: &str,
        traceback: Vec<String>,
    ) -> Content {
        let body = json!({ "ename": ename, "evalue": evalue, "traceback": traceback });
        let _ = self
            .iopub
            .send(reply(content("error", body.clone()), request));
        let mut reply_body = body;
        reply_body["status"] = json!("error");
        reply_body["execution_count"] = json!(count);
        content("execute_reply", reply_body)
    }

    /// Runs a cursor query on the engine thread, with the spec's code-point
    /// cursor turned into the byte offset evcxr wants.
    pub(super) async fn at_cursor<T: Send + 'static>(
        &self,
        code: &str,
        cursor: usize,
        query: fn(&Engine, &str, usize) -> anyhow::Result<Option<T>>,
    ) -> Option<T> {
        let engine = self.engine.clone();
        let (code, byte) = (code.to_string(), byte_offset(code, cursor));
        tokio::task::spawn_blocking(move || query(&engine, &code, byte))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    async fn complete(&self, code: &str, cursor: usize) -> Content {
        let (matches, start, end) = match self.at_cursor(code, cursor, Engine::complete).await {
            Some((matches, start, end)) => {
                (matches, char_offset(code, start), char_offset(code, end))
            }
            None => (Vec::new(), cursor, cursor),
        };
        content(
            "complete_reply",
            json!({ "status": "ok", "matches": matches, "cursor_start": start, "cursor_end": end, "metadata": {} }),
        )
    }

    async fn inspect(&self, code: &str, cursor: usize) -> Content {
        match self.at_cursor(code, cursor, Engine::inspect).await {
            Some(text) => content(
                "inspect_reply",
                json!({ "status": "ok", "found": true, "data": { "text/plain": text }, "metadata": {} }),
            ),
            None => content(
                "inspect_reply",
                json!({ "status": "ok", "found": false, "data": {}, "metadata": {} }),
            ),
        }
    }
}

/// Serves the control socket: interrupts, shutdowns and kernel_info, also while a cell runs.
pub async fn serve_control(
    mut socket: zeromq::RouterSocket,
    wire: Wire,
    engine: Engine,
    launcher: std::sync::Arc<std::sync::atomic::AtomicU32>,
    iopub: UnboundedSender<JupyterMessage>,
) {
    while let Ok(frames) = socket.recv().await {
        let request = match wire.decode(frames) {
            Ok(request) => request,
            Err(e) => {
                log(&format!("control: dropped a message: {e}"));
                continue;
            }
        };
        let answer = match &request.content {
            Content::KernelInfoRequest(_) => kernel_info(),
            Content::InterruptRequest(_) => {
                match launcher.load(Ordering::SeqCst) {
                    // A `%%launch` cell: the launcher forwards SIGINT to every rank.
                    0 => interrupt(&engine),
                    pid => unsafe {
                        libc::kill(pid as i32, libc::SIGINT);
                    },
                }
                content("interrupt_reply", json!({ "status": "ok" }))
            }
            Content::ShutdownRequest(r) => {
                let restart = r.restart;
                let answer = reply(
                    content(
                        "shutdown_reply",
                        json!({ "status": "ok", "restart": restart }),
                    ),
                    &request,
                );
                if let Ok(frames) = wire.encode(&answer) {
                    let _ = socket.send(frames).await;
                }
                let _ = iopub.send(status("idle", &request));
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(pid) = engine.child_pid() {
                    unsafe {
                        libc::kill(pid as i32, libc::SIGKILL);
                    }
                }
                std::process::exit(0);
            }
            other => {
                log(&format!("control: no handler for {}", other.message_type()));
                continue;
            }
        };
        if let Ok(frames) = wire.encode(&reply(answer, &request)) {
            let _ = socket.send(frames).await;
        }
    }
}

/// Stage one: SIGINT to the cell process (code that checks taper's interrupt
/// flag stops at a safe point and keeps every variable). Stage two, if the
/// same cell still runs after the grace period: the cell process is killed
/// and restarted, and the cell's error says which state was lost.
fn interrupt(engine: &Engine) {
    let cell = RUNNING_CELL.load(Ordering::SeqCst);
    if cell == 0 {
        return;
    }
    if engine.stop_build() {
        log(&format!("interrupt: stopped the build of cell {cell}"));
        return;
    }
    let Some(pid) = engine.child_pid() else {
        return;
    };
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
    }
    log(&format!(
        "interrupt: SIGINT to the cell process {pid} (cell {cell})"
    ));
    let grace = super::interrupt_grace();
    std::thread::spawn(move || {
        std::thread::sleep(grace);
        if RUNNING_CELL.load(Ordering::SeqCst) == cell {
            log(&format!("interrupt: cell {cell} still running after {grace:?}; killing the cell process {pid}"));
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    });
}
