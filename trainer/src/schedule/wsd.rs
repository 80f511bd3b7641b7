//! `warmup_stable_decay`: HF's `get_wsd_schedule` and `_get_wsd_scheduler_lambda`.
//!
//! Three phases (warmup, stable, decay), each with its own shape, so it has
//! more parameters than all the other lambda schedules together.

use std::f64::consts::PI;

use super::kwargs::Kwargs;
use crate::error::Result;

/// How a warmup or decay phase is shaped (HF's `"linear"`, `"cosine"`, `"1-sqrt"`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ramp {
    Linear,
    Cosine,
    OneMinusSqrt,
}

/// `warmup_stable_decay` parameters.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Wsd {
    num_stable_steps: usize,
    num_decay_steps: usize,
    min_lr_ratio: f64,
    warmup_type: Ramp,
    decay_type: Ramp,
    num_cycles: f64,
}

impl Wsd {
    /// Reads the kwargs; `num_decay_steps` is required, and the stable phase
    /// defaults to what is left of the training steps.
    pub(super) fn from_kwargs(
        kw: &Kwargs,
        num_warmup_steps: usize,
        num_training_steps: usize,
    ) -> Result<Self> {
        let num_decay_steps = kw
            .int("num_decay_steps")?
            .ok_or_else(|| kw.error("num_decay_steps", "is required"))?;
        let num_stable_steps = match kw.int("num_stable_steps")? {
            Some(n) => n,
            None => num_training_steps
                .checked_sub(num_warmup_steps + num_decay_steps)
                .ok_or_else(|| {
                    kw.error(
                        "num_decay_steps",
                        &format!(
                            "({num_decay_steps}) plus the {num_warmup_steps} warmup steps exceeds \
                             the {num_training_steps} training steps, leaving no stable phase"
                        ),
                    )
                })?,
        };
        let ramp = |key: &str, default: &str| -> Result<Ramp> {
            let ramps = [Ramp::Linear, Ramp::Cosine, Ramp::OneMinusSqrt];
            Ok(ramps[kw.choice(key, &["linear", "cosine", "1-sqrt"], default)?])
        };
        Ok(Self {
            num_stable_steps,
            num_decay_steps,
            min_lr_ratio: kw.float("min_lr_ratio")?.unwrap_or(0.0),
            warmup_type: ramp("warmup_type", "linear")?,
            decay_type: ramp("decay_type", "cosine")?,
            num_cycles: kw.float("num_cycles")?.unwrap_or(0.5),
        })
    }

    /// The multiplier of the base learning rate at `step`.
    pub(super) fn lambda(&self, step: usize, num_warmup_steps: usize) -> f64 {
        let ratio = self.min_lr_ratio;
        let scale = |factor: f64| (factor * (1.0 - ratio) + ratio).max(0.0);
        if step < num_warmup_steps {
            let p = step as f64 / num_warmup_steps.max(1) as f64;
            return scale(match self.warmup_type {
                Ramp::Linear => p,
                Ramp::Cosine => 0.5 * (1.0 - (PI * p).cos()),
                Ramp::OneMinusSqrt => 1.0 - (1.0 - p).sqrt(),
            });
        }
        let decay_start = num_warmup_steps + self.num_stable_steps;
        if step < decay_start {
            return 1.0;
        }
        if step < decay_start + self.num_decay_steps {
            let p = (step - decay_start) as f64 / self.num_decay_steps.max(1) as f64;
            return scale(match self.decay_type {
                Ramp::Linear => 1.0 - p,
                Ramp::Cosine => 0.5 * (1.0 + (PI * self.num_cycles * 2.0 * p).cos()),
                Ramp::OneMinusSqrt => 1.0 - p.sqrt(),
            });
        }
        ratio
    }
}
