//! AdamW's update of one parameter tensor as one CUDA kernel
//! (`kernels/adamw.cu`): parameter, moments and weight decay in a single
//! pass over f32 memory, where the composed update runs about fifteen
//! element-wise kernels a tensor (10-12.6 ms a step for the reference GPT's
//! 55M parameters on an H200, notes/gpu-performance.md; PyTorch's fused
//! AdamW takes about 1 ms). The CPU keeps the composed update, whose
//! results exact-resume tests pin bit for bit; `TAPER_COMPOSED_OPS=adamw`
//! brings the composed update back on the GPU, to measure the difference.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// The scalars of one step, shared by every tensor (see `kernels/adamw.cu`).
// Without `cuda` only the composed update runs, which reads none of them.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepScalars {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// `1 - lr * weight_decay` (1 for parameters without decay).
    pub keep: f64,
    /// What `m / denom` is multiplied by.
    pub step_size: f64,
    /// What `sqrt(v)` is divided by (1 for `adamw_hf`).
    pub sqrt_bc2: f64,
    /// `adamw_hf`: decay after the update.
    pub decay_after: bool,
}

/// Whether the fused kernel updates `param` with `grad`: in a `cuda` build,
/// on a GPU, both in f32, unless `TAPER_COMPOSED_OPS` names `adamw`.
pub(crate) fn applies(param: &Tensor, grad: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && param.dtype() == DType::F32
        && grad.dtype() == DType::F32
        && crate::ops::use_fused("adamw", param.device(), DType::F32)
}

/// Updates `param`, `m` and `v` in place (one kernel launch), with the
/// gradient multiplied by `clip` (an f32 scalar on the GPU: clipping's
/// coefficient, see `Gradients::clip_global_norm_deferred`) where given.
///
/// The moments belong to the optimizer alone, and the parameter is a
/// `Var`, which candle also updates in place (`Var::set`); the launch is
/// ordered on the device's stream after whatever wrote them.
#[cfg(feature = "cuda")]
pub(crate) fn update(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    clip: Option<&Tensor>,
    s: &StepScalars,
) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/adamw.ptx"));

    let n = param.elem_count();
    let grad = grad.contiguous()?;
    // Read guards only: the kernel writes device memory, which no host
    // reference points into; the guards keep the storages alive meanwhile.
    let (p_storage, p_layout) = param.storage_and_layout();
    let (g_storage, g_layout) = grad.storage_and_layout();
    let (m_storage, m_layout) = m.storage_and_layout();
    let (v_storage, v_layout) = v.storage_and_layout();
    let clip_guard = clip.map(Tensor::storage_and_layout);
    let (cuda, p) = view(&p_storage, p_layout, n)?;
    let (_, g) = view(&g_storage, g_layout, n)?;
    let (_, m) = view(&m_storage, m_layout, n)?;
    let (_, v) = view(&v_storage, v_layout, n)?;
    let clip = match &clip_guard {
        Some((storage, layout)) => Some(view(storage, layout, 1)?.1),
        None => None,
    };
    // The kernel reads no coefficient through a null pointer.
    let null: u64 = 0;
    let func = cuda
        .device
        .get_or_load_custom_func("adamw_f32", "taper_adamw", PTX)?;
    let mut builder = func.builder();
    builder.arg(&p);
    builder.arg(&g);
    builder.arg(&m);
    builder.arg(&v);
    match &clip {
        Some(clip) => builder.arg(clip),
        None => builder.arg(&null),
    };
    candle_core::builder_arg!(
        builder,
        n as i64,
        s.beta1 as f32,
        (1.0 - s.beta1) as f32,
        s.beta2 as f32,
        (1.0 - s.beta2) as f32,
        s.eps as f32,
        s.keep as f32,
        s.step_size as f32,
        s.sqrt_bc2 as f32,
        i32::from(s.decay_after)
    );
    // A grid-stride loop: 256 threads a block, at most 65535 blocks.
    let config = LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 65535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's signature; the four views hold
    // n f32 each, the coefficient's one (or the pointer is null).
    unsafe { builder.launch(config) }.w()?;
    Ok(())
}

/// The f32 elements of a contiguous GPU tensor of `n` elements, with its
/// storage (which holds the device).
#[cfg(feature = "cuda")]
pub(super) fn view<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
    n: usize,
) -> candle_core::Result<(
    &'a candle_core::CudaStorage,
    candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>,
)> {
    let candle_core::Storage::Cuda(storage) = storage else {
        candle_core::bail!("fused AdamW: a tensor is not on the GPU")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) if end - start == n => {
            Ok((storage, storage.as_cuda_slice::<f32>()?.slice(start..end)))
        }
        _ => candle_core::bail!("fused AdamW needs contiguous tensors of one size"),
    }
}

/// Without the `cuda` feature [`applies`] is false and this is never called.
#[cfg(not(feature = "cuda"))]
pub(crate) fn update(
    _: &Tensor,
    _: &Tensor,
    _: &Tensor,
    _: &Tensor,
    _: Option<&Tensor>,
    _: &StepScalars,
) -> Result<()> {
    unreachable!("fused AdamW needs the `cuda` feature")
}
