//! Causal self-attention that keeps nothing score-sized for the backward
//! pass: the backward recomputes the attention weights from q and k, as
//! flash attention does, with the same matrix products and softmax kernel
//! as the forward.
//!
//! Why: composed from candle's ops, each layer kept the scores and the
//! softmax's weights (two `(batch, heads, t, t)` tensors, 200 MB a layer
//! of the reference GPT in bf16) alive until its backward, which put
//! taper's peak GPU memory at 1.6 times PyTorch's; and the split of the
//! fused q/k/v projection into heads went through `narrow`, whose backward
//! writes three zero-padded copies of the projection's gradient and adds
//! them (notes/gpu-performance.md, optimisation 10). Here the graph holds
//! one node whose only saved input is the projection, and its backward
//! writes the projection's gradient in one copy.
//!
//! The forward is computed on detached tensors (no graph), and a custom op
//! hands the result to candle with a backward of taper's own. What it
//! costs: one more `q k^T` product and softmax a layer in the backward,
//! about 3% of a step.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use super::heads::HeadShape;
use crate::error::{Error, Result};

/// `softmax(q k^T / sqrt(head_dim) + causal mask) v` over `n_head` heads,
/// with q, k and v taken from `qkv` of shape `(batch, t, 3 * d)` (the fused
/// projection: all of q, then k, then v, each split into heads of
/// `d / n_head`) and the heads merged back: `(batch, t, d)`. Differentiable
/// in `qkv`; in its dtype, the softmax computed in f32
/// ([`crate::ops::attention_softmax`]).
///
/// ```
/// # use candle_core::{Device, Tensor};
/// let qkv = Tensor::ones((1, 2, 6), candle_core::DType::F32, &Device::Cpu).unwrap();
/// let out = taper::ops::causal_attention(&qkv, 2).unwrap();
/// assert_eq!(out.dims(), [1, 2, 2]);
/// ```
pub fn causal_attention(qkv: &Tensor, n_head: usize) -> Result<Tensor> {
    let (batch, t, width) = qkv.dims3()?;
    if n_head == 0 || width % (3 * n_head) != 0 {
        return Err(Error::Usage(format!(
            "causal_attention needs qkv's last dimension ({width}) to be 3 x n_head ({n_head}) \
             x head_dim"
        )));
    }
    let heads = Heads {
        batch,
        t,
        n_head,
        head_dim: width / (3 * n_head),
    };
    let qkv = qkv.contiguous()?;
    let out = heads.forward(&qkv.detach())?;
    Ok(qkv.apply_op1(RecomputedAttention {
        heads,
        out: Mutex::new(Some(out)),
    })?)
}

/// The shape of the heads, and the attention on them.
#[derive(Clone, Copy)]
struct Heads {
    batch: usize,
    t: usize,
    n_head: usize,
    head_dim: usize,
}

impl Heads {
    fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    /// The layout of `groups` blocks of heads (3: q, k and v; 1: the
    /// output).
    fn shape(&self, groups: usize) -> HeadShape {
        HeadShape {
            batch: self.batch,
            t: self.t,
            groups,
            n_head: self.n_head,
            head_dim: self.head_dim,
        }
    }

    /// `(batch, t, 3 * d)` -> q, k, v, each `(batch, heads, t, head_dim)`
    /// (views into one contiguous copy).
    fn split(&self, qkv: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let heads = self.shape(3).split(qkv)?;
        Ok((heads.get(0)?, heads.get(1)?, heads.get(2)?))
    }

    /// The attention weights, `(batch, heads, t, t)`.
    fn weights(&self, q: &Tensor, k: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::attention_softmax(&q.matmul(&k.t()?)?, self.scale(), true)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    /// The attention's output on detached (untracked) `qkv`: `(batch, t, d)`.
    fn forward(&self, qkv: &Tensor) -> candle_core::Result<Tensor> {
        let (q, k, v) = self.split(qkv)?;
        let out = self.weights(&q, &k)?.matmul(&v)?;
        // Merging the heads copies into a fresh, contiguous tensor, which
        // the custom op below hands to candle whole.
        self.shape(1).merge(&[&out])
    }

    /// The gradient of `qkv` from the output's gradient, recomputing the
    /// weights.
    fn backward(&self, qkv: &Tensor, grad_out: &Tensor) -> candle_core::Result<Tensor> {
        let (q, k, v) = self.split(qkv)?;
        let weights = self.weights(&q, &k)?;
        let grad_out = self
            .shape(1)
            .split(&grad_out.to_dtype(qkv.dtype())?)?
            .squeeze(0)?;
        let grad_v = weights.t()?.matmul(&grad_out)?;
        let grad_weights = grad_out.matmul(&v.t()?)?;
        let grad_scores =
            crate::ops::softmax::backward(&weights, &grad_weights, self.scale(), true)?;
        let grad_q = grad_scores.matmul(&k)?;
        let grad_k = grad_scores.t()?.matmul(&q)?;
        // Back to the layout of `qkv`, in one copy.
        self.shape(3).merge(&[&grad_q, &grad_k, &grad_v])
    }
}

/// The custom op: its forward hands over the output computed on detached
/// tensors (taken once), its backward is [`Heads::backward`].
struct RecomputedAttention {
    heads: Heads,
    out: Mutex<Option<Tensor>>,
}

impl RecomputedAttention {
    /// The precomputed output's storage (a copy: candle takes it by value)
    /// and shape.
    fn output(&self) -> candle_core::Result<(Storage, Shape)> {
        let out = self
            .out
            .lock()
            .map_err(|_| candle_core::Error::Msg("causal_attention: poisoned lock".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("causal_attention: forward ran twice".into()))?;
        let (storage, layout) = out.storage_and_layout();
        if layout.contiguous_offsets() != Some((0, layout.shape().elem_count())) {
            candle_core::bail!("causal_attention: the merged heads are not a whole tensor")
        }
        let copy = match &*storage {
            Storage::Cpu(s) => Storage::Cpu(s.try_clone(layout)?),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => Storage::Cuda(s.try_clone(layout)?),
            #[allow(unreachable_patterns)]
            _ => candle_core::bail!("causal_attention: no support for this device"),
        };
        Ok((copy, layout.shape().clone()))
    }
}

impl CustomOp1 for RecomputedAttention {
    fn name(&self) -> &'static str {
        "taper-causal-attention"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        match self.output()? {
            (Storage::Cpu(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("causal_attention: the output is not on the CPU"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        match self.output()? {
            (Storage::Cuda(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("causal_attention: the output is not on the GPU"),
        }
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.heads.backward(&arg.detach(), grad_res)?))
    }
}
