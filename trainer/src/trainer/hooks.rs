//! The steps a person customises: computing the loss, a training step, a
//! prediction step (HF's `compute_loss`, `training_step`, `prediction_step`).
//!
//! In Python one subclasses `Trainer`; here one implements [`TrainingHooks`]
//! and overrides only the methods that change, or passes a closure to
//! [`Trainer::with_compute_loss`](crate::trainer::Trainer::with_compute_loss).

use candle_core::Tensor;

use crate::data::Batch;
use crate::error::{Error, Result};
use crate::loss::cross_entropy;
use crate::model::{Model, ModelOutput};
use crate::optim::{Gradients, Parameters};

/// What a step knows besides the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepContext {
    /// Micro-batches in this optimizer step: each loss is divided by it, so
    /// the accumulated gradient is that of their mean.
    pub num_micro_batches: usize,
    /// HF's `label_smoothing_factor`.
    pub label_smoothing_factor: f64,
    /// True in training (dropout on), false in evaluation and prediction.
    pub training: bool,
    /// fp16's loss scale: a training step multiplies its loss by it before
    /// the backward pass (the Trainer divides the gradients by it). 1 unless `fp16`.
    pub loss_scale: f64,
}

/// What one prediction step gives back.
#[derive(Debug, Clone)]
pub struct PredictionStep {
    /// The batch's mean loss, when it has labels.
    pub loss: Option<f64>,
    /// The logits, unless only the loss was asked for.
    pub logits: Option<Tensor>,
    /// The labels, unless only the loss was asked for.
    pub labels: Option<Tensor>,
}

/// The customisable steps, with HF's behaviour as the defaults.
pub trait TrainingHooks<M: Model + ?Sized>: Send {
    /// The loss to minimise (a scalar tensor) and the model's output.
    ///
    /// The default takes the model's own loss, or with label smoothing
    /// recomputes it from the logits, as HF's `LabelSmoother` does.
    fn compute_loss(
        &self,
        model: &M,
        batch: &Batch,
        ctx: &StepContext,
    ) -> Result<(Tensor, ModelOutput)> {
        let output = model.forward(batch, ctx.training)?;
        let loss = match (&batch.labels, ctx.label_smoothing_factor) {
            (Some(labels), eps) if eps > 0.0 => cross_entropy(&output.logits, labels, eps)?,
            _ => output.loss.clone().ok_or_else(|| {
                Error::Usage(
                    "the model returned no loss: give the batch labels, or implement \
                     TrainingHooks::compute_loss (or use Trainer::with_compute_loss)"
                        .into(),
                )
            })?,
        };
        Ok((loss, output))
    }

    /// One micro-batch: the loss (already divided by the number of
    /// micro-batches; a scalar tensor, detached from the graph) and the
    /// gradients of `params`, taken of the loss times `ctx.loss_scale` (a
    /// custom training step must scale it too).
    ///
    /// The loss stays a tensor, as HF's `training_step` returns one: the
    /// Trainer reads the losses back only when it logs or saves, so a step
    /// on a GPU does not wait for the device to finish the previous one.
    fn training_step(
        &self,
        model: &M,
        params: &Parameters,
        batch: &Batch,
        ctx: &StepContext,
    ) -> Result<(Tensor, Gradients)> {
        let (loss, _) = self.compute_loss(model, batch, ctx)?;
        let loss = (loss / ctx.num_micro_batches as f64)?;
        let scaled = if ctx.loss_scale == 1.0 {
            loss.clone()
        } else {
            (&loss * ctx.loss_scale)?
        };
        let grads = Gradients::from_store(params, &scaled.backward()?);
        // Detached: a kept loss must not keep the step's graph (its activations) alive.
        Ok((loss.detach(), grads))
    }

    /// One evaluation batch: loss (through [`TrainingHooks::compute_loss`]
    /// when the batch has labels, as HF does), logits and labels.
    fn prediction_step(
        &self,
        model: &M,
        batch: &Batch,
        ctx: &StepContext,
        prediction_loss_only: bool,
    ) -> Result<PredictionStep> {
        let (loss, output) = if batch.labels.is_some() {
            let (loss, output) = self.compute_loss(model, batch, ctx)?;
            (
                Some(loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?),
                output,
            )
        } else {
            (None, model.forward(batch, ctx.training)?)
        };
        if prediction_loss_only {
            return Ok(PredictionStep {
                loss,
                logits: None,
                labels: None,
            });
        }
        // Half-precision logits become f32, as HF's numpy conversion does:
        // metrics and `predict` users get one dtype whatever the precision.
        let logits = match output.logits.dtype() {
            candle_core::DType::BF16 | candle_core::DType::F16 => {
                output.logits.detach().to_dtype(candle_core::DType::F32)?
            }
            _ => output.logits.detach(),
        };
        Ok(PredictionStep {
            loss,
            logits: Some(logits),
            labels: batch.labels.clone(),
        })
    }
}

/// HF's behaviour, unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultHooks;

impl<M: Model + ?Sized> TrainingHooks<M> for DefaultHooks {}

/// A `compute_loss` closure: `(model, batch, output) -> loss`.
pub struct ComputeLossFn<F>(pub F);

impl<M, F> TrainingHooks<M> for ComputeLossFn<F>
where
    M: Model + ?Sized,
    F: Fn(&M, &Batch, &ModelOutput) -> Result<Tensor> + Send,
{
    fn compute_loss(
        &self,
        model: &M,
        batch: &Batch,
        ctx: &StepContext,
    ) -> Result<(Tensor, ModelOutput)> {
        let output = model.forward(batch, ctx.training)?;
        let loss = (self.0)(model, batch, &output)?;
        Ok((loss, output))
    }
}
