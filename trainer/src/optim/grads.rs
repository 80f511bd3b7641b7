//! Gradients aligned with [`Parameters`]: accumulation over micro-batches and
//! clipping by the global L2 norm, as HF's `max_grad_norm` means it.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use super::{fused_clip, Parameters};
use crate::error::Result;

/// One optional gradient per parameter, in the parameters' order, and
/// clipping's coefficient where [`Gradients::clip_global_norm_deferred`]
/// left the multiply to the optimizer.
#[derive(Debug, Clone, Default)]
pub struct Gradients {
    grads: Vec<Option<Tensor>>,
    clip_coef: Option<Tensor>,
}

impl Gradients {
    /// The gradients of `params` found in a backward pass's store.
    pub fn from_store(params: &Parameters, store: &GradStore) -> Self {
        Self::from_vec(
            params
                .iter()
                .map(|p| store.get(p.var.as_tensor()).cloned())
                .collect(),
        )
    }

    /// From one entry per parameter.
    pub fn from_vec(grads: Vec<Option<Tensor>>) -> Self {
        Self {
            grads,
            clip_coef: None,
        }
    }

    /// The gradient of parameter `index`, if it has one.
    pub fn get(&self, index: usize) -> Option<&Tensor> {
        self.grads.get(index).and_then(Option::as_ref)
    }

    /// Every entry, in parameter order.
    pub fn iter(&self) -> impl Iterator<Item = Option<&Tensor>> {
        self.grads.iter().map(Option::as_ref)
    }

    /// The coefficient every gradient is still to be multiplied by (an f32
    /// scalar on the gradients' device), after
    /// [`Gradients::clip_global_norm_deferred`]; `None` otherwise.
    pub fn clip_coefficient(&self) -> Option<&Tensor> {
        self.clip_coef.as_ref()
    }

    /// Adds `other` (a later micro-batch) into `self`.
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        if self.grads.is_empty() {
            *self = other;
            return Ok(());
        }
        for (mine, theirs) in self.grads.iter_mut().zip(other.grads) {
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
        match self.sum_of_squares()? {
            None => Ok(0.0),
            Some(t) => Ok(f64::from(t.to_scalar::<f32>()?).sqrt()),
        }
    }

    /// The sum of every gradient's squares, an f32 scalar on the gradients'
    /// device; `None` without gradients. f32 gradients on a GPU add into one
    /// scalar with one kernel each (`fused_clip`); the others, and all on the
    /// CPU, are squared and summed by candle, in parameter order.
    fn sum_of_squares(&self) -> Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        let mut fused: Option<Tensor> = None;
        for grad in self.grads.iter().flatten() {
            if fused_clip::applies(grad) {
                let acc = match &fused {
                    Some(acc) => acc,
                    None => fused.insert(Tensor::zeros((), DType::F32, grad.device())?),
                };
                fused_clip::add_sum_of_squares(acc, grad)?;
                continue;
            }
            let squares = grad.to_dtype(DType::F32)?.sqr()?.sum_all()?;
            total = Some(match total {
                None => squares,
                Some(t) => (t + squares)?,
            });
        }
        Ok(match (total, fused) {
            (Some(t), Some(f)) => Some((t + f)?),
            (t, f) => t.or(f),
        })
    }

    /// Scales every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for grad in self.grads.iter_mut().flatten() {
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

    /// Clips as [`Gradients::clip_global_norm`] does without reading anything
    /// back, as PyTorch's `clip_grad_norm_` does: the norm stays an f32
    /// scalar on the gradients' device (returned; `None` without gradients)
    /// and every gradient is multiplied by `min(max_norm / (norm + 1e-6), 1)`
    /// computed there. On a GPU this spares a step its wait for the device;
    /// the coefficient's f32 arithmetic differs from the f64 one of
    /// `clip_global_norm` in the last bits.
    pub fn clip_global_norm_on_device(&mut self, max_norm: f64) -> Result<Option<Tensor>> {
        let Some((norm, coef)) = self.norm_and_coefficient(max_norm)? else {
            return Ok(None);
        };
        for grad in self.grads.iter_mut().flatten() {
            *grad = grad.broadcast_mul(&coef.to_dtype(grad.dtype())?)?;
        }
        Ok(Some(norm))
    }

    /// As [`Gradients::clip_global_norm_on_device`], but the gradients stay
    /// as they are and the coefficient is kept ([`Gradients::clip_coefficient`])
    /// for an optimizer that multiplies each gradient by it as it reads it:
    /// the fused AdamW does, in its kernel, which spares clipping a pass over
    /// every gradient. Only for an optimizer whose
    /// [`Optimizer::applies_clip_coefficient`](super::Optimizer::applies_clip_coefficient)
    /// is true; the others would update with unclipped gradients.
    pub fn clip_global_norm_deferred(&mut self, max_norm: f64) -> Result<Option<Tensor>> {
        let Some((norm, coef)) = self.norm_and_coefficient(max_norm)? else {
            return Ok(None);
        };
        self.clip_coef = Some(coef);
        Ok(Some(norm))
    }

    /// The global norm and `min(max_norm / (norm + 1e-6), 1)`, f32 scalars
    /// on the gradients' device; `None` without gradients.
    fn norm_and_coefficient(&self, max_norm: f64) -> Result<Option<(Tensor, Tensor)>> {
        let Some(total) = self.sum_of_squares()? else {
            return Ok(None);
        };
        let norm = total.sqrt()?;
        let coef = ((&norm + 1e-6)?.recip()? * max_norm)?.minimum(1.0)?;
        Ok(Some((norm, coef)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::Gradients;

    fn make() -> Gradients {
        let t = |v: &[f32]| Some(Tensor::new(v, &Device::Cpu).unwrap());
        Gradients::from_vec(vec![t(&[3.0, 0.0]), None, t(&[4.0, 12.0])])
    }

    fn values(g: &Gradients) -> Vec<f32> {
        g.iter()
            .flatten()
            .flat_map(|t| t.to_vec1::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn clipping_on_the_device_matches_clipping_with_a_read_norm() {
        for max_norm in [1.0, 20.0] {
            let (mut read, mut kept) = (make(), make());
            let norm = read.clip_global_norm(max_norm).unwrap();
            let on_device = kept.clip_global_norm_on_device(max_norm).unwrap().unwrap();
            assert_eq!(f64::from(on_device.to_scalar::<f32>().unwrap()), norm);
            for (a, b) in values(&read).iter().zip(values(&kept)) {
                assert!((a - b).abs() <= 1e-7, "max_norm {max_norm}: {a} vs {b}");
            }
        }
        // Not clipping multiplies by exactly 1.
        let mut kept = make();
        kept.clip_global_norm_on_device(20.0).unwrap();
        assert_eq!(values(&kept), values(&make()));
        assert!(Gradients::default()
            .clip_global_norm_on_device(1.0)
            .unwrap()
            .is_none());
    }

    #[test]
    fn deferred_clipping_keeps_the_gradients_and_the_coefficient() {
        let (mut applied, mut deferred) = (make(), make());
        let norm = applied.clip_global_norm_on_device(1.0).unwrap().unwrap();
        let kept = deferred.clip_global_norm_deferred(1.0).unwrap().unwrap();
        assert_eq!(
            norm.to_scalar::<f32>().unwrap(),
            kept.to_scalar::<f32>().unwrap()
        );
        assert_eq!(values(&deferred), values(&make()));
        let coef = deferred
            .clip_coefficient()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        for (a, g) in values(&applied).iter().zip(values(&make())) {
            assert_eq!(*a, g * coef);
        }
        assert!(make().clip_coefficient().is_none());
    }
}
