//! The engine: evcxr's evaluation context on a thread of its own.
//!
//! evcxr compiles each cell and runs it in a child process that keeps the
//! notebook's variables. The context is not shared between threads, so one
//! thread owns it and serves requests in order; the child's stdout and stderr
//! arrive on channels that the kernel relays live. The child's handle is kept
//! where the control channel can reach it, so an interrupt gets through
//! while a cell runs.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use evcxr::{CommandContext, EvalContextOutputs, EvalOutputs};

type Reply<T> = Sender<T>;

enum Request {
    Execute(String, Reply<Result<EvalOutputs, evcxr::Error>>),
    Complete(String, usize, Reply<Option<(Vec<String>, usize, usize)>>),
    Inspect(String, usize, Reply<Option<String>>),
}

/// A handle to the engine thread.
#[derive(Clone)]
pub struct Engine {
    requests: Sender<Request>,
    /// The cell process's id (0 before it starts); updated after every cell,
    /// since a crash makes evcxr start a new one.
    child_pid: Arc<AtomicU32>,
}

impl Engine {
    /// Starts evcxr (and its child process) on the engine thread and returns
    /// at once: requests queue until the context is up, so the kernel can
    /// answer `kernel_info` while evcxr starts. The receiver gets the child's
    /// output channels (or why the context could not start).
    pub fn start() -> anyhow::Result<(Self, Receiver<Result<EvalContextOutputs, String>>)> {
        let (requests, incoming) = channel::<Request>();
        let (ready_tx, ready_rx) = channel();
        let child_pid = Arc::new(AtomicU32::new(0));
        let pid_slot = child_pid.clone();
        std::thread::Builder::new()
            .name("taper-engine".into())
            .spawn(move || {
                let (mut ctx, outputs) = match CommandContext::new() {
                    Ok(started) => started,
                    Err(e) => {
                        let why = format!("the Rust evaluation context did not start: {e}");
                        let _ = ready_tx.send(Err(why.clone()));
                        refuse_all(incoming, &why);
                        return;
                    }
                };
                if let Some(mib) = build_cache_mib() {
                    // evcxr's build cache keeps compiled dependencies (candle)
                    // across kernels: `taper install --warm` fills it.
                    if let Err(e) = ctx.execute(&format!(":cache {mib}")) {
                        super::log(&format!("engine: could not enable the build cache: {e}"));
                    }
                }
                // evcxr compiles its scaffolding with the first cell: do that
                // now, while the user types, so the first real cell is quick.
                if let Err(e) = ctx.execute("let _ = ();") {
                    super::log(&format!("engine: warm-up cell failed: {e}"));
                }
                let current_pid =
                    |ctx: &CommandContext| ctx.process_handle().lock().map(|c| c.id()).unwrap_or(0);
                pid_slot.store(current_pid(&ctx), Ordering::SeqCst);
                let _ = ready_tx.send(Ok(outputs));
                for request in incoming {
                    match request {
                        Request::Execute(code, reply) => {
                            let result = ctx.execute(&code);
                            // A crash restarts the child: keep the handle current.
                            pid_slot.store(current_pid(&ctx), Ordering::SeqCst);
                            let _ = reply.send(result);
                        }
                        Request::Complete(code, pos, reply) => {
                            let found = ctx.completions(&code, pos).ok().map(|c| {
                                (
                                    c.completions.into_iter().map(|c| c.code).collect(),
                                    c.start_offset,
                                    c.end_offset,
                                )
                            });
                            let _ = reply.send(found);
                        }
                        Request::Inspect(code, pos, reply) => {
                            let _ = reply.send(
                                ctx.hover_at(&code, pos)
                                    .ok()
                                    .map(|(text, _)| text)
                                    .filter(|t| !t.is_empty()),
                            );
                        }
                    }
                }
            })?;
        Ok((
            Self {
                requests,
                child_pid,
            },
            ready_rx,
        ))
    }

    /// Runs a cell; blocks until it finishes.
    pub fn execute(&self, code: &str) -> anyhow::Result<Result<EvalOutputs, evcxr::Error>> {
        let (tx, rx) = channel();
        self.requests.send(Request::Execute(code.to_string(), tx))?;
        Ok(rx.recv()?)
    }

    /// Completions at byte offset `pos`: the candidates and the byte range they replace.
    pub fn complete(
        &self,
        code: &str,
        pos: usize,
    ) -> anyhow::Result<Option<(Vec<String>, usize, usize)>> {
        let (tx, rx) = channel();
        self.requests
            .send(Request::Complete(code.to_string(), pos, tx))?;
        Ok(rx.recv()?)
    }

    /// Documentation of what is at byte offset `pos`.
    pub fn inspect(&self, code: &str, pos: usize) -> anyhow::Result<Option<String>> {
        let (tx, rx) = channel();
        self.requests
            .send(Request::Inspect(code.to_string(), pos, tx))?;
        Ok(rx.recv()?)
    }

    /// The cell process's id, when it runs.
    pub fn child_pid(&self) -> Option<u32> {
        Some(self.child_pid.load(Ordering::SeqCst)).filter(|pid| *pid != 0)
    }
}

/// Answers every request with `why`, when the context could not start.
fn refuse_all(incoming: Receiver<Request>, why: &str) {
    for request in incoming {
        match request {
            Request::Execute(_, reply) => {
                let _ = reply.send(Err(evcxr::Error::Message(why.to_string())));
            }
            Request::Complete(_, _, reply) => {
                let _ = reply.send(None);
            }
            Request::Inspect(_, _, reply) => {
                let _ = reply.send(None);
            }
        }
    }
}

/// The size limit of evcxr's build cache: `TAPER_BUILD_CACHE_MIB`
/// (default 4096; 0 turns the cache off).
fn build_cache_mib() -> Option<u64> {
    let mib = std::env::var("TAPER_BUILD_CACHE_MIB")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(4096);
    (mib > 0).then_some(mib)
}
