//! The Trainer: the training loop and what it drives.
//!
//! The loop in [`TrainerCore::train`] only counts: epochs, optimizer steps,
//! micro-batches. Computing a step is in [`hooks`], deciding when to log,
//! evaluate, save or stop is in the callbacks, evaluation is in `evaluate.rs`
//! and checkpoints (saving, resuming, the best model) in `checkpointing.rs`.
//! Semantics follow Hugging Face's `Trainer`: the same arithmetic for steps
//! and epochs, the same logs, the same events.
//!
//! [`Trainer<M>`](Trainer) (`typed.rs`) is the typed handle over
//! [`TrainerCore`], which holds the model as `dyn` [`AnyModel`]: the loop is
//! compiled once, in taper, not in every notebook cell that trains.

mod checkpointing;
mod distributed;
mod evaluate;
pub mod hooks;
mod losses;
mod state;
mod typed;

pub use evaluate::PredictionOutput;
pub use hooks::{ComputeLossFn, DefaultHooks, PredictionStep, StepContext, TrainingHooks};
pub use state::{TrainOutput, TrainerControl, TrainerState, TrainingPlan};
pub use typed::Trainer;

use losses::{GradNorm, LossWindow, PendingLoss};

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;

use crate::args::{IntervalStrategy, TrainingArguments};
use crate::callbacks::{
    CallbackHandler, DefaultFlowCallback, PrinterCallback, ProgressCallback, TrainerCallback,
};
use crate::data::{CollateFn, DataLoader, Dataset, Sharding};
use crate::dist::{Collective, DistEnv};
use crate::error::{Error, Result};
use crate::log::Log;
use crate::memory::{MemoryTracker, Stage};
use crate::metrics::{round, speed_metrics, ComputeMetrics, Metrics, PreprocessLogits};
use crate::model::AnyModel;
use crate::optim::{self, Gradients, Optimizer, Parameters};
use crate::precision::{LossScaler, Precision};
use crate::schedule::{warmup_steps, LrScheduler, SchedulerType};

/// The callback trait as a type, so events read `Callback::on_step_end`.
type Callback = dyn TrainerCallback;

/// An event without payload: `Callback::on_train_begin`, `Callback::on_step_end`, ...
type Event =
    fn(&mut Callback, &TrainingArguments, &TrainerState, &mut TrainerControl) -> Result<()>;

/// Everything a [`Trainer`] does, without its model's type.
///
/// A `Trainer<M>` dereferences to it, so its methods (`train`, `evaluate`,
/// `predict`, `save_model`, ...) and its `state` are the Trainer's. Why the
/// split: a notebook cell that trains compiles every generic function it
/// calls, and a generic loop made the first training cell compile the whole
/// Trainer (about 4 s, notes/kernel-latency.md). The core holds the model
/// as a `dyn` [`AnyModel`], so it is compiled once, in taper.
pub struct TrainerCore {
    args: TrainingArguments,
    model: Box<dyn AnyModel>,
    params: Parameters,
    device: Device,
    train_dataset: Option<Arc<dyn Dataset>>,
    eval_dataset: Option<Arc<dyn Dataset>>,
    collate: Option<Arc<CollateFn>>,
    compute_metrics: Option<Box<ComputeMetrics>>,
    preprocess_logits: Option<Box<PreprocessLogits>>,
    hooks: Box<dyn TrainingHooks<dyn AnyModel>>,
    callbacks: CallbackHandler,
    optimizer: Option<Box<dyn Optimizer>>,
    scheduler: Option<LrScheduler>,
    /// The run's state: steps, epochs, logs, best metric.
    pub state: TrainerState,
    control: TrainerControl,
    memory: MemoryTracker,
    dist: DistEnv,
    collective: Arc<dyn Collective>,
    /// fp16's dynamic loss scaling; `None` unless `fp16`.
    scaler: Option<LossScaler>,
    /// What this rank prints (`log_level` on rank 0, `log_level_replica` on the others).
    log: Log,
}

impl TrainerCore {
    /// A core for `model` with `args` (validated here), HF's default
    /// callbacks and hooks.
    fn new(mut args: TrainingArguments, mut model: Box<dyn AnyModel>) -> Result<Self> {
        let mut memory = MemoryTracker::new(args.skip_memory_metrics);
        memory.start(Stage::Init);
        args.validate()?;
        model.set_precision(Precision::for_training(&args));
        let scaler = args.fp16.then(LossScaler::default);
        let params = Parameters::from_varmap(model.varmap());
        let device = params
            .iter()
            .next()
            .map(|p| p.var.device().clone())
            .ok_or_else(|| Error::Usage("the model has no parameters to train".into()))?;
        crate::device::set_tf32(&device, args.tf32)?;
        let (dist, collective) = crate::dist::process_group_for(&device)?;
        let log = Log::for_rank(&args, dist.rank);
        let mut callbacks = CallbackHandler::default();
        callbacks.add(Box::new(DefaultFlowCallback));
        if args.disable_tqdm {
            callbacks.add(Box::new(PrinterCallback));
        } else {
            callbacks.add(Box::new(ProgressCallback::default()));
        }
        let mut trainer = Self {
            args,
            model,
            params,
            device,
            train_dataset: None,
            eval_dataset: None,
            collate: None,
            compute_metrics: None,
            preprocess_logits: None,
            hooks: Box::new(DefaultHooks),
            callbacks,
            optimizer: None,
            scheduler: None,
            state: TrainerState {
                is_local_process_zero: dist.local_rank == 0,
                is_world_process_zero: dist.rank == 0,
                ..TrainerState::default()
            },
            control: TrainerControl::default(),
            memory,
            log,
            dist,
            collective,
            scaler,
        };
        trainer.memory.stop(Stage::Init);
        trainer
            .callbacks
            .call(|cb| cb.on_init_end(&trainer.args, &trainer.state, &mut trainer.control))?;
        Ok(trainer)
    }

    /// The callbacks, to add or remove some.
    pub fn callbacks_mut(&mut self) -> &mut CallbackHandler {
        &mut self.callbacks
    }

    /// The arguments.
    pub fn args(&self) -> &TrainingArguments {
        &self.args
    }

    /// The learning rate the next optimizer step would use.
    pub fn learning_rate(&self) -> Option<f64> {
        self.scheduler.as_ref().map(LrScheduler::lr)
    }

    /// Trains on the training data set; the loop of HF's `_inner_training_loop`.
    pub fn train(&mut self) -> Result<TrainOutput> {
        self.memory.start(Stage::Train);
        // In a notebook the model may come from another cell (see tensor_ids).
        crate::tensor_ids::advance_past(self.params.iter().map(|p| p.var.as_tensor().id()));
        let loader = self.train_loader()?;
        let plan = TrainingPlan::new(&self.args, loader.num_batches(), self.dist.world_size)?;
        self.create_optimizer_and_scheduler(plan.max_steps)?;
        self.broadcast_parameters()?;
        self.start_state(&plan);
        let resume = self.maybe_resume(&plan)?;
        crate::interrupt::arm();
        let start = Instant::now();
        let first_step = self.state.global_step;
        let mut losses = resume.losses;
        let mut grad_norm = None;
        self.emit(Callback::on_train_begin)?;

        'epochs: for epoch in resume.epoch..plan.num_epochs {
            let order = loader.epoch_order(epoch as u64);
            self.control.should_epoch_stop = false;
            self.emit(Callback::on_epoch_begin)?;
            // Optimizer steps of a resumed epoch that were already done are skipped unread.
            let first_update = if epoch == resume.epoch {
                resume.updates_done
            } else {
                0
            };
            for update in first_update..plan.updates_per_epoch {
                let micro_batches = plan.micro_batches(update);
                self.emit(Callback::on_step_begin)?;
                let mut grads =
                    self.accumulate_gradients(&loader, &order, micro_batches.clone(), &mut losses)?;
                self.average_gradients(&mut grads)?;
                // As HF with a GradScaler: a skipped step still counts, the scheduler waits.
                let finite = self.unscale_gradients(&mut grads)?;
                grad_norm = self.clip_gradients(&mut grads)?;
                self.emit(Callback::on_pre_optimizer_step)?;
                if finite {
                    self.optimizer_step(&grads)?;
                }
                self.emit(Callback::on_optimizer_step)?;
                if finite {
                    self.scheduler_mut().step();
                }
                self.state.global_step += 1;
                self.state.epoch =
                    Some(epoch as f64 + micro_batches.end as f64 / plan.batches_per_epoch as f64);
                self.emit(Callback::on_step_end)?;
                self.maybe_log_save_evaluate(&mut losses, grad_norm.as_ref())?;
                if crate::interrupt::take() {
                    self.log.info(format_args!(
                        "interrupted at step {}; the trainer and the model keep their state",
                        self.state.global_step
                    ));
                    break 'epochs;
                }
                if self.control.should_epoch_stop || self.control.should_training_stop {
                    break;
                }
            }
            self.emit(Callback::on_epoch_end)?;
            self.maybe_log_save_evaluate(&mut losses, grad_norm.as_ref())?;
            if self.control.should_training_stop {
                break;
            }
        }
        let steps_done = self.state.global_step - first_step;
        self.finish_training(start, &plan, losses, steps_done)
    }

    /// Calls one event (`Callback::on_...`) on every callback.
    fn emit(&mut self, event: Event) -> Result<()> {
        self.callbacks
            .call(|cb| event(cb, &self.args, &self.state, &mut self.control))
    }

    /// Runs the micro-batches of one optimizer step and sums their gradients.
    fn accumulate_gradients(
        &mut self,
        loader: &DataLoader,
        order: &[usize],
        micro_batches: std::ops::Range<usize>,
        losses: &mut LossWindow,
    ) -> Result<Gradients> {
        let ctx = StepContext {
            num_micro_batches: micro_batches.len(),
            label_smoothing_factor: self.args.label_smoothing_factor,
            training: true,
            loss_scale: self.scaler.as_ref().map_or(1.0, LossScaler::scale),
        };
        // An evaluation since the last step may have set its own precision.
        self.model
            .set_precision(Precision::for_training(&self.args));
        let last = micro_batches.end - 1;
        let mut grads = Gradients::default();
        for index in micro_batches {
            let batch = loader.batch(order, index)?;
            if let Some(flos) = self.model.floating_point_ops(&batch) {
                self.state.total_flos += flos;
            }
            let (loss, step_grads) =
                self.hooks
                    .training_step(&*self.model, &self.params, &batch, &ctx)?;
            losses.pending.push(PendingLoss {
                loss,
                global_step: self.state.global_step,
                index,
            });
            grads.accumulate(step_grads)?;
            if index != last {
                self.emit(Callback::on_substep_end)?;
            }
        }
        Ok(grads)
    }

    /// Clips to `max_grad_norm` when it is positive; the norm before clipping.
    ///
    /// On a GPU the norm and the clipping stay on the device and the norm is
    /// read back only when logged (as HF does), so that a step does not wait
    /// for the GPU; where the optimizer can (the fused AdamW), it multiplies
    /// the gradients by the coefficient in its own pass, which spares one
    /// over every gradient. On the CPU the norm is read at once, and the
    /// clipping coefficient computed in f64, as before (exact-resume tests
    /// pin it).
    fn clip_gradients(&self, grads: &mut Gradients) -> Result<Option<GradNorm>> {
        let max_norm = self.args.max_grad_norm;
        if max_norm <= 0.0 {
            Ok(None)
        } else if self.device.is_cuda() {
            let deferred = self
                .optimizer
                .as_ref()
                .is_some_and(|opt| opt.applies_clip_coefficient(grads));
            let norm = if deferred {
                grads.clip_global_norm_deferred(max_norm)?
            } else {
                grads.clip_global_norm_on_device(max_norm)?
            };
            Ok(Some(match norm {
                Some(norm) => GradNorm::OnDevice(norm),
                None => GradNorm::Read(0.0),
            }))
        } else {
            Ok(Some(GradNorm::Read(grads.clip_global_norm(max_norm)?)))
        }
    }

    /// fp16: divides the gradients by the loss scale and adapts the scale;
    /// false when they overflowed, and the optimizer step is to be skipped.
    fn unscale_gradients(&mut self, grads: &mut Gradients) -> Result<bool> {
        let Some(scaler) = self.scaler.as_mut() else {
            return Ok(true);
        };
        let finite = scaler.unscale(grads)?;
        if let Some(message) = scaler.update(finite) {
            self.log.info(message);
        }
        Ok(finite)
    }

    /// fp16's current loss scale; `None` without `fp16`.
    pub fn loss_scale(&self) -> Option<f64> {
        self.scaler.as_ref().map(LossScaler::scale)
    }

    fn optimizer_step(&mut self, grads: &Gradients) -> Result<()> {
        let lr = self.scheduler_mut().lr();
        self.optimizer
            .as_mut()
            .expect("created before the loop")
            .step(grads, lr)
    }

    fn scheduler_mut(&mut self) -> &mut LrScheduler {
        self.scheduler.as_mut().expect("created before the loop")
    }

    /// Logs, evaluates and saves as the control flags say (HF's `_maybe_log_save_evaluate`).
    fn maybe_log_save_evaluate(
        &mut self,
        losses: &mut LossWindow,
        grad_norm: Option<&GradNorm>,
    ) -> Result<()> {
        if self.control.should_log || self.control.should_save {
            losses.read_pending(&self.log, self.args.logging_nan_inf_filter)?;
        }
        if self.control.should_log && self.state.global_step > losses.last_logged_step {
            let mut logs = Metrics::new();
            let steps = (self.state.global_step - losses.last_logged_step) as f64;
            let window = self.mean_over_ranks(losses.sum)?;
            logs.insert("loss".into(), round(window / steps, 4));
            if let Some(norm) = grad_norm {
                logs.insert("grad_norm".into(), norm.value()?);
            }
            logs.insert("learning_rate".into(), self.scheduler_mut().lr());
            losses.total += losses.sum;
            losses.sum = 0.0;
            losses.last_logged_step = self.state.global_step;
            self.log(logs)?;
        }
        self.control.should_log = false;
        if self.control.should_evaluate {
            self.control.should_evaluate = false;
            let metrics = self.evaluate()?;
            let is_new_best = self.update_best_metric(&metrics)?;
            if self.args.save_strategy == IntervalStrategy::Best {
                self.control.should_save = is_new_best;
            }
            if self.scheduler.as_ref().map(LrScheduler::kind)
                == Some(SchedulerType::ReduceLrOnPlateau)
            {
                let value = self.metric_for_best(&metrics)?;
                self.scheduler_mut().step_metric(value);
            }
        }
        if self.control.should_save {
            self.control.should_save = false;
            // Every rank's window becomes the mean, so the saved one is right for all.
            losses.sum = self.mean_over_ranks(losses.sum)?;
            losses.total = self.mean_over_ranks(losses.total)?;
            if self.is_world_process_zero() {
                self.save_checkpoint(losses)?;
            }
            self.barrier()?;
            self.emit(Callback::on_save)?;
        }
        Ok(())
    }

    /// Records `logs` in the history (with the epoch and step) and tells the callbacks.
    pub fn log(&mut self, mut logs: Metrics) -> Result<()> {
        if let Some(epoch) = self.state.epoch {
            logs.insert("epoch".into(), epoch);
        }
        self.state.push_log(&logs);
        self.callbacks
            .call(|cb| cb.on_log(&self.args, &self.state, &mut self.control, &logs))
    }

    /// The final train metrics, logged and returned (HF's end of `train`).
    fn finish_training(
        &mut self,
        start: Instant,
        plan: &TrainingPlan,
        mut losses: LossWindow,
        steps_done: usize,
    ) -> Result<TrainOutput> {
        losses.read_pending(&self.log, self.args.logging_nan_inf_filter)?;
        losses.total = self.mean_over_ranks(losses.total + losses.sum)?;
        let steps = (self.state.global_step as f64).max(0.001);
        let training_loss = losses.total / steps;
        // The steps this call ran (HF counts max_steps, which overstates an
        // early-stopped, interrupted or resumed run).
        let num_samples = steps_done * plan.total_batch_size;
        let mut metrics = speed_metrics("train", start, num_samples, Some(steps_done));
        metrics.insert("total_flos".into(), self.state.total_flos);
        metrics.insert("train_loss".into(), training_loss);
        self.memory
            .stop_and_update_metrics(Stage::Train, &mut metrics);
        if self.args.load_best_model_at_end {
            self.load_best_model()?;
        }
        self.log(metrics.clone())?;
        if let Some(epoch) = self.state.epoch {
            metrics.insert("epoch".into(), epoch);
        }
        self.drop_last_checkpoints_if_limit_is_one()?;
        self.emit(Callback::on_train_end)?;
        Ok(TrainOutput {
            global_step: self.state.global_step,
            training_loss,
            metrics,
        })
    }

    fn train_loader(&self) -> Result<DataLoader> {
        let dataset = self.train_dataset.clone().ok_or_else(|| {
            Error::Usage(
                "train() needs a training data set: Trainer::with_train_dataset(...)".into(),
            )
        })?;
        let seed = self.args.data_seed.unwrap_or(self.args.seed);
        Ok(self
            .loader(dataset, self.args.per_device_train_batch_size)
            .sharded(self.dist.rank, self.dist.world_size, Sharding::Strided)
            .shuffled(seed)
            .drop_last(self.args.dataloader_drop_last))
    }

    fn loader(&self, dataset: Arc<dyn Dataset>, batch_size: usize) -> DataLoader {
        let loader = DataLoader::new(dataset, batch_size).on_device(&self.device);
        match &self.collate {
            Some(collate) => loader.with_collate(collate.clone()),
            None => loader,
        }
    }

    fn create_optimizer_and_scheduler(&mut self, max_steps: usize) -> Result<()> {
        self.optimizer = Some(optim::build(&self.args, self.params.clone())?);
        let kind: SchedulerType = self.args.lr_scheduler_type.parse()?;
        let warmup = warmup_steps(self.args.warmup_steps, self.args.warmup_ratio, max_steps);
        self.scheduler = Some(LrScheduler::new(
            kind,
            self.args.learning_rate,
            warmup,
            max_steps,
            &self.args.lr_scheduler_kwargs,
        )?);
        Ok(())
    }

    fn start_state(&mut self, plan: &TrainingPlan) {
        let args = &self.args;
        let logging_steps = plan.resolve_steps(args.logging_steps);
        self.state = TrainerState {
            epoch: Some(0.0),
            max_steps: plan.max_steps,
            logging_steps,
            eval_steps: args
                .eval_steps
                .map_or(logging_steps, |s| plan.resolve_steps(s)),
            save_steps: plan.resolve_steps(args.save_steps),
            train_batch_size: args.per_device_train_batch_size,
            num_train_epochs: plan.num_epochs,
            is_local_process_zero: self.dist.local_rank == 0,
            is_world_process_zero: self.dist.rank == 0,
            ..TrainerState::default()
        };
        self.control = TrainerControl::default();
    }

    /// The value of `metric_for_best_model` in `metrics`.
    fn metric_for_best(&self, metrics: &Metrics) -> Result<f64> {
        crate::metrics::metric_for_best(self.args.metric_for_best_model.as_deref(), metrics)
    }

    /// Tracks `best_metric` and `best_global_step` (HF's `_determine_best_metric`);
    /// true when `metrics` holds a new best.
    fn update_best_metric(&mut self, metrics: &Metrics) -> Result<bool> {
        if self.args.metric_for_best_model.is_none() {
            return Ok(false);
        }
        let value = self.metric_for_best(metrics)?;
        let greater = self.args.greater_is_better.unwrap_or(false);
        let better = match self.state.best_metric {
            None => true,
            Some(best) => crate::metrics::is_better(value, best, greater),
        };
        if better {
            self.state.best_metric = Some(value);
            self.state.best_global_step = Some(self.state.global_step);
        }
        Ok(better)
    }

    /// HF's end of training with `save_total_limit` 1: only the best
    /// checkpoint stays (rotation kept the newest too, for resuming).
    fn drop_last_checkpoints_if_limit_is_one(&self) -> Result<()> {
        let Some(best) = &self.state.best_model_checkpoint else {
            return Ok(());
        };
        if self.args.save_total_limit != Some(1) || !self.is_world_process_zero() {
            return Ok(());
        }
        for dir in
            crate::checkpoint::sorted_checkpoints(std::path::Path::new(&self.args.output_dir))?
        {
            if dir != std::path::Path::new(best) {
                std::fs::remove_dir_all(dir)?;
            }
        }
        Ok(())
    }
}
