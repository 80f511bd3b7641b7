//! AdamW (Loshchilov & Hutter), in the two flavours HF users meet.
//!
//! `adamw_torch` is PyTorch's: decay first (`p *= 1 - lr * wd`), then the
//! bias-corrected update with `eps` added to `sqrt(v_hat)`. `adamw_hf` is
//! transformers' own: the update uses `lr * sqrt(bc2) / bc1` with `eps` added
//! to `sqrt(v)`, and decay is applied after it. The two differ in the last bits,
//! and a person comparing losses with a PyTorch run should get the same ones.

use candle_core::Tensor;

use super::buffers::{saved_step, Buffers};
use super::fused_adamw::{self, StepScalars};
use super::{Gradients, Optimizer, OptimizerState, Parameters};
use crate::error::Result;

/// AdamW's hyper-parameters (the learning rate comes with every step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator for stability.
    pub eps: f64,
    /// Decoupled weight decay for parameters that take it.
    pub weight_decay: f64,
    /// `adamw_hf`: decay after the update instead of before.
    pub decay_after_update: bool,
}

/// AdamW with per-parameter moments.
pub struct AdamW {
    params: Parameters,
    config: AdamWConfig,
    exp_avg: Buffers,
    exp_avg_sq: Buffers,
    step: u64,
    /// Whether the fused GPU kernel, which updates the moments in place, has run.
    fused: bool,
}

impl AdamW {
    /// AdamW over `params`.
    pub fn new(params: Parameters, config: AdamWConfig) -> Self {
        let n = params.len();
        Self {
            params,
            config,
            exp_avg: Buffers::new("exp_avg", n),
            exp_avg_sq: Buffers::new("exp_avg_sq", n),
            step: 0,
            fused: false,
        }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        let clip = grads.clip_coefficient();
        for (i, param) in self.params.iter().enumerate() {
            let Some(grad) = grads.get(i) else { continue };
            let theta = param.var.as_tensor().detach();
            let decay = if param.decay {
                lr * c.weight_decay
            } else {
                0.0
            };
            if fused_adamw::applies(&theta, grad) {
                let m = self.exp_avg.get_or_zeros(i, &theta)?;
                let v = self.exp_avg_sq.get_or_zeros(i, &theta)?;
                let (step_size, sqrt_bc2) = if c.decay_after_update {
                    (lr * bc2.sqrt() / bc1, 1.0)
                } else {
                    (lr / bc1, bc2.sqrt())
                };
                let scalars = StepScalars {
                    beta1: c.beta1,
                    beta2: c.beta2,
                    eps: c.eps,
                    keep: 1.0 - decay,
                    step_size,
                    sqrt_bc2,
                    decay_after: c.decay_after_update,
                };
                fused_adamw::update(&theta, grad, &m, &v, clip, &scalars)?;
                self.exp_avg.set(i, m);
                self.exp_avg_sq.set(i, v);
                self.fused = true;
                continue;
            }
            // A clipping coefficient left to the optimizer, applied as
            // `clip_global_norm_on_device` would have.
            let clipped;
            let grad = match clip {
                Some(coef) => {
                    clipped = grad.broadcast_mul(&coef.to_dtype(grad.dtype())?)?;
                    &clipped
                }
                None => grad,
            };
            let m =
                ((self.exp_avg.get_or_zeros(i, &theta)? * c.beta1)? + (grad * (1.0 - c.beta1))?)?;
            let v = ((self.exp_avg_sq.get_or_zeros(i, &theta)? * c.beta2)?
                + (grad.sqr()? * (1.0 - c.beta2))?)?;
            let next = if c.decay_after_update {
                let step_size = lr * bc2.sqrt() / bc1;
                let denom = (v.sqrt()? + c.eps)?;
                let updated = (&theta - (m.div(&denom)? * step_size)?)?;
                decayed(&updated, decay)?
            } else {
                let theta = decayed(&theta, decay)?;
                let denom = ((v.sqrt()? / bc2.sqrt())? + c.eps)?;
                (&theta - (m.div(&denom)? * (lr / bc1))?)?
            };
            param.var.set(&next)?;
            self.exp_avg.set(i, m);
            self.exp_avg_sq.set(i, v);
        }
        Ok(())
    }

    /// True where the fused kernel updates every parameter that has a
    /// gradient: it multiplies each gradient by the coefficient as it loads it.
    fn applies_clip_coefficient(&self, grads: &Gradients) -> bool {
        self.params.iter().enumerate().all(|(i, param)| {
            grads
                .get(i)
                .is_none_or(|grad| fused_adamw::applies(param.var.as_tensor(), grad))
        })
    }

    fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::default();
        self.exp_avg.save(&self.params, &mut state.tensors);
        self.exp_avg_sq.save(&self.params, &mut state.tensors);
        state.scalars.insert("step".into(), self.step.into());
        if self.fused {
            // The fused kernel updates the moments in place: the state handed
            // out must not change with later steps.
            for tensor in state.tensors.values_mut() {
                if let Ok(copy) = tensor.copy() {
                    *tensor = copy;
                }
            }
        }
        state
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.step = saved_step(&state.scalars)?;
        self.exp_avg.load(&self.params, &state.tensors)?;
        self.exp_avg_sq.load(&self.params, &state.tensors)?;
        if self.params.iter().any(|p| p.var.device().is_cuda()) {
            // Loaded buffers may share memory with `state`, which the fused
            // kernel's in-place updates must leave alone.
            self.exp_avg.own_copies()?;
            self.exp_avg_sq.own_copies()?;
        }
        Ok(())
    }
}

/// `theta * (1 - decay)`, skipping the multiply when there is no decay.
pub(crate) fn decayed(theta: &Tensor, decay: f64) -> Result<Tensor> {
    if decay == 0.0 {
        Ok(theta.clone())
    } else {
        Ok((theta * (1.0 - decay))?)
    }
}
