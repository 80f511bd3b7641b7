//! Cells the kernel answers itself instead of compiling them: help in the
//! pager (`:help`, `name?`), `%memory` and `%dist`; and `%%launch`.
//!
//! They are recognised by their whole (trimmed) text, so Rust code is never
//! mistaken for one.

use jupyter_protocol::JupyterMessage;
use serde_json::{json, Value};
use taper_widgets::{MemoryRow, MemoryTable, MetricsTable, MimeBundle};

use super::dist_env::{self, DistCommand};
use super::handlers::content;
use super::launch_cell::{self, LaunchCell};
use super::wire::reply;
use super::{Engine, Kernel};

/// What a special cell asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Magic {
    /// `:help`: the commands, in the pager.
    Help,
    /// `path::to::item?`: its documentation, in the pager.
    Inspect(String),
    /// `%memory`: the cell process's memory table.
    Memory,
    /// `%dist [NAME=VALUE ... | reset]`: the distributed environment (the
    /// words after `%dist`).
    Dist(String),
}

/// The magic `code` is, if it is one.
pub fn parse(code: &str) -> Option<Magic> {
    let code = code.trim();
    match code {
        ":help" | "?" => return Some(Magic::Help),
        "%memory" => return Some(Magic::Memory),
        _ => {}
    }
    if let Some(args) = code.strip_prefix("%dist") {
        let is_dist = args.is_empty() || args.starts_with([' ', '\t']) && !args.contains('\n');
        return is_dist.then(|| Magic::Dist(args.trim().to_string()));
    }
    let item = code.strip_suffix('?')?.trim_end();
    let is_path = !item.is_empty()
        && item
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '.' || c == '!');
    is_path.then(|| Magic::Inspect(item.to_string()))
}

/// taper's own commands, shown before evcxr's in `:help`.
pub const TAPER_HELP: &str = "\
taper kernel
  :dep taper              the trainer (and `taper::widgets`), from the installed source
  :dep taper-widgets      the widgets and the display API alone
  name?                   documentation of `name` in the pager
  %memory                 memory of the cell process (RSS, and GPUs where nvidia-smi runs)
  %dist                   the distributed environment cells see (a world of one unless
                          launched); `%dist WORLD_SIZE=2 RANK=1 ...` changes it,
                          `%dist reset` goes back to a world of one on a fresh port
  %%launch -n N           the cell as a program on N processes under `taper launch`
  interrupt               stops training at the next step and keeps every variable;
                          after a grace period (TAPER_INTERRUPT_GRACE, 3 s) the cell
                          process restarts and the error names what was lost

evcxr commands
";

impl Kernel {
    /// Answers a magic cell; returns its `execute_reply` content.
    pub(super) async fn run_magic(
        &self,
        request: &JupyterMessage,
        count: usize,
        magic: Magic,
    ) -> jupyter_protocol::JupyterMessageContent {
        let ok = |payload: Value| {
            content(
                "execute_reply",
                json!({ "status": "ok", "execution_count": count, "payload": payload, "user_expressions": {} }),
            )
        };
        match magic {
            Magic::Help => {
                let engine = self.engine.clone();
                let evcxr_help = tokio::task::spawn_blocking(move || engine.execute(":help"))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(Result::ok)
                    .and_then(|o| o.content_by_mime_type.get("text/plain").cloned())
                    .unwrap_or_default();
                ok(page(&format!("{TAPER_HELP}{evcxr_help}")))
            }
            Magic::Inspect(item) => {
                let cursor = item.chars().count();
                let text = self
                    .at_cursor(&item, cursor, Engine::inspect)
                    .await
                    .unwrap_or_else(|| format!("No documentation found for `{item}`."));
                ok(page(&text))
            }
            Magic::Memory => {
                let table = cell_process_memory(self.engine.child_pid());
                self.show(request, MimeBundle::html(&table.html(), &table.text()));
                ok(json!([]))
            }
            Magic::Dist(args) => {
                let engine = self.engine.clone();
                let changed = tokio::task::spawn_blocking(move || change_dist(&engine, &args))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                match changed {
                    Ok(table) => {
                        self.show(request, MimeBundle::html(&table.html(), &table.text()));
                        ok(json!([]))
                    }
                    Err(why) => self.error(request, count, "UsageError", &why, vec![why.clone()]),
                }
            }
        }
    }

    /// Publishes `bundle` as the request's display_data.
    fn show(&self, request: &JupyterMessage, bundle: MimeBundle) {
        let data = json!({ "data": bundle, "metadata": {}, "transient": {} });
        let _ = self
            .iopub
            .send(reply(content("display_data", data), request));
    }
}

/// Runs a `%dist` cell: applies its arguments here and in the cell process
/// (blocking while the cell process runs the change); returns the
/// environment's table.
pub fn change_dist(engine: &Engine, args: &str) -> Result<MetricsTable, String> {
    let code = match dist_env::parse(args)? {
        DistCommand::Show => None,
        DistCommand::Set(pairs) => Some(dist_env::apply(&pairs)?),
        DistCommand::Reset => Some(dist_env::reset()),
    };
    if let Some(code) = code {
        match engine.execute(&code) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("the cell process did not take the change: {e}")),
            Err(e) => return Err(format!("the cell process did not take the change: {e}")),
        }
    }
    Ok(dist_env::table())
}

impl Kernel {
    /// Records the `:dep` lines of a cell that ran, for `%%launch`.
    pub(super) fn remember_deps(&mut self, code: &str) {
        for line in code.lines().map(str::trim) {
            if line.starts_with(":dep ") && !self.deps.iter().any(|d| d == line) {
                self.deps.push(line.to_string());
            }
        }
    }

    /// Runs a `%%launch` cell: build the program, run it under `taper
    /// launch`, stream its lines into the cell.
    pub(super) async fn run_launch(
        &self,
        request: &JupyterMessage,
        count: usize,
        launch: Result<LaunchCell, String>,
    ) -> jupyter_protocol::JupyterMessageContent {
        let fail = |ename: &str, text: String| {
            self.error(request, count, ename, &text, vec![text.clone()])
        };
        let launch = match launch {
            Ok(launch) => launch,
            Err(why) => return fail("UsageError", why),
        };
        let stream = {
            let (iopub, request) = (self.iopub.clone(), request.clone());
            move |name: &str, text: String| {
                let body = json!({ "name": name, "text": format!("{text}\n") });
                let _ = iopub.send(reply(content("stream", body), &request));
            }
        };
        stream(
            "stderr",
            format!("building the cell for {} processes ...", launch.nproc),
        );
        let dir = std::env::temp_dir().join(format!("taper-launch-{}", std::process::id()));
        let lockfile = super::trainer_crate_path()
            .map(|trainer| std::path::Path::new(&trainer).join("../Cargo.lock"));
        let (deps, body) = (self.deps.clone(), launch.body.clone());
        let built = tokio::task::spawn_blocking(move || {
            launch_cell::build(&dir, &deps, &body, lockfile.as_deref())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let program = match built {
            Ok(program) => program,
            Err(errors) => return fail("CompilationError", errors),
        };
        let pid = self.launcher_pid.clone();
        let nproc = launch.nproc;
        // Rank 0's live view comes through the display channel: parent it here.
        *self.parent.lock().unwrap() = Some(request.clone());
        let ran =
            tokio::task::spawn_blocking(move || launch_cell::run(&program, nproc, &pid, stream))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
        *self.parent.lock().unwrap() = None;
        match ran {
            Ok(0) => content(
                "execute_reply",
                json!({ "status": "ok", "execution_count": count, "payload": [], "user_expressions": {} }),
            ),
            Ok(code) => fail(
                "LaunchFailed",
                format!("taper launch exited with code {code} (the lines above name the rank that failed)"),
            ),
            Err(why) => fail("LaunchFailed", why),
        }
    }
}

/// A pager payload, as `?` in IPython gives.
fn page(text: &str) -> Value {
    json!([{ "source": "page", "data": { "text/plain": text }, "start": 0 }])
}

/// The cell process's memory, read from outside it: `/proc` for RSS and
/// peak RSS, `nvidia-smi` (when there is one) for each GPU's use by the process.
pub fn cell_process_memory(pid: Option<u32>) -> MemoryTable {
    let Some(pid) = pid else {
        return MemoryTable::default();
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    let mut rows = vec![MemoryRow {
        device: format!("CPU (RSS), process {pid}"),
        current: field("VmRSS:"),
        peak: Some(field("VmHWM:")),
        total: None,
    }];
    rows.extend(gpu_memory_of(pid));
    MemoryTable { rows }
}

/// This process's memory on each GPU, from `nvidia-smi` (no rows without one).
fn gpu_memory_of(pid: u32) -> Vec<MemoryRow> {
    let Ok(out) = std::process::Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,gpu_uuid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            (fields.first()?.parse::<u32>().ok()? == pid).then_some(())?;
            let mib: u64 = fields.get(2)?.parse().ok()?;
            Some(MemoryRow {
                device: format!("GPU {}", fields.get(1)?),
                current: mib * 1024 * 1024,
                // nvidia-smi does not know a process's peak.
                peak: None,
                total: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_are_whole_cells() {
        assert_eq!(parse(" :help "), Some(Magic::Help));
        assert_eq!(parse("%memory"), Some(Magic::Memory));
        assert_eq!(
            parse("std::vec::Vec?"),
            Some(Magic::Inspect("std::vec::Vec".into()))
        );
        assert_eq!(parse("let x = y?;"), None);
        assert_eq!(parse("f(x)?"), None);
        assert_eq!(parse("println!(\"%memory\");"), None);
        assert_eq!(parse("%dist"), Some(Magic::Dist(String::new())));
        assert_eq!(parse(" %dist RANK=0 "), Some(Magic::Dist("RANK=0".into())));
        assert_eq!(parse("%distance"), None);
    }

    #[test]
    fn own_memory_is_read_from_proc() {
        let table = cell_process_memory(Some(std::process::id()));
        assert!(table.rows[0].current > 0);
        assert!(table.rows[0].peak >= Some(table.rows[0].current));
    }
}
