//! The engine: evcxr's evaluation context on a thread of its own.
//!
//! evcxr compiles each cell and runs it in a child process that keeps the
//! notebook's variables. The context is not shared between threads, so one
//! thread owns it and serves requests in order; the child's stdout and stderr
//! arrive on channels that the kernel relays live. The child's handle is kept
//! where the control channel can reach it, so an interrupt gets through
//! while a cell runs.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};

use evcxr::{CommandContext, EvalContextOutputs, EvalOutputs};

use super::final_value;

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
    /// The notebook's variables when the running (or last) cell started:
    /// what a crash or a hard interrupt of that cell loses.
    variables_before_cell: Arc<Mutex<Vec<String>>>,
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
        let variables_before_cell = Arc::new(Mutex::new(Vec::new()));
        let variables_slot = variables_before_cell.clone();
        std::thread::Builder::new()
            .name("taper-engine".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let (mut ctx, outputs) = match CommandContext::with_trusted_deps(
                    super::deps::trusted_deps(),
                    Some(super::deps::trusted_lock()),
                ) {
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
                // The same compile defines the Debug display trait.
                let warm_up = format!("{}\nlet _ = ();", final_value::DEBUG_DISPLAY);
                let context_up = started.elapsed();
                if let Err(e) = ctx.execute(&warm_up) {
                    super::log(&format!("engine: warm-up cell failed: {e}"));
                }
                // What a first cell sent at once waits for (notes/kernel-latency.md).
                super::log(&format!(
                    "engine: evcxr started in {} ms, warm-up cell done at {} ms",
                    context_up.as_millis(),
                    started.elapsed().as_millis()
                ));
                let current_pid =
                    |ctx: &CommandContext| ctx.process_handle().lock().map(|c| c.id()).unwrap_or(0);
                pid_slot.store(current_pid(&ctx), Ordering::SeqCst);
                let _ = ready_tx.send(Ok(outputs));
                while let Some(request) = next_request(&incoming, &mut ctx) {
                    match request {
                        Request::Execute(code, reply) => {
                            *variables_slot.lock().unwrap() = ctx
                                .variables_and_types()
                                .map(|(name, _)| name.to_string())
                                .collect();
                            let started = std::time::Instant::now();
                            let result = ctx.execute(&code);
                            log_cell_time(started.elapsed(), &result);
                            if result.is_ok() && final_value::changes_format(&code) {
                                if let Err(e) = ctx.execute(final_value::DEBUG_DISPLAY_OFF) {
                                    super::log(&format!(
                                        "engine: could not drop the Debug display: {e}"
                                    ));
                                }
                            }
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
                variables_before_cell,
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

    /// Why the last cell failed when its process ended (a panic that
    /// aborted, an abort, a hard interrupt), and which variables went with
    /// it: evcxr restarts the process, and every variable defined before
    /// that cell is gone.
    pub fn process_ended_message(&self, why: &str) -> String {
        let mut lost = self.variables_before_cell.lock().unwrap().clone();
        lost.sort();
        let what = if lost.is_empty() {
            "no variables had been defined, so none were lost".to_string()
        } else {
            format!("these variables were lost: {}", lost.join(", "))
        };
        format!(
            "{why}\nThe cell process ended (a panic, an abort or an interrupt) and was restarted; {what}."
        )
    }

    /// Stops a build in progress, if the cell is still being compiled: evcxr
    /// runs cargo as a child of this process. Returns whether one was
    /// stopped (evcxr then reports the cell as failed, and every variable
    /// stays). An interrupt during a build must not reach the cell process:
    /// it has nothing to stop, and without taper's handler a SIGINT would
    /// end it and take the notebook's variables with it.
    pub fn stop_build(&self) -> bool {
        let processes = process_table();
        let children_named = |command: &str| -> Vec<i32> {
            processes
                .iter()
                .filter(|p| p.parent == std::process::id() as i32 && p.command == command)
                .map(|p| p.pid)
                .collect()
        };
        let builds = children_named("cargo");
        // A warm cell's rustc runs without cargo (vendor/README.md). It
        // outlives a SIGINT, and has nothing to clean up: it is killed.
        let direct = children_named("rustc");
        for pid in &direct {
            // SAFETY: a plain signal to a process this kernel started.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        // cargo does not pass a signal on to the compilers it runs (a
        // terminal's Ctrl-C reaches them as its process group), so each
        // rustc (and evcxr's wrapper around it) is stopped too, deepest
        // first, or it would compile on as an orphan.
        let mut doomed = Vec::new();
        for build in &builds {
            descendants(&processes, *build, &mut doomed);
        }
        doomed.extend(&builds);
        for pid in &doomed {
            // SAFETY: a plain signal to a process this kernel started.
            unsafe {
                libc::kill(*pid, libc::SIGINT);
            }
        }
        !builds.is_empty() || !direct.is_empty()
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

/// A process as `/proc/<pid>/stat` shows it.
struct Process {
    pid: i32,
    parent: i32,
    command: String,
}

/// Every process on the machine, from `/proc`.
fn process_table() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let (head, tail) = stat.rsplit_once(") ")?;
            let command = head.split_once(" (")?.1.to_string();
            let parent = tail.split_whitespace().nth(1)?.parse().ok()?;
            Some(Process {
                pid,
                parent,
                command,
            })
        })
        .collect()
}

/// The descendants of `pid`, children after their own descendants.
fn descendants(processes: &[Process], pid: i32, out: &mut Vec<i32>) {
    for child in processes.iter().filter(|p| p.parent == pid) {
        descendants(processes, child.pid, out);
        out.push(child.pid);
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

/// How long the engine waits for a request before it counts as idle and
/// prepares rust-analyzer ([`prepare_analysis`]).
const IDLE_BEFORE_ANALYSIS: std::time::Duration = std::time::Duration::from_millis(300);

/// The next request, `None` once the kernel has gone. A request already
/// waiting (a notebook run from the top) is served first; when none comes
/// for [`IDLE_BEFORE_ANALYSIS`], rust-analyzer is prepared while the user
/// types.
fn next_request(incoming: &Receiver<Request>, ctx: &mut CommandContext) -> Option<Request> {
    match incoming.recv_timeout(IDLE_BEFORE_ANALYSIS) {
        Ok(request) => Some(request),
        Err(RecvTimeoutError::Timeout) => {
            prepare_analysis(ctx);
            incoming.recv().ok()
        }
        Err(RecvTimeoutError::Disconnected) => None,
    }
}

/// Has rust-analyzer load the notebook's dependency graph, and taper's
/// before any `:dep taper` names it, and resolve it in the background.
/// evcxr asks it for the type of every variable a cell defines; until it
/// has resolved the graph (the standard library at the start, 3 s on two
/// cores; taper's, 3-4 s more), cells ask rustc instead, which costs a
/// compile of the cell (notes/kernel-latency.md). Nothing happens when the
/// current graph is resolved, or being resolved.
fn prepare_analysis(ctx: &mut CommandContext) {
    ctx.analyse_trusted_deps();
    let started = std::time::Instant::now();
    match ctx.prepare_analysis() {
        Ok(false) => {}
        Ok(true) => super::log(&format!(
            "engine: rust-analyzer prepared in {} ms, resolving in the background",
            started.elapsed().as_millis()
        )),
        Err(e) => super::log(&format!("engine: rust-analyzer preparation failed: {e}")),
    }
}

/// Writes how long a cell took, and evcxr's phases of it, to the kernel's
/// log: what a slow cell spent its time on (the time not in a phase is
/// evcxr's analysis of the code and the build of new dependencies).
fn log_cell_time(took: std::time::Duration, result: &Result<EvalOutputs, evcxr::Error>) {
    let phases = match result {
        Ok(outputs) => outputs
            .phases
            .iter()
            .map(|p| format!("{} {} ms", p.name, p.duration.as_millis()))
            .collect::<Vec<_>>()
            .join(", "),
        Err(_) => "failed".to_string(),
    };
    super::log(&format!("cell took {} ms ({phases})", took.as_millis()));
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_tree_is_read_from_proc() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let table = super::process_table();
        let mut below = Vec::new();
        super::descendants(&table, std::process::id() as i32, &mut below);
        child.kill().unwrap();
        let _ = child.wait();
        let named = |pid: &i32| {
            table
                .iter()
                .find(|p| p.pid == *pid)
                .unwrap()
                .command
                .clone()
        };
        let names: Vec<String> = below.iter().map(named).collect();
        // The grandchild comes before its parent.
        let sleep = names
            .iter()
            .position(|n| n == "sleep")
            .expect("sleep is found");
        let shell = names.iter().position(|n| n == "sh").expect("sh is found");
        assert!(sleep < shell, "{names:?}");
    }
}
