//! Mixed precision: what `bf16`, `fp16`, `bf16_full_eval` and
//! `fp16_full_eval` mean in taper, and fp16's dynamic loss scaling.
//!
//! The weights stay f32 (the model's `VarMap`, the optimizer's updates and
//! the checkpoints never change dtype). In [`Precision::Mixed`] a model casts
//! each weight to the half type once per forward and runs its matrix
//! products in it, like PyTorch's autocast; softmax, normalisation, the loss
//! and reductions stay f32, where half types lose too much. Gradients reach
//! the f32 weights through the backward pass of the cast. A model learns its
//! precision through [`Model::set_precision`](crate::Model::set_precision);
//! one that ignores it computes in f32, which is always correct.
//!
//! fp16 has 5 exponent bits: small gradients underflow to zero. The
//! [`LossScaler`] multiplies the loss by a large scale before the backward
//! pass and divides the gradients by it afterwards, as PyTorch's
//! `GradScaler`: a step whose gradients hold an inf or a NaN is skipped and
//! the scale halved; after 2000 good steps in a row it doubles. bf16 has f32's
//! exponent range and needs no scaling.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::args::TrainingArguments;
use crate::error::Result;
use crate::optim::Gradients;

/// How a model computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Matrix products in the half type (`BF16` or `F16`), with f32 weights,
    /// softmax, norms and loss (autocast).
    Mixed(DType),
    /// Everything in the half type, weights cast (`bf16_full_eval`, `fp16_full_eval`).
    Full(DType),
}

impl Precision {
    /// Training precision: `Mixed(BF16)` with `bf16`, `Mixed(F16)` with `fp16`, else `F32`.
    pub fn for_training(args: &TrainingArguments) -> Self {
        if args.bf16 {
            Precision::Mixed(DType::BF16)
        } else if args.fp16 {
            Precision::Mixed(DType::F16)
        } else {
            Precision::F32
        }
    }

    /// Evaluation precision: `Full` with `bf16_full_eval` / `fp16_full_eval`,
    /// else the training precision (HF evaluates under autocast too).
    pub fn for_eval(args: &TrainingArguments) -> Self {
        if args.bf16_full_eval {
            Precision::Full(DType::BF16)
        } else if args.fp16_full_eval {
            Precision::Full(DType::F16)
        } else {
            Self::for_training(args)
        }
    }

    /// The dtype of matrix products: the half type, or F32.
    pub fn compute_dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Mixed(half) | Precision::Full(half) => half,
        }
    }

    /// The dtype of everything that is not a matrix product (residual
    /// stream, norms, softmax): F32 unless [`Precision::Full`].
    pub fn accumulate_dtype(self) -> DType {
        match self {
            Precision::Full(half) => half,
            _ => DType::F32,
        }
    }
}

/// A loss scaler's hyper-parameters; the defaults are PyTorch's `GradScaler`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScalerConfig {
    /// The first scale.
    pub init_scale: f64,
    /// Multiplies the scale after `growth_interval` good steps.
    pub growth_factor: f64,
    /// Multiplies the scale after a step with inf or NaN gradients.
    pub backoff_factor: f64,
    /// Good steps in a row before the scale grows.
    pub growth_interval: u64,
}

impl Default for LossScalerConfig {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// The state a checkpoint keeps of a [`LossScaler`] (PyTorch's `scaler.pt`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScalerState {
    /// The current scale.
    pub scale: f64,
    /// Good steps since the scale last changed.
    pub growth_tracker: u64,
}

/// Dynamic loss scaling for fp16 (PyTorch's `GradScaler`).
///
/// Per optimizer step: the training step multiplies its loss by
/// [`LossScaler::scale`] before the backward pass; then
/// [`LossScaler::unscale`] divides the gradients by it and says whether they
/// are all finite; [`LossScaler::update`] adapts the scale, and the step is
/// skipped when they were not.
///
/// ```
/// use taper::precision::LossScaler;
/// let mut scaler = LossScaler::default();
/// assert_eq!(scaler.scale(), 65536.0);
/// assert_eq!(
///     scaler.update(false).as_deref(),
///     Some("overflow: skipping step, loss scale 65536 -> 32768")
/// );
/// assert_eq!(scaler.scale(), 32768.0);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LossScaler {
    config: LossScalerConfig,
    state: Option<LossScalerState>,
}

impl LossScaler {
    /// A scaler with `config`.
    pub fn new(config: LossScalerConfig) -> Self {
        Self {
            config,
            state: None,
        }
    }

    fn state(&self) -> LossScalerState {
        self.state.unwrap_or(LossScalerState {
            scale: self.config.init_scale,
            growth_tracker: 0,
        })
    }

    /// The factor the loss is multiplied by before the backward pass.
    pub fn scale(&self) -> f64 {
        self.state().scale
    }

    /// Divides `grads` by the scale; true when every gradient is finite.
    ///
    /// One device-to-host read for all gradients: the sum of their squares,
    /// which is finite exactly when they all are (barring a sum past f32's
    /// range, itself an overflow worth skipping).
    pub fn unscale(&self, grads: &mut Gradients) -> Result<bool> {
        grads.scale(1.0 / self.scale())?;
        let mut total: Option<Tensor> = None;
        for grad in grads.iter().flatten() {
            let squares = grad.to_dtype(DType::F32)?.sqr()?.sum_all()?;
            total = Some(match total {
                None => squares,
                Some(t) => (t + squares)?,
            });
        }
        Ok(match total {
            None => true,
            Some(t) => t.to_scalar::<f32>()?.is_finite(),
        })
    }

    /// Adapts the scale after a step whose gradients were `finite` or not;
    /// returns the line to log when the step is skipped.
    pub fn update(&mut self, finite: bool) -> Option<String> {
        let mut state = self.state();
        let message = if finite {
            state.growth_tracker += 1;
            if state.growth_tracker >= self.config.growth_interval {
                state.scale *= self.config.growth_factor;
                state.growth_tracker = 0;
            }
            None
        } else {
            let before = state.scale;
            state.scale *= self.config.backoff_factor;
            state.growth_tracker = 0;
            Some(format!(
                "overflow: skipping step, loss scale {before} -> {}",
                state.scale
            ))
        };
        self.state = Some(state);
        message
    }

    /// The state to save in a checkpoint.
    pub fn saved_state(&self) -> LossScalerState {
        self.state()
    }

    /// Restores a state from [`LossScaler::saved_state`].
    pub fn load_state(&mut self, state: LossScalerState) {
        self.state = Some(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_after_the_interval_and_backs_off_on_overflow() {
        let mut scaler = LossScaler::new(LossScalerConfig {
            growth_interval: 3,
            ..Default::default()
        });
        for _ in 0..2 {
            assert_eq!(scaler.update(true), None);
        }
        assert_eq!(scaler.scale(), 65536.0);
        scaler.update(true);
        assert_eq!(scaler.scale(), 131072.0);
        assert_eq!(
            scaler.update(false).unwrap(),
            "overflow: skipping step, loss scale 131072 -> 65536"
        );
        // The overflow restarts the count of good steps.
        scaler.update(true);
        scaler.update(true);
        assert_eq!(scaler.scale(), 65536.0);
        assert_eq!(
            scaler.saved_state(),
            LossScalerState {
                scale: 65536.0,
                growth_tracker: 2
            }
        );
    }

    #[test]
    fn unscale_divides_and_detects_inf_and_nan() {
        let device = candle_core::Device::Cpu;
        let scaler = LossScaler::default();
        let grad = |v: f32| Tensor::new(&[v, 2.0 * 65536.0], &device).unwrap();
        let mut grads = Gradients::from_vec(vec![Some(grad(65536.0)), None]);
        assert!(scaler.unscale(&mut grads).unwrap());
        let values = grads.get(0).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values, vec![1.0, 2.0]);
        for bad in [f32::INFINITY, f32::NAN] {
            let mut grads = Gradients::from_vec(vec![Some(grad(bad))]);
            assert!(!scaler.unscale(&mut grads).unwrap(), "{bad}");
        }
    }
}
