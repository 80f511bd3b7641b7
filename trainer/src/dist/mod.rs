//! Distributed training: the environment a launcher sets, and the
//! rendezvous store the ranks meet through.
//!
//! The environment follows torchrun (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
//! `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), falls back to SLURM's
//! variables, and is a world of one when nothing is set (a notebook, a plain
//! `taper train`). Collectives and the data-parallel Trainer build on these:
//! NCCL between GPUs (`cuda` feature), TCP between CPU processes.

mod collective;
#[cfg(feature = "cuda")]
mod nccl;
mod store;

pub use collective::{Collective, ReduceOp, SingleProcess, TcpCollective};
#[cfg(feature = "cuda")]
pub use nccl::NcclCollective;
pub use store::TcpStore;

use crate::error::{Error, Result};

/// Where this process stands in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Index of this process in the world.
    pub rank: usize,
    /// Index of this process on its node (picks the GPU).
    pub local_rank: usize,
    /// Processes in the world.
    pub world_size: usize,
    /// Processes on this node.
    pub local_world_size: usize,
    /// Host of rank 0, where the rendezvous store listens.
    pub master_addr: String,
    /// Port of the rendezvous store.
    pub master_port: u16,
}

impl DistEnv {
    /// A world of one on this machine (what a notebook emulates).
    pub fn single(master_port: u16) -> Self {
        Self {
            rank: 0,
            local_rank: 0,
            world_size: 1,
            local_world_size: 1,
            master_addr: "127.0.0.1".into(),
            master_port,
        }
    }

    /// Reads the environment: torchrun's variables, else SLURM's, else a world of one.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`DistEnv::from_env`] over any source of variables (tests pass a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let number = |name: &str| -> Result<Option<usize>> {
            var(name)
                .map(|v| {
                    v.trim().parse().map_err(|_| {
                        Error::Config(format!(
                            "environment variable {name}={v} is not a whole number"
                        ))
                    })
                })
                .transpose()
        };
        let (rank, local_rank, world_size, local_world_size) = if var("RANK").is_some() {
            let world = number("WORLD_SIZE")?.ok_or_else(|| {
                Error::Config(
                    "RANK is set but WORLD_SIZE is not; start the job with `taper launch`".into(),
                )
            })?;
            let rank = number("RANK")?.expect("checked");
            (
                rank,
                number("LOCAL_RANK")?.unwrap_or(rank),
                world,
                number("LOCAL_WORLD_SIZE")?.unwrap_or(world),
            )
        } else if var("SLURM_PROCID").is_some() {
            let world = number("SLURM_NTASKS")?.unwrap_or(1);
            let rank = number("SLURM_PROCID")?.expect("checked");
            (
                rank,
                number("SLURM_LOCALID")?.unwrap_or(0),
                world,
                number("SLURM_NTASKS_PER_NODE")?.unwrap_or(world),
            )
        } else {
            (0, 0, 1, 1)
        };
        if rank >= world_size || local_rank >= local_world_size {
            return Err(Error::Config(format!(
                "rank {rank} (local {local_rank}) is out of range for a world of {world_size} ({local_world_size} per node)"
            )));
        }
        let master_port = match var("MASTER_PORT") {
            Some(p) => p
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("MASTER_PORT={p} is not a port number")))?,
            None => 29500,
        };
        Ok(Self {
            rank,
            local_rank,
            world_size,
            local_world_size,
            master_addr: var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port,
        })
    }
}

/// How long ranks wait for each other (to join, to answer), as torch's default.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// This process's place in the job and its collectives for training on
/// the CPU: [`process_group_for`] with the CPU device.
pub fn process_group() -> Result<(DistEnv, std::sync::Arc<dyn Collective>)> {
    process_group_for(&candle_core::Device::Cpu)
}

/// This process's place in the job and its collectives, set up once per
/// process from the environment and the device of the first model that asks
/// (the Trainer's): NCCL on a CUDA device (see [`connect_for`]), TCP or a
/// world of one otherwise. Later callers get the same group whatever their
/// device (the store's port can only be bound once); each backend accepts
/// tensors on any device, only the speed differs.
pub fn process_group_for(
    device: &candle_core::Device,
) -> Result<(DistEnv, std::sync::Arc<dyn Collective>)> {
    static GROUP: std::sync::OnceLock<(DistEnv, std::sync::Arc<dyn Collective>)> =
        std::sync::OnceLock::new();
    if let Some(group) = GROUP.get() {
        return Ok(group.clone());
    }
    let env = DistEnv::from_env()?;
    let collective: std::sync::Arc<dyn Collective> = connect_for(&env, device)?.into();
    Ok(GROUP.get_or_init(|| (env, collective)).clone())
}

/// How long ranks wait for each other: `TAPER_DIST_TIMEOUT` seconds, else
/// [`DEFAULT_TIMEOUT`].
fn timeout() -> Result<std::time::Duration> {
    match std::env::var("TAPER_DIST_TIMEOUT") {
        Ok(v) => Ok(std::time::Duration::from_secs_f64(v.parse().map_err(
            |_| Error::Config(format!("TAPER_DIST_TIMEOUT={v} is not a number of seconds")),
        )?)),
        Err(_) => Ok(DEFAULT_TIMEOUT),
    }
}

/// The collective backend for `env`: nothing to do in a world of one, TCP
/// between CPU processes otherwise (`TAPER_DIST_TIMEOUT` overrides the wait, in seconds).
pub fn connect(env: &DistEnv) -> Result<Box<dyn Collective>> {
    if env.world_size == 1 {
        return Ok(Box::new(SingleProcess));
    }
    let timeout = timeout()?;
    let store = TcpStore::connect(env, timeout)?;
    store.barrier("join")?;
    Ok(Box::new(TcpCollective::connect(env, &store, timeout)?))
}

/// The collective backend for `env` and a model on `device`: NCCL when the
/// device is a CUDA GPU (built with `cuda`) and a launcher set the
/// environment (`RANK`, also for a world of one, so that `taper launch
/// --nproc-per-node 1` trains through NCCL as DDP would), else [`connect`].
pub fn connect_for(env: &DistEnv, device: &candle_core::Device) -> Result<Box<dyn Collective>> {
    #[cfg(feature = "cuda")]
    if device.is_cuda() && (env.world_size > 1 || std::env::var_os("RANK").is_some()) {
        let store = TcpStore::connect(env, timeout()?)?;
        store.barrier("join")?;
        return Ok(Box::new(NcclCollective::connect(
            env, &store, device, "nccl/id",
        )?));
    }
    #[cfg(not(feature = "cuda"))]
    let _ = device;
    connect(env)
}
