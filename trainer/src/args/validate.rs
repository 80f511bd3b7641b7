//! Validation of [`TrainingArguments`]: ranges, names (optimizer, scheduler,
//! log levels, `report_to`) and HF's cross-field rules, every problem collected
//! into one [`Error::InvalidArguments`]; then, when all is well, the values HF's
//! `__post_init__` derives (`do_eval`, `eval_steps`, `metric_for_best_model`,
//! `greater_is_better`, `run_name`, `report_to`).

use super::fields::closest;
use super::{IntervalStrategy, TrainingArguments};
use crate::optim::{optimizer_kind, OPTIMIZER_NAMES};
use crate::schedule::SchedulerType;
use crate::{Error, Result};

/// The log levels `log_level` and `log_level_replica` accept.
pub const LOG_LEVELS: &[&str] = &["debug", "info", "warning", "error", "critical", "passive"];

/// One problem, with the fields it is about (so a problem caused by a value that
/// could not even be parsed is not reported twice).
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub fields: Vec<&'static str>,
    pub message: String,
}

impl Problem {
    pub fn new(fields: Vec<&'static str>, message: String) -> Self {
        Self { fields, message }
    }
}

/// Collects problems.
#[derive(Default)]
struct Checks {
    list: Vec<Problem>,
}

impl Checks {
    /// Records `message` about `fields` unless `ok`.
    fn require(&mut self, ok: bool, fields: &[&'static str], message: impl FnOnce() -> String) {
        if !ok {
            self.list.push(Problem::new(fields.to_vec(), message()));
        }
    }

    /// `value >= 0` (false for NaN).
    fn non_negative(&mut self, name: &'static str, value: f64, hint: &str) {
        self.require(value >= 0.0, &[name], || {
            format!("`{name}` must be >= 0, got {value}{hint}")
        });
    }

    /// `value` in `[0, 1)` or `[0, 1]`.
    fn unit(&mut self, name: &'static str, value: f64, include_one: bool) {
        let ok = value >= 0.0 && (value < 1.0 || (include_one && value == 1.0));
        let range = if include_one { "[0, 1]" } else { "[0, 1)" };
        self.require(ok, &[name], || {
            format!("`{name}` must be in {range}, got {value}")
        });
    }

    /// A `*_steps` interval: > 0 (or >= 0 when its strategy is not `steps`), and
    /// an integer when >= 1 (below 1 it is a ratio of the total steps).
    fn interval(&mut self, name: &'static str, value: f64, strategy: Option<&'static str>) {
        let positive = strategy.is_some();
        let ok = if positive { value > 0.0 } else { value >= 0.0 };
        self.require(ok, &[name], || match strategy {
            Some(strategy) => format!(
                "`{name}` must be > 0 with {strategy} `steps`, got {value} \
                 (an integer number of steps, or a ratio of the total steps below 1)"
            ),
            None => format!("`{name}` must be >= 0, got {value}"),
        });
        self.require(!(value > 1.0 && value.fract() != 0.0), &[name], || {
            format!(
                "`{name}` must be an integer when > 1 (below 1 it is a ratio of the total steps), \
                 got {value}; use {}",
                value.round()
            )
        });
    }

    /// A name that must be one of `names`.
    fn one_of(&mut self, field: &'static str, value: &str, ok: bool, names: &[&str], what: &str) {
        self.require(ok, &[field], || {
            let mut message = format!(
                "`{field}` `{value}` is not {what}; use one of: {}",
                names.join(", ")
            );
            if let Some(close) = closest(value, names.iter().copied()) {
                message.push_str(&format!(" (did you mean `{close}`?)"));
            }
            message
        });
    }
}

/// Whether save_steps is a round multiple of eval_steps, as HF checks it
/// (ratios below 1 compared in millionths).
fn steps_multiple(save_steps: f64, eval_steps: f64) -> std::result::Result<(), String> {
    if save_steps >= 1.0 && eval_steps >= 1.0 {
        if save_steps % eval_steps != 0.0 {
            return Err(format!(
                "`load_best_model_at_end` needs `save_steps` to be a round multiple of \
                 `eval_steps`, got save_steps {save_steps} and eval_steps {eval_steps}; \
                 set save_steps to {}",
                (save_steps / eval_steps).ceil().max(1.0) * eval_steps
            ));
        }
    } else if save_steps < 1.0 && eval_steps < 1.0 {
        let (save, eval) = (
            (save_steps * 1e6).round() as u64,
            (eval_steps * 1e6).round() as u64,
        );
        if eval == 0 || save % eval != 0 {
            return Err(format!(
                "`load_best_model_at_end` needs `save_steps` to be a multiple of `eval_steps`, \
                 got save_steps {save_steps} and eval_steps {eval_steps}"
            ));
        }
    } else {
        return Err(format!(
            "`load_best_model_at_end` needs `save_steps` to be a multiple of `eval_steps`, which \
             cannot be guaranteed when one is a ratio (< 1) and the other a number of steps: got \
             save_steps {save_steps} and eval_steps {eval_steps}; give both the same way"
        ));
    }
    Ok(())
}

impl TrainingArguments {
    /// Checks every argument and every HF cross-field rule, collecting all
    /// problems into one [`Error::InvalidArguments`]. When there are none, fills
    /// in what HF's `__post_init__` derives: `do_eval` (true when evaluating),
    /// `eval_steps` (from `logging_steps`), `metric_for_best_model` (`"loss"`
    /// with `load_best_model_at_end` or `reduce_lr_on_plateau`),
    /// `greater_is_better` (false for `loss`/`eval_loss`, else true), `run_name`
    /// (from `output_dir`) and `report_to` (emptied: taper has no integrations).
    ///
    /// Validating twice gives the same result.
    pub fn validate(&mut self) -> Result<()> {
        self.validate_after(Vec::new())
    }

    /// [`TrainingArguments::validate`] after parse problems: problems about a
    /// field that could not be parsed are dropped (they would be about its
    /// default, not the value the person wrote).
    pub(crate) fn validate_after(&mut self, earlier: Vec<Problem>) -> Result<()> {
        let unparsed: Vec<&str> = earlier.iter().flat_map(|p| p.fields.clone()).collect();
        let mut problems = earlier;
        problems.extend(
            self.problems()
                .into_iter()
                .filter(|p| !p.fields.iter().any(|f| unparsed.contains(f))),
        );
        if !problems.is_empty() {
            return Err(Error::InvalidArguments(
                problems.into_iter().map(|p| p.message).collect(),
            ));
        }
        self.resolve();
        Ok(())
    }

    /// Every problem of these arguments.
    fn problems(&self) -> Vec<Problem> {
        use IntervalStrategy::*;
        let mut c = Checks::default();

        c.require(!self.output_dir.trim().is_empty(), &["output_dir"], || {
            "`output_dir` is empty; give the directory where checkpoints are written".into()
        });
        for (name, value) in [
            (
                "per_device_train_batch_size",
                self.per_device_train_batch_size,
            ),
            (
                "per_device_eval_batch_size",
                self.per_device_eval_batch_size,
            ),
            (
                "gradient_accumulation_steps",
                self.gradient_accumulation_steps,
            ),
        ] {
            c.require(value >= 1, &[name], || {
                format!("`{name}` must be at least 1, got {value}")
            });
        }
        if let Some(value) = self.eval_accumulation_steps {
            c.require(value >= 1, &["eval_accumulation_steps"], || {
                format!(
                    "`eval_accumulation_steps` must be at least 1 when set, got {value}; \
                     leave it unset (null) to accumulate all predictions on the device"
                )
            });
        }
        if let Some(value) = self.save_total_limit {
            c.require(value >= 1, &["save_total_limit"], || {
                format!(
                    "`save_total_limit` must be at least 1 when set, got {value}; \
                     leave it unset (null) to keep every checkpoint"
                )
            });
        }

        c.non_negative("learning_rate", self.learning_rate, "");
        c.non_negative("weight_decay", self.weight_decay, "");
        c.unit("adam_beta1", self.adam_beta1, false);
        c.unit("adam_beta2", self.adam_beta2, false);
        c.non_negative("adam_epsilon", self.adam_epsilon, "");
        c.non_negative(
            "max_grad_norm",
            self.max_grad_norm,
            " (0 disables clipping)",
        );
        c.non_negative("num_train_epochs", self.num_train_epochs, "");
        c.non_negative("eval_delay", self.eval_delay, "");
        c.require(self.max_steps >= -1, &["max_steps"], || {
            format!(
                "`max_steps` must be -1 (train for num_train_epochs) or a number of steps \
                 >= 0, got {}",
                self.max_steps
            )
        });
        c.unit("warmup_ratio", self.warmup_ratio, true);
        c.unit("label_smoothing_factor", self.label_smoothing_factor, false);

        let when = |strategy: IntervalStrategy, name| (strategy == Steps).then_some(name);
        c.interval(
            "logging_steps",
            self.logging_steps,
            when(self.logging_strategy, "logging_strategy"),
        );
        c.interval(
            "save_steps",
            self.save_steps,
            when(self.save_strategy, "save_strategy"),
        );
        if let Some(eval_steps) = self.eval_steps {
            c.require(eval_steps > 0.0, &["eval_steps"], || {
                format!(
                    "`eval_steps` must be > 0 when set, got {eval_steps}; \
                     leave it unset (null) to use logging_steps"
                )
            });
            c.interval("eval_steps", eval_steps.max(0.0), None);
        }

        for (name, value) in [
            ("log_level", &self.log_level),
            ("log_level_replica", &self.log_level_replica),
        ] {
            let ok = LOG_LEVELS.contains(&value.as_str());
            c.one_of(name, value, ok, LOG_LEVELS, "a log level");
        }
        let optimizers: Vec<&str> = OPTIMIZER_NAMES.iter().map(|(name, _)| *name).collect();
        let ok = optimizer_kind(&self.optim).is_some();
        c.one_of(
            "optim",
            &self.optim,
            ok,
            &optimizers,
            "an optimizer taper supports",
        );
        let scheduler = SchedulerType::from_name(&self.lr_scheduler_type);
        c.one_of(
            "lr_scheduler_type",
            &self.lr_scheduler_type,
            scheduler.is_some(),
            SchedulerType::NAMES,
            "a scheduler taper supports",
        );
        for entry in &self.report_to {
            c.require(entry == "none" || entry == "all", &["report_to"], || {
                format!("report_to `{entry}` is not supported by taper; use `none`")
            });
        }

        // Strategies and the rules between them.
        for (name, strategy) in [
            ("eval_strategy", self.eval_strategy),
            ("logging_strategy", self.logging_strategy),
        ] {
            c.require(strategy != Best, &[name], || {
                format!("`{name}` `best` is only valid for save_strategy; use `steps` or `epoch`")
            });
        }
        let evaluates = self.eval_strategy != No;
        let logging_positive = self.logging_steps > 0.0;
        c.require(
            !(self.eval_strategy == Steps && self.eval_steps.is_none() && !logging_positive),
            &["eval_strategy", "eval_steps", "logging_steps"],
            || {
                format!(
                    "`eval_strategy` `steps` needs `eval_steps` or `logging_steps` > 0, got \
                     eval_steps unset and logging_steps {}; set `eval_steps`",
                    self.logging_steps
                )
            },
        );
        let plateau = scheduler == Some(SchedulerType::ReduceLrOnPlateau);
        c.require(
            !plateau || evaluates,
            &["lr_scheduler_type", "eval_strategy"],
            || {
                "`lr_scheduler_type` `reduce_lr_on_plateau` needs evaluation metrics, but \
             `eval_strategy` is `no`; set eval_strategy to `steps` or `epoch`"
                    .into()
            },
        );
        let save_best = self.save_strategy == Best;
        c.require(
            !save_best || evaluates,
            &["save_strategy", "eval_strategy"],
            || {
                "`save_strategy` `best` needs evaluations to compare, but `eval_strategy` is `no`; \
             set eval_strategy to `steps` or `epoch`"
                    .into()
            },
        );
        let metric_defaults = self.load_best_model_at_end || plateau;
        c.require(
            !save_best || self.metric_for_best_model.is_some() || metric_defaults,
            &["save_strategy", "metric_for_best_model"],
            || {
                "`save_strategy` `best` needs `metric_for_best_model` (e.g. `loss` or \
                 `eval_accuracy`) to know which checkpoint is best"
                    .into()
            },
        );
        if self.load_best_model_at_end {
            let fields = ["load_best_model_at_end", "eval_strategy", "save_strategy"];
            if !save_best && self.eval_strategy != self.save_strategy {
                c.require(false, &fields, || {
                    format!(
                        "`load_best_model_at_end` needs eval_strategy and save_strategy to match \
                         (or save_strategy `best`), got eval_strategy `{}` and save_strategy `{}`; \
                         set both to `steps` or `epoch`",
                        self.eval_strategy, self.save_strategy
                    )
                });
            } else if !evaluates && !save_best {
                c.require(false, &fields, || {
                    "`load_best_model_at_end` needs evaluations to find the best model, but \
                     `eval_strategy` is `no`; set eval_strategy and save_strategy to `steps` \
                     or `epoch`"
                        .into()
                });
            } else if self.eval_strategy == Steps && self.save_strategy == Steps {
                let eval_steps = self.eval_steps.unwrap_or(self.logging_steps);
                if eval_steps > 0.0 && self.save_steps > 0.0 {
                    if let Err(message) = steps_multiple(self.save_steps, eval_steps) {
                        let fields = ["load_best_model_at_end", "save_steps", "eval_steps"];
                        c.require(false, &fields, || message);
                    }
                }
            }
        }

        c.require(!(self.fp16 && self.bf16), &["fp16", "bf16"], || {
            "`fp16` and `bf16` are both true; choose at most one mixed precision".into()
        });
        c.require(!(self.fp16 && self.use_cpu), &["fp16", "use_cpu"], || {
            "`fp16` needs a GPU but `use_cpu` is true; use `bf16` on the CPU, or set use_cpu \
             to false"
                .into()
        });
        c.list
    }

    /// HF's `__post_init__` resolution of derived values (idempotent).
    fn resolve(&mut self) {
        // Only `none` and `all` pass validation, and taper has no integrations.
        self.report_to.clear();
        if self.eval_strategy != IntervalStrategy::No {
            self.do_eval = true;
        }
        if self.eval_strategy == IntervalStrategy::Steps && self.eval_steps.is_none() {
            self.eval_steps = Some(self.logging_steps);
        }
        let plateau = self.lr_scheduler_type == SchedulerType::ReduceLrOnPlateau.name();
        if (self.load_best_model_at_end || plateau) && self.metric_for_best_model.is_none() {
            self.metric_for_best_model = Some("loss".to_string());
        }
        if let (None, Some(metric)) = (self.greater_is_better, &self.metric_for_best_model) {
            self.greater_is_better = Some(!matches!(metric.as_str(), "loss" | "eval_loss"));
        }
        if self.run_name.is_none() {
            self.run_name = Some(self.output_dir.clone());
        }
    }
}
