//! f32 matrix products on the GPU as three TF32 tensor-core products
//! ("3xTF32"), about as accurate as cuBLAS's FP32 products and 1.1-1.8x as
//! fast.
//!
//! Why: an f32 step of the reference GPT spent 58 of its 67 ms in cuBLAS's
//! FP32 products, which run on the CUDA cores at 44-49 TFLOP/s; PyTorch's
//! eager f32 is bound the same way (notes/gpu-performance.md). The TF32
//! tensor cores run about 6x as fast but read only 10 bits of each
//! input's mantissa (HF's `tf32`: a relative error near 3e-4). Splitting
//! each input `x = hi + lo`, `hi` the TF32 rounding of `x` and `lo` the
//! TF32 rounding of the rest, and summing `lo_a hi_b + hi_a lo_b + hi_a
//! hi_b` in f32 brings the lost bits back: the terms left out are about
//! 2^-21 of each product. This is CUTLASS's 3xTF32; taper does it with one
//! split kernel an input (`kernels/split_tf32.cu`) and cuBLAS's TF32
//! products. The tensor cores accumulate a long sum less carefully than
//! f32's rounding does, so `hi_a hi_b` is summed over chunks of at most
//! 512 of k, each added to the output in f32. Measured on an H200 against
//! an f64 product (`tests/matmul_ops.rs`): a relative error of 9.4e-7
//! where cuBLAS's FP32 product has 3.5e-7 and one TF32 product 2.9e-4.
//!
//! The split costs memory traffic (12 bytes an element), so it pays only
//! where a product does enough arithmetic per element it reads:
//! [`split_pays`]. The attention's score products (64 columns a head) and
//! other small products stay on cuBLAS's FP32 path. With HF's `tf32` on,
//! products take candle's single TF32 product instead;
//! `TAPER_COMPOSED_OPS=matmul` keeps cuBLAS's FP32 products everywhere.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Shape, Tensor};

use crate::error::Result;

/// `x @ weight^T` over the last dimension of `x` (a linear layer without
/// bias, as candle-nn's `Linear`), differentiable. In f32 on a GPU, where
/// [`split_pays`] for the shapes, by taper's 3xTF32 product (the module
/// docs); otherwise by candle's matrix product.
///
/// ```
/// # use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
/// let w = Tensor::new(&[[1f32, 0.0], [0.0, 2.0], [1.0, 1.0]], &Device::Cpu).unwrap();
/// let y = taper::ops::linear(&x, &w).unwrap();
/// assert_eq!(y.to_vec2::<f32>().unwrap(), [[1.0, 4.0, 3.0], [3.0, 8.0, 7.0]]);
/// ```
pub fn linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (out_features, in_features) = weight.dims2()?;
    let rows = x.elem_count() / in_features.max(1);
    if x.dims().last() == Some(&in_features) && uses_split(x, weight, rows, out_features) {
        let mut out_dims = x.dims().to_vec();
        *out_dims.last_mut().expect("x has a last dimension") = out_features;
        let x2 = x.reshape((rows, in_features))?;
        return Ok(matmul(&x2, &weight.t()?)?.reshape(out_dims)?);
    }
    Ok(candle_nn::Linear::new(weight.clone(), None).forward(x)?)
}

/// `a @ b` for a 2-D `a` `(m, k)` and `b` `(k, n)`, differentiable; by
/// taper's 3xTF32 product where [`linear`] would use it, otherwise by
/// candle's.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let ((m, k), (_, n)) = (a.dims2()?, b.dims2()?);
    if k == 0 || !uses_split(a, b, m, n) {
        return Ok(a.matmul(b)?);
    }
    let usable = |t: &Tensor| -> Result<Tensor> {
        let l = t.layout();
        Ok(if Operand::of(l.dims(), l.stride()).is_some() {
            t.clone()
        } else {
            t.contiguous()?
        })
    };
    Ok(usable(a)?.apply_op2(&usable(b)?, SplitTf32Product)?)
}

/// Whether a product with an `(m, k)` by `(k, n)` shape does enough
/// arithmetic per element it reads for the 3xTF32 split to pay:
/// `2mnk / (mk + kn) = 2mn / (m + n)` flops an element of at least 1024.
/// Measured on an H200 (notes/gpu-performance.md, calls 19-20): without
/// the chunked sum the split product ran at 0.74x the FP32 product's speed
/// at 512, 0.98x at 640 and 1.02x at 768; with it, 1.1-1.8x from 1152 (the
/// reference GPT's weight gradients) to 3600 (its forward products). Its
/// attention's score products have about 110.
pub fn split_pays(m: usize, n: usize) -> bool {
    m + n > 0 && 2 * m * n >= 1024 * (m + n)
}

/// Whether `a @ b`, with `m` rows and `n` columns out, takes the 3xTF32
/// product: f32 on a GPU, taper's fused ops on (`matmul`), HF's `tf32` off
/// and the shape worth it.
fn uses_split(a: &Tensor, b: &Tensor, m: usize, n: usize) -> bool {
    a.dtype() == DType::F32
        && b.dtype() == DType::F32
        && crate::ops::use_fused("matmul", a.device(), DType::F32)
        && !tf32_on()
        && split_pays(m, n)
}

#[cfg(feature = "cuda")]
fn tf32_on() -> bool {
    candle_core::cuda_backend::gemm_reduced_precision_f32()
}

#[cfg(not(feature = "cuda"))]
fn tf32_on() -> bool {
    false
}

/// How cuBLAS reads one operand of a row-major product: a matrix of `r`
/// rows and `c` columns whose rows are contiguous (`transposed` false,
/// leading dimension the row stride) or whose columns are (a transposed
/// view: `transposed` true, leading dimension the column stride).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Operand {
    transposed: bool,
    leading: usize,
    /// Elements from the first to the last one the matrix covers.
    span: usize,
}

impl Operand {
    /// `None` for layouts cuBLAS cannot read (broadcast or overlapping
    /// strides, or neither dimension contiguous).
    fn of(dims: &[usize], stride: &[usize]) -> Option<Self> {
        let (&[r, c], &[s0, s1]) = (dims, stride) else {
            return None;
        };
        let span = if r == 0 || c == 0 {
            0
        } else {
            (r - 1) * s0 + (c - 1) * s1 + 1
        };
        if s1 == 1 && (s0 >= c || r == 1) {
            Some(Self {
                transposed: false,
                leading: if r == 1 { c } else { s0 },
                span,
            })
        } else if s0 == 1 && (s1 >= r || c == 1) {
            Some(Self {
                transposed: true,
                leading: if c == 1 { r } else { s1 },
                span,
            })
        } else {
            None
        }
    }
}

/// The 3xTF32 product of two f32 matrices (GPU only; the backward pass is
/// two more of them).
struct SplitTf32Product;

impl CustomOp2 for SplitTf32Product {
    fn name(&self) -> &'static str {
        "taper-matmul-3xtf32"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the 3xTF32 product runs on a GPU only; on the CPU use candle's matmul")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        a: &candle_core::CudaStorage,
        a_layout: &Layout,
        b: &candle_core::CudaStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let device = a.device.clone();
        let (m, n) = (a_layout.dims()[0], b_layout.dims()[1]);
        let slice = cuda::product(&device, (&a.slice, a_layout), (&b.slice, b_layout))?;
        Ok((
            candle_core::CudaStorage { slice, device },
            Shape::from((m, n)),
        ))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_a = matmul(grad_res, &b.t()?).map_err(candle_core::Error::wrap)?;
        let grad_b = matmul(&a.t()?, grad_res).map_err(candle_core::Error::wrap)?;
        Ok((Some(grad_a), Some(grad_b)))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The split kernels of `kernels/split_tf32.cu` and cuBLAS's TF32
    //! products.

    use candle_core::cuda_backend::cudarc::cublas::{result as blas, sys};
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, DevicePtr, DevicePtrMut, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{CudaDevice, Layout};

    use super::Operand;
    use crate::ops::grid_stride_config;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/split_tf32.ptx"));
    const MODULE: &str = "taper_split_tf32";

    /// The longest sum over k that one TF32 product of `hi_a hi_b` makes
    /// before its result is added to the output in f32. The tensor cores
    /// accumulate with less care than f32's rounding (an H200 measured a
    /// relative error 5x cuBLAS's FP32 product's at k 768, growing with k);
    /// sums of at most 512 brought it to 2-3x, for a reference GPT step of
    /// 58.9 ms instead of 51.8 (notes/gpu-performance.md, calls 18-19;
    /// cuBLAS's FP32 products: 67.2 ms). The two small terms are
    /// 2^-11 of it and need no chunks.
    const K_CHUNK: usize = 512;

    /// `k` cut into equal chunks of at most [`K_CHUNK`], each a multiple
    /// of 32 long (the last one shorter), so that every chunk's first
    /// element stays 16-byte aligned for the tensor-core kernels.
    pub(super) fn k_chunk(k: usize) -> usize {
        let chunks = k.div_ceil(K_CHUNK).max(1);
        k.div_ceil(chunks).next_multiple_of(32).min(k).max(1)
    }

    /// `hi` and `lo` of the `n` values of `x` (a view starting at element
    /// `start` of its allocation: the four-wide kernel needs 16 bytes of
    /// alignment).
    fn split(
        dev: &CudaDevice,
        x: &CudaView<f32>,
        start: usize,
        n: usize,
    ) -> candle_core::Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        // SAFETY: the kernel writes every element of both.
        let (hi, lo) = unsafe { (dev.alloc::<f32>(n)?, dev.alloc::<f32>(n)?) };
        let four = start % 4 == 0 && n % 4 == 0;
        let name = if four { "split_tf32_x4" } else { "split_tf32" };
        let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let count = if four { n / 4 } else { n };
        let mut builder = func.builder();
        builder.arg(x);
        builder.arg(&hi);
        builder.arg(&lo);
        candle_core::builder_arg!(builder, count as i64);
        // SAFETY: the arguments match the kernel's signature.
        unsafe { builder.launch(grid_stride_config(count)) }.w()?;
        Ok((hi, lo))
    }

    /// `a @ b` for f32 matrices, row-major out: `lo_a hi_b + hi_a lo_b +
    /// hi_a hi_b`, the small terms first.
    pub(super) fn product(
        dev: &CudaDevice,
        (a, a_layout): (&CudaStorageSlice, &Layout),
        (b, b_layout): (&CudaStorageSlice, &Layout),
    ) -> candle_core::Result<CudaStorageSlice> {
        let (CudaStorageSlice::F32(a), CudaStorageSlice::F32(b)) = (a, b) else {
            candle_core::bail!("the 3xTF32 product takes f32 matrices")
        };
        let operand = |l: &Layout| {
            Operand::of(l.dims(), l.stride()).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "the 3xTF32 product cannot read a matrix of strides {:?}; make it contiguous",
                    l.stride()
                ))
            })
        };
        let (op_a, op_b) = (operand(a_layout)?, operand(b_layout)?);
        let (m, k, n) = (a_layout.dims()[0], a_layout.dims()[1], b_layout.dims()[1]);
        let (sa, sb) = (a_layout.start_offset(), b_layout.start_offset());
        let (a_hi, a_lo) = split(dev, &a.slice(sa..sa + op_a.span), sa, op_a.span)?;
        let (b_hi, b_lo) = split(dev, &b.slice(sb..sb + op_b.span), sb, op_b.span)?;
        // SAFETY: the first product (beta 0) writes every element.
        let mut out = unsafe { dev.alloc::<f32>(m * n)? };
        let blas = dev.cublas_handle();
        let stream = dev.cuda_stream();
        let int = |v: usize| {
            i32::try_from(v).map_err(|_| {
                candle_core::Error::Msg(format!("the 3xTF32 product: {v} is past cuBLAS's i32"))
            })
        };
        // Row-major C (m x n) is column-major C^T = B^T A^T: cuBLAS's first
        // operand is b, its second a (as in candle's own matmul).
        let op = |o: &Operand| {
            if o.transposed {
                sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (ld_a, ld_b, ld_c) = (int(op_a.leading)?, int(op_b.leading)?, int(n)?);
        let (mi, ni) = (int(m)?, int(n)?);
        // (x, y, beta of the first chunk, summed in chunks): only hi hi, the
        // large term, is.
        let products = [
            (&a_lo, &b_hi, 0f32, false),
            (&a_hi, &b_lo, 1.0, false),
            (&a_hi, &b_hi, 1.0, true),
        ];
        // The k stride of each operand: columns of a, rows of b.
        let k_step_a = if op_a.transposed { op_a.leading } else { 1 };
        let k_step_b = if op_b.transposed { 1 } else { op_b.leading };
        for (x, y, first_beta, chunked) in products {
            let chunk = if chunked { k_chunk(k) } else { k.max(1) };
            let (x_ptr, _gx) = x.device_ptr(&stream);
            let (y_ptr, _gy) = y.device_ptr(&stream);
            let (c_ptr, _gc) = out.device_ptr_mut(&stream);
            for k0 in (0..k).step_by(chunk) {
                let alpha = 1f32;
                let beta = if k0 == 0 { first_beta } else { 1.0 };
                let x_at = x_ptr + (k0 * k_step_a * 4) as u64;
                let y_at = y_ptr + (k0 * k_step_b * 4) as u64;
                // SAFETY: the pointers are live allocations on the handle's
                // stream, of the sizes the leading dimensions and spans give.
                unsafe {
                    blas::gemm_ex(
                        *blas.handle(),
                        op(&op_b),
                        op(&op_a),
                        ni,
                        mi,
                        int(chunk.min(k - k0))?,
                        &alpha as *const f32 as *const _,
                        y_at as *const _,
                        sys::cudaDataType_t::CUDA_R_32F,
                        ld_b,
                        x_at as *const _,
                        sys::cudaDataType_t::CUDA_R_32F,
                        ld_a,
                        &beta as *const f32 as *const _,
                        c_ptr as *mut _,
                        sys::cudaDataType_t::CUDA_R_32F,
                        ld_c,
                        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
                        sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
                    )
                }
                .w()?;
            }
        }
        Ok(CudaStorageSlice::F32(out))
    }
}

#[cfg(test)]
mod tests {
    use super::{split_pays, Operand};

    #[cfg(feature = "cuda")]
    #[test]
    fn long_sums_are_cut_into_aligned_chunks_of_at_most_512() {
        use super::cuda::k_chunk;
        assert_eq!(k_chunk(768), 384);
        assert_eq!(k_chunk(2304), 480);
        assert_eq!(k_chunk(3072), 512);
        assert_eq!(k_chunk(8192), 512);
        assert_eq!(k_chunk(100), 100);
        assert_eq!(k_chunk(0), 1);
    }

    #[test]
    fn operands_read_rows_or_columns_and_refuse_broadcasts() {
        let rows = Operand::of(&[4, 3], &[3, 1]).unwrap();
        assert_eq!((rows.transposed, rows.leading, rows.span), (false, 3, 12));
        let columns = Operand::of(&[3, 4], &[1, 3]).unwrap();
        assert_eq!(
            (columns.transposed, columns.leading, columns.span),
            (true, 3, 12)
        );
        let padded = Operand::of(&[2, 3], &[8, 1]).unwrap();
        assert_eq!((padded.leading, padded.span), (8, 11));
        assert_eq!(Operand::of(&[4, 3], &[0, 1]), None);
        assert_eq!(Operand::of(&[4, 3], &[6, 2]), None);
        assert_eq!(Operand::of(&[1, 5], &[0, 1]).unwrap().leading, 5);
    }

    #[test]
    fn the_split_pays_for_linear_layers_not_for_attention_heads() {
        assert!(split_pays(8192, 2304));
        assert!(split_pays(768, 2304));
        assert!(!split_pays(768, 768));
        assert!(!split_pays(512, 64));
        assert!(!split_pays(0, 0));
    }
}
