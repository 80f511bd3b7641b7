//! SGD with momentum, dampening and Nesterov, as `torch.optim.SGD` computes it
//! (weight decay is the coupled L2 kind: added to the gradient).

use super::buffers::{saved_step, Buffers};
use super::{Gradients, Optimizer, OptimizerState, Parameters};
use crate::error::{Error, Result};

/// SGD's hyper-parameters (the learning rate comes with every step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor (0 for plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty for parameters that take it.
    pub weight_decay: f64,
}

/// Stochastic gradient descent.
pub struct Sgd {
    params: Parameters,
    config: SgdConfig,
    momentum_buffer: Buffers,
    step: u64,
}

impl Sgd {
    /// SGD over `params`; Nesterov needs momentum and no dampening, as in PyTorch.
    pub fn new(params: Parameters, config: SgdConfig) -> Result<Self> {
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(Error::Config(
                "sgd with nesterov=true needs momentum > 0 and dampening = 0 (optim_args `momentum=0.9,nesterov=true`)"
                    .into(),
            ));
        }
        let n = params.len();
        Ok(Self {
            params,
            config,
            momentum_buffer: Buffers::new("momentum_buffer", n),
            step: 0,
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        for (i, param) in self.params.iter().enumerate() {
            let Some(grad) = grads.get(i) else { continue };
            let theta = param.var.as_tensor().detach();
            let mut d = grad.clone();
            if param.decay && c.weight_decay != 0.0 {
                d = (d + (&theta * c.weight_decay)?)?;
            }
            if c.momentum != 0.0 {
                let buf = match self.momentum_buffer.get(i) {
                    None => d.clone(),
                    Some(buf) => ((buf * c.momentum)? + (&d * (1.0 - c.dampening))?)?,
                };
                d = if c.nesterov {
                    (d + (&buf * c.momentum)?)?
                } else {
                    buf.clone()
                };
                self.momentum_buffer.set(i, buf);
            }
            param.var.set(&(&theta - (d * lr)?)?)?;
        }
        Ok(())
    }

    fn state(&self) -> OptimizerState {
        let mut state = OptimizerState::default();
        self.momentum_buffer.save(&self.params, &mut state.tensors);
        state.scalars.insert("step".into(), self.step.into());
        state
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.step = saved_step(&state.scalars)?;
        self.momentum_buffer.load(&self.params, &state.tensors)
    }
}
