//! The layer norm in one kernel each way: candle's composed layer norm
//! (`layer_norm_slow`: casts, a mean, a subtraction, a square, another
//! mean, a square root, a division, a multiply and an add, each a kernel,
//! and as many in the backward) cost the reference GPT about 15-20 ms a
//! bf16 step over its 13 norms on an H200 (notes/gpu-performance.md,
//! call 6b). Here the forward is one kernel, the backward two: `dx` a row
//! a warp, with per-block partial sums of the weight's and the bias's
//! gradients, and a small kernel that adds the partials.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor, WithDType};

use super::{contiguous, last_dim};
use crate::error::{Error, Result};

/// The longest row taper's backward kernel takes: each warp keeps two f32
/// sums a column in shared memory (48 KiB a block, so one warp a block at
/// this length). Longer rows take the composed ops.
const MAX_COLS: usize = 6144;

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension,
/// differentiable in all three, as candle-nn's `layer_norm_slow`. `weight`
/// and `bias` are vectors of the last dimension's length, in `x`'s dtype
/// (f32, f64, bf16 or f16); the statistics are computed in f32 (f64 for
/// f64 on the CPU) and the result is in `x`'s dtype. On a GPU, rows longer
/// than 6144 take the composed ops.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[1f32, 2.0, 3.0]], &Device::Cpu).unwrap();
/// let (w, b) = (Tensor::ones(3, x.dtype(), x.device()).unwrap(), Tensor::zeros(3, x.dtype(), x.device()).unwrap());
/// let y = taper::ops::layer_norm(&x, &w, &b, 1e-5).unwrap().to_vec2::<f32>().unwrap();
/// assert!((y[0][0] + 1.2247).abs() < 1e-3 && y[0][1].abs() < 1e-6);
/// ```
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let cols = x.dims().last().copied().unwrap_or(0);
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if t.dims() != [cols] || t.dtype() != x.dtype() {
            return Err(Error::Usage(format!(
                "layer_norm: {name} {:?} {:?} does not fit x {:?} {:?}",
                t.dims(),
                t.dtype(),
                x.dims(),
                x.dtype()
            )));
        }
    }
    if x.device().is_cuda() && cols > MAX_COLS {
        return Ok(candle_nn::ops::layer_norm_slow(
            x, weight, bias, eps as f32,
        )?);
    }
    Ok(x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNorm { eps: eps as f32 },
    )?)
}

/// The forward op: `(x, weight, bias)` in, `y` out.
struct LayerNorm {
    eps: f32,
}

/// The backward op: `(x, weight, g)` in; out, a `(rows + 2, cols)` tensor:
/// `dx` by rows, then `dweight` and `dbias` (one op, one output).
struct LayerNormBackward {
    eps: f32,
}

/// A row's mean and `1 / sqrt(var + eps)`, in f64 (the CPU reference).
fn stats<T: WithDType>(row: &[T], eps: f32) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = row.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + f64::from(eps)).sqrt())
}

fn cpu_forward<T: WithDType>(x: &[T], w: &[T], b: &[T], eps: f32) -> Vec<T> {
    let cols = w.len();
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let (mean, rstd) = stats(row, eps);
        y.extend(
            row.iter().zip(w).zip(b).map(|((x, w), b)| {
                T::from_f64((x.to_f64() - mean) * rstd * w.to_f64() + b.to_f64())
            }),
        );
    }
    y
}

fn cpu_backward<T: WithDType>(x: &[T], w: &[T], g: &[T], eps: f32) -> Vec<T> {
    let cols = w.len();
    let mut out = Vec::with_capacity(x.len() + 2 * cols);
    let (mut dw, mut db) = (vec![0f64; cols], vec![0f64; cols]);
    for (xr, gr) in x.chunks(cols).zip(g.chunks(cols)) {
        let (mean, rstd) = stats(xr, eps);
        let xh: Vec<f64> = xr.iter().map(|v| (v.to_f64() - mean) * rstd).collect();
        let gw: Vec<f64> = gr
            .iter()
            .zip(w)
            .map(|(g, w)| g.to_f64() * w.to_f64())
            .collect();
        let s1 = gw.iter().sum::<f64>() / cols as f64;
        let s2 = gw.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / cols as f64;
        for j in 0..cols {
            out.push(T::from_f64(rstd * (gw[j] - s1 - xh[j] * s2)));
            dw[j] += gr[j].to_f64() * xh[j];
            db[j] += gr[j].to_f64();
        }
    }
    out.extend(dw.into_iter().chain(db).map(T::from_f64));
    out
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "taper-layer-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        macro_rules! run {
            ($v:ident, $x:expr, $w:expr, $b:expr) => {
                CpuStorage::$v(cpu_forward(
                    contiguous($x, xl)?,
                    contiguous($w, wl)?,
                    contiguous($b, bl)?,
                    self.eps,
                ))
            };
        }
        let out = match (x, w, b) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => run!(F32, x, w, b),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => run!(F64, x, w, b),
            (CpuStorage::BF16(x), CpuStorage::BF16(w), CpuStorage::BF16(b)) => run!(BF16, x, w, b),
            (CpuStorage::F16(x), CpuStorage::F16(w), CpuStorage::F16(b)) => run!(F16, x, w, b),
            _ => candle_core::bail!("layer_norm: no {:?} support", x.dtype()),
        };
        Ok((out, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::Map3;
        let device = x.device().clone();
        let slice = self.map(&x.slice, xl, &w.slice, wl, &b.slice, bl, &device)?;
        Ok((
            candle_core::CudaStorage { slice, device },
            xl.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.to_dtype(x.dtype())?.contiguous()?;
        let cols = w.dim(0)?;
        let rows = x.elem_count() / cols.max(1);
        let out = x.apply_op3_no_bwd(w, &g, &LayerNormBackward { eps: self.eps })?;
        let dx = out.narrow(0, 0, rows)?.reshape(x.shape())?;
        // Copies: views would keep the whole (rows + 2, cols) buffer alive
        // as long as the parameters' gradients live.
        let dw = out.narrow(0, rows, 1)?.reshape(cols)?.copy()?;
        let db = out.narrow(0, rows + 1, 1)?.reshape(cols)?.copy()?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "taper-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        macro_rules! run {
            ($v:ident, $x:expr, $w:expr, $g:expr) => {
                CpuStorage::$v(cpu_backward(
                    contiguous($x, xl)?,
                    contiguous($w, wl)?,
                    contiguous($g, gl)?,
                    self.eps,
                ))
            };
        }
        let out = match (x, w, g) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(g)) => run!(F32, x, w, g),
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(g)) => run!(F64, x, w, g),
            (CpuStorage::BF16(x), CpuStorage::BF16(w), CpuStorage::BF16(g)) => run!(BF16, x, w, g),
            (CpuStorage::F16(x), CpuStorage::F16(w), CpuStorage::F16(g)) => run!(F16, x, w, g),
            _ => candle_core::bail!("layer_norm backward: no {:?} support", x.dtype()),
        };
        Ok((out, backward_shape(xl)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
        g: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::Map3;
        let device = x.device().clone();
        let slice = self.map(&x.slice, xl, &w.slice, wl, &g.slice, gl, &device)?;
        Ok((
            candle_core::CudaStorage { slice, device },
            backward_shape(xl),
        ))
    }
}

/// `(rows + 2, cols)`: `dx`, then `dweight` and `dbias`.
fn backward_shape(x: &Layout) -> Shape {
    let cols = last_dim(x);
    Shape::from((x.shape().elem_count() / cols.max(1) + 2, cols))
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The launches of `kernels/layer_norm.cu`.

    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{kernel_name, Map3, WrapErr};
    use candle_core::{CudaDevice, Layout, WithDType};

    use super::{LayerNorm, LayerNormBackward};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/layer_norm.ptx"));
    const MODULE: &str = "taper_layer_norm";
    /// The backward kernel takes a row a warp, up to 8 warps a block, and
    /// at most this many blocks (grid-stride over rows): two for each of
    /// an H100/H200's 132 SMs, as many as fit at once (the kernel's
    /// `__launch_bounds__(256, 2)` keeps it to 128 registers a thread;
    /// 2 x 48 KiB of shared memory), so no block waits for a second wave,
    /// and few enough that adding their partial sums is cheap.
    const BACKWARD_BLOCKS: usize = 2 * 132;
    /// The backward's shared memory a block, at most (the default limit,
    /// no opt-in needed): 2 * cols f32 a warp, 8 warps at 768 columns.
    const BACKWARD_SHARED: usize = 48 * 1024;
    /// The partial rows' summing kernel: 32 columns a block, 16 slices of
    /// the partial rows (`PARAMS_SLICES` in the kernel).
    const PARAMS_BLOCK: (u32, u32, u32) = (32, 16, 1);

    fn view<'a, T: WithDType>(
        s: &'a CudaSlice<T>,
        layout: &Layout,
    ) -> candle_core::Result<CudaView<'a, T>> {
        if !crate::ops::fused_dtype(T::DTYPE) {
            candle_core::bail!("layer_norm on the GPU: no {:?} kernel", T::DTYPE)
        }
        match layout.contiguous_offsets() {
            Some((start, end)) => Ok(s.slice(start..end)),
            None => candle_core::bail!("layer_norm needs contiguous tensors"),
        }
    }

    fn rows_cols(layout: &Layout) -> candle_core::Result<(usize, usize)> {
        let cols = super::last_dim(layout);
        let rows = layout.shape().elem_count() / cols.max(1);
        if rows > i32::MAX as usize || cols > super::MAX_COLS {
            candle_core::bail!("layer_norm: {rows} rows of {cols} are too many")
        }
        Ok((rows, cols))
    }

    impl Map3 for LayerNorm {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            x: &CudaSlice<T>,
            xl: &Layout,
            w: &CudaSlice<T>,
            wl: &Layout,
            b: &CudaSlice<T>,
            bl: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<CudaSlice<T>> {
            let (rows, cols) = rows_cols(xl)?;
            let (x, w, b) = (view(x, xl)?, view(w, wl)?, view(b, bl)?);
            let func =
                dev.get_or_load_custom_func(&kernel_name::<T>("layer_norm_fwd"), MODULE, PTX)?;
            // SAFETY: the kernel writes every element.
            let y = unsafe { dev.alloc::<T>(rows * cols)? };
            let mut builder = func.builder();
            builder.arg(&x);
            builder.arg(&w);
            builder.arg(&b);
            builder.arg(&y);
            candle_core::builder_arg!(builder, cols as i32, self.eps);
            // SAFETY: the arguments match the kernel's signature.
            unsafe { builder.launch(crate::ops::launch_config(rows, cols)) }.w()?;
            Ok(y)
        }
    }

    impl Map3 for LayerNormBackward {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            x: &CudaSlice<T>,
            xl: &Layout,
            w: &CudaSlice<T>,
            wl: &Layout,
            g: &CudaSlice<T>,
            gl: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<CudaSlice<T>> {
            let (rows, cols) = rows_cols(xl)?;
            if gl.shape() != xl.shape() {
                candle_core::bail!(
                    "layer_norm backward: x {:?}, g {:?}",
                    xl.shape(),
                    gl.shape()
                )
            }
            let (x, w, g) = (view(x, xl)?, view(w, wl)?, view(g, gl)?);
            // A warp's dw and db sums: 2 * cols f32 of shared memory
            // (cols <= MAX_COLS: one warp at least fits).
            let warp_bytes = 2 * cols.max(1) * std::mem::size_of::<f32>();
            let warps = (BACKWARD_SHARED / warp_bytes).clamp(1, 8);
            let blocks = rows.div_ceil(warps).clamp(1, BACKWARD_BLOCKS);
            // SAFETY: every block writes its whole partial row.
            let partial = unsafe { dev.alloc::<f32>(blocks * 2 * cols)? };
            // SAFETY: the two kernels write every element.
            let out = unsafe { dev.alloc::<T>((rows + 2) * cols)? };
            let func =
                dev.get_or_load_custom_func(&kernel_name::<T>("layer_norm_bwd"), MODULE, PTX)?;
            let config = LaunchConfig {
                grid_dim: (blocks as u32, 1, 1),
                block_dim: (32 * warps as u32, 1, 1),
                shared_mem_bytes: (warps * warp_bytes) as u32,
            };
            let mut builder = func.builder();
            builder.arg(&x);
            builder.arg(&w);
            builder.arg(&g);
            builder.arg(&out);
            builder.arg(&partial);
            candle_core::builder_arg!(builder, rows as i32, cols as i32, self.eps);
            // SAFETY: the arguments match the kernel's signature.
            unsafe { builder.launch(config) }.w()?;
            let func = dev.get_or_load_custom_func(
                &kernel_name::<T>("layer_norm_bwd_params"),
                MODULE,
                PTX,
            )?;
            {
                // dweight and dbias: the last two rows of `out`.
                let params = out.slice(rows * cols..);
                let mut builder = func.builder();
                builder.arg(&partial);
                builder.arg(&params);
                candle_core::builder_arg!(builder, blocks as i32, cols as i32);
                let config = LaunchConfig {
                    grid_dim: ((2 * cols).div_ceil(32).max(1) as u32, 1, 1),
                    block_dim: PARAMS_BLOCK,
                    shared_mem_bytes: 0,
                };
                // SAFETY: the arguments match the kernel's signature.
                unsafe { builder.launch(config) }.w()?;
            }
            Ok(out)
        }
    }
}
