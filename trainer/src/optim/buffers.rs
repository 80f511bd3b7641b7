//! Per-parameter optimizer buffers (moments, momentum) and their saved form.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::Parameters;
use crate::error::{Error, Result};

/// One buffer per parameter, created lazily at a parameter's first update
/// (as PyTorch does), so parameters that never get a gradient cost nothing.
#[derive(Debug, Clone)]
pub(crate) struct Buffers {
    kind: &'static str,
    values: Vec<Option<Tensor>>,
}

impl Buffers {
    pub(crate) fn new(kind: &'static str, n: usize) -> Self {
        Self {
            kind,
            values: vec![None; n],
        }
    }

    /// The buffer of parameter `i`, zeros like `like` when it does not exist yet.
    pub(crate) fn get_or_zeros(&self, i: usize, like: &Tensor) -> Result<Tensor> {
        match &self.values[i] {
            Some(t) => Ok(t.clone()),
            None => Ok(like.zeros_like()?),
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Tensor> {
        self.values[i].as_ref()
    }

    pub(crate) fn set(&mut self, i: usize, value: Tensor) {
        self.values[i] = Some(value);
    }

    /// Replaces every buffer by a copy of its own (no memory shared with
    /// whoever handed it in), for optimizers that update buffers in place.
    pub(crate) fn own_copies(&mut self) -> Result<()> {
        for value in self.values.iter_mut().flatten() {
            *value = value.copy()?;
        }
        Ok(())
    }

    /// Writes every existing buffer as `"{kind}.{parameter name}"`.
    pub(crate) fn save(&self, params: &Parameters, out: &mut BTreeMap<String, Tensor>) {
        for (param, value) in params.iter().zip(&self.values) {
            if let Some(value) = value {
                out.insert(format!("{}.{}", self.kind, param.name), value.clone());
            }
        }
    }

    /// Reads the buffers written by [`Buffers::save`], checking shapes.
    pub(crate) fn load(
        &mut self,
        params: &Parameters,
        saved: &BTreeMap<String, Tensor>,
    ) -> Result<()> {
        for (i, param) in params.iter().enumerate() {
            let key = format!("{}.{}", self.kind, param.name);
            self.values[i] = match saved.get(&key) {
                None => None,
                Some(t) if t.shape() == param.var.shape() => Some(
                    t.to_device(param.var.device())?
                        .to_dtype(param.var.dtype())?,
                ),
                Some(t) => {
                    return Err(Error::Usage(format!(
                        "optimizer state `{key}` has shape {:?} but the parameter has {:?}: \
                         the checkpoint belongs to a different model",
                        t.shape(),
                        param.var.shape()
                    )))
                }
            };
        }
        Ok(())
    }
}

/// Reads the step counter saved under `"step"`.
pub(crate) fn saved_step(scalars: &serde_json::Map<String, serde_json::Value>) -> Result<u64> {
    scalars
        .get("step")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| Error::Usage("optimizer state has no `step` counter".into()))
}
