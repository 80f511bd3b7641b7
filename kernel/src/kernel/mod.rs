//! The Jupyter kernel: five sockets, one engine, messaging spec 5.4.
//!
//! Shell requests are served one at a time (a cell runs to its end before
//! the next request is read), control requests on their own task so an
//! interrupt or a shutdown gets through while a cell runs, the heartbeat on
//! a third, and everything published on iopub goes through one queue so
//! messages keep their order. What the interpreter does is in [`engine`];
//! this module only moves messages. The kernel's own log goes to a file
//! (`TAPER_KERNEL_LOG`, default `$TMPDIR/taper-kernel-<pid>.log`), never
//! into the notebook.

mod deps;
pub mod display;
mod dist_env;
mod engine;
mod final_value;
mod handlers;
mod history;
mod launch_cell;
pub mod magics;
mod relay;
mod scratch;
mod stdin;
pub mod text;
mod warm;
mod wire;

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use jupyter_protocol::{ConnectionInfo, JupyterMessage};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use zeromq::{Socket, SocketRecv, SocketSend};

pub use deps::{resolve_taper_dep, trainer_crate_path};
pub use engine::Engine;
pub use warm::warm_build_cache;
pub use wire::Wire;

/// Everything the request handlers share.
pub struct Kernel {
    iopub: UnboundedSender<JupyterMessage>,
    engine: Engine,
    /// The request whose cell is running: stream output is parented to it.
    parent: Arc<Mutex<Option<JupyterMessage>>>,
    relays: relay::Relays,
    execution_count: usize,
    history: history::History,
    /// The notebook's `:dep` lines so far, for `%%launch` programs.
    deps: Vec<String>,
    /// The `taper launch` process of a running `%%launch` cell (0: none).
    launcher_pid: Arc<std::sync::atomic::AtomicU32>,
}

/// Serves the kernel described by `connection_file` until a shutdown request.
pub fn run(connection_file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(connection_file)
        .with_context(|| format!("reading the connection file {}", connection_file.display()))?;
    let info: ConnectionInfo = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a Jupyter connection file",
            connection_file.display()
        )
    })?;
    let wire = Wire::new(&info.key, &info.signature_scheme)?;
    prepare_environment();
    // The display channel starts before the runtime and the cell process, so
    // its variable is set while this process has one thread, and inherited.
    let (iopub_tx, iopub_rx) = unbounded_channel();
    let (questions_tx, questions_rx) = unbounded_channel();
    let parent = Arc::new(Mutex::new(None));
    let relay = display::IopubRelay {
        parent: parent.clone(),
        last_parent: Mutex::new(None),
        iopub: iopub_tx.clone(),
        questions: questions_tx,
    };
    let display =
        display::DisplayServer::start(Arc::new(relay)).context("starting the display channel")?;
    std::env::set_var(taper_widgets::protocol::DISPLAY_ENV, display.path());
    let channels = Channels {
        iopub_tx,
        iopub_rx,
        questions: questions_rx,
        parent,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(info, wire, channels))
}

/// The environment the cell process and its builds inherit; set before any
/// thread starts (the kernel, the REPL and `taper install --warm` share it,
/// since evcxr's build cache only hits when their compiler command lines
/// match): the emulated world of one, and the scratch folder evcxr builds
/// in ([`scratch`]).
pub fn prepare_environment() {
    dist_env::emulate_world_of_one();
    scratch::prepare(&deps::cargo_config(None));
}

/// How long an interrupted cell has to stop by itself before its process is
/// killed: `TAPER_INTERRUPT_GRACE` seconds, 3 by default.
pub fn interrupt_grace() -> std::time::Duration {
    let seconds = std::env::var("TAPER_INTERRUPT_GRACE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(3.0);
    std::time::Duration::from_secs_f64(seconds)
}

/// The queues made before the runtime starts.
struct Channels {
    iopub_tx: UnboundedSender<JupyterMessage>,
    iopub_rx: UnboundedReceiver<JupyterMessage>,
    questions: UnboundedReceiver<display::InputQuestion>,
    parent: Arc<Mutex<Option<JupyterMessage>>>,
}

fn endpoint(info: &ConnectionInfo, port: u16) -> String {
    format!("{}://{}:{}", info.transport, info.ip, port)
}

async fn serve(info: ConnectionInfo, wire: Wire, channels: Channels) -> Result<()> {
    let mut shell = zeromq::RouterSocket::new();
    shell.bind(&endpoint(&info, info.shell_port)).await?;
    let mut control = zeromq::RouterSocket::new();
    control.bind(&endpoint(&info, info.control_port)).await?;
    let mut stdin = zeromq::RouterSocket::new();
    stdin.bind(&endpoint(&info, info.stdin_port)).await?;
    let mut iopub = zeromq::XPubSocket::new();
    iopub.bind(&endpoint(&info, info.iopub_port)).await?;
    let mut heartbeat = zeromq::RepSocket::new();
    heartbeat.bind(&endpoint(&info, info.hb_port)).await?;

    let Channels {
        iopub_tx,
        iopub_rx,
        questions,
        parent,
    } = channels;
    tokio::spawn(publish(iopub, iopub_rx, wire.clone()));
    tokio::spawn(stdin::serve(stdin, questions, wire.clone()));
    tokio::spawn(async move {
        while let Ok(ping) = heartbeat.recv().await {
            if heartbeat.send(ping).await.is_err() {
                break;
            }
        }
    });

    let (engine, outputs) = Engine::start()?;
    let relays = relay::Relays::start(outputs, parent.clone(), iopub_tx.clone());
    let mut kernel = Kernel {
        iopub: iopub_tx.clone(),
        engine: engine.clone(),
        parent,
        relays,
        execution_count: 0,
        history: history::History::load(),
        deps: Vec::new(),
        launcher_pid: Default::default(),
    };
    tokio::spawn(handlers::serve_control(
        control,
        wire.clone(),
        engine,
        kernel.launcher_pid.clone(),
        iopub_tx,
    ));
    loop {
        let frames = shell.recv().await?;
        let request = match wire.decode(frames) {
            Ok(request) => request,
            Err(e) => {
                log(&format!("shell: dropped a message: {e}"));
                continue;
            }
        };
        for reply in kernel.handle_shell(request).await {
            shell.send(wire.encode(&reply)?).await?;
        }
    }
}

/// Sends everything queued for iopub, in order; answers each new
/// subscription with `iopub_welcome` (JEP 65), so a client knows it is
/// connected before it sends its first request.
async fn publish(
    mut socket: zeromq::XPubSocket,
    mut queue: UnboundedReceiver<JupyterMessage>,
    wire: Wire,
) {
    loop {
        tokio::select! {
            message = queue.recv() => {
                let Some(message) = message else { break };
                match wire.encode(&message) {
                    Ok(frames) => {
                        if let Err(e) = socket.send(frames).await {
                            log(&format!("iopub: {e}"));
                        }
                    }
                    Err(e) => log(&format!("iopub: {e}")),
                }
            }
            subscription = socket.recv() => {
                let Ok(subscription) = subscription else { continue };
                let Some(first) = subscription.get(0) else { continue };
                if first.first() == Some(&1) {
                    let topic = String::from_utf8_lossy(&first[1..]).to_string();
                    let welcome = handlers::iopub_welcome(&topic);
                    if let Ok(frames) = wire.encode(&welcome) {
                        let _ = socket.send(frames).await;
                    }
                }
            }
        }
    }
}

/// Appends a line to the kernel's log file.
pub fn log(line: &str) {
    use std::io::Write;
    let path = std::env::var_os("TAPER_KERNEL_LOG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("taper-kernel-{}.log", std::process::id()))
        });
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(file, "{now:.3} {line}");
    }
}
