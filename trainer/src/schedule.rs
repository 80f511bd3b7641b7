//! Learning-rate schedules: every Hugging Face scheduler type, with the
//! formulas of transformers' `optimization.py`.
//!
//! A run configured with `lr_scheduler_type` and `lr_scheduler_kwargs` should
//! see, step for step, the learning rates the same config gives under HF's
//! `Trainer`, so that a person can move a config between the two and compare
//! loss curves. [`LrScheduler`] therefore mirrors the torch scheduler HF builds:
//! a `LambdaLR` (the learning rate is `base_lr * lambda(step)`, starting at step
//! 0, so the first optimizer step runs at `lambda(0)`) or, for
//! `reduce_lr_on_plateau`, torch's `ReduceLROnPlateau` with its defaults.
//!
//! Where HF would raise (or silently misbehave) on a bad config, taper returns
//! [`Error::Config`] naming the key, the scheduler type and what is accepted.
//! [`LrScheduler::state`] is JSON for checkpoints; its floats are written as
//! decimal strings because `serde_json` (without `float_roundtrip`) reads some
//! numbers back an ulp or so off, and a resumed run must continue bit for bit.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

mod kwargs;
mod plateau;
mod wsd;

use kwargs::{state_f64, state_usize, Kwargs};
use plateau::Plateau;
use wsd::Wsd;

/// The scheduler types of HF's `SchedulerType`, by their HF names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerType {
    /// `linear`: linear warmup, then linear decay to 0 at the last step.
    Linear,
    /// `cosine`: linear warmup, then a cosine (half a wave by default) to 0.
    Cosine,
    /// `cosine_with_restarts`: linear warmup, then `num_cycles` cosines with hard restarts.
    CosineWithRestarts,
    /// `polynomial`: linear warmup, then polynomial decay to `lr_end`.
    Polynomial,
    /// `constant`: the learning rate never changes.
    Constant,
    /// `constant_with_warmup`: linear warmup, then constant.
    ConstantWithWarmup,
    /// `inverse_sqrt`: linear warmup, then `1/sqrt` decay over `timescale`.
    InverseSqrt,
    /// `reduce_lr_on_plateau`: torch's `ReduceLROnPlateau`, driven by evaluation metrics.
    ReduceLrOnPlateau,
    /// `cosine_with_min_lr`: like `cosine`, but decaying to `min_lr` instead of 0.
    CosineWithMinLr,
    /// `warmup_stable_decay`: warmup, a constant phase, then a decay phase.
    WarmupStableDecay,
}

impl SchedulerType {
    /// Every type, in the order of [`SchedulerType::NAMES`].
    pub const ALL: [SchedulerType; 10] = [
        Self::Linear,
        Self::Cosine,
        Self::CosineWithRestarts,
        Self::Polynomial,
        Self::Constant,
        Self::ConstantWithWarmup,
        Self::InverseSqrt,
        Self::ReduceLrOnPlateau,
        Self::CosineWithMinLr,
        Self::WarmupStableDecay,
    ];

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
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
    }

    /// The HF name.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The `lr_scheduler_kwargs` keys this type accepts.
    pub fn accepted_kwargs(self) -> &'static [&'static str] {
        use SchedulerType::*;
        match self {
            Linear | Constant | ConstantWithWarmup => &[],
            Cosine | CosineWithRestarts => &["num_cycles"],
            Polynomial => &["lr_end", "power"],
            InverseSqrt => &["timescale"],
            ReduceLrOnPlateau => &[
                "mode",
                "factor",
                "patience",
                "threshold",
                "threshold_mode",
                "cooldown",
                "min_lr",
                "eps",
            ],
            CosineWithMinLr => &["num_cycles", "min_lr", "min_lr_rate"],
            WarmupStableDecay => &[
                "num_decay_steps",
                "num_stable_steps",
                "min_lr_ratio",
                "warmup_type",
                "decay_type",
                "num_cycles",
            ],
        }
    }
}

impl fmt::Display for SchedulerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerType {
    type Err = Error;

    /// Parses an HF name exactly; on failure the error lists the supported
    /// names and suggests the closest one when it is close.
    fn from_str(s: &str) -> Result<Self> {
        Self::from_name(s).ok_or_else(|| {
            let hint = closest_name(s)
                .map(|n| format!(" did you mean `{n}`?"))
                .unwrap_or_default();
            Error::Config(format!(
                "unknown lr_scheduler_type `{s}`;{hint} supported: {}",
                Self::NAMES.join(", ")
            ))
        })
    }
}

/// The supported name `input` most likely misspells: the most similar one when
/// it is close (Jaro-Winkler >= 0.85), else the shortest one containing it.
fn closest_name(input: &str) -> Option<&'static str> {
    let input = input.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    let names = SchedulerType::NAMES.iter().copied();
    let (similar, score) = names
        .clone()
        .map(|n| (n, strsim::jaro_winkler(&input, n)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    if score >= 0.85 {
        return Some(similar);
    }
    names
        .filter(|n| input.len() >= 4 && n.contains(input.as_str()))
        .min_by_key(|n| n.len())
}

/// HF's `get_warmup_steps`: `warmup_steps` when positive, else `ceil(total * warmup_ratio)`.
pub fn warmup_steps(warmup_steps: usize, warmup_ratio: f64, num_training_steps: usize) -> usize {
    if warmup_steps > 0 {
        warmup_steps
    } else {
        (num_training_steps as f64 * warmup_ratio).ceil() as usize
    }
}

/// The parameters of one schedule, resolved from the kwargs and HF's defaults.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Constant,
    ConstantWithWarmup,
    Linear,
    Cosine {
        num_cycles: f64,
    },
    CosineWithRestarts {
        num_cycles: f64,
    },
    Polynomial {
        lr_end: f64,
        power: f64,
        lr_init: f64,
    },
    InverseSqrt {
        timescale: f64,
    },
    CosineWithMinLr {
        num_cycles: f64,
        min_lr_rate: f64,
    },
    Wsd(Wsd),
    Plateau(Plateau),
}

/// A learning-rate schedule bound to one run, stepped like a torch scheduler.
#[derive(Debug, Clone)]
pub struct LrScheduler {
    kind: SchedulerType,
    base_lr: f64,
    num_warmup_steps: usize,
    num_training_steps: usize,
    current_step: usize,
    shape: Shape,
}

impl LrScheduler {
    /// Builds the schedule. `kwargs` are HF's `lr_scheduler_kwargs`; a key the
    /// type does not take, a value of the wrong type or an impossible setting is
    /// an [`Error::Config`]. A `null` value counts as not given.
    pub fn new(
        kind: SchedulerType,
        base_lr: f64,
        num_warmup_steps: usize,
        num_training_steps: usize,
        kwargs: &Map<String, Value>,
    ) -> Result<Self> {
        let kw = Kwargs::new(kind, kwargs)?;
        let shape = match kind {
            SchedulerType::Constant => Shape::Constant,
            SchedulerType::ConstantWithWarmup => Shape::ConstantWithWarmup,
            SchedulerType::Linear => Shape::Linear,
            SchedulerType::Cosine => Shape::Cosine {
                num_cycles: kw.float("num_cycles")?.unwrap_or(0.5),
            },
            SchedulerType::CosineWithRestarts => Shape::CosineWithRestarts {
                num_cycles: kw.int("num_cycles")?.unwrap_or(1) as f64,
            },
            SchedulerType::Polynomial => {
                let lr_end = kw.float("lr_end")?.unwrap_or(1e-7);
                // HF: `if not (lr_init > lr_end): raise ValueError`.
                if base_lr.partial_cmp(&lr_end) != Some(std::cmp::Ordering::Greater) {
                    return Err(kw.error(
                        "lr_end",
                        &format!(
                            "({lr_end:?}) must be smaller than the learning rate ({base_lr:?})"
                        ),
                    ));
                }
                let power = kw.float("power")?.unwrap_or(1.0);
                Shape::Polynomial {
                    lr_end,
                    power,
                    lr_init: base_lr,
                }
            }
            SchedulerType::InverseSqrt => {
                let default = if num_warmup_steps > 0 {
                    num_warmup_steps
                } else {
                    10_000
                };
                let timescale = kw.int("timescale")?.unwrap_or(default);
                if timescale == 0 {
                    return Err(kw.error("timescale", "must be positive"));
                }
                Shape::InverseSqrt {
                    timescale: timescale as f64,
                }
            }
            SchedulerType::CosineWithMinLr => {
                let num_cycles = kw.float("num_cycles")?.unwrap_or(0.5);
                let min_lr_rate = match (kw.float("min_lr")?, kw.float("min_lr_rate")?) {
                    (Some(_), Some(_)) => {
                        return Err(kw.error("min_lr", "and `min_lr_rate` cannot both be set"))
                    }
                    (Some(min_lr), None) => min_lr / base_lr,
                    (None, Some(rate)) => rate,
                    (None, None) => {
                        return Err(kw.error("min_lr", "or `min_lr_rate` must be set (exactly one)"))
                    }
                };
                Shape::CosineWithMinLr {
                    num_cycles,
                    min_lr_rate,
                }
            }
            SchedulerType::WarmupStableDecay => {
                Shape::Wsd(Wsd::from_kwargs(&kw, num_warmup_steps, num_training_steps)?)
            }
            SchedulerType::ReduceLrOnPlateau => Shape::Plateau(Plateau::from_kwargs(&kw, base_lr)?),
        };
        Ok(Self {
            kind,
            base_lr,
            num_warmup_steps,
            num_training_steps,
            current_step: 0,
            shape,
        })
    }

    /// The scheduler type.
    pub fn kind(&self) -> SchedulerType {
        self.kind
    }

    /// The step the next learning rate is for: the number of [`step`](Self::step)
    /// calls (restored ones included). For `reduce_lr_on_plateau`, whose `step()`
    /// does nothing, it is the number of metrics fed (torch's `last_epoch`).
    pub fn current_step(&self) -> usize {
        match &self.shape {
            Shape::Plateau(p) => p.last_epoch,
            _ => self.current_step,
        }
    }

    /// The learning rate the next optimizer step uses (torch's `get_last_lr()[0]`).
    pub fn lr(&self) -> f64 {
        match &self.shape {
            Shape::Plateau(p) => p.lr,
            _ => self.base_lr * self.lambda(self.current_step),
        }
    }

    /// Advances one optimizer step (torch's `scheduler.step()`); a no-op for reduce_lr_on_plateau.
    pub fn step(&mut self) {
        if !matches!(self.shape, Shape::Plateau(_)) {
            self.current_step += 1;
        }
    }

    /// Feeds an evaluation metric; only reduce_lr_on_plateau reacts.
    pub fn step_metric(&mut self, metric: f64) {
        if let Shape::Plateau(p) = &mut self.shape {
            p.step(metric);
        }
    }

    /// The multiplier of `base_lr` at `step` (the `lr_lambda` of HF's `LambdaLR`).
    fn lambda(&self, step: usize) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.num_warmup_steps as f64,
            self.num_training_steps as f64,
        );
        let warming = step < self.num_warmup_steps;
        let warm = s / w.max(1.0);
        let progress = (s - w) / (t - w).max(1.0);
        match &self.shape {
            Shape::Constant | Shape::Plateau(_) => 1.0,
            Shape::Wsd(wsd) => wsd.lambda(step, self.num_warmup_steps),
            _ if warming => warm,
            Shape::ConstantWithWarmup => 1.0,
            Shape::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            Shape::Cosine { num_cycles } => {
                (0.5 * (1.0 + (PI * num_cycles * 2.0 * progress).cos())).max(0.0)
            }
            Shape::CosineWithRestarts { num_cycles } => {
                if progress >= 1.0 {
                    0.0
                } else {
                    (0.5 * (1.0 + (PI * ((num_cycles * progress) % 1.0)).cos())).max(0.0)
                }
            }
            Shape::Polynomial {
                lr_end,
                power,
                lr_init,
            } => {
                if step > self.num_training_steps {
                    lr_end / lr_init
                } else {
                    // HF divides by `T - w` unguarded (ZeroDivisionError when T == w).
                    let remaining = 1.0 - (s - w) / (t - w).max(1.0);
                    ((lr_init - lr_end) * remaining.powf(*power) + lr_end) / lr_init
                }
            }
            Shape::InverseSqrt { timescale } => {
                let shift = timescale - w;
                1.0 / ((s + shift) / timescale).sqrt()
            }
            Shape::CosineWithMinLr {
                num_cycles,
                min_lr_rate,
            } => {
                let factor = 0.5 * (1.0 + (PI * num_cycles * 2.0 * progress).cos());
                (factor * (1.0 - min_lr_rate) + min_lr_rate).max(0.0)
            }
        }
    }

    /// Everything a restored scheduler needs to continue exactly, as JSON (the
    /// counterpart of torch's `state_dict`). Floats are decimal strings.
    pub fn state(&self) -> Value {
        let mut state = Map::new();
        state.insert("lr_scheduler_type".into(), json!(self.kind.name()));
        state.insert("base_lr".into(), json!(format!("{:?}", self.base_lr)));
        state.insert("current_step".into(), json!(self.current_step));
        if let Shape::Plateau(p) = &self.shape {
            p.save(&mut state);
        }
        Value::Object(state)
    }

    /// Restores a [`state`](Self::state) into a scheduler built from the same
    /// config. Like torch's `load_state_dict`, the progress and `base_lr` come
    /// from the state; the shape of the schedule (warmup, total, kwargs) from
    /// the config. A state of another scheduler type, or a malformed one, is an
    /// [`Error::Config`] and leaves the scheduler unchanged.
    pub fn load_state(&mut self, state: &Value) -> Result<()> {
        let kind = state.get("lr_scheduler_type").and_then(Value::as_str);
        if kind != Some(self.kind.name()) {
            return Err(Error::Config(format!(
                "lr scheduler state is for `{}`, but this run uses `{}`",
                kind.unwrap_or("?"),
                self.kind
            )));
        }
        let mut restored = self.clone();
        restored.base_lr = state_f64(state, "base_lr")?;
        restored.current_step = state_usize(state, "current_step")?;
        if let Shape::Plateau(p) = &mut restored.shape {
            p.load(state)?;
        }
        *self = restored;
        Ok(())
    }
}
