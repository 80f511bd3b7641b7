//! The embedding lookup with a scatter-add backward: candle differentiates
//! `index_select` with `index_add`, whose CUDA kernel took about 2.1 ms a
//! launch for the reference GPT's 8192 token ids on an H200
//! (notes/gpu-performance.md, call 6b). Here the backward is one
//! element-wise kernel of f32 atomic adds into a zeroed table.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use super::{contiguous, last_dim};
use crate::error::{Error, Result};

/// The rows of the f32 table `weight` `(rows, d)` picked by the u32 `ids`
/// (any shape): a tensor of `ids`' shape plus `d`, differentiable in
/// `weight`, as candle-nn's `Embedding::forward`. The fused op takes f32
/// tables only (the models keep their weights in f32); other dtypes go
/// through candle's `index_select`.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// let w = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
/// let ids = Tensor::new(&[1u32, 1, 0], &Device::Cpu).unwrap();
/// let y = taper::ops::embedding(&w, &ids).unwrap();
/// assert_eq!(y.to_vec2::<f32>().unwrap(), [[3.0, 4.0], [3.0, 4.0], [1.0, 2.0]]);
/// ```
pub fn embedding(weight: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (rows, d) = weight.dims2()?;
    if ids.dtype() != DType::U32 {
        return Err(Error::Usage(format!(
            "embedding: ids of {:?}, u32 expected",
            ids.dtype()
        )));
    }
    let mut dims = ids.dims().to_vec();
    dims.push(d);
    let flat = ids.flatten_all()?;
    if weight.dtype() != DType::F32 {
        return Ok(weight.index_select(&flat, 0)?.reshape(dims)?);
    }
    let out = weight
        .contiguous()?
        .apply_op2(&flat.contiguous()?, Embedding { rows })?;
    Ok(out.reshape(dims)?)
}

/// The forward op: `(weight, ids)` in, the picked rows out.
struct Embedding {
    rows: usize,
}

/// The backward op: `(ids, g)` in, the table's gradient `(rows, d)` out.
struct EmbeddingBackward {
    rows: usize,
}

impl CustomOp2 for Embedding {
    fn name(&self) -> &'static str {
        "taper-embedding"
    }

    fn cpu_fwd(
        &self,
        w: &CpuStorage,
        wl: &Layout,
        ids: &CpuStorage,
        il: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(w), CpuStorage::U32(ids)) = (w, ids) else {
            candle_core::bail!("embedding: f32 weights and u32 ids expected")
        };
        let (w, ids, d) = (contiguous(w, wl)?, contiguous(ids, il)?, last_dim(wl));
        let mut out = Vec::with_capacity(ids.len() * d);
        for &id in ids {
            let id = id as usize;
            if id >= self.rows {
                candle_core::bail!("embedding: id {id} of a table of {} rows", self.rows)
            }
            out.extend_from_slice(&w[id * d..(id + 1) * d]);
        }
        Ok((CpuStorage::F32(out), Shape::from((ids.len(), d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        w: &candle_core::CudaStorage,
        wl: &Layout,
        ids: &candle_core::CudaStorage,
        il: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::launch(self.rows, "embedding_fwd_f32", w, wl, ids, il)
    }

    fn bwd(
        &self,
        _w: &Tensor,
        ids: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.to_dtype(DType::F32)?.contiguous()?;
        let dw = ids.apply_op2_no_bwd(&g, &EmbeddingBackward { rows: self.rows })?;
        Ok((Some(dw), None))
    }
}

impl CustomOp2 for EmbeddingBackward {
    fn name(&self) -> &'static str {
        "taper-embedding-backward"
    }

    fn cpu_fwd(
        &self,
        ids: &CpuStorage,
        il: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::U32(ids), CpuStorage::F32(g)) = (ids, g) else {
            candle_core::bail!("embedding backward: u32 ids and f32 gradients expected")
        };
        let (ids, g, d) = (contiguous(ids, il)?, contiguous(g, gl)?, last_dim(gl));
        let mut dw = vec![0f32; self.rows * d];
        for (&id, gr) in ids.iter().zip(g.chunks(d)) {
            let id = id as usize;
            for (acc, v) in dw[id * d..(id + 1) * d].iter_mut().zip(gr) {
                *acc += v;
            }
        }
        Ok((CpuStorage::F32(dw), Shape::from((self.rows, d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ids: &candle_core::CudaStorage,
        il: &Layout,
        g: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::launch(self.rows, "embedding_bwd_f32", g, gl, ids, il)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The launches of `kernels/embedding.cu`.

    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{CudaStorage, Layout, Shape};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/embedding.ptx"));
    const MODULE: &str = "taper_embedding";

    fn view<'a, T>(s: &'a CudaSlice<T>, layout: &Layout) -> candle_core::Result<CudaView<'a, T>> {
        match layout.contiguous_offsets() {
            Some((start, end)) => Ok(s.slice(start..end)),
            None => candle_core::bail!("embedding needs contiguous tensors"),
        }
    }

    /// The forward (`f32` = the table) or the backward (`f32` = the
    /// gradient of the picked rows): both kernels take the f32 tensor, the
    /// ids and a fresh output, one thread an element of the picked rows.
    pub(super) fn launch(
        rows: usize,
        name: &str,
        f32s: &CudaStorage,
        fl: &Layout,
        ids: &CudaStorage,
        il: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let device = f32s.device().clone();
        let (CudaStorageSlice::F32(f), CudaStorageSlice::U32(i)) = (&f32s.slice, &ids.slice) else {
            candle_core::bail!("embedding: f32 values and u32 ids expected")
        };
        let (f, i) = (view(f, fl)?, view(i, il)?);
        let (d, n_ids) = (super::last_dim(fl), il.shape().elem_count());
        if d > i32::MAX as usize || rows > u32::MAX as usize {
            candle_core::bail!("embedding: a table of {rows} rows of {d} is too large")
        }
        let backward = name.contains("bwd");
        let (out, shape) = if backward {
            (device.alloc_zeros::<f32>(rows * d)?, Shape::from((rows, d)))
        } else {
            // SAFETY: the kernel writes every element.
            (
                unsafe { device.alloc::<f32>(n_ids * d)? },
                Shape::from((n_ids, d)),
            )
        };
        let func = device.get_or_load_custom_func(name, MODULE, PTX)?;
        let mut builder = func.builder();
        if backward {
            builder.arg(&i);
            builder.arg(&f);
        } else {
            builder.arg(&f);
            builder.arg(&i);
        }
        builder.arg(&out);
        candle_core::builder_arg!(builder, n_ids as i64, d as i32, rows as u32);
        let config = LaunchConfig {
            grid_dim: ((n_ids * d).div_ceil(256).clamp(1, 65535) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernels' signatures.
        unsafe { builder.launch(config) }.w()?;
        drop(builder);
        let slice = CudaStorageSlice::F32(out);
        Ok((CudaStorage { slice, device }, shape))
    }
}
