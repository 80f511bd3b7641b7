//! The attention softmax: scale, causal mask and softmax in one kernel,
//! and its backward in one more (see the module above for why).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};

use super::{contiguous, last_dim, map_float_pair};
use crate::error::Result;

/// `softmax(scale * x + mask)` over the last dimension, differentiable,
/// in `x`'s dtype (f32, f64, bf16 or f16) with the arithmetic in f32.
///
/// With `causal`, the last two dimensions are `(queries, keys)` scores
/// whose keys end with the queries: key `j` is hidden from query `i` when
/// `j > i + keys - queries` (its weight is 0), as under a causal mask of
/// `-inf` above the diagonal.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
/// let y = taper::ops::attention_softmax(&x, 1.0, true).unwrap();
/// assert_eq!(y.to_vec2::<f32>().unwrap()[0], [1.0, 0.0]);
/// ```
pub fn attention_softmax(x: &Tensor, scale: f64, causal: bool) -> Result<Tensor> {
    let dims = x.dims();
    if dims.is_empty() || (causal && dims.len() < 2) {
        return Err(crate::Error::Usage(format!(
            "attention_softmax needs {} dimensions, the tensor has shape {:?}",
            if causal {
                "at least two"
            } else {
                "at least one"
            },
            dims
        )));
    }
    let q_len = query_len(dims);
    if causal && q_len > dims[dims.len() - 1] {
        return Err(crate::Error::Usage(format!(
            "a causal attention_softmax needs at least as many keys as queries, shape {dims:?}"
        )));
    }
    Ok(x.contiguous()?.apply_op1(AttentionSoftmax {
        scale: scale as f32,
        causal,
        q_len,
    })?)
}

/// The gradient of the scores from the weights `y` of an
/// [`attention_softmax`] with `scale` and `causal` and the weights'
/// gradient `g` (same shape and dtype), untracked: `scale * y * (g -
/// sum(g * y))`.
pub(super) fn backward(
    y: &Tensor,
    g: &Tensor,
    scale: f64,
    causal: bool,
) -> candle_core::Result<Tensor> {
    let dims = y.dims();
    let q_len = query_len(dims);
    y.contiguous()?.apply_op2_no_bwd(
        &g.contiguous()?,
        &AttentionSoftmaxBackward(AttentionSoftmax {
            scale: scale as f32,
            causal,
            q_len,
        }),
    )
}

/// The queries of scores shaped `dims`: the second-to-last dimension (1
/// for a single row).
fn query_len(dims: &[usize]) -> usize {
    if dims.len() >= 2 {
        dims[dims.len() - 2]
    } else {
        1
    }
}

/// The forward op: the scores in, the weights out.
struct AttentionSoftmax {
    scale: f32,
    causal: bool,
    q_len: usize,
}

/// The backward op of the forward it holds: `(y, g)` in, `scale * y * (g -
/// sum(g * y))` out. The GPU kernel skips the masked keys (where y is 0).
struct AttentionSoftmaxBackward(AttentionSoftmax);

/// How many keys of row `row` are visible.
fn row_limit(row: usize, cols: usize, q_len: usize, causal: bool) -> usize {
    if causal {
        (row % q_len + cols - q_len + 1).min(cols)
    } else {
        cols
    }
}

fn cpu_softmax<T: WithDType>(x: &[T], cols: usize, op: &AttentionSoftmax) -> Vec<T> {
    let mut y = vec![T::from_f64(0.0); x.len()];
    for (row, (xr, yr)) in x.chunks(cols).zip(y.chunks_mut(cols)).enumerate() {
        let limit = row_limit(row, cols, op.q_len, op.causal);
        let scaled: Vec<f32> = xr[..limit]
            .iter()
            .map(|v| v.to_f64() as f32 * op.scale)
            .collect();
        let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = scaled.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        for (out, e) in yr.iter_mut().zip(exps) {
            *out = T::from_f64(f64::from(e / sum));
        }
    }
    y
}

fn cpu_softmax_backward<T: WithDType>(y: &[T], g: &[T], cols: usize, scale: f32) -> Vec<T> {
    let mut dx = vec![T::from_f64(0.0); y.len()];
    for ((yr, gr), dr) in y.chunks(cols).zip(g.chunks(cols)).zip(dx.chunks_mut(cols)) {
        let dot: f32 = yr
            .iter()
            .zip(gr)
            .map(|(y, g)| y.to_f64() as f32 * g.to_f64() as f32)
            .sum();
        for ((out, y), g) in dr.iter_mut().zip(yr).zip(gr) {
            let y = y.to_f64() as f32;
            *out = T::from_f64(f64::from(scale * y * (g.to_f64() as f32 - dot)));
        }
    }
    dx
}

impl CustomOp1 for AttentionSoftmax {
    fn name(&self) -> &'static str {
        "attention-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let cols = last_dim(layout);
        let out = match storage {
            CpuStorage::F32(d) => CpuStorage::F32(cpu_softmax(contiguous(d, layout)?, cols, self)),
            CpuStorage::F64(d) => CpuStorage::F64(cpu_softmax(contiguous(d, layout)?, cols, self)),
            CpuStorage::BF16(d) => {
                CpuStorage::BF16(cpu_softmax(contiguous(d, layout)?, cols, self))
            }
            CpuStorage::F16(d) => CpuStorage::F16(cpu_softmax(contiguous(d, layout)?, cols, self)),
            other => candle_core::bail!("attention_softmax: no {:?} support", other.dtype()),
        };
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::forward(self, storage, layout)
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = grad_res.to_dtype(res.dtype())?;
        Ok(Some(backward(
            res,
            &grad,
            f64::from(self.scale),
            self.causal,
        )?))
    }
}

impl CustomOp2 for AttentionSoftmaxBackward {
    fn name(&self) -> &'static str {
        "attention-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        y_layout: &Layout,
        g: &CpuStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let cols = last_dim(y_layout);
        let out = map_float_pair!(
            "attention_softmax backward",
            (y, y_layout, "weights"),
            (g, g_layout, "gradients"),
            |y, g| cpu_softmax_backward(y, g, cols, self.0.scale)
        );
        Ok((out, y_layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        y: &candle_core::CudaStorage,
        y_layout: &Layout,
        g: &candle_core::CudaStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::backward(self, y, y_layout, g, g_layout)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The launches of `kernels/softmax.cu`.

    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::{kernel_name, Map1, Map2, WrapErr};
    use candle_core::{CudaDevice, CudaStorage, Layout, Shape, WithDType};

    use super::{AttentionSoftmax, AttentionSoftmaxBackward};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/softmax.ptx"));
    const MODULE: &str = "taper_softmax";

    /// The longest row a warp takes (32 lanes x 32 slots in the kernels).
    const WARP_ROW_MAX: usize = 1024;
    /// Rows a block of the `_rows` kernels (a warp a row).
    const ROWS_PER_BLOCK: usize = 4;

    /// The kernel of `names` (block a row, warp a row) for rows of `cols`,
    /// and its launch: a warp a row up to [`WARP_ROW_MAX`].
    fn kernel(names: (&str, &str), rows: usize, cols: usize) -> (String, LaunchConfig) {
        if cols > WARP_ROW_MAX {
            return (names.0.into(), crate::ops::launch_config(rows, cols));
        }
        // The fewest slots (elements a lane) that hold the row.
        let slots = [4, 8, 16, 32]
            .into_iter()
            .find(|s| 32 * s >= cols)
            .unwrap_or(32);
        let config = LaunchConfig {
            grid_dim: (rows.div_ceil(ROWS_PER_BLOCK) as u32, 1, 1),
            block_dim: (32 * ROWS_PER_BLOCK as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        (format!("{}{slots}", names.1), config)
    }

    fn check<T: WithDType>(layout: &Layout) -> candle_core::Result<(usize, usize)> {
        if !crate::ops::fused_dtype(T::DTYPE) {
            candle_core::bail!("attention_softmax on the GPU: no {:?} kernel", T::DTYPE)
        }
        if layout.contiguous_offsets().is_none() {
            candle_core::bail!("attention_softmax needs contiguous tensors")
        }
        let cols = super::last_dim(layout);
        let rows = layout.shape().elem_count() / cols.max(1);
        if rows > i32::MAX as usize || cols > i32::MAX as usize {
            candle_core::bail!("attention_softmax: {rows} rows of {cols} are too many")
        }
        Ok((rows, cols))
    }

    impl Map1 for AttentionSoftmax {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            src: &CudaSlice<T>,
            dev: &CudaDevice,
            layout: &Layout,
        ) -> candle_core::Result<CudaSlice<T>> {
            let (rows, cols) = check::<T>(layout)?;
            let (start, end) = layout.contiguous_offsets().expect("checked");
            let src = src.slice(start..end);
            let (name, config) = kernel(("softmax_fwd", "softmax_fwd_rows"), rows, cols);
            let func = dev.get_or_load_custom_func(&kernel_name::<T>(&name), MODULE, PTX)?;
            // SAFETY: the kernel writes every element.
            let dst = unsafe { dev.alloc::<T>(rows * cols)? };
            let mut builder = func.builder();
            builder.arg(&src);
            builder.arg(&dst);
            let rows = rows as i64;
            if cols <= WARP_ROW_MAX {
                builder.arg(&rows);
            }
            candle_core::builder_arg!(
                builder,
                cols as i32,
                self.q_len as i32,
                self.scale,
                i32::from(self.causal)
            );
            // SAFETY: the arguments match the kernel's signature.
            unsafe { builder.launch(config) }.w()?;
            Ok(dst)
        }
    }

    impl Map2 for AttentionSoftmaxBackward {
        fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            &self,
            y: &CudaSlice<T>,
            y_layout: &Layout,
            g: &CudaSlice<T>,
            g_layout: &Layout,
            dev: &CudaDevice,
        ) -> candle_core::Result<CudaSlice<T>> {
            let (rows, cols) = check::<T>(y_layout)?;
            check::<T>(g_layout)?;
            if y_layout.shape() != g_layout.shape() {
                candle_core::bail!(
                    "attention_softmax backward: weights {:?}, gradients {:?}",
                    y_layout.shape(),
                    g_layout.shape()
                )
            }
            let (ys, ye) = y_layout.contiguous_offsets().expect("checked");
            let (gs, ge) = g_layout.contiguous_offsets().expect("checked");
            let (y, g) = (y.slice(ys..ye), g.slice(gs..ge));
            let (name, config) = kernel(("softmax_bwd", "softmax_bwd_rows"), rows, cols);
            let func = dev.get_or_load_custom_func(&kernel_name::<T>(&name), MODULE, PTX)?;
            // SAFETY: the kernel writes every element.
            let dst = unsafe { dev.alloc::<T>(rows * cols)? };
            let mut builder = func.builder();
            builder.arg(&y);
            builder.arg(&g);
            builder.arg(&dst);
            let forward = &self.0;
            let (rows, cols_arg, scale) = (rows as i64, cols as i32, forward.scale);
            let (q_len, causal) = (forward.q_len as i32, i32::from(forward.causal));
            if cols <= WARP_ROW_MAX {
                builder.arg(&rows);
                builder.arg(&cols_arg);
                builder.arg(&q_len);
                builder.arg(&scale);
                builder.arg(&causal);
            } else {
                builder.arg(&cols_arg);
                builder.arg(&scale);
            }
            // SAFETY: the arguments match the kernel's signature.
            unsafe { builder.launch(config) }.w()?;
            Ok(dst)
        }
    }

    pub(super) fn forward(
        op: &AttentionSoftmax,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let device = storage.device().clone();
        let slice = op.map(&storage.slice, &device, layout)?;
        Ok((CudaStorage { slice, device }, layout.shape().clone()))
    }

    pub(super) fn backward(
        op: &AttentionSoftmaxBackward,
        y: &CudaStorage,
        y_layout: &Layout,
        g: &CudaStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let device = y.device().clone();
        let slice = op.map(&y.slice, y_layout, &g.slice, g_layout, &device)?;
        Ok((CudaStorage { slice, device }, y_layout.shape().clone()))
    }
}
