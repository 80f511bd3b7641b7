//! Gradients aligned with [`Parameters`]: accumulation over micro-batches and
//! clipping by the global L2 norm, as HF's `max_grad_norm` means it.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use super::Parameters;
use crate::error::Result;

/// One optional gradient per parameter, in the parameters' order.
#[derive(Debug, Clone, Default)]
pub struct Gradients(Vec<Option<Tensor>>);

impl Gradients {
    /// The gradients of `params` found in a backward pass's store.
    pub fn from_store(params: &Parameters, store: &GradStore) -> Self {
        Self(
            params
                .iter()
                .map(|p| store.get(p.var.as_tensor()).cloned())
                .collect(),
        )
    }

    /// From one entry per parameter.
    pub fn from_vec(grads: Vec<Option<Tensor>>) -> Self {
        Self(grads)
    }

    /// The gradient of parameter `index`, if it has one.
    pub fn get(&self, index: usize) -> Option<&Tensor> {
        self.0.get(index).and_then(Option::as_ref)
    }

    /// Every entry, in parameter order.
    pub fn iter(&self) -> impl Iterator<Item = Option<&Tensor>> {
        self.0.iter().map(Option::as_ref)
    }

    /// Adds `other` (a later micro-batch) into `self`.
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        if self.0.is_empty() {
            *self = other;
            return Ok(());
        }
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine = match (mine.take(), theirs) {
                (Some(a), Some(b)) => Some((a + b)?),
                (a, b) => a.or(b),
            };
        }
        Ok(())
    }

    /// The L2 norm of all gradients together.
    pub fn global_norm(&self) -> Result<f64> {
        // One device-to-host read for all parameters, not one each.
        let mut total: Option<Tensor> = None;
        for grad in self.0.iter().flatten() {
            let squares = grad.to_dtype(DType::F32)?.sqr()?.sum_all()?;
            total = Some(match total {
                None => squares,
                Some(t) => (t + squares)?,
            });
        }
        match total {
            None => Ok(0.0),
            Some(t) => Ok(f64::from(t.to_scalar::<f32>()?).sqrt()),
        }
    }

    /// Scales every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for grad in self.0.iter_mut().flatten() {
            *grad = (&*grad * factor)?;
        }
        Ok(())
    }

    /// Clips to a global norm of `max_norm` (PyTorch's `clip_grad_norm_`:
    /// scale by `max_norm / (norm + 1e-6)` when that is below 1) and returns
    /// the norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            self.scale(coef)?;
        }
        Ok(norm)
    }
}
