//! [`Trainer`]: the typed handle a person holds, over the untyped
//! [`TrainerCore`] that does the work.
//!
//! Only what needs the model's type is here: building the Trainer, the
//! builder methods that return it, hooks written for `M`, and `model()`.
//! Each is a few lines, so a notebook cell that trains compiles these and
//! calls the loop already compiled in taper.

use std::any::Any;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::hooks::{ComputeLossFn, PredictionStep, StepContext, TrainingHooks};
use super::TrainerCore;
use crate::args::TrainingArguments;
use crate::callbacks::TrainerCallback;
use crate::data::{Batch, Dataset, Sample};
use crate::error::Result;
use crate::metrics::{EvalPrediction, Metrics};
use crate::model::{AnyModel, ModelOutput};
use crate::optim::{Gradients, Parameters};

/// Trains, evaluates and predicts with a [`Model`](crate::Model), as HF's `Trainer` does.
///
/// Its methods beyond building it (`train`, `evaluate`, `predict`,
/// `save_model`, `state`, ...) are [`TrainerCore`]'s, which it
/// dereferences to.
///
/// ```
/// use taper::{models, Model, Trainer, TrainingArguments};
/// use taper::candle_core::Device;
///
/// let config = models::MlpConfig { input_dim: 4, hidden: vec![8], num_classes: 3 };
/// let model = models::Mlp::new(&config, 0, &Device::Cpu)?;
/// let args = TrainingArguments::builder().max_steps(2).disable_tqdm(true).build()?;
/// let data = taper::datasets::load_tabular("iris", 0.2, 42)?;
/// let mut trainer = Trainer::new(args, model)?.with_train_dataset(data.train);
/// assert_eq!(trainer.train()?.global_step, 2);
/// assert_eq!(trainer.model().num_parameters(), 4 * 8 + 8 + 8 * 3 + 3);
/// # Ok::<(), taper::Error>(())
/// ```
pub struct Trainer<M: AnyModel> {
    core: TrainerCore,
    model: PhantomData<fn() -> M>,
}

impl<M: AnyModel> Trainer<M> {
    /// A Trainer for `model` with `args` (validated here), HF's default
    /// callbacks and hooks.
    pub fn new(args: TrainingArguments, model: M) -> Result<Self> {
        Ok(Self {
            core: TrainerCore::new(args, Box::new(model))?,
            model: PhantomData,
        })
    }

    /// Trains on `dataset`.
    pub fn with_train_dataset(mut self, dataset: impl Dataset + 'static) -> Self {
        self.core.train_dataset = Some(Arc::new(dataset));
        self
    }

    /// Evaluates on `dataset`.
    pub fn with_eval_dataset(mut self, dataset: impl Dataset + 'static) -> Self {
        self.core.eval_dataset = Some(Arc::new(dataset));
        self
    }

    /// Collates batches with `collate` instead of stacking samples.
    pub fn with_collate(
        mut self,
        collate: impl Fn(&[Sample], &Device) -> Result<Batch> + Send + Sync + 'static,
    ) -> Self {
        self.core.collate = Some(Arc::new(collate));
        self
    }

    /// Computes extra evaluation metrics (HF's `compute_metrics`).
    pub fn with_compute_metrics(
        mut self,
        f: impl Fn(&EvalPrediction) -> Result<Metrics> + Send + Sync + 'static,
    ) -> Self {
        self.core.compute_metrics = Some(Box::new(f));
        self
    }

    /// Reduces each evaluation batch's logits on the device before they are
    /// kept for `compute_metrics` (HF's `preprocess_logits_for_metrics`):
    /// `f(logits, labels)`, e.g. [`crate::metrics::argmax_logits`] for
    /// accuracy. `predict`'s predictions are then what `f` returned.
    pub fn with_preprocess_logits_for_metrics(
        mut self,
        f: impl Fn(&Tensor, Option<&Tensor>) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        self.core.preprocess_logits = Some(Box::new(f));
        self
    }

    /// Replaces the training, loss and prediction steps.
    pub fn with_hooks(mut self, hooks: impl TrainingHooks<M> + 'static) -> Self {
        self.core.hooks = Box::new(Typed {
            hooks,
            model: PhantomData,
        });
        self
    }

    /// Replaces only the loss: `f(model, batch, output)`.
    pub fn with_compute_loss(
        self,
        f: impl Fn(&M, &Batch, &ModelOutput) -> Result<Tensor> + Send + 'static,
    ) -> Self {
        self.with_hooks(ComputeLossFn(f))
    }

    /// Adds a callback after the default ones.
    pub fn with_callback(mut self, callback: impl TrainerCallback + 'static) -> Self {
        self.core.callbacks.add(Box::new(callback));
        self
    }

    /// The model.
    pub fn model(&self) -> &M {
        downcast(&*self.core.model)
    }
}

impl<M: AnyModel> Deref for Trainer<M> {
    type Target = TrainerCore;

    fn deref(&self) -> &TrainerCore {
        &self.core
    }
}

impl<M: AnyModel> DerefMut for Trainer<M> {
    fn deref_mut(&mut self) -> &mut TrainerCore {
        &mut self.core
    }
}

/// The model as the type it was built with; a Trainer<M> only ever holds an `M`.
fn downcast<M: AnyModel>(model: &dyn AnyModel) -> &M {
    (model as &dyn Any)
        .downcast_ref()
        .expect("a Trainer<M> holds an M")
}

/// Hooks written for `M`, as the core calls them: with the model untyped.
struct Typed<M, H> {
    hooks: H,
    model: PhantomData<fn() -> M>,
}

impl<M: AnyModel, H: TrainingHooks<M>> TrainingHooks<dyn AnyModel> for Typed<M, H> {
    fn compute_loss(
        &self,
        model: &dyn AnyModel,
        batch: &Batch,
        ctx: &StepContext,
    ) -> Result<(Tensor, ModelOutput)> {
        self.hooks.compute_loss(downcast(model), batch, ctx)
    }

    fn training_step(
        &self,
        model: &dyn AnyModel,
        params: &Parameters,
        batch: &Batch,
        ctx: &StepContext,
    ) -> Result<(Tensor, Gradients)> {
        self.hooks
            .training_step(downcast(model), params, batch, ctx)
    }

    fn prediction_step(
        &self,
        model: &dyn AnyModel,
        batch: &Batch,
        ctx: &StepContext,
        prediction_loss_only: bool,
    ) -> Result<PredictionStep> {
        self.hooks
            .prediction_step(downcast(model), batch, ctx, prediction_loss_only)
    }
}
