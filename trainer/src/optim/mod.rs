//! Optimizers of taper's own, each with a saveable state.
//!
//! CONTRACT (skeleton): the names below are final; the optimizers follow.

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
