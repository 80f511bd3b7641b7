//! `reduce_lr_on_plateau`: torch's `ReduceLROnPlateau`, which HF builds with
//! `lr_scheduler_kwargs` passed straight through.
//!
//! Unlike the lambda schedules it has running state (best metric, bad-epoch and
//! cooldown counters, the current learning rate) that a checkpoint must carry.

use serde_json::{json, Map, Value};

use super::kwargs::{state_f64, state_usize, Kwargs};
use crate::error::Result;

/// torch's `ReduceLROnPlateau`: its settings and its running state.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Plateau {
    maximize: bool,
    relative: bool,
    factor: f64,
    patience: usize,
    threshold: f64,
    cooldown: usize,
    min_lr: f64,
    eps: f64,
    /// The current learning rate.
    pub(super) lr: f64,
    best: f64,
    num_bad_epochs: usize,
    cooldown_counter: usize,
    /// How many metrics were fed (torch's `last_epoch`).
    pub(super) last_epoch: usize,
}

impl Plateau {
    /// Reads the kwargs, with torch's defaults and its `factor < 1` check.
    pub(super) fn from_kwargs(kw: &Kwargs, base_lr: f64) -> Result<Self> {
        let maximize = kw.choice("mode", &["min", "max"], "min")? == 1;
        let factor = kw.float("factor")?.unwrap_or(0.1);
        if factor >= 1.0 {
            return Err(kw.error("factor", &format!("must be < 1.0, got {factor}")));
        }
        Ok(Self {
            maximize,
            relative: kw.choice("threshold_mode", &["rel", "abs"], "rel")? == 0,
            factor,
            patience: kw.int("patience")?.unwrap_or(10),
            threshold: kw.float("threshold")?.unwrap_or(1e-4),
            cooldown: kw.int("cooldown")?.unwrap_or(0),
            min_lr: kw.float("min_lr")?.unwrap_or(0.0),
            eps: kw.float("eps")?.unwrap_or(1e-8),
            lr: base_lr,
            // torch's `mode_worse`.
            best: if maximize {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            },
            num_bad_epochs: 0,
            cooldown_counter: 0,
            last_epoch: 0,
        })
    }

    /// torch's `is_better`.
    fn is_better(&self, a: f64) -> bool {
        match (self.maximize, self.relative) {
            (false, true) => a < self.best * (1.0 - self.threshold),
            (false, false) => a < self.best - self.threshold,
            (true, true) => a > self.best * (self.threshold + 1.0),
            (true, false) => a > self.best + self.threshold,
        }
    }

    /// torch's `ReduceLROnPlateau.step(metrics)`.
    pub(super) fn step(&mut self, metric: f64) {
        self.last_epoch += 1;
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.patience {
            let new_lr = (self.lr * self.factor).max(self.min_lr);
            if self.lr - new_lr > self.eps {
                self.lr = new_lr;
            }
            self.cooldown_counter = self.cooldown;
            self.num_bad_epochs = 0;
        }
    }

    /// Adds the running state to a scheduler state (floats as exact strings).
    pub(super) fn save(&self, state: &mut Map<String, Value>) {
        state.insert("lr".into(), json!(format!("{:?}", self.lr)));
        state.insert("best".into(), json!(format!("{:?}", self.best)));
        state.insert("num_bad_epochs".into(), json!(self.num_bad_epochs));
        state.insert("cooldown_counter".into(), json!(self.cooldown_counter));
        state.insert("last_epoch".into(), json!(self.last_epoch));
    }

    /// Restores the running state written by [`Plateau::save`].
    pub(super) fn load(&mut self, state: &Value) -> Result<()> {
        self.lr = state_f64(state, "lr")?;
        self.best = state_f64(state, "best")?;
        self.num_bad_epochs = state_usize(state, "num_bad_epochs")?;
        self.cooldown_counter = state_usize(state, "cooldown_counter")?;
        self.last_epoch = state_usize(state, "last_epoch")?;
        Ok(())
    }
}
