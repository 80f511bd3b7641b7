//! Lion (Chen et al., 2023): the update is the sign of an interpolation of
//! momentum and gradient, so every coordinate moves by exactly `lr`.

use super::adamw::decayed;
use super::buffers::{saved_step, Buffers};
use super::{Gradients, Optimizer, OptimizerState, Parameters};
use crate::error::Result;

/// Lion's hyper-parameters (the learning rate comes with every step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LionConfig {
    /// Interpolation for the update direction.
    pub beta1: f64,
    /// Decay of the momentum.
    pub beta2: f64,
    /// Decoupled weight decay for parameters that take it.
    pub weight_decay: f64,
}

/// The Lion optimizer.
pub struct Lion {
    params: Parameters,
    config: LionConfig,
    exp_avg: Buffers,
    step: u64,
}

impl Lion {
    /// Lion over `params`.
    pub fn new(params: Parameters, config: LionConfig) -> Self {
        let n = params.len();
        Self {
            params,
            config,
            exp_avg: Buffers::new("exp_avg", n),
            step: 0,
        }
    }
}

impl Optimizer for Lion {
    fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        for (i, param) in self.params.iter().enumerate() {
            let Some(grad) = grads.get(i) else { continue };
            let theta = param.var.as_tensor().detach();
            let m = self.exp_avg.get_or_zeros(i, &theta)?;
            let direction = ((&m * c.beta1)? + (grad * (1.0 - c.beta1))?)?.sign()?;
            let decay = if param.decay {
                lr * c.weight_decay
            } else {
                0.0
            };
            let next = (decayed(&theta, decay)? - (direction * lr)?)?;
            param.var.set(&next)?;
            self.exp_avg
                .set(i, ((m * c.beta2)? + (grad * (1.0 - c.beta2))?)?);
        }
        Ok(())
    }

    fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::default();
        self.exp_avg.save(&self.params, &mut state.tensors);
        state.scalars.insert("step".into(), self.step.into());
        state
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.step = saved_step(&state.scalars)?;
        self.exp_avg.load(&self.params, &state.tensors)
    }
}
