//! Fused operations with a backward pass, for the hot spots of training.
//!
//! Why: candle's composed softmax (`max`, `sub`, `exp`, `sum`, `div`, each a
//! kernel, the broadcast ones through candle's strided path) and the casts
//! and mask around it cost the reference GPT about 10 ms per layer and step
//! on an H100, and keep five score-sized f32 tensors alive for the backward
//! pass (notes/gpu-performance.md); candle's fused `softmax_last_dim` has no
//! backward. [`attention_softmax`] does the scale, the causal mask and the
//! softmax in one kernel that reads and writes the scores' own dtype (bf16
//! under mixed precision) and computes in f32, and its backward,
//! `scale * y * (g - sum(g * y))`, in one more.
//!
//! [`cross_entropy_rows`] does the same for the loss: log-softmax and the
//! pick of the label's entry in one kernel, `softmax - onehot` in one more;
//! [`gelu`] for the MLP's activation, whose candle backward is about
//! fifteen element-wise kernels; [`layer_norm`] for the 13 layer norms,
//! whose composed form is about ten kernels each way; [`embedding`] for
//! the token and position embeddings, whose `index_add` backward is slow.
//!
//! [`causal_attention`] builds on the softmax: the heads split from the
//! fused q/k/v projection and merged back by one copy kernel each, and a
//! backward that recomputes the weights instead of keeping two score-sized
//! tensors a layer. [`bias_add`] is the linear layers' bias (one kernel
//! forward, one matrix product for the bias's gradient), [`cast`] mixed
//! precision's f32 <-> bf16/f16 casts (candle's bf16 -> f32 kernel ran at a
//! fifth of the memory bandwidth). [`linear`] and [`matmul`] run f32
//! matrix products as three TF32 tensor-core products on split inputs
//! (2.7x cuBLAS's FP32 error against an f64 product on an H200, 300x below
//! one TF32 product's), where cuBLAS's FP32 products held an f32 step.
//!
//! The CUDA kernels are taper's own (`kernels/*.cu`, compiled to PTX by
//! `build.rs` with the `cuda` feature). The CPU paths compute the same
//! things with plain loops; they are what the tests compare with the
//! composed ops. The models and the loss use the fused ops on a GPU only
//! ([`use_fused`]) and keep the composed ops on the CPU.

use candle_core::{DType, Layout};

mod attention;
mod bias_add;
mod cast;
mod cross_entropy;
mod embedding;
mod gelu;
mod heads;
mod layer_norm;
mod matmul;
mod softmax;

pub use attention::causal_attention;
pub use bias_add::bias_add;
pub use cast::cast;
pub use cross_entropy::cross_entropy_rows;
pub use embedding::embedding;
pub use gelu::gelu;
pub use layer_norm::layer_norm;
pub use matmul::{linear, matmul, split_pays};
pub use softmax::attention_softmax;

/// The fused ops that have not yet run on a GPU: off unless
/// `TAPER_FUSED_OPS` names them, until a device call has checked them
/// (notes/gpu-performance.md). None at present: `attention` and `bias_add`
/// were here until call 10 checked them.
pub const UNVERIFIED_ON_GPU: [&str; 0] = [];

/// Whether the op `name` (`attention`, `bias_add`, `cast`, `softmax`,
/// `cross_entropy`, `gelu`, `layer_norm`, `embedding`, `matmul` for f32
/// matrix products, or `adamw` for the optimizer's update) runs fused for a
/// tensor of `dtype` on `device`: on a GPU, for f32, bf16 and f16, unless
/// the environment variable `TAPER_COMPOSED_OPS` names it (a comma list, or
/// `all`), which brings candle's composed ops back, to measure the
/// difference or to rule a kernel out. The ops of [`UNVERIFIED_ON_GPU`] run
/// fused only where `TAPER_FUSED_OPS` (a comma list, or `all`) names them.
pub fn use_fused(name: &str, device: &candle_core::Device, dtype: DType) -> bool {
    static COMPOSED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    static OPTED_IN: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let composed = COMPOSED.get_or_init(|| env_list("TAPER_COMPOSED_OPS"));
    let named = |list: &[String]| list.iter().any(|c| c == name || c == "all");
    let allowed = !UNVERIFIED_ON_GPU.contains(&name)
        || named(OPTED_IN.get_or_init(|| env_list("TAPER_FUSED_OPS")));
    device.is_cuda() && fused_dtype(dtype) && allowed && !named(composed)
}

/// The comma-separated names in the environment variable `var`.
fn env_list(var: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

/// One block per row, about four elements per thread (32 to 1024 threads).
#[cfg(feature = "cuda")]
pub(crate) fn launch_config(
    rows: usize,
    cols: usize,
) -> candle_core::cuda_backend::cudarc::driver::LaunchConfig {
    let threads = cols.div_ceil(4).div_ceil(32).clamp(1, 32) * 32;
    candle_core::cuda_backend::cudarc::driver::LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid-stride launch for `n` elements: 256 threads a block, at most
/// 65535 blocks (the kernels loop over the rest).
#[cfg(feature = "cuda")]
pub(crate) fn grid_stride_config(
    n: usize,
) -> candle_core::cuda_backend::cudarc::driver::LaunchConfig {
    candle_core::cuda_backend::cudarc::driver::LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 65535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The element range of a contiguous `layout` for a GPU kernel of `op` on
/// `T`, or an error naming the op when taper has no kernel for `T` or the
/// tensor is not contiguous.
#[cfg(feature = "cuda")]
pub(crate) fn contiguous_range<T: candle_core::WithDType>(
    layout: &Layout,
    op: &str,
) -> candle_core::Result<(usize, usize)> {
    if !fused_dtype(T::DTYPE) {
        candle_core::bail!("{op} on the GPU: no {:?} kernel", T::DTYPE)
    }
    match layout.contiguous_offsets() {
        Some(range) => Ok(range),
        None => candle_core::bail!("{op}: taper's fused ops need contiguous tensors"),
    }
}

/// `CpuStorage` of `$a`'s float dtype holding `$body`, where `$x` and `$y`
/// are the contiguous elements of `$a` and `$b` (both of that dtype); an
/// error naming `$op`, `$a_name` and `$b_name` for other dtypes. The CPU
/// half of the fused ops that take two tensors (`$body` is expanded once a
/// dtype, so it may call generic functions).
macro_rules! map_float_pair {
    (
        $op:literal, ($a:expr, $a_layout:expr, $a_name:literal),
        ($b:expr, $b_layout:expr, $b_name:literal), |$x:ident, $y:ident| $body:expr
    ) => {{
        use candle_core::CpuStorage as S;
        use $crate::ops::contiguous as c;
        match ($a, $b) {
            (S::F32(a), S::F32(b)) => {
                let ($x, $y) = (c(a, $a_layout)?, c(b, $b_layout)?);
                S::F32($body)
            }
            (S::F64(a), S::F64(b)) => {
                let ($x, $y) = (c(a, $a_layout)?, c(b, $b_layout)?);
                S::F64($body)
            }
            (S::BF16(a), S::BF16(b)) => {
                let ($x, $y) = (c(a, $a_layout)?, c(b, $b_layout)?);
                S::BF16($body)
            }
            (S::F16(a), S::F16(b)) => {
                let ($x, $y) = (c(a, $a_layout)?, c(b, $b_layout)?);
                S::F16($body)
            }
            (a, b) => candle_core::bail!(
                "{}: {:?} {} with {:?} {}",
                $op,
                a.dtype(),
                $a_name,
                b.dtype(),
                $b_name
            ),
        }
    }};
}
pub(crate) use map_float_pair;

/// The contiguous elements of `layout` in `data`.
pub(crate) fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("taper's fused ops need contiguous tensors"),
    }
}

/// The length of the last dimension (the rows' length).
pub(crate) fn last_dim(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1)
}

/// Whether taper's own GPU kernels support `dtype`.
pub fn fused_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}
