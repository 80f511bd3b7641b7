//! Per-stage memory metrics, like Hugging Face's `TrainerMemoryTracker`, and
//! a cheap memory query for live displays.
//!
//! What it is for: `train`, `evaluate` and `predict` (and the trainer's
//! construction) report how much memory they took, under HF's metric names:
//! `{stage}_mem_cpu_alloc_delta`, `{stage}_mem_cpu_peaked_delta` and, for the
//! `init` stage, `before_init_mem_cpu`, all in bytes. `log_metrics` /
//! [`format_metrics_block`](crate::metrics::format_metrics_block) prints them
//! in MB. [`snapshot`] is the query a live memory table polls: the current
//! resident set size (RSS) and the process's peak RSS.
//!
//! The numbers, exactly as HF computes them (`trainer_utils.py`):
//!
//! - `alloc_delta = rss_at_stop - rss_at_start`: what the stage kept. It can
//!   be negative when the stage freed more than it allocated.
//! - `peaked_delta = max(0, peak_rss - rss_at_stop)`, where `peak_rss` is the
//!   highest absolute RSS seen while the stage ran (not relative to the
//!   start): the memory the stage used for a while and gave back. What the
//!   stage needed at its worst is `alloc_delta + peaked_delta`.
//! - `before_init_mem_cpu = rss_at_start` of the `init` stage: what the
//!   process held before the trainer existed.
//!
//! Why a sampling thread: the operating system gives the current RSS and the
//! process-lifetime peak (`VmHWM` on Linux), but no peak over an interval.
//! HF runs a thread that reads RSS in a busy loop from `start` to `stop`,
//! which keeps one core at 100% for the whole of training. Here the thread
//! reads RSS about once a millisecond and blocks in between, so it costs a
//! few percent of one core. A spike shorter than the interval can slip
//! between two reads; on Linux that is covered whenever the spike set a new
//! process high-water mark, since a `VmHWM` that rose during the stage is the
//! stage's exact peak.
//!
//! How RSS is read: on Linux, from `/proc/self/status` (`VmRSS`, and `VmHWM`
//! for the peak, in one read of some 20 to 40 µs); elsewhere, and on Linux if
//! `/proc` cannot be read, through `sysinfo`, refreshing only this process's
//! memory. Not `sysinfo` on Linux too: the version that builds on taper's
//! minimum Rust (0.36) lists all of `/proc` even when asked for one process,
//! about 0.6 ms a read, which at one read a millisecond would take most of a
//! core.
//!
//! Semantics follow HF: only one stage is tracked at a time, so an
//! `evaluate` run inside `train` is not tracked separately (its `start` and
//! its `stop` are ignored, and no `eval_mem_*` keys are added); and the
//! `init` stage, which has no metrics of its own to return, can be stopped
//! with [`MemoryTracker::stop`] and is then reported with the first stage
//! that updates metrics. There is no garbage collector to run before reading
//! as HF does: Rust and candle free memory as soon as it is dropped.
//!
//! GPU memory (the `cuda` feature): each GPU on which this process has a
//! CUDA context appears in [`MemorySnapshot::gpus`], and the stages add
//! HF's `{stage}_mem_gpu_alloc_delta`, `{stage}_mem_gpu_peaked_delta` and
//! `before_init_mem_gpu`, with the same formulas, for the process's first
//! GPU (HF reports the current device). candle keeps no allocator
//! statistics, so "used" is the driver's `total - free`
//! (`cuMemGetInfo`): everything resident on the device, which counts this
//! process's CUDA context (some 500 MB) and cached memory pools, and any
//! other process on the same GPU, unlike PyTorch's `memory_allocated`,
//! which counts live tensors only. The peak is the highest such reading:
//! the sampling thread reads it every [`GPU_SAMPLE_EVERY`] RSS samples, and
//! every [`snapshot`] updates it. Since [`crate::device`] keeps freed GPU
//! memory cached in the CUDA pool, used memory rarely shrinks: a stage's
//! `alloc_delta` is then what its peak added to the cache, and
//! `peaked_delta` stays near 0 (PyTorch's `memory_reserved` behaves alike).
//! Without the feature `gpus` is empty and no `*_gpu_*` metric appears.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::metrics::Metrics;

/// How often the sampling thread reads RSS while a stage runs.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(1);

/// The sampling thread reads GPU memory once every this many RSS reads:
/// a driver call that takes a lock the training thread's launches also
/// take is not worth making every millisecond, and activation peaks last
/// much longer than 5 ms.
pub const GPU_SAMPLE_EVERY: u32 = 5;

/// The highest RSS any read in this process has seen: the process peak where
/// the operating system does not report one.
static OBSERVED_PEAK: AtomicU64 = AtomicU64::new(0);

/// A stage of the trainer's work, as HF names them in its memory metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Building the trainer (`init`).
    Init,
    /// `train` (`train`).
    Train,
    /// `evaluate` (`eval`).
    Eval,
    /// `predict` (`test`).
    Test,
}

impl Stage {
    /// The metric prefix: `"init"`, `"train"`, `"eval"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Init => "init",
            Stage::Train => "train",
            Stage::Eval => "eval",
            Stage::Test => "test",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Memory of one GPU (the `cuda` feature); see [`MemorySnapshot::gpus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    /// The device ordinal.
    pub device: usize,
    /// Bytes in use on the device now (`total - free`: the whole device,
    /// CUDA context and memory pools included; see the module docs).
    pub used: u64,
    /// The most bytes in use on the device that this process has seen.
    pub peak: u64,
}

/// The process's memory at one moment, as returned by [`snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySnapshot {
    /// Resident set size now, in bytes (0 where it cannot be read).
    pub cpu_rss: u64,
    /// The process's peak resident set size, in bytes: `VmHWM` on Linux,
    /// elsewhere the highest RSS this module has read. Never below
    /// `cpu_rss`.
    pub cpu_peak_rss: u64,
    /// One entry per GPU this process has a CUDA context on, by ordinal.
    /// Empty without the `cuda` feature, or before the process used a GPU.
    pub gpus: Vec<GpuMemory>,
}

/// The current RSS and peak RSS of this process, and its GPUs' memory.
///
/// Cheap enough to poll several times a second: it refreshes only this
/// process's memory figures.
pub fn snapshot() -> MemorySnapshot {
    static READER: OnceLock<Mutex<RssReader>> = OnceLock::new();
    let cpu_rss = READER
        .get_or_init(|| Mutex::new(RssReader::new()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .read();
    MemorySnapshot {
        cpu_rss,
        cpu_peak_rss: process_peak_rss().max(cpu_rss),
        gpus: gpu_memory(),
    }
}

/// Used and peak memory of every GPU this process uses.
fn gpu_memory() -> Vec<GpuMemory> {
    gpu::used()
        .into_iter()
        .map(|(device, used)| GpuMemory {
            device,
            used,
            peak: gpu::record_peak(device, used),
        })
        .collect()
}

/// Used bytes of the process's first GPU (the one HF's metrics report).
fn first_gpu_used() -> Option<u64> {
    gpu::used().first().map(|&(device, used)| {
        gpu::record_peak(device, used);
        used
    })
}

/// GPU memory readings (the `cuda` feature).
mod gpu;

/// The process's peak RSS: `VmHWM` where the OS reports it, never below the
/// highest RSS this module has read.
fn process_peak_rss() -> u64 {
    let observed = OBSERVED_PEAK.load(Ordering::Relaxed);
    os_peak_rss().map_or(observed, |peak| peak.max(observed))
}

/// The process's peak RSS as the OS reports it: `VmHWM` on Linux.
fn os_peak_rss() -> Option<u64> {
    proc_status_field("VmHWM:")
}

/// A memory field of `/proc/self/status` (`"VmRSS:"`, `"VmHWM:"`), in bytes.
#[cfg(target_os = "linux")]
fn proc_status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // "VmHWM:\t  123456 kB"
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(not(target_os = "linux"))]
fn proc_status_field(_name: &str) -> Option<u64> {
    None
}

/// Reads this process's RSS: `VmRSS` on Linux, else `sysinfo`. Kept between
/// reads: `sysinfo`'s first read of a process costs more than the later ones.
struct RssReader {
    /// `sysinfo`'s state, made on the first read that needs it.
    system: Option<(System, Pid)>,
}

impl RssReader {
    fn new() -> Self {
        RssReader { system: None }
    }

    /// RSS in bytes, 0 if it cannot be read.
    fn read(&mut self) -> u64 {
        let rss = proc_status_field("VmRSS:").unwrap_or_else(|| self.read_sysinfo());
        OBSERVED_PEAK.fetch_max(rss, Ordering::Relaxed);
        rss
    }

    /// RSS through `sysinfo`, refreshing nothing but this process's memory.
    fn read_sysinfo(&mut self) -> u64 {
        if self.system.is_none() {
            let Ok(pid) = sysinfo::get_current_pid() else {
                return 0;
            };
            self.system = Some((System::new(), pid));
        }
        let (system, pid) = self.system.as_mut().expect("set above");
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[*pid]),
            false,
            ProcessRefreshKind::nothing().with_memory(),
        );
        system.process(*pid).map_or(0, |p| p.memory())
    }
}

/// What the sampling thread saw: the highest RSS, and the highest used
/// memory of the first GPU (`None` while the process used none).
#[derive(Debug, Clone, Copy, Default)]
struct Peaks {
    rss: u64,
    gpu: Option<u64>,
}

/// The thread that samples RSS (and GPU memory) while a stage runs. It gives
/// back its reader and the peaks it saw when joined.
struct Sampler {
    stop: Sender<()>,
    handle: JoinHandle<(RssReader, Peaks)>,
}

impl Sampler {
    fn spawn(mut reader: RssReader, floor: Peaks) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name("taper-memory-sampler".into())
            .spawn(move || {
                let mut peak = floor;
                for sample in 0u32.. {
                    peak.rss = peak.rss.max(reader.read());
                    if sample % GPU_SAMPLE_EVERY == 0 {
                        if let Some(used) = first_gpu_used() {
                            peak.gpu = Some(peak.gpu.unwrap_or(0).max(used));
                        }
                    }
                    match stopped.recv_timeout(SAMPLE_INTERVAL) {
                        Err(RecvTimeoutError::Timeout) => {}
                        // Told to stop, or the tracker is gone.
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                (reader, peak)
            })
            .expect("spawning the memory sampler thread");
        Sampler { stop, handle }
    }

    /// Stops the thread; returns its reader and the peaks it saw.
    fn join(self) -> (RssReader, Peaks) {
        let _ = self.stop.send(());
        match self.handle.join() {
            Ok(result) => result,
            // The sampler cannot panic short of a bug in sysinfo; carry on
            // with a fresh reader and no samples rather than failing training.
            Err(_) => (RssReader::new(), Peaks::default()),
        }
    }
}

/// What a tracked stage measured at its start.
struct Running {
    stage: Stage,
    rss_at_start: u64,
    hwm_at_start: Option<u64>,
    gpu_at_start: Option<u64>,
    sampler: Sampler,
}

/// What a finished stage measured, as HF's `self.cpu[stage]` (and
/// `self.gpu[stage]` when the process uses a GPU).
#[derive(Debug, Clone, Copy)]
struct StageMemory {
    begin: u64,
    alloc: i64,
    peaked: u64,
    gpu: Option<GpuStage>,
}

/// A stage's GPU figures, with HF's formulas over used device memory.
#[derive(Debug, Clone, Copy)]
struct GpuStage {
    begin: u64,
    alloc: i64,
    peaked: u64,
}

/// Tracks the CPU memory of the trainer's stages and adds HF's memory
/// metrics to a stage's metrics: see the [module docs](self).
///
/// ```
/// use taper::memory::{MemoryTracker, Stage};
/// use taper::metrics::Metrics;
///
/// let mut tracker = MemoryTracker::new(false);
/// tracker.start(Stage::Train);
/// let buffer = vec![1u8; 1 << 20];
/// let mut metrics = Metrics::new();
/// tracker.stop_and_update_metrics(Stage::Train, &mut metrics);
/// assert!(metrics.contains_key("train_mem_cpu_alloc_delta"));
/// assert!(metrics.contains_key("train_mem_cpu_peaked_delta"));
/// # drop(buffer);
/// ```
pub struct MemoryTracker {
    skip: bool,
    /// Idle reader; `None` while a sampler holds it (or when skipping).
    reader: Option<RssReader>,
    running: Option<Running>,
    done: HashMap<Stage, StageMemory>,
    init_reported: bool,
}

impl fmt::Debug for MemoryTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTracker")
            .field("skip", &self.skip)
            .field("running", &self.running.as_ref().map(|r| r.stage))
            .field("done", &self.done)
            .field("init_reported", &self.init_reported)
            .finish()
    }
}

impl MemoryTracker {
    /// A tracker; with `skip_memory_metrics` (HF's argument of that name)
    /// every method is a no-op that reads nothing and adds no metrics.
    pub fn new(skip_memory_metrics: bool) -> Self {
        MemoryTracker {
            skip: skip_memory_metrics,
            reader: (!skip_memory_metrics).then(RssReader::new),
            running: None,
            done: HashMap::new(),
            init_reported: false,
        }
    }

    /// Starts tracking `stage`: reads RSS and starts the sampling thread.
    ///
    /// As in HF, if another stage is already being tracked (`evaluate`
    /// inside `train`), this call and the matching stop are ignored. Starting
    /// the stage that is already running starts its measurement again.
    pub fn start(&mut self, stage: Stage) {
        if self.skip {
            return;
        }
        match &self.running {
            Some(running) if running.stage != stage => return,
            Some(_) => {
                let previous = self.running.take().expect("checked above");
                self.reader = Some(previous.sampler.join().0);
            }
            None => {}
        }
        let mut reader = self.reader.take().unwrap_or_else(RssReader::new);
        let hwm_at_start = os_peak_rss();
        let rss_at_start = reader.read();
        let gpu_at_start = first_gpu_used();
        self.running = Some(Running {
            stage,
            rss_at_start,
            hwm_at_start,
            gpu_at_start,
            sampler: Sampler::spawn(
                reader,
                Peaks {
                    rss: rss_at_start,
                    gpu: gpu_at_start,
                },
            ),
        });
    }

    /// Stops tracking `stage` without adding metrics: HF's
    /// `stop_and_update_metrics()` without a metrics dict, which its trainer
    /// uses for `init`. The stage's figures are kept, and for `init` they are
    /// added to the metrics of the next stage that updates metrics.
    ///
    /// Ignored unless `stage` is the stage being tracked.
    pub fn stop(&mut self, stage: Stage) {
        if self.skip {
            return;
        }
        let Some(running) = self.running.take_if(|r| r.stage == stage) else {
            return;
        };
        let (mut reader, sampled) = running.sampler.join();
        let rss_now = reader.read();
        let gpu_now = first_gpu_used();
        self.reader = Some(reader);
        // A high-water mark that rose during the stage was reached during
        // it: it is then the stage's exact peak, even if the sampler missed
        // the moment.
        let hwm_peak = match (running.hwm_at_start, os_peak_rss()) {
            (Some(before), Some(after)) if after > before => after,
            _ => 0,
        };
        let peak = sampled.rss.max(hwm_peak);
        // A stage that created the CUDA context started from 0 on the GPU.
        let gpu = gpu_now.map(|now| {
            let begin = running.gpu_at_start.unwrap_or(0);
            GpuStage {
                begin,
                alloc: now as i64 - begin as i64,
                peaked: sampled.gpu.unwrap_or(0).max(now).saturating_sub(now),
            }
        });
        self.done.insert(
            stage,
            StageMemory {
                begin: running.rss_at_start,
                alloc: rss_now as i64 - running.rss_at_start as i64,
                peaked: peak.saturating_sub(rss_now),
                gpu,
            },
        );
    }

    /// Stops tracking `stage` and adds its memory metrics, in bytes:
    /// `{stage}_mem_cpu_alloc_delta` and `{stage}_mem_cpu_peaked_delta`.
    ///
    /// As in HF, the first call that adds metrics also adds `init`'s figures
    /// if `init` was tracked and not yet reported (`init_mem_cpu_*` and
    /// `before_init_mem_cpu`, the RSS when `init` started); calling this
    /// with [`Stage::Init`] reports them at once. Does nothing unless
    /// `stage`'s start was the one tracked.
    pub fn stop_and_update_metrics(&mut self, stage: Stage, metrics: &mut Metrics) {
        if self.skip || self.running.as_ref().map(|r| r.stage) != Some(stage) {
            return;
        }
        self.stop(stage);
        self.update_metrics(stage, metrics);
    }

    /// HF's `update_metrics`: this stage's deltas, preceded by `init`'s the
    /// first time.
    fn update_metrics(&mut self, stage: Stage, metrics: &mut Metrics) {
        let report_init = !self.init_reported && self.done.contains_key(&Stage::Init);
        let stages: &[Stage] = match (report_init, stage) {
            (false, _) => &[stage],
            (true, Stage::Init) => &[Stage::Init],
            (true, _) => &[Stage::Init, stage],
        };
        for &s in stages {
            if let Some(memory) = self.done.get(&s) {
                metrics.insert(format!("{s}_mem_cpu_alloc_delta"), memory.alloc as f64);
                metrics.insert(format!("{s}_mem_cpu_peaked_delta"), memory.peaked as f64);
                if let Some(gpu) = memory.gpu {
                    metrics.insert(format!("{s}_mem_gpu_alloc_delta"), gpu.alloc as f64);
                    metrics.insert(format!("{s}_mem_gpu_peaked_delta"), gpu.peaked as f64);
                }
            }
        }
        if report_init {
            self.init_reported = true;
            let init = self.done[&Stage::Init];
            metrics.insert("before_init_mem_cpu".to_string(), init.begin as f64);
            if let Some(gpu) = init.gpu {
                metrics.insert("before_init_mem_gpu".to_string(), gpu.begin as f64);
            }
        }
    }
}

impl Drop for MemoryTracker {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.sampler.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `/proc` path and the `sysinfo` path read the same counter.
    #[test]
    #[cfg(target_os = "linux")]
    fn proc_and_sysinfo_agree() {
        let mut reader = RssReader::new();
        let from_proc = proc_status_field("VmRSS:").expect("VmRSS");
        let from_sysinfo = reader.read_sysinfo();
        assert!(from_proc > 0 && from_sysinfo > 0);
        let difference = from_proc.abs_diff(from_sysinfo);
        assert!(difference < 16 << 20, "{from_proc} vs {from_sysinfo}");
        let peak = os_peak_rss().expect("VmHWM");
        assert!(peak >= from_proc, "{peak} < {from_proc}");
    }
}
