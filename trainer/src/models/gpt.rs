//! A small GPT: token and position embeddings, pre-norm decoder blocks with
//! causal self-attention and a GELU MLP, a final norm and a language-model head.
//!
//! Labels are aligned with the inputs (label `t` is the target of position
//! `t`; `-100` is ignored), so a data set decides which positions train.
//!
//! candle-nn's fused `LayerNorm` and `softmax_last_dim` have no backward pass
//! (they are built with `apply_op*_no_bwd`): a model trained through them
//! silently gets no gradient past them. The layer norm here is therefore
//! composed of differentiable ops on the CPU, and so is the attention
//! softmax, while on a GPU both are taper's fused ops with their own
//! backward ([`crate::ops::layer_norm`], [`crate::ops::attention_softmax`]),
//! which the composed ops cost several times as much as
//! (notes/gpu-performance.md).
//!
//! Mixed precision ([`Precision`]): the weights stay f32; each forward casts
//! every linear layer's weights to the compute dtype once (each is used once
//! per forward) and runs the matrix products in it. The residual stream,
//! the layer norms and the attention softmax stay in the accumulate dtype
//! (f32 unless [`Precision::Full`]), as under PyTorch's autocast. The
//! logits come out in the compute dtype; the loss upcasts them.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder, VarMap};

use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::{Model, ModelOutput};
use crate::precision::Precision;

/// The shape of a [`Gpt`].
#[derive(Debug, Clone, PartialEq)]
pub struct GptConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Longest sequence (position embeddings).
    pub max_seq_len: usize,
    /// Number of decoder blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// Width of the residual stream.
    pub d_model: usize,
}

impl GptConfig {
    /// The reference GPT of the GPU benchmarks: 6 layers, d 768, 12 heads, vocab 8192, 512 tokens (55M parameters).
    pub fn reference() -> Self {
        Self {
            vocab_size: 8192,
            max_seq_len: 512,
            n_layer: 6,
            n_head: 12,
            d_model: 768,
        }
    }
}

/// A layer norm with a backward pass (weight 1, bias 0 at the start, eps 1e-5).
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(d, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(d, "bias", candle_nn::Init::Const(0.0))?,
        })
    }

    /// Normalises `x` in its own dtype: on a GPU with taper's fused op (one
    /// kernel forward, two backward), elsewhere composed of candle's ops.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (weight, bias) = (
            self.weight.to_dtype(x.dtype())?,
            self.bias.to_dtype(x.dtype())?,
        );
        if crate::ops::use_fused("layer_norm", x.device(), x.dtype()) {
            return crate::ops::layer_norm(x, &weight, &bias, 1e-5);
        }
        Ok(candle_nn::ops::layer_norm_slow(x, &weight, &bias, 1e-5)?)
    }
}

/// `x @ w^T + b` in `dtype`: the f32 weights are cast (a no-op in f32), and
/// the cast's backward pass brings the gradients back to them in f32. On a
/// GPU the product is taper's ([`crate::ops::linear`]: 3xTF32 in f32) and
/// the bias is added by taper's op, whose backward is one matrix product
/// instead of candle's broadcast sum.
fn linear(layer: &Linear, x: &Tensor, dtype: DType) -> Result<Tensor> {
    let weight = cast(layer.weight(), dtype)?;
    let bias = layer.bias().map(|b| cast(b, dtype)).transpose()?;
    let product = crate::ops::linear(&cast(x, dtype)?, &weight)?;
    match bias {
        Some(bias) if crate::ops::use_fused("bias_add", product.device(), dtype) => {
            crate::ops::bias_add(&product, &bias)
        }
        Some(bias) => Ok(product.broadcast_add(&bias)?),
        None => Ok(product),
    }
}

/// `x` in `dtype`: on a GPU by taper's cast kernels (candle's bf16 -> f32
/// cast is slow), elsewhere by candle's.
fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    if crate::ops::use_fused("cast", x.device(), dtype) {
        return crate::ops::cast(x, dtype);
    }
    Ok(x.to_dtype(dtype)?)
}

struct Block {
    ln_1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln_2: LayerNorm,
    fc: Linear,
    fc_proj: Linear,
    n_head: usize,
}

impl Block {
    fn new(config: &GptConfig, vb: VarBuilder) -> Result<Self> {
        let d = config.d_model;
        Ok(Self {
            ln_1: LayerNorm::new(d, vb.pp("ln_1"))?,
            qkv: candle_nn::linear(d, 3 * d, vb.pp("attn.qkv"))?,
            proj: candle_nn::linear(d, d, vb.pp("attn.proj"))?,
            ln_2: LayerNorm::new(d, vb.pp("ln_2"))?,
            fc: candle_nn::linear(d, 4 * d, vb.pp("mlp.fc"))?,
            fc_proj: candle_nn::linear(4 * d, d, vb.pp("mlp.proj"))?,
            n_head: config.n_head,
        })
    }

    /// `x` and `mask` are in the accumulate dtype of `precision`.
    fn forward(&self, x: &Tensor, mask: &Tensor, precision: Precision) -> Result<Tensor> {
        let (compute, stream) = (precision.compute_dtype(), x.dtype());
        let attn = self.attention(&self.ln_1.forward(x)?, mask, compute)?;
        let x = (x + cast(&attn, stream)?)?;
        let h = linear(&self.fc, &self.ln_2.forward(&x)?, compute)?;
        let h = if crate::ops::use_fused("gelu", h.device(), compute) {
            crate::ops::gelu(&h)?
        } else {
            h.gelu()?
        };
        Ok((&x + cast(&linear(&self.fc_proj, &h, compute)?, stream)?)?)
    }

    /// Projections and products in `compute`; the scores are masked and
    /// softmaxed in f32. On a GPU by taper's attention op, which
    /// recomputes the weights in the backward instead of keeping them
    /// ([`crate::ops::causal_attention`]); elsewhere composed, with the
    /// softmax in the dtype of `x` (f32 under mixed precision).
    fn attention(&self, x: &Tensor, mask: &Tensor, compute: DType) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let head_dim = d / self.n_head;
        let qkv = linear(&self.qkv, x, compute)?;
        if crate::ops::use_fused("attention", x.device(), compute) {
            return linear(
                &self.proj,
                &crate::ops::causal_attention(&qkv, self.n_head)?,
                compute,
            );
        }
        let qkv = qkv
            .reshape((b, t, 3, self.n_head, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let weights = if crate::ops::use_fused("softmax", x.device(), compute) {
            // Scale, mask and softmax in one kernel, in f32 on `compute` values.
            crate::ops::attention_softmax(&q.matmul(&k.t()?)?, scale, true)?
        } else {
            let scores = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?
                .to_dtype(x.dtype())?
                .broadcast_add(mask)?;
            candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(compute)?
        };
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        linear(&self.proj, &out, compute)
    }
}

/// A decoder-only transformer language model.
pub struct Gpt {
    config: GptConfig,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    varmap: VarMap,
    precision: Precision,
}

impl Gpt {
    /// A new GPT with weights drawn from `seed`.
    pub fn new(config: &GptConfig, seed: u64, device: &Device) -> Result<Self> {
        if config.n_head == 0 || config.d_model % config.n_head != 0 {
            return Err(Error::Config(format!(
                "d_model {} must be a multiple of n_head {}",
                config.d_model, config.n_head
            )));
        }
        let (varmap, vb) = crate::init::seeded_var_builder(seed, DType::F32, device);
        let d = config.d_model;
        let blocks = (0..config.n_layer)
            .map(|i| Block::new(config, vb.pp(format!("h.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: config.clone(),
            wte: candle_nn::embedding(config.vocab_size, d, vb.pp("wte"))?,
            wpe: candle_nn::embedding(config.max_seq_len, d, vb.pp("wpe"))?,
            blocks,
            ln_f: LayerNorm::new(d, vb.pp("ln_f"))?,
            lm_head: candle_nn::linear_no_bias(d, config.vocab_size, vb.pp("lm_head"))?,
            varmap,
            precision: Precision::F32,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Logits `(batch, seq, vocab)` for token ids `(batch, seq)`, in the
    /// compute dtype of the model's precision (f32 unless set otherwise).
    pub fn logits(&self, tokens: &Tensor) -> Result<Tensor> {
        let (_b, t) = tokens.dims2()?;
        if t > self.config.max_seq_len {
            return Err(Error::Usage(format!(
                "sequence of {t} tokens is longer than max_seq_len {}",
                self.config.max_seq_len
            )));
        }
        let device = tokens.device();
        let positions = Tensor::arange(0u32, t as u32, device)?;
        let stream = self.precision.accumulate_dtype();
        let mut x = embed(&self.wte, tokens)?
            .broadcast_add(&embed(&self.wpe, &positions)?)?
            .to_dtype(stream)?;
        let mask = causal_mask(t, device)?.to_dtype(stream)?;
        for block in &self.blocks {
            x = block.forward(&x, &mask, self.precision)?;
        }
        linear(
            &self.lm_head,
            &self.ln_f.forward(&x)?,
            self.precision.compute_dtype(),
        )
    }
}

/// The rows of `table` for `ids`: on a GPU through taper's fused op,
/// whose backward is a scatter-add instead of candle's slow `index_add`.
fn embed(table: &Embedding, ids: &Tensor) -> Result<Tensor> {
    let weight = table.embeddings();
    if crate::ops::use_fused("embedding", ids.device(), weight.dtype()) {
        return crate::ops::embedding(weight, ids);
    }
    Ok(table.forward(ids)?)
}

/// `(t, t)` with 0 on and below the diagonal and -inf above it.
fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(values, (t, t), device)?)
}

impl Model for Gpt {
    fn forward(&self, batch: &Batch, _train: bool) -> Result<ModelOutput> {
        ModelOutput::with_cross_entropy(self.logits(&batch.inputs)?, batch.labels.as_ref())
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// HF's estimate: 6 x tokens x non-embedding parameters.
    fn floating_point_ops(&self, batch: &Batch) -> Option<f64> {
        let tokens = batch.inputs.elem_count() as f64;
        let embeddings = (self.config.vocab_size + self.config.max_seq_len) * self.config.d_model;
        Some(6.0 * tokens * (self.num_parameters() - embeddings) as f64)
    }
}
