//! The parameters an optimizer updates, in a fixed order.
//!
//! Sorting by name makes the order (and so every saved state) the same in
//! every process; the weight-decay flag follows HF, which exempts biases and
//! normalisation weights.

use candle_core::Var;
use candle_nn::VarMap;

/// One named parameter.
#[derive(Debug, Clone)]
pub struct Parameter {
    /// Its name in the model's `VarMap` (and in `model.safetensors`).
    pub name: String,
    /// The variable itself.
    pub var: Var,
    /// Whether weight decay applies to it.
    pub decay: bool,
}

/// A model's parameters, sorted by name.
#[derive(Debug, Clone)]
pub struct Parameters(Vec<Parameter>);

impl Parameters {
    /// Every variable of `varmap`, sorted by name, with HF's decay rule.
    pub fn from_varmap(varmap: &VarMap) -> Self {
        let data = varmap
            .data()
            .lock()
            .expect("the varmap lock is never poisoned");
        let mut params: Vec<Parameter> = data
            .iter()
            .map(|(name, var)| Parameter {
                name: name.clone(),
                var: var.clone(),
                decay: !is_no_decay(name),
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Self(params)
    }

    /// The parameters in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Parameter> {
        self.0.iter()
    }

    /// The number of parameters (tensors, not scalars).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// HF's rule: no weight decay on biases and normalisation layers. A segment of
/// the dotted name that contains `bias`, contains `norm` or starts with `ln`
/// marks one (candle-nn's `layer_norm(.., vb.pp("ln_1"))` gives `ln_1.weight`).
pub fn is_no_decay(name: &str) -> bool {
    name.split('.').any(|segment| {
        let s = segment.to_ascii_lowercase();
        s.contains("bias") || s.contains("norm") || s.starts_with("ln")
    })
}
