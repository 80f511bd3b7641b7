//! All-reduce bandwidth of taper's collectives, as NCCL's `all_reduce_perf`
//! reports it: for each size, the time of one out-of-place f32 sum
//! all-reduce, the algorithm bandwidth `algbw = bytes / time` and the bus
//! bandwidth `busbw = algbw * 2 (n - 1) / n` for `n` ranks (what each link
//! carries in a ring; comparable across world sizes and with the hardware's
//! link speed).
//!
//! With `--features cuda` and a GPU: NCCL on this rank's GPU (`LOCAL_RANK`),
//! sizes 1 MiB to 1 GiB. Run it under `taper launch --nproc-per-node N` for
//! N GPUs; started alone it is a world of one, where NCCL only copies the
//! buffer on the GPU: `busbw` is then 0 by the formula and `algbw` measures
//! that copy, not a link. Without a GPU: the backend of the environment
//! (TCP between launched CPU processes, nothing in a world of one), sizes
//! 1 MiB to 16 MiB, so that CI runs it in seconds.
//!
//! Run: `cargo bench -p taper --features cuda --bench allreduce` (options
//! `--iters N`, `--warmup N`, `--max-mib N`).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use taper::dist::{Collective, DistEnv, ReduceOp};

fn option(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a whole number"))
}

/// The GPU of this rank and an NCCL communicator on it, when there is one.
#[cfg(feature = "cuda")]
fn nccl(env: &DistEnv) -> Option<(Device, Box<dyn Collective>)> {
    let device = taper::device::gpu(env.local_rank).unwrap()?;
    let store = taper::dist::TcpStore::connect(env, taper::dist::DEFAULT_TIMEOUT).unwrap();
    let comm = taper::dist::NcclCollective::connect(env, &store, &device, "nccl/bench").unwrap();
    Some((device, Box::new(comm)))
}

#[cfg(not(feature = "cuda"))]
fn nccl(_: &DistEnv) -> Option<(Device, Box<dyn Collective>)> {
    None
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let env = DistEnv::from_env().unwrap();
    let (device, collective, max_default) = match nccl(&env) {
        Some((device, comm)) => (device, comm, 1024),
        None => (Device::Cpu, taper::dist::connect(&env).unwrap(), 16),
    };
    let iters = option(&args, "--iters", 20);
    let warmup = option(&args, "--warmup", 5);
    let max_mib = option(&args, "--max-mib", max_default);
    let n = collective.world_size() as f64;
    if env.rank == 0 {
        println!(
            "all-reduce (f32 sum, out of place): backend {}, {} rank(s), device {:?}, {iters} iterations after {warmup} warm-up{}",
            collective.name(),
            collective.world_size(),
            device,
            if collective.world_size() == 1 {
                "; a world of one: busbw is 0 by NCCL's formula, algbw is an on-device copy"
            } else {
                ""
            }
        );
        println!("| size | elements | time us | algbw GB/s | busbw GB/s |");
        println!("|---|---|---|---|---|");
    }
    let mut mib = 1;
    while mib <= max_mib {
        let bytes = mib << 20;
        let count = bytes / 4;
        let x = Tensor::ones(count, DType::F32, &device).unwrap();
        let mut last = None;
        for _ in 0..warmup {
            collective.all_reduce(&x, ReduceOp::Sum).unwrap();
        }
        device.synchronize().unwrap();
        let start = Instant::now();
        for _ in 0..iters {
            last = Some(collective.all_reduce(&x, ReduceOp::Sum).unwrap());
        }
        device.synchronize().unwrap();
        let seconds = start.elapsed().as_secs_f64() / iters as f64;
        // The result is the sum over ranks: every element equals n.
        let first = last
            .expect("at least one iteration")
            .get(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(f64::from(first), n, "all-reduce gave a wrong sum");
        let algbw = bytes as f64 / seconds / 1e9;
        let busbw = algbw * 2.0 * (n - 1.0) / n;
        if env.rank == 0 {
            println!(
                "| {mib} MiB | {count} | {:.1} | {algbw:.1} | {busbw:.1} |",
                seconds * 1e6
            );
        }
        mib *= 2;
    }
}
