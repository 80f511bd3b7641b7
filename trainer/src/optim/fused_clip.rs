//! The global gradient norm's sum of squares as one CUDA kernel a tensor
//! (`kernels/clip.cu`), which adds into a single f32 scalar on the GPU. The
//! composed sum (square, sum, then an add into the running total: three
//! launches a tensor, about 450 a step for the reference GPT) stays on the
//! CPU, where exact-resume tests pin its results bit for bit, and wherever
//! the fused AdamW does not apply (`TAPER_COMPOSED_OPS=adamw` brings both
//! back on the GPU).

use candle_core::{DType, Tensor};

use crate::error::Result;

/// Whether the fused kernel adds `grad`'s squares: as for the fused AdamW,
/// a `cuda` build, a GPU, f32, unless `TAPER_COMPOSED_OPS` names `adamw`.
pub(crate) fn applies(grad: &Tensor) -> bool {
    cfg!(feature = "cuda")
        && grad.dtype() == DType::F32
        && crate::ops::use_fused("adamw", grad.device(), DType::F32)
}

/// Adds the sum of `grad`'s squares into `total`, an f32 scalar on the same
/// GPU that belongs to the caller alone (it is written in place; one kernel
/// launch, ordered on the device's stream).
#[cfg(feature = "cuda")]
pub(crate) fn add_sum_of_squares(total: &Tensor, grad: &Tensor) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;

    use super::fused_adamw::view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/clip.ptx"));

    let n = grad.elem_count();
    if n == 0 {
        return Ok(());
    }
    let grad = grad.contiguous()?;
    let (g_storage, g_layout) = grad.storage_and_layout();
    let (t_storage, t_layout) = total.storage_and_layout();
    let (cuda, g) = view(&g_storage, g_layout, n)?;
    let (_, t) = view(&t_storage, t_layout, 1)?;
    let func = cuda
        .device
        .get_or_load_custom_func("sum_squares_f32", "taper_clip", PTX)?;
    let mut builder = func.builder();
    builder.arg(&g);
    candle_core::builder_arg!(builder, n as i64);
    builder.arg(&t);
    // A grid-stride loop, about four elements a thread; at most 1024 blocks,
    // so at most 1024 atomic adds into the total a tensor.
    let config = LaunchConfig {
        grid_dim: (n.div_ceil(1024).clamp(1, 1024) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's signature; `g` holds n f32, `t` one.
    unsafe { builder.launch(config) }.w()?;
    Ok(())
}

/// Without the `cuda` feature [`applies`] is false and this is never called.
#[cfg(not(feature = "cuda"))]
pub(crate) fn add_sum_of_squares(_: &Tensor, _: &Tensor) -> Result<()> {
    unreachable!("the fused gradient norm needs the `cuda` feature")
}
