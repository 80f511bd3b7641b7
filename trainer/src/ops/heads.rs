//! Splitting a fused projection into attention heads, and merging heads
//! back, for [`super::causal_attention`]. Not differentiable: the attention
//! runs them on detached tensors and writes its own backward.
//!
//! Why: candle does both with its generic strided copy (`permute` then
//! `contiguous`, and `stack` for the gradients), which decodes five
//! strided dimensions per element. On an H200 those copies were 5.3 ms of
//! a 23 ms bf16 step of the reference GPT, at about a tenth of the memory
//! bandwidth (notes/gpu-performance.md, optimisation 11). On a GPU,
//! `kernels/heads.cu` moves each head's row (contiguous on both sides) in
//! whole words; on the CPU the composed ops do.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};

/// The shape of `groups` blocks of heads (3 for q, k and v; 1 for the
/// attention's output or its gradient).
#[derive(Clone, Copy, Debug)]
pub(super) struct HeadShape {
    pub batch: usize,
    pub t: usize,
    pub groups: usize,
    pub n_head: usize,
    pub head_dim: usize,
}

impl HeadShape {
    /// `(batch, t, groups * n_head * head_dim)` -> `(groups, batch, n_head,
    /// t, head_dim)`, contiguous.
    pub fn split(self, x: &Tensor) -> candle_core::Result<Tensor> {
        let HeadShape {
            batch,
            t,
            groups,
            n_head,
            head_dim,
        } = self;
        if x.device().is_cuda() {
            return x.contiguous()?.apply_op1_no_bwd(&SplitHeads(self));
        }
        x.reshape((batch, t, groups, n_head, head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()
    }

    /// `groups` tensors `(batch, n_head, t, head_dim)` -> `(batch, t, groups
    /// * n_head * head_dim)`, contiguous.
    pub fn merge(self, parts: &[&Tensor]) -> candle_core::Result<Tensor> {
        if parts.len() != self.groups || !(1..=3).contains(&parts.len()) {
            candle_core::bail!("merge_heads: {} parts for {self:?}", parts.len())
        }
        let width = self.groups * self.n_head * self.head_dim;
        if parts[0].device().is_cuda() {
            let part = |i: usize| parts[i.min(parts.len() - 1)].contiguous();
            // The kernel takes three sources; fewer groups repeat the last.
            return part(0)?.apply_op3_no_bwd(&part(1)?, &part(2)?, &MergeHeads(self));
        }
        Tensor::stack(parts, 2)?
            .transpose(1, 3)?
            .contiguous()?
            .reshape((self.batch, self.t, width))
    }

    /// The number of elements of all groups.
    #[cfg(feature = "cuda")]
    fn elem_count(self) -> usize {
        self.batch * self.t * self.groups * self.n_head * self.head_dim
    }
}

// The shape is read by the CUDA launches only (the CPU takes candle's ops).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct SplitHeads(HeadShape);
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct MergeHeads(HeadShape);

impl CustomOp1 for SplitHeads {
    fn name(&self) -> &'static str {
        "taper-split-heads"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("split_heads: the CPU uses candle's ops")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let s = self.0;
        let out = cuda::split(x, layout, s)?;
        let shape = Shape::from((s.groups, s.batch, s.n_head, s.t, s.head_dim));
        Ok((out, shape))
    }
}

impl CustomOp3 for MergeHeads {
    fn name(&self) -> &'static str {
        "taper-merge-heads"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("merge_heads: the CPU uses candle's ops")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        a: &candle_core::CudaStorage,
        a_layout: &Layout,
        b: &candle_core::CudaStorage,
        b_layout: &Layout,
        c: &candle_core::CudaStorage,
        c_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let s = self.0;
        let out = cuda::merge([(a, a_layout), (b, b_layout), (c, c_layout)], s)?;
        let shape = Shape::from((s.batch, s.t, s.groups * s.n_head * s.head_dim));
        Ok((out, shape))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The launches of `kernels/heads.cu`: the dtype only sets the row's
    //! size in bytes, from which the word size is chosen.

    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, DeviceRepr, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaStorageSlice as S, WrapErr};
    use candle_core::{CudaDevice, CudaStorage, Layout};

    use super::HeadShape;
    use crate::ops::grid_stride_config;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/heads.ptx"));

    /// The widest word (16, 8, 4 or 2 bytes) that divides a row of
    /// `row_bytes` and every start offset (in bytes), and the kernel
    /// suffix for it.
    fn word(row_bytes: usize, offsets: &[usize]) -> candle_core::Result<(usize, &'static str)> {
        for (bytes, name) in [(16, "w16"), (8, "w8"), (4, "w4"), (2, "w2")] {
            if row_bytes % bytes == 0 && offsets.iter().all(|o| o % bytes == 0) {
                return Ok((bytes, name));
            }
        }
        candle_core::bail!("heads: no kernel for rows of {row_bytes} bytes")
    }

    /// A contiguous view of `storage`'s elements in `layout`.
    fn view<'a, T>(
        slice: &'a CudaSlice<T>,
        layout: &Layout,
    ) -> candle_core::Result<CudaView<'a, T>> {
        match layout.contiguous_offsets() {
            Some((start, end)) => Ok(slice.slice(start..end)),
            None => candle_core::bail!("heads: the kernels need contiguous tensors"),
        }
    }

    /// The words of all groups, refused past the kernels' 32-bit indices.
    fn words(s: HeadShape, elem_bytes: usize, word_bytes: usize) -> candle_core::Result<u32> {
        let words = s.elem_count() * elem_bytes / word_bytes;
        u32::try_from(words).map_err(|_| {
            candle_core::Error::Msg(format!("heads: {s:?} is too large for one launch"))
        })
    }

    fn launch_split<T: DeviceRepr>(
        dev: &CudaDevice,
        src: &CudaView<T>,
        start: usize,
        s: HeadShape,
    ) -> candle_core::Result<CudaSlice<T>> {
        let size = std::mem::size_of::<T>();
        let (bytes, suffix) = word(s.head_dim * size, &[start * size])?;
        let n = words(s, size, bytes)?;
        let func =
            dev.get_or_load_custom_func(&format!("split_heads_{suffix}"), "taper_heads", PTX)?;
        // SAFETY: the kernel writes every element.
        let dst = unsafe { dev.alloc::<T>(s.elem_count())? };
        let units = (s.head_dim * size / bytes) as u32;
        let mut builder = func.builder();
        builder.arg(src);
        builder.arg(&dst);
        let (batch, t, groups, heads) =
            (s.batch as u32, s.t as u32, s.groups as u32, s.n_head as u32);
        candle_core::builder_arg!(builder, n, batch, t, groups, heads, units);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { builder.launch(grid_stride_config(n as usize)) }.w()?;
        Ok(dst)
    }

    fn launch_merge<T: DeviceRepr>(
        dev: &CudaDevice,
        srcs: [CudaView<T>; 3],
        starts: [usize; 3],
        s: HeadShape,
    ) -> candle_core::Result<CudaSlice<T>> {
        let size = std::mem::size_of::<T>();
        let (bytes, suffix) = word(s.head_dim * size, &starts.map(|o| o * size))?;
        let n = words(s, size, bytes)?;
        let func =
            dev.get_or_load_custom_func(&format!("merge_heads_{suffix}"), "taper_heads", PTX)?;
        // SAFETY: the kernel writes every element.
        let dst = unsafe { dev.alloc::<T>(s.elem_count())? };
        let units = (s.head_dim * size / bytes) as u32;
        let mut builder = func.builder();
        for src in &srcs {
            builder.arg(src);
        }
        builder.arg(&dst);
        let (t, groups, heads) = (s.t as u32, s.groups as u32, s.n_head as u32);
        candle_core::builder_arg!(builder, n, t, groups, heads, units);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { builder.launch(grid_stride_config(n as usize)) }.w()?;
        Ok(dst)
    }

    /// The split's launch for any of taper's float dtypes.
    pub fn split(
        x: &CudaStorage,
        layout: &Layout,
        s: HeadShape,
    ) -> candle_core::Result<CudaStorage> {
        let dev = x.device.clone();
        let start = layout.start_offset();
        macro_rules! by_dtype {
            ($($dtype:ident),*) => {
                match &x.slice {
                    $(S::$dtype(v) => S::$dtype(launch_split(&dev, &view(v, layout)?, start, s)?),)*
                    _ => candle_core::bail!("split_heads: no kernel for {:?}", x.dtype()),
                }
            };
        }
        let slice = by_dtype!(F32, BF16, F16, F64);
        Ok(CudaStorage { slice, device: dev })
    }

    /// The merge's launch for three parts of one of taper's float dtypes.
    pub fn merge(
        parts: [(&CudaStorage, &Layout); 3],
        s: HeadShape,
    ) -> candle_core::Result<CudaStorage> {
        let dev = parts[0].0.device.clone();
        let starts = parts.map(|(_, l)| l.start_offset());
        let [(a, la), (b, lb), (c, lc)] = parts;
        macro_rules! by_dtype {
            ($($dtype:ident),*) => {
                match (&a.slice, &b.slice, &c.slice) {
                    $((S::$dtype(a), S::$dtype(b), S::$dtype(c)) => {
                        let views = [view(a, la)?, view(b, lb)?, view(c, lc)?];
                        S::$dtype(launch_merge(&dev, views, starts, s)?)
                    })*
                    _ => candle_core::bail!("merge_heads: no kernel for {:?}", a.dtype()),
                }
            };
        }
        let slice = by_dtype!(F32, BF16, F16, F64);
        Ok(CudaStorage { slice, device: dev })
    }
}
