//! The model interface the Trainer drives.
//!
//! Like a Hugging Face model, a taper model takes a batch and returns logits,
//! and a loss when the batch carries labels. Its parameters live in a candle
//! [`VarMap`], which is what the optimizer updates and checkpoints save.
//! The trait is deliberately small: a custom model implements two methods.

use std::any::Any;

use candle_core::Tensor;
use candle_nn::VarMap;

use crate::data::Batch;
use crate::error::Result;

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// Raw scores: `(batch, classes)` for classifiers, `(batch, seq, vocab)` for language models.
    pub logits: Tensor,
    /// The mean loss over the batch's labelled items, when the batch has labels.
    pub loss: Option<Tensor>,
}

impl ModelOutput {
    /// Logits of a classifier or language model, with the mean cross-entropy
    /// against `labels` (ignoring `-100`) when there are labels.
    pub fn with_cross_entropy(logits: Tensor, labels: Option<&Tensor>) -> Result<Self> {
        let loss = labels
            .map(|labels| crate::loss::cross_entropy(&logits, labels, 0.0))
            .transpose()?;
        Ok(Self { logits, loss })
    }
}

/// A model the Trainer can train, evaluate and predict with.
pub trait Model {
    /// Runs the model on `batch`; `train` is true during training (dropout on).
    fn forward(&self, batch: &Batch, train: bool) -> Result<ModelOutput>;

    /// The model's parameters.
    fn varmap(&self) -> &VarMap;

    /// Floating-point operations of one forward and backward pass over `batch`
    /// (HF's `floating_point_ops`), for `total_flos`; `None` when unknown.
    fn floating_point_ops(&self, batch: &Batch) -> Option<f64> {
        let _ = batch;
        None
    }

    /// Sets how the forward pass computes (see [`crate::precision`]): the
    /// Trainer calls it before training (`bf16`, `fp16`) and evaluating
    /// (`*_full_eval`). The default ignores it, so a model that does not
    /// implement it computes in f32, which is always correct.
    fn set_precision(&mut self, precision: crate::precision::Precision) {
        let _ = precision;
    }

    /// The number of scalar parameters.
    fn num_parameters(&self) -> usize {
        self.varmap()
            .all_vars()
            .iter()
            .map(|var| var.elem_count())
            .sum()
    }
}

/// A [`Model`] the Trainer can hold without knowing its type, and give back
/// as its own type: every `Model + Send + 'static` is one.
///
/// The Trainer's loop is compiled once, in taper, over `dyn AnyModel`
/// (see [`TrainerCore`](crate::trainer::TrainerCore)); [`Any`] lets the
/// typed [`Trainer`](crate::Trainer) hand out `&M` again. `Send`, because
/// a Trainer moves between threads (a data-parallel job's ranks, a
/// notebook's emulated world); candle's tensors and `VarMap` are `Send`.
pub trait AnyModel: Model + Any + Send {}

impl<M: Model + Any + Send> AnyModel for M {}
