//! The linear layers' bias add, `x + b` over rows, with a backward that
//! does not go through candle's broadcast machinery.
//!
//! Why: candle's `broadcast_add` indexes every element through its generic
//! strided path, and the backward of a broadcast sums the gradient over the
//! broadcast dimensions with a slow strided reduction. Together they were
//! about 6 ms of a 32 ms bf16 step of the reference GPT on an H200
//! (notes/gpu-performance.md, optimisation 10). Here the forward is one
//! element-wise kernel, the input's gradient is the output's, and the
//! bias's gradient is one matrix product, `ones(1, rows) @ g`, which cuBLAS
//! does at memory speed and accumulates in f32 for bf16 and f16.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, WithDType};

use super::{last_dim, map_float_pair};
use crate::error::{Error, Result};

/// `x + bias` where `bias` has `x`'s last dimension, differentiable in both,
/// in `x`'s dtype (f32, f64, bf16 or f16; `bias` must have the same) with
/// the arithmetic in f32.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
/// let b = Tensor::new(&[10f32, 20.0], &Device::Cpu).unwrap();
/// let y = taper::ops::bias_add(&x, &b).unwrap();
/// assert_eq!(y.to_vec2::<f32>().unwrap(), [[11.0, 22.0], [13.0, 24.0]]);
/// ```
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let cols = x.dims().last().copied().unwrap_or(1);
    if bias.dims() != [cols] || bias.dtype() != x.dtype() {
        return Err(Error::Usage(format!(
            "bias_add needs a bias of shape [{cols}] and dtype {:?} for x of shape {:?}, \
             got {:?} {:?}",
            x.dtype(),
            x.dims(),
            bias.dims(),
            bias.dtype()
        )));
    }
    Ok(x.contiguous()?.apply_op2(&bias.contiguous()?, BiasAdd)?)
}

struct BiasAdd;

fn cpu_bias_add<T: WithDType>(x: &[T], b: &[T]) -> Vec<T> {
    x.chunks(b.len())
        .flat_map(|row| {
            row.iter()
                .zip(b)
                .map(|(x, b)| T::from_f64(f64::from(x.to_f64() as f32 + b.to_f64() as f32)))
        })
        .collect()
}

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "taper-bias-add"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = map_float_pair!(
            "bias_add",
            (x, x_layout, "inputs"),
            (b, b_layout, "bias"),
            |x, b| cpu_bias_add(x, b)
        );
        Ok((out, x_layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        b: &candle_core::CudaStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::Map2;
        let device = x.device().clone();
        let slice = self.map(&x.slice, x_layout, &b.slice, b_layout, &device)?;
        Ok((
            candle_core::CudaStorage { slice, device },
            x_layout.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let cols = last_dim(x.layout());
        let rows = x.elem_count() / cols.max(1);
        let grad = grad_res.to_dtype(x.dtype())?;
        let ones = Tensor::ones((1, rows), grad.dtype(), grad.device())?;
        let grad_bias = ones
            .matmul(&grad.contiguous()?.reshape((rows, cols))?)?
            .reshape(cols)?;
        Ok((Some(grad), Some(grad_bias)))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The launch of `kernels/bias_add.cu`.

    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{kernel_name, Map2, WrapErr};
    use candle_core::{CudaDevice, Layout, WithDType};

    use super::BiasAdd;
    use crate::ops::contiguous_range;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/bias_add.ptx"));

    impl Map2 for BiasAdd {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            x: &CudaSlice<T>,
            x_layout: &Layout,
            b: &CudaSlice<T>,
            b_layout: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<CudaSlice<T>> {
            let (xs, xe) = contiguous_range::<T>(x_layout, "bias_add")?;
            let (bs, be) = contiguous_range::<T>(b_layout, "bias_add")?;
            let (n, cols) = (xe - xs, be - bs);
            let rows = n / cols.max(1);
            if cols > i32::MAX as usize {
                candle_core::bail!("bias_add: rows of {cols} are too long")
            }
            // Four elements a thread where rows and starts allow vector access.
            let by_four = cols % 4 == 0 && xs % 4 == 0 && bs % 4 == 0;
            let (name, per_thread) = if by_four {
                ("bias_add4", 4)
            } else {
                ("bias_add", 1)
            };
            let (x, b) = (x.slice(xs..xe), b.slice(bs..be));
            let func =
                dev.get_or_load_custom_func(&kernel_name::<T>(name), "taper_bias_add", PTX)?;
            // SAFETY: the kernel writes every element.
            let dst = unsafe { dev.alloc::<T>(n)? };
            let mut builder = func.builder();
            builder.arg(&x);
            builder.arg(&b);
            builder.arg(&dst);
            candle_core::builder_arg!(builder, rows as i64, cols as i32);
            // A row's threads (whole warps, at most 256) by 1 row a block;
            // the kernel strides over the rest.
            let threads = cols.div_ceil(per_thread).div_ceil(32).clamp(1, 8) * 32;
            let config = LaunchConfig {
                grid_dim: (
                    cols.div_ceil(per_thread * threads).clamp(1, 65535) as u32,
                    rows.clamp(1, 65535) as u32,
                    1,
                ),
                block_dim: (threads as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's signature.
            unsafe { builder.launch(config) }.w()?;
            Ok(dst)
        }
    }
}
