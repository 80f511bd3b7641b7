//! Evaluation and prediction: one loop over a data set that gathers losses,
//! logits and labels, then `compute_metrics` (HF's `evaluation_loop`).

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::{StepContext, TrainerCore};
use crate::callbacks::PredictionProgress;
use crate::data::{Dataset, Sharding};
use crate::error::{Error, Result};
use crate::memory::Stage;
use crate::metrics::{speed_metrics, EvalPrediction, Metrics};

/// What [`TrainerCore::predict`] returns (HF's `PredictionOutput`).
#[derive(Debug, Clone)]
pub struct PredictionOutput {
    /// Concatenated logits, on the CPU (or what
    /// `with_preprocess_logits_for_metrics` made of them).
    pub predictions: Tensor,
    /// Concatenated labels, when the data had them.
    pub label_ids: Option<Tensor>,
    /// `test_loss`, the computed metrics with the `test_` prefix, speed metrics.
    pub metrics: Metrics,
}

/// Logits and labels gathered batch by batch; moved to the CPU every
/// `eval_accumulation_steps` batches, or at the end.
#[derive(Default)]
struct Gathered {
    on_device: Vec<(Tensor, Option<Tensor>)>,
    on_host: Vec<(Tensor, Option<Tensor>)>,
}

impl Gathered {
    fn push(&mut self, logits: Tensor, labels: Option<Tensor>) {
        self.on_device.push((logits, labels));
    }

    fn move_to_host(&mut self) -> Result<()> {
        for (logits, labels) in self.on_device.drain(..) {
            let labels = labels.map(|l| l.to_device(&Device::Cpu)).transpose()?;
            self.on_host.push((logits.to_device(&Device::Cpu)?, labels));
        }
        Ok(())
    }

    fn concat(mut self) -> Result<Option<EvalPrediction>> {
        self.move_to_host()?;
        if self.on_host.is_empty() {
            return Ok(None);
        }
        let logits: Vec<&Tensor> = self.on_host.iter().map(|(l, _)| l).collect();
        let labels: Option<Vec<&Tensor>> = self.on_host.iter().map(|(_, l)| l.as_ref()).collect();
        Ok(Some(EvalPrediction {
            predictions: Tensor::cat(&logits, 0)?,
            label_ids: labels.map(|l| Tensor::cat(&l, 0)).transpose()?,
        }))
    }
}

/// The result of one pass over an evaluation or test set.
struct LoopOutput {
    prediction: Option<EvalPrediction>,
    metrics: Metrics,
    num_samples: usize,
    num_batches: usize,
}

impl TrainerCore {
    /// Evaluates on the evaluation data set: `eval_loss`, the metrics of
    /// `compute_metrics` prefixed `eval_`, and speed metrics; logged, and
    /// passed to the callbacks' `on_evaluate`.
    pub fn evaluate(&mut self) -> Result<Metrics> {
        let dataset = self.eval_dataset.clone().ok_or_else(|| {
            Error::Usage(
                "evaluate() needs an evaluation data set: Trainer::with_eval_dataset(...)".into(),
            )
        })?;
        self.evaluate_on(dataset, "eval")
    }

    /// Evaluates on `dataset`, with metric names prefixed by `prefix`.
    pub fn evaluate_on(&mut self, dataset: Arc<dyn Dataset>, prefix: &str) -> Result<Metrics> {
        self.memory.start(Stage::Eval);
        let start = Instant::now();
        let output = self.evaluation_loop(dataset, prefix, self.compute_metrics.is_none())?;
        let mut metrics = output.metrics;
        metrics.extend(speed_metrics(
            prefix,
            start,
            output.num_samples,
            Some(output.num_batches),
        ));
        self.memory
            .stop_and_update_metrics(Stage::Eval, &mut metrics);
        self.log(metrics.clone())?;
        self.callbacks
            .call(|cb| cb.on_evaluate(&self.args, &self.state, &mut self.control, &metrics))?;
        Ok(metrics)
    }

    /// Predicts on `dataset`: logits, labels and `test_` metrics (HF's `predict`).
    pub fn predict(&mut self, dataset: impl Dataset + 'static) -> Result<PredictionOutput> {
        self.memory.start(Stage::Test);
        let start = Instant::now();
        let output = self.evaluation_loop(Arc::new(dataset), "test", false)?;
        let mut metrics = output.metrics;
        metrics.extend(speed_metrics(
            "test",
            start,
            output.num_samples,
            Some(output.num_batches),
        ));
        self.memory
            .stop_and_update_metrics(Stage::Test, &mut metrics);
        self.callbacks
            .call(|cb| cb.on_predict(&self.args, &self.state, &mut self.control, &metrics))?;
        let prediction = output
            .prediction
            .ok_or_else(|| Error::Usage("predict() got an empty data set".into()))?;
        Ok(PredictionOutput {
            predictions: prediction.predictions,
            label_ids: prediction.label_ids,
            metrics,
        })
    }

    fn evaluation_loop(
        &mut self,
        dataset: Arc<dyn Dataset>,
        prefix: &str,
        loss_only: bool,
    ) -> Result<LoopOutput> {
        let loader = self
            .loader(dataset, self.args.per_device_eval_batch_size)
            .sharded(self.dist.rank, self.dist.world_size, Sharding::Contiguous);
        let ctx = StepContext {
            num_micro_batches: 1,
            label_smoothing_factor: self.args.label_smoothing_factor,
            training: false,
            loss_scale: 1.0,
        };
        self.model
            .set_precision(crate::precision::Precision::for_eval(&self.args));
        let (mut loss_sum, mut loss_count, mut num_samples) = (0.0, 0usize, 0usize);
        let mut gathered = Gathered::default();
        let num_batches = loader.num_batches();
        for (i, batch) in loader.iter_epoch(0).enumerate() {
            let batch = batch?;
            let step = self
                .hooks
                .prediction_step(&*self.model, &batch, &ctx, loss_only)?;
            // Each batch's mean loss weighs by its size, as HF's repeat-and-mean does.
            if let Some(loss) = step.loss {
                loss_sum += loss * batch.size as f64;
                loss_count += batch.size;
            }
            num_samples += batch.size;
            if let Some(logits) = step.logits {
                let kept = match &self.preprocess_logits {
                    Some(preprocess) => preprocess(&logits, step.labels.as_ref())?,
                    None => logits,
                };
                gathered.push(kept, step.labels);
            }
            if self
                .args
                .eval_accumulation_steps
                .is_some_and(|n| (i + 1) % n == 0)
            {
                gathered.move_to_host()?;
            }
            let progress = PredictionProgress {
                done: i + 1,
                total: num_batches,
            };
            self.callbacks.call(|cb| {
                cb.on_prediction_step(&self.args, &self.state, &mut self.control, &progress)
            })?;
        }
        let prediction = self.gather_prediction(gathered.concat()?)?;
        let totals = self.sum_over_ranks(&[loss_sum, loss_count as f64, num_samples as f64])?;
        let (loss_sum, loss_count, num_samples) =
            (totals[0], totals[1] as usize, totals[2] as usize);
        let mut metrics = Metrics::new();
        if loss_count > 0 {
            metrics.insert(format!("{prefix}_loss"), loss_sum / loss_count as f64);
        }
        if let (Some(compute), Some(prediction)) = (&self.compute_metrics, &prediction) {
            for (key, value) in compute(prediction)? {
                let key = if key.starts_with(&format!("{prefix}_")) {
                    key
                } else {
                    format!("{prefix}_{key}")
                };
                metrics.insert(key, value);
            }
        }
        Ok(LoopOutput {
            prediction,
            metrics,
            num_samples,
            num_batches: loader.num_batches(),
        })
    }
}
