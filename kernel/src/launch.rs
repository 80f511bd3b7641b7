//! `taper launch`: one process per device, as torchrun starts them.
//!
//! Every rank is a new process (spawned, never forked: a forked child of a
//! process that started CUDA cannot use CUDA) with torchrun's environment:
//! `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `GROUP_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`. Each rank's lines come out prefixed with its
//! rank. SIGINT and SIGTERM are forwarded; when one rank fails, the others
//! are stopped (SIGTERM, then SIGKILL after the grace period) and the
//! launcher exits with the failed rank's code and a line naming it. Each rank
//! runs in its own process group, so whatever it starts is stopped with it,
//! and dies with the launcher if the launcher itself is killed: no orphans.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// `taper launch` options (torchrun's names, with dashes or underscores).
#[derive(clap::Args, Debug)]
pub struct LaunchArgs {
    /// Processes on this node (one per GPU).
    #[arg(long = "nproc-per-node", alias = "nproc_per_node", default_value_t = 1)]
    nproc_per_node: usize,
    /// Nodes in the job.
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This node's index, 0 to nnodes - 1.
    #[arg(long = "node-rank", alias = "node_rank", default_value_t = 0)]
    node_rank: usize,
    /// Address of rank 0's node (the rendezvous host).
    #[arg(
        long = "master-addr",
        alias = "master_addr",
        default_value = "127.0.0.1"
    )]
    master_addr: String,
    /// Rendezvous port: a free one on a single node, 29500 across nodes.
    #[arg(long = "master-port", alias = "master_port")]
    master_port: Option<u16>,
    /// Seconds the other ranks get to stop after SIGTERM before SIGKILL.
    #[arg(long = "grace-seconds", default_value_t = 3.0)]
    grace_seconds: f64,
    /// The program each rank runs, and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    program: Vec<String>,
}

/// One running rank.
struct Rank {
    rank: usize,
    local_rank: usize,
    child: Child,
    status: Option<ExitStatus>,
    readers: Vec<JoinHandle<()>>,
}

/// Runs the job and returns the launcher's exit code.
pub fn run(args: LaunchArgs) -> Result<i32> {
    if args.nproc_per_node == 0 || args.nnodes == 0 {
        bail!("--nproc-per-node and --nnodes must be at least 1");
    }
    if args.node_rank >= args.nnodes {
        bail!(
            "--node-rank {} is out of range for --nnodes {} (use 0 to {})",
            args.node_rank,
            args.nnodes,
            args.nnodes - 1
        );
    }
    let port = match args.master_port {
        Some(port) => port,
        None if args.nnodes == 1 => free_port()?,
        None => 29500,
    };
    let signals = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let flag = signals.clone();
        // Safety: the handler only stores into an atomic.
        unsafe {
            signal_hook::low_level::register(signal, move || {
                flag.store(signal as usize, Ordering::SeqCst)
            })
        }
        .context("installing the signal handlers")?;
    }
    let world_size = args.nproc_per_node * args.nnodes;
    let mut ranks = (0..args.nproc_per_node)
        .map(|local_rank| spawn(&args, local_rank, world_size, port))
        .collect::<Result<Vec<_>>>()?;
    let grace = Duration::from_secs_f64(args.grace_seconds);

    loop {
        let signal = signals.swap(0, Ordering::SeqCst);
        if signal != 0 {
            eprintln!("taper launch: got signal {signal}; forwarding it to every rank");
            signal_all(&ranks, signal as i32);
            stop_all(&mut ranks, grace);
            finish(ranks);
            return Ok(128 + signal as i32);
        }
        for rank in ranks.iter_mut().filter(|r| r.status.is_none()) {
            rank.status = rank.child.try_wait()?;
        }
        if let Some(failed) = ranks
            .iter()
            .find(|r| r.status.is_some_and(|s| !s.success()))
        {
            let (code, how) = describe(failed.status.expect("checked"));
            let line = format!(
                "taper launch: rank {} (local rank {}, pid {}) {how}; stopping the other ranks",
                failed.rank,
                failed.local_rank,
                failed.child.id()
            );
            signal_all(&ranks, libc::SIGTERM);
            stop_all(&mut ranks, grace);
            finish(ranks);
            eprintln!("{line}");
            return Ok(code);
        }
        if ranks.iter().all(|r| r.status.is_some()) {
            finish(ranks);
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(args: &LaunchArgs, local_rank: usize, world_size: usize, port: u16) -> Result<Rank> {
    let rank = args.node_rank * args.nproc_per_node + local_rank;
    let mut command = Command::new(&args.program[0]);
    command
        .args(&args.program[1..])
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", local_rank.to_string())
        .env("WORLD_SIZE", world_size.to_string())
        .env("LOCAL_WORLD_SIZE", args.nproc_per_node.to_string())
        .env("GROUP_RANK", args.node_rank.to_string())
        .env("MASTER_ADDR", &args.master_addr)
        .env("MASTER_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if std::env::var_os("NCCL_NVLS_ENABLE").is_none() {
        // NVLink multicast stays off unless asked for (see the device notes).
        command.env("NCCL_NVLS_ENABLE", "0");
    }
    // Safety: prctl is async-signal-safe; the child dies with the launcher.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting `{}` for rank {rank}", args.program[0]))?;
    let prefix = format!("[rank{rank}]: ");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let readers = vec![
        relay(stdout, prefix.clone(), false),
        relay(stderr, prefix, true),
    ];
    Ok(Rank {
        rank,
        local_rank,
        child,
        status: None,
        readers,
    })
}

/// Copies a rank's output line by line, each line prefixed with its rank.
fn relay(
    stream: impl std::io::Read + Send + 'static,
    prefix: String,
    to_stderr: bool,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line);
            let result = if to_stderr {
                writeln!(std::io::stderr().lock(), "{prefix}{text}")
            } else {
                writeln!(std::io::stdout().lock(), "{prefix}{text}")
            };
            if result.is_err() {
                break;
            }
        }
    })
}

/// Sends `signal` to the process group of every rank still running.
fn signal_all(ranks: &[Rank], signal: i32) {
    for rank in ranks.iter().filter(|r| r.status.is_none()) {
        // Safety: plain syscall; the group id is the child's pid (process_group(0)).
        unsafe {
            libc::kill(-(rank.child.id() as i32), signal);
        }
    }
}

/// Waits up to `grace` for the ranks to exit, then kills what is left,
/// groups included.
fn stop_all(ranks: &mut [Rank], grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        for rank in ranks.iter_mut().filter(|r| r.status.is_none()) {
            rank.status = rank.child.try_wait().ok().flatten();
        }
        if ranks.iter().all(|r| r.status.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for rank in ranks.iter_mut() {
        // Anything the rank started is in its group: kill the group even if the rank is gone.
        unsafe {
            libc::kill(-(rank.child.id() as i32), libc::SIGKILL);
        }
        if rank.status.is_none() {
            rank.status = rank.child.wait().ok();
        }
    }
}

/// Waits for the output of every rank to be written.
fn finish(ranks: Vec<Rank>) {
    for rank in ranks {
        for reader in rank.readers {
            let _ = reader.join();
        }
    }
}

/// The launcher's exit code for a failed rank, and words for it.
fn describe(status: ExitStatus) -> (i32, String) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, format!("exited with code {code}")),
        (None, Some(signal)) => (128 + signal, format!("was killed by signal {signal}")),
        _ => (1, "failed".to_string()),
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
