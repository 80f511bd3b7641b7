//! Dtype casts between f32 and bf16 or f16 on a GPU, differentiable (the
//! gradient is cast back the same way).
//!
//! Why: mixed precision casts every linear layer's input and weights to
//! bf16 and the blocks' outputs back to the f32 residual stream, and the
//! backward casts their gradients the other way: 74 casts each way a step
//! of the reference GPT. candle's bf16 -> f32 kernel stores its floats one
//! by one with a 32-byte stride between threads and ran at about a fifth of
//! the memory bandwidth: 2 ms of a 23 ms step on an H200
//! (notes/gpu-performance.md, optimisation 11). `kernels/cast.cu` moves
//! four elements a thread in one vector load and one vector store. Other
//! pairs of dtypes, the CPU and tensors that are not contiguous keep
//! candle's `to_dtype`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use crate::error::Result;

/// `x` in `dtype`, through taper's kernels where they cover the pair of
/// dtypes (f32 with bf16 or f16) on a GPU, and candle's `to_dtype`
/// otherwise. Differentiable: the gradient comes back in `x`'s dtype.
///
/// ```
/// # use candle_core::{DType, Device, Tensor};
/// let x = Tensor::new(&[1.5f32, -2.0], &Device::Cpu).unwrap();
/// let y = taper::ops::cast(&x, DType::BF16).unwrap();
/// assert_eq!(y.dtype(), DType::BF16);
/// ```
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    if x.dtype() == dtype {
        return Ok(x.clone());
    }
    if !x.device().is_cuda() || !has_kernel(x.dtype(), dtype) {
        return Ok(x.to_dtype(dtype)?);
    }
    Ok(x.apply_op1(Cast { to: dtype })?)
}

/// Whether `kernels/cast.cu` casts `from` to `to`.
fn has_kernel(from: DType, to: DType) -> bool {
    use DType::{BF16, F16, F32};
    matches!((from, to), (BF16 | F16, F32) | (F32, BF16 | F16))
}

struct Cast {
    to: DType,
}

impl CustomOp1 for Cast {
    fn name(&self) -> &'static str {
        "taper-cast"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((storage.to_dtype(layout, self.to)?, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let out = match cuda::cast(storage, layout, self.to)? {
            Some(out) => out,
            None => storage.to_dtype(layout, self.to)?,
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad =
            cast(grad_res, arg.dtype()).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(Some(grad))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The launches of `kernels/cast.cu`.

    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaStorageSlice as S, WrapErr};
    use candle_core::{CudaDevice, CudaStorage, DType, Layout};

    use crate::ops::grid_stride_config;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/cast.ptx"));

    /// The kernel `name` from `src` (elements `start..end`) into a new `D`
    /// slice, or `None` where the start is not aligned for its vector
    /// loads (views into the middle of a tensor).
    fn launch<S: DeviceRepr, D: DeviceRepr>(
        dev: &CudaDevice,
        src: &CudaSlice<S>,
        (start, end): (usize, usize),
        name: &str,
    ) -> candle_core::Result<Option<CudaSlice<D>>> {
        if start % 4 != 0 {
            return Ok(None);
        }
        let n = end - start;
        let src = src.slice(start..end);
        let func = dev.get_or_load_custom_func(name, "taper_cast", PTX)?;
        // SAFETY: the kernel writes every element.
        let dst = unsafe { dev.alloc::<D>(n)? };
        let mut builder = func.builder();
        builder.arg(&src);
        builder.arg(&dst);
        candle_core::builder_arg!(builder, n as i64);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { builder.launch(grid_stride_config(n.div_ceil(4))) }.w()?;
        Ok(Some(dst))
    }

    /// `storage` cast to `to` by taper's kernel, or `None` where it has none
    /// for the pair, the layout or the alignment.
    pub fn cast(
        storage: &CudaStorage,
        layout: &Layout,
        to: DType,
    ) -> candle_core::Result<Option<CudaStorage>> {
        let Some(range) = layout.contiguous_offsets() else {
            return Ok(None);
        };
        let dev = storage.device.clone();
        let slice = match (&storage.slice, to) {
            (S::BF16(s), DType::F32) => launch(&dev, s, range, "cast_bf16_f32")?.map(S::F32),
            (S::F16(s), DType::F32) => launch(&dev, s, range, "cast_f16_f32")?.map(S::F32),
            (S::F32(s), DType::BF16) => launch(&dev, s, range, "cast_f32_bf16")?.map(S::BF16),
            (S::F32(s), DType::F16) => launch(&dev, s, range, "cast_f32_f16")?.map(S::F16),
            _ => None,
        };
        Ok(slice.map(|slice| CudaStorage { slice, device: dev }))
    }
}
