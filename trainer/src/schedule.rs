//! Learning-rate schedules: every Hugging Face scheduler type, with the
//! formulas of transformers' `optimization.py`.
//!
//! CONTRACT (skeleton; the implementation replaces the `todo!()`s).

use crate::error::Result;

/// The scheduler types of HF's `SchedulerType`, by their HF names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerType {
    Linear,
    Cosine,
    CosineWithRestarts,
    Polynomial,
    Constant,
    ConstantWithWarmup,
    InverseSqrt,
    ReduceLrOnPlateau,
    CosineWithMinLr,
    WarmupStableDecay,
}

impl SchedulerType {
    /// Every HF name taper accepts, in HF's order.
    pub const NAMES: &'static [&'static str] = &[
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "constant",
        "constant_with_warmup",
        "inverse_sqrt",
        "reduce_lr_on_plateau",
        "cosine_with_min_lr",
        "warmup_stable_decay",
    ];

    /// The type with this HF name, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        use SchedulerType::*;
        let all = [
            Linear,
            Cosine,
            CosineWithRestarts,
            Polynomial,
            Constant,
            ConstantWithWarmup,
            InverseSqrt,
            ReduceLrOnPlateau,
            CosineWithMinLr,
            WarmupStableDecay,
        ];
        Self::NAMES.iter().position(|n| *n == name).map(|i| all[i])
    }

    /// The HF name.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A learning-rate schedule bound to one run, stepped like a torch scheduler.
#[derive(Debug, Clone)]
pub struct LrScheduler {}

impl LrScheduler {
    /// Builds the schedule. `kwargs` are HF's `lr_scheduler_kwargs`.
    pub fn new(
        kind: SchedulerType,
        base_lr: f64,
        num_warmup_steps: usize,
        num_training_steps: usize,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        let _ = (kind, base_lr, num_warmup_steps, num_training_steps, kwargs);
        todo!()
    }
    /// The learning rate the next optimizer step uses (torch's `get_last_lr()[0]`).
    pub fn lr(&self) -> f64 {
        todo!()
    }
    /// Advances one optimizer step (torch's `scheduler.step()`); a no-op for reduce_lr_on_plateau.
    pub fn step(&mut self) {
        todo!()
    }
    /// Feeds an evaluation metric; only reduce_lr_on_plateau reacts.
    pub fn step_metric(&mut self, metric: f64) {
        let _ = metric;
        todo!()
    }
}

/// HF's `get_warmup_steps`: `warmup_steps` when positive, else `ceil(total * warmup_ratio)`.
pub fn warmup_steps(warmup_steps: usize, warmup_ratio: f64, num_training_steps: usize) -> usize {
    let _ = (warmup_steps, warmup_ratio, num_training_steps);
    todo!()
}
