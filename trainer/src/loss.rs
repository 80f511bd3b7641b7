//! Losses shared by the built-in models and the Trainer.
//!
//! Labels equal to [`IGNORE_INDEX`] (`-100`, as in PyTorch and HF) are left out
//! of the mean, so a language model can train on the answer tokens of a
//! sequence only. Label smoothing follows HF's `LabelSmoother`.
//!
//! On a GPU, without label smoothing, the loss is taper's fused kernel
//! ([`crate::ops::cross_entropy_rows`]); elsewhere candle's composed ops.

use candle_core::{DType, Tensor, D};

use crate::error::Result;

/// Labels with this value do not count towards a loss or an accuracy.
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits` (`(..., classes)`) against integer `labels`
/// (`(...)`), ignoring [`IGNORE_INDEX`], with label smoothing `epsilon`
/// (`0.0` for none): `(1 - eps) * nll + eps * mean(-log p)` over the classes.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, epsilon: f64) -> Result<Tensor> {
    let classes = logits.dim(D::Minus1)?;
    let labels = labels.flatten_all()?.to_dtype(DType::I64)?;
    if epsilon == 0.0 && crate::ops::use_fused("cross_entropy", logits.device(), logits.dtype()) {
        // One kernel each way, on the logits' own dtype (f32 arithmetic).
        let rows = crate::ops::cross_entropy_rows(&logits.reshape(((), classes))?, &labels)?;
        let active = labels.ge(&labels.zeros_like()?)?.to_dtype(DType::F32)?;
        let active = active.sum_all()?.maximum(1f64)?;
        return Ok(rows.sum_all()?.div(&active)?);
    }
    let logits = logits.reshape(((), classes))?.to_dtype(DType::F32)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let active = labels.ge(&labels.zeros_like()?)?;
    let safe_labels = active.where_cond(&labels, &labels.zeros_like()?)?;
    let mask = active.to_dtype(DType::F32)?;
    let num_active = mask.sum_all()?.maximum(1f64)?;
    let picked = log_probs
        .gather(&safe_labels.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    let nll = picked.mul(&mask)?.sum_all()?.neg()?.div(&num_active)?;
    if epsilon == 0.0 {
        return Ok(nll);
    }
    let smoothed = log_probs
        .sum(D::Minus1)?
        .mul(&mask)?
        .sum_all()?
        .neg()?
        .div(&(num_active * classes as f64)?)?;
    Ok(((nll * (1.0 - epsilon))? + (smoothed * epsilon)?)?)
}
