//! GELU (candle's tanh approximation) with a one-kernel backward: candle
//! differentiates `gelu` with about fifteen element-wise kernels over the
//! MLP's widest activation (16 x 512 x 3072 in the reference GPT), in the
//! activation's dtype; here one kernel each way, computing in f32.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};

use super::{contiguous, map_float_pair};
use crate::error::Result;

/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, element-wise, as
/// candle's `Tensor::gelu`, differentiable, in `x`'s dtype (f32, f64,
/// bf16 or f16) with the arithmetic in f32.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[-1f32, 0.0, 2.0], &Device::Cpu).unwrap();
/// let fused = taper::ops::gelu(&x).unwrap().to_vec1::<f32>().unwrap();
/// let candle = x.gelu().unwrap().to_vec1::<f32>().unwrap();
/// assert!(fused.iter().zip(&candle).all(|(a, b)| (a - b).abs() < 1e-6));
/// ```
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Gelu)?)
}

struct Gelu;

/// `(x, g)` in, `g * gelu'(x)` out.
struct GeluBackward;

const K: f32 = 0.797_884_6;
const C: f32 = 0.044715;

fn forward_value(v: f32) -> f32 {
    0.5 * v * (1.0 + (K * (v + C * v * v * v)).tanh())
}

fn derivative(v: f32) -> f32 {
    let t = (K * (v + C * v * v * v)).tanh();
    0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * K * (1.0 + 3.0 * C * v * v)
}

fn cpu_map<T: WithDType>(x: &[T], f: impl Fn(f32) -> f32) -> Vec<T> {
    x.iter()
        .map(|v| T::from_f64(f64::from(f(v.to_f64() as f32))))
        .collect()
}

fn cpu_backward<T: WithDType>(x: &[T], g: &[T]) -> Vec<T> {
    x.iter()
        .zip(g)
        .map(|(x, g)| T::from_f64(f64::from(g.to_f64() as f32 * derivative(x.to_f64() as f32))))
        .collect()
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "taper-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match storage {
            CpuStorage::F32(d) => CpuStorage::F32(cpu_map(contiguous(d, layout)?, forward_value)),
            CpuStorage::F64(d) => CpuStorage::F64(cpu_map(contiguous(d, layout)?, forward_value)),
            CpuStorage::BF16(d) => CpuStorage::BF16(cpu_map(contiguous(d, layout)?, forward_value)),
            CpuStorage::F16(d) => CpuStorage::F16(cpu_map(contiguous(d, layout)?, forward_value)),
            other => candle_core::bail!("gelu: no {:?} support", other.dtype()),
        };
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::Map1;
        let device = storage.device().clone();
        let slice = self.map(&storage.slice, &device, layout)?;
        Ok((
            candle_core::CudaStorage { slice, device },
            layout.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad_res.to_dtype(arg.dtype())?.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(&grad, &GeluBackward)?))
    }
}

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "taper-gelu-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        g: &CpuStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = map_float_pair!(
            "gelu backward",
            (x, x_layout, "inputs"),
            (g, g_layout, "gradients"),
            |x, g| cpu_backward(x, g)
        );
        Ok((out, x_layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        g: &candle_core::CudaStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::Map2;
        let device = x.device().clone();
        let slice = self.map(&x.slice, x_layout, &g.slice, g_layout, &device)?;
        Ok((
            candle_core::CudaStorage { slice, device },
            x_layout.shape().clone(),
        ))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The launches of `kernels/gelu.cu`.

    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, DeviceRepr, PushKernelArg, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{kernel_name, Map1, Map2, WrapErr};
    use candle_core::{CudaDevice, Layout, WithDType};

    use super::{Gelu, GeluBackward};
    use crate::ops::{contiguous_range, grid_stride_config};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/gelu.ptx"));
    const MODULE: &str = "taper_gelu";

    impl Map1 for Gelu {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            src: &CudaSlice<T>,
            dev: &CudaDevice,
            layout: &Layout,
        ) -> candle_core::Result<CudaSlice<T>> {
            let (start, end) = contiguous_range::<T>(layout, "gelu")?;
            let n = end - start;
            let src = src.slice(start..end);
            let func = dev.get_or_load_custom_func(&kernel_name::<T>("gelu_fwd"), MODULE, PTX)?;
            // SAFETY: the kernel writes every element.
            let dst = unsafe { dev.alloc::<T>(n)? };
            let mut builder = func.builder();
            builder.arg(&src);
            builder.arg(&dst);
            candle_core::builder_arg!(builder, n as i64);
            // SAFETY: the arguments match the kernel's signature.
            unsafe { builder.launch(grid_stride_config(n)) }.w()?;
            Ok(dst)
        }
    }

    impl Map2 for GeluBackward {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            x: &CudaSlice<T>,
            x_layout: &Layout,
            g: &CudaSlice<T>,
            g_layout: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<CudaSlice<T>> {
            let (xs, xe) = contiguous_range::<T>(x_layout, "gelu backward")?;
            let (gs, ge) = contiguous_range::<T>(g_layout, "gelu backward")?;
            if xe - xs != ge - gs {
                candle_core::bail!("gelu backward: {} inputs, {} gradients", xe - xs, ge - gs)
            }
            let n = xe - xs;
            let (x, g) = (x.slice(xs..xe), g.slice(gs..ge));
            let func = dev.get_or_load_custom_func(&kernel_name::<T>("gelu_bwd"), MODULE, PTX)?;
            // SAFETY: the kernel writes every element.
            let dst = unsafe { dev.alloc::<T>(n)? };
            let mut builder = func.builder();
            builder.arg(&x);
            builder.arg(&g);
            builder.arg(&dst);
            candle_core::builder_arg!(builder, n as i64);
            // SAFETY: the arguments match the kernel's signature.
            unsafe { builder.launch(grid_stride_config(n)) }.w()?;
            Ok(dst)
        }
    }
}
