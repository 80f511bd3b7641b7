//! Which device to train on, as Hugging Face's `TrainingArguments.device`
//! decides it: the GPU of this process's `LOCAL_RANK` when taper is built
//! with the `cuda` feature and the machine has a GPU, unless `use_cpu`; the
//! CPU otherwise.
//!
//! The Trainer itself trains wherever the model's parameters are (a person
//! builds the model on a device); [`select`] is what the built-in recipes
//! (`taper train`), the benchmarks and a notebook use to pick that device.
//!
//! candle compares devices by identity, not by ordinal: two
//! `Device::new_cuda(0)` are different devices, and a tensor of one cannot
//! meet a tensor of the other. [`select`] therefore creates each GPU's
//! device once and hands out that one every time.
//!
//! GPU memory: candle allocates through CUDA's stream-ordered allocator
//! (`cuMemAllocAsync`), whose pool by default gives every freed byte back
//! to the driver at each synchronisation, and training synchronises often
//! (a loop reading its loss every step, the Trainer at every log). The next
//! step then maps all its memory anew, which was suspected of costing the
//! reference GPT more time than its matrix products; measured, a few
//! percent on loops that synchronise several times a step
//! (notes/gpu-performance-calls-1-3.md). [`gpu`] therefore keeps freed memory
//! cached in the pool ([`set_gpu_memory_caching`]), as PyTorch's caching
//! allocator does; the device's used memory then includes that cache.

use candle_core::Device;

use crate::args::TrainingArguments;
use crate::error::Result;

/// The device to train on for `args`: CUDA device `LOCAL_RANK` (0 when
/// unset) when built with the `cuda` feature and a GPU is present, unless
/// `args.use_cpu`; the CPU otherwise.
///
/// A `LOCAL_RANK` beyond the GPUs present is an error, not a silent fall
/// back to the CPU: a launcher that starts more processes than GPUs is
/// misconfigured.
///
/// ```
/// let args = taper::TrainingArguments::builder().use_cpu(true).build().unwrap();
/// assert!(taper::device::select(&args).unwrap().is_cpu());
/// ```
pub fn select(args: &TrainingArguments) -> Result<Device> {
    if args.use_cpu {
        return Ok(Device::Cpu);
    }
    let local_rank = crate::dist::DistEnv::from_env()?.local_rank;
    gpu(local_rank).map(|gpu| gpu.unwrap_or(Device::Cpu))
}

/// Applies HF's `tf32` argument for a run on `device`: `Some(true)` lets
/// f32 matrix products use TF32 tensor cores (inputs rounded to a 10-bit
/// mantissa, products accumulated in f32: about 3x the speed on an H100 or
/// H200, and results that differ from f32's in the fourth digit),
/// `Some(false)` turns that off, `None` leaves the process's setting. The
/// setting is the process's (candle's, as PyTorch's
/// `torch.backends.cuda.matmul.allow_tf32`), not the device's.
///
/// ```
/// # use candle_core::Device;
/// taper::device::set_tf32(&Device::Cpu, None).unwrap();
/// assert!(taper::device::set_tf32(&Device::Cpu, Some(true)).is_err());
/// ```
pub fn set_tf32(device: &Device, tf32: Option<bool>) -> Result<()> {
    let Some(on) = tf32 else {
        return Ok(());
    };
    if !device.is_cuda() {
        if on {
            return Err(crate::error::Error::Config(
                "tf32 needs an NVIDIA GPU (Ampere or newer) and taper built with the `cuda` \
                 feature, and this run is on the CPU; leave tf32 unset, or train on a GPU"
                    .into(),
            ));
        }
        return Ok(());
    }
    #[cfg(feature = "cuda")]
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(on);
    Ok(())
}

/// The GPU `ordinal` (one candle device per ordinal for the whole process),
/// `None` when there is no GPU or taper was built without `cuda`.
#[cfg(feature = "cuda")]
pub fn gpu(ordinal: usize) -> Result<Option<Device>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use candle_core::cuda_backend::cudarc::driver::CudaContext;

    static DEVICES: OnceLock<Mutex<HashMap<usize, Device>>> = OnceLock::new();
    // No driver, or a driver without devices: a CPU machine running a CUDA build.
    let count = CudaContext::device_count().unwrap_or(0).max(0) as usize;
    if count == 0 {
        return Ok(None);
    }
    if ordinal >= count {
        return Err(crate::error::Error::Config(format!(
            "LOCAL_RANK {ordinal} asks for GPU {ordinal}, but this machine has {count}; \
             start at most {count} processes per node, or set use_cpu"
        )));
    }
    let mut devices = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(device) = devices.get(&ordinal) {
        return Ok(Some(device.clone()));
    }
    let device = Device::new_cuda(ordinal)?;
    set_gpu_memory_caching(ordinal, true)?;
    devices.insert(ordinal, device.clone());
    Ok(Some(device))
}

/// Whether memory freed on GPU `ordinal` stays cached in its CUDA memory
/// pool for reuse (`true`: release threshold "never") or goes back to the
/// driver at every synchronisation (`false`: CUDA's default). [`gpu`] turns
/// caching on; a model built on a `Device::new_cuda` of its own can call
/// this too. A no-op without the `cuda` feature.
#[cfg(feature = "cuda")]
pub fn set_gpu_memory_caching(ordinal: usize, cache: bool) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let mut threshold: u64 = if cache { u64::MAX } else { 0 };
    // SAFETY: the pool comes from the driver, and the attribute's value is
    // the u64 it expects.
    unsafe {
        sys::cuMemPoolSetAttribute(
            default_mem_pool(ordinal)?,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()
        .map_err(candle_core::Error::wrap)?;
    }
    Ok(())
}

/// The CUDA memory pool candle allocates from on GPU `ordinal` (the
/// device's default pool).
#[cfg(feature = "cuda")]
fn default_mem_pool(
    ordinal: usize,
) -> Result<candle_core::cuda_backend::cudarc::driver::sys::CUmemoryPool> {
    use candle_core::cuda_backend::cudarc::driver::result;
    // SAFETY: the device handle comes from the driver for this ordinal.
    let pool = unsafe {
        let device = result::device::get(ordinal as i32).map_err(candle_core::Error::wrap)?;
        result::device::get_mem_pool(device).map_err(candle_core::Error::wrap)?
    };
    Ok(pool)
}

/// The most memory that taper's tensors on GPU `ordinal` have held at
/// once since the process started: the high-water mark of the CUDA memory
/// pool candle allocates from, which counts live allocations only (not the
/// pool's cache, the CUDA context or cuBLAS's workspace): the figure to set
/// beside PyTorch's `torch.cuda.max_memory_allocated`. `None` without the
/// `cuda` feature.
#[cfg(feature = "cuda")]
pub fn gpu_memory_peak(ordinal: usize) -> Result<Option<u64>> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let mut bytes: u64 = 0;
    // SAFETY: the pool comes from the driver, and the attribute is a u64.
    unsafe {
        sys::cuMemPoolGetAttribute(
            default_mem_pool(ordinal)?,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            (&mut bytes as *mut u64).cast(),
        )
        .result()
        .map_err(candle_core::Error::wrap)?;
    }
    Ok(Some(bytes))
}

/// Without the `cuda` feature there is no GPU memory.
#[cfg(not(feature = "cuda"))]
pub fn gpu_memory_peak(ordinal: usize) -> Result<Option<u64>> {
    let _ = ordinal;
    Ok(None)
}

/// Without the `cuda` feature there is no GPU memory to cache.
#[cfg(not(feature = "cuda"))]
pub fn set_gpu_memory_caching(ordinal: usize, cache: bool) -> Result<()> {
    let _ = (ordinal, cache);
    Ok(())
}

/// Without the `cuda` feature there is never a GPU.
#[cfg(not(feature = "cuda"))]
pub fn gpu(ordinal: usize) -> Result<Option<Device>> {
    let _ = ordinal;
    Ok(None)
}

/// Waits until every queued operation on `device` has finished (a no-op on
/// the CPU): timings of GPU work are only true after it.
pub fn synchronize(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}
