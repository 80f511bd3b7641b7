//! Optimizers of taper's own, each with a saveable state.
//!
//! candle-nn's `AdamW` keeps its moments private, and exact resume needs them,
//! so taper carries its own: AdamW in both the PyTorch and the transformers
//! flavour, SGD with momentum and Nesterov, and Lion. Every optimizer works on
//! [`Parameters`] (the model's variables, sorted by name, split into the
//! weight-decay groups HF uses) and [`Gradients`] aligned with them.

mod adamw;
mod buffers;
mod fused_adamw;
mod fused_clip;
mod grads;
mod lion;
mod params;
mod sgd;

pub use adamw::{AdamW, AdamWConfig};
pub use grads::Gradients;
pub use lion::{Lion, LionConfig};
pub use params::{is_no_decay, Parameter, Parameters};
pub use sgd::{Sgd, SgdConfig};

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::args::TrainingArguments;
use crate::error::{Error, Result};

/// The optimizer families taper implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// PyTorch's AdamW: weight decay applied before the Adam update.
    AdamWTorch,
    /// transformers' own AdamW (`adamw_hf`): weight decay applied after the update.
    AdamWHf,
    /// SGD with optional momentum, dampening and Nesterov.
    Sgd,
    /// Lion (sign of an interpolated momentum).
    Lion,
}

/// Every `optim` name taper accepts, with the family it selects.
pub const OPTIMIZER_NAMES: &[(&str, OptimizerKind)] = &[
    ("adamw_hf", OptimizerKind::AdamWHf),
    ("adamw_torch", OptimizerKind::AdamWTorch),
    ("adamw_torch_fused", OptimizerKind::AdamWTorch),
    ("adamw", OptimizerKind::AdamWTorch),
    ("sgd", OptimizerKind::Sgd),
    ("lion_32bit", OptimizerKind::Lion),
    ("lion", OptimizerKind::Lion),
];

/// The family selected by an `optim` name, if taper supports it.
pub fn optimizer_kind(name: &str) -> Option<OptimizerKind> {
    OPTIMIZER_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, kind)| *kind)
}

/// Everything an optimizer needs to continue exactly where it stopped.
#[derive(Debug, Clone, Default)]
pub struct OptimizerState {
    /// Per-parameter buffers, keyed `"{buffer}.{parameter name}"` (e.g. `exp_avg.h.0.mlp.fc.weight`).
    pub tensors: BTreeMap<String, Tensor>,
    /// Counters and hyper-parameters.
    pub scalars: serde_json::Map<String, serde_json::Value>,
}

/// An optimizer over a fixed set of [`Parameters`].
pub trait Optimizer: Send {
    /// Updates every parameter that has a gradient, at learning rate `lr`.
    fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()>;
    /// Whether [`Optimizer::step`] would multiply every gradient of `grads`
    /// by [`Gradients::clip_coefficient`] itself, so that clipping may leave
    /// the gradients as they are ([`Gradients::clip_global_norm_deferred`]).
    /// False unless an optimizer says otherwise.
    fn applies_clip_coefficient(&self, grads: &Gradients) -> bool {
        let _ = grads;
        false
    }
    /// A copy of the state (buffers and counters).
    fn state(&self) -> OptimizerState;
    /// Restores a state saved by [`Optimizer::state`].
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// Builds the optimizer `args.optim` names, with `args.optim_args` applied.
pub fn build(args: &TrainingArguments, params: Parameters) -> Result<Box<dyn Optimizer>> {
    let kind = optimizer_kind(&args.optim).ok_or_else(|| {
        let names: Vec<&str> = OPTIMIZER_NAMES.iter().map(|(n, _)| *n).collect();
        Error::Config(format!(
            "unknown optimizer `{}`; supported: {}",
            args.optim,
            names.join(", ")
        ))
    })?;
    let mut extra = OptimArgs::parse(args.optim_args.as_deref().unwrap_or(""))?;
    let optimizer: Box<dyn Optimizer> = match kind {
        OptimizerKind::AdamWTorch | OptimizerKind::AdamWHf => Box::new(AdamW::new(
            params,
            adamw::AdamWConfig {
                beta1: extra.take_f64("beta1", args.adam_beta1)?,
                beta2: extra.take_f64("beta2", args.adam_beta2)?,
                eps: extra.take_f64("eps", args.adam_epsilon)?,
                weight_decay: args.weight_decay,
                decay_after_update: kind == OptimizerKind::AdamWHf,
            },
        )),
        OptimizerKind::Sgd => Box::new(Sgd::new(
            params,
            sgd::SgdConfig {
                momentum: extra.take_f64("momentum", 0.0)?,
                dampening: extra.take_f64("dampening", 0.0)?,
                nesterov: extra.take_bool("nesterov", false)?,
                weight_decay: args.weight_decay,
            },
        )?),
        OptimizerKind::Lion => Box::new(Lion::new(
            params,
            lion::LionConfig {
                beta1: extra.take_f64("beta1", 0.9)?,
                beta2: extra.take_f64("beta2", 0.99)?,
                weight_decay: args.weight_decay,
            },
        )),
    };
    extra.finish(&args.optim)?;
    Ok(optimizer)
}

/// `optim_args` as HF writes them: `"key=value,key=value"`.
struct OptimArgs {
    pairs: BTreeMap<String, String>,
    accepted: Vec<&'static str>,
}

impl OptimArgs {
    fn parse(text: &str) -> Result<Self> {
        let mut pairs = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                Error::Config(format!(
                    "optim_args item `{item}` is not `key=value`; write e.g. `momentum=0.9,nesterov=true`"
                ))
            })?;
            pairs.insert(key.trim().to_string(), value.trim().to_string());
        }
        Ok(Self {
            pairs,
            accepted: Vec::new(),
        })
    }

    fn take_f64(&mut self, key: &'static str, default: f64) -> Result<f64> {
        self.accepted.push(key);
        match self.pairs.remove(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                Error::Config(format!("optim_args `{key}={v}`: `{v}` is not a number"))
            }),
        }
    }

    fn take_bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        self.accepted.push(key);
        match self.pairs.remove(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                Error::Config(format!("optim_args `{key}={v}`: expected true or false"))
            }),
        }
    }

    fn finish(self, optim: &str) -> Result<()> {
        if self.pairs.is_empty() {
            return Ok(());
        }
        let unknown: Vec<&String> = self.pairs.keys().collect();
        Err(Error::Config(format!(
            "optim_args {unknown:?} are not used by `{optim}`; it accepts: {}",
            self.accepted.join(", ")
        )))
    }
}
