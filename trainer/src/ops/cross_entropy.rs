//! Cross-entropy over rows of logits in one kernel, and its backward
//! (`softmax - onehot`) in one more: candle's composed log-softmax, gather
//! and mask cost the reference GPT 2.7 ms forward and 10.4 ms with the
//! backward on its (8192, 8192) logits, plus the cast of bf16 logits to f32
//! and back (notes/gpu-performance.md). The kernels read the logits in
//! their own dtype and compute in f32.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType};

use super::{contiguous, last_dim};
use crate::error::Result;

/// The cross-entropy of each row of `logits` (`(rows, classes)`, f32, f64,
/// bf16 or f16) against `labels` (`(rows,)`, any integer dtype): `(rows,)`
/// f32 losses `logsumexp(x) - x[label]`, 0 where the label is negative
/// (ignored, as [`crate::loss::IGNORE_INDEX`]) or out of range.
/// Differentiable in `logits`.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// let logits = Tensor::new(&[[0f32, 0.0], [5.0, 1.0]], &Device::Cpu).unwrap();
/// let labels = Tensor::new(&[1i64, -100], &Device::Cpu).unwrap();
/// let loss = taper::ops::cross_entropy_rows(&logits, &labels).unwrap();
/// let loss = loss.to_vec1::<f32>().unwrap();
/// assert!((loss[0] - 2f32.ln()).abs() < 1e-6 && loss[1] == 0.0);
/// ```
pub fn cross_entropy_rows(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (rows, _) = logits.dims2()?;
    if labels.dims() != [rows] {
        return Err(crate::Error::Usage(format!(
            "cross_entropy_rows: {rows} rows of logits but labels of shape {:?}",
            labels.dims()
        )));
    }
    let labels = labels.to_dtype(DType::I64)?.contiguous()?;
    Ok(logits.contiguous()?.apply_op2(&labels, CrossEntropy)?)
}

/// The forward op: `(logits, labels)` in, the rows' losses out.
struct CrossEntropy;

/// The backward op: `(logits, labels, g)` in, `g * (softmax - onehot)` out.
struct CrossEntropyBackward;

/// The row's maximum and `sum(exp(x - max))`, in f32.
fn row_stats<T: WithDType>(row: &[T]) -> (f32, f32) {
    let max = row
        .iter()
        .map(|v| v.to_f64() as f32)
        .fold(f32::NEG_INFINITY, f32::max);
    let sum = row.iter().map(|v| (v.to_f64() as f32 - max).exp()).sum();
    (max, sum)
}

fn label_of(label: i64, cols: usize) -> Option<usize> {
    usize::try_from(label).ok().filter(|l| *l < cols)
}

fn cpu_forward<T: WithDType>(x: &[T], labels: &[i64], cols: usize) -> Vec<f32> {
    x.chunks(cols)
        .zip(labels)
        .map(|(row, &label)| match label_of(label, cols) {
            Some(label) => {
                let (max, sum) = row_stats(row);
                max + sum.ln() - row[label].to_f64() as f32
            }
            None => 0.0,
        })
        .collect()
}

fn cpu_backward<T: WithDType>(x: &[T], labels: &[i64], g: &[f32], cols: usize) -> Vec<T> {
    let mut dx = vec![T::from_f64(0.0); x.len()];
    for (((row, out), &label), &g) in x.chunks(cols).zip(dx.chunks_mut(cols)).zip(labels).zip(g) {
        let Some(label) = label_of(label, cols) else {
            continue;
        };
        let (max, sum) = row_stats(row);
        for (j, (o, v)) in out.iter_mut().zip(row).enumerate() {
            let p = (v.to_f64() as f32 - max).exp() / sum;
            let onehot = if j == label { 1.0 } else { 0.0 };
            *o = T::from_f64(f64::from(g * (p - onehot)));
        }
    }
    dx
}

fn cpu_labels<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [i64]> {
    match storage {
        CpuStorage::I64(l) => contiguous(l, layout),
        other => candle_core::bail!("cross_entropy_rows: labels of {:?}", other.dtype()),
    }
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy-rows"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        labels: &CpuStorage,
        labels_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let cols = last_dim(x_layout);
        let labels = cpu_labels(labels, labels_layout)?;
        let losses = match x {
            CpuStorage::F32(x) => cpu_forward(contiguous(x, x_layout)?, labels, cols),
            CpuStorage::F64(x) => cpu_forward(contiguous(x, x_layout)?, labels, cols),
            CpuStorage::BF16(x) => cpu_forward(contiguous(x, x_layout)?, labels, cols),
            CpuStorage::F16(x) => cpu_forward(contiguous(x, x_layout)?, labels, cols),
            other => candle_core::bail!("cross_entropy_rows: logits of {:?}", other.dtype()),
        };
        let rows = losses.len();
        Ok((CpuStorage::F32(losses), Shape::from(rows)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        labels: &candle_core::CudaStorage,
        labels_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::forward(x, x_layout, labels, labels_layout)
    }

    fn bwd(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.to_dtype(DType::F32)?.contiguous()?;
        let dx = logits.apply_op3_no_bwd(labels, &g, &CrossEntropyBackward)?;
        Ok((Some(dx), None))
    }
}

impl CustomOp3 for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross-entropy-rows-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        labels: &CpuStorage,
        labels_layout: &Layout,
        g: &CpuStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let cols = last_dim(x_layout);
        let labels = cpu_labels(labels, labels_layout)?;
        let CpuStorage::F32(g) = g else {
            candle_core::bail!("cross_entropy_rows backward: gradients of {:?}", g.dtype())
        };
        let g = contiguous(g, g_layout)?;
        let dx = match x {
            CpuStorage::F32(x) => {
                CpuStorage::F32(cpu_backward(contiguous(x, x_layout)?, labels, g, cols))
            }
            CpuStorage::F64(x) => {
                CpuStorage::F64(cpu_backward(contiguous(x, x_layout)?, labels, g, cols))
            }
            CpuStorage::BF16(x) => {
                CpuStorage::BF16(cpu_backward(contiguous(x, x_layout)?, labels, g, cols))
            }
            CpuStorage::F16(x) => {
                CpuStorage::F16(cpu_backward(contiguous(x, x_layout)?, labels, g, cols))
            }
            other => candle_core::bail!("cross_entropy_rows: logits of {:?}", other.dtype()),
        };
        Ok((dx, x_layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        labels: &candle_core::CudaStorage,
        labels_layout: &Layout,
        g: &candle_core::CudaStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::backward(x, x_layout, labels, labels_layout, g, g_layout)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The launches of `kernels/cross_entropy.cu`.

    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, PushKernelArg};
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{CudaStorage, Layout, Shape};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/cross_entropy.ptx"));
    const MODULE: &str = "taper_cross_entropy";

    fn view<'a, T>(
        slice: &'a CudaSlice<T>,
        layout: &Layout,
    ) -> candle_core::Result<CudaView<'a, T>> {
        match layout.contiguous_offsets() {
            Some((start, end)) => Ok(slice.slice(start..end)),
            None => candle_core::bail!("cross_entropy_rows needs contiguous tensors"),
        }
    }

    fn rows_cols(layout: &Layout) -> candle_core::Result<(usize, usize)> {
        let cols = super::last_dim(layout);
        let rows = layout.shape().elem_count() / cols.max(1);
        if rows > i32::MAX as usize || cols > i32::MAX as usize {
            candle_core::bail!("cross_entropy_rows: {rows} rows of {cols} are too many")
        }
        Ok((rows, cols))
    }

    fn labels_of<'a>(
        labels: &'a CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<CudaView<'a, i64>> {
        match &labels.slice {
            CudaStorageSlice::I64(l) => view(l, layout),
            _ => candle_core::bail!("cross_entropy_rows: labels of {:?}", labels.dtype()),
        }
    }

    pub(super) fn forward(
        x: &CudaStorage,
        x_layout: &Layout,
        labels: &CudaStorage,
        labels_layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let device = x.device().clone();
        let (rows, cols) = rows_cols(x_layout)?;
        let labels = labels_of(labels, labels_layout)?;
        // SAFETY: the kernel writes every row's loss.
        let loss = unsafe { device.alloc::<f32>(rows)? };
        macro_rules! launch {
            ($x:expr, $name:literal) => {{
                let x = view($x, x_layout)?;
                let func = device.get_or_load_custom_func($name, MODULE, PTX)?;
                let mut builder = func.builder();
                builder.arg(&x);
                builder.arg(&labels);
                builder.arg(&loss);
                candle_core::builder_arg!(builder, cols as i32);
                // SAFETY: the arguments match the kernel's signature.
                unsafe { builder.launch(crate::ops::launch_config(rows, cols)) }.w()?;
            }};
        }
        match &x.slice {
            CudaStorageSlice::F32(s) => launch!(s, "cross_entropy_fwd_f32"),
            CudaStorageSlice::BF16(s) => launch!(s, "cross_entropy_fwd_bf16"),
            CudaStorageSlice::F16(s) => launch!(s, "cross_entropy_fwd_f16"),
            _ => candle_core::bail!("cross_entropy_rows on the GPU: no {:?} kernel", x.dtype()),
        }
        let slice = CudaStorageSlice::F32(loss);
        Ok((CudaStorage { slice, device }, Shape::from(rows)))
    }

    pub(super) fn backward(
        x: &CudaStorage,
        x_layout: &Layout,
        labels: &CudaStorage,
        labels_layout: &Layout,
        g: &CudaStorage,
        g_layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let device = x.device().clone();
        let (rows, cols) = rows_cols(x_layout)?;
        let labels = labels_of(labels, labels_layout)?;
        let CudaStorageSlice::F32(g) = &g.slice else {
            candle_core::bail!("cross_entropy_rows backward: gradients of {:?}", g.dtype())
        };
        let g = view(g, g_layout)?;
        macro_rules! launch {
            ($x:expr, $variant:ident, $name:literal) => {{
                let x = view($x, x_layout)?;
                // SAFETY: the kernel writes every element.
                let dx = unsafe { device.alloc(rows * cols)? };
                let func = device.get_or_load_custom_func($name, MODULE, PTX)?;
                let mut builder = func.builder();
                builder.arg(&x);
                builder.arg(&labels);
                builder.arg(&g);
                builder.arg(&dx);
                candle_core::builder_arg!(builder, cols as i32);
                // SAFETY: the arguments match the kernel's signature.
                unsafe { builder.launch(crate::ops::launch_config(rows, cols)) }.w()?;
                CudaStorageSlice::$variant(dx)
            }};
        }
        let slice = match &x.slice {
            CudaStorageSlice::F32(s) => launch!(s, F32, "cross_entropy_bwd_f32"),
            CudaStorageSlice::BF16(s) => launch!(s, BF16, "cross_entropy_bwd_bf16"),
            CudaStorageSlice::F16(s) => launch!(s, F16, "cross_entropy_bwd_f16"),
            _ => candle_core::bail!("cross_entropy_rows on the GPU: no {:?} kernel", x.dtype()),
        };
        Ok((CudaStorage { slice, device }, x_layout.shape().clone()))
    }
}
