//! What goes into a checkpoint, and how a run resumes from one.
//!
//! Saving writes everything that decides the rest of the run: weights,
//! optimizer buffers and counters, the scheduler, what decides data order,
//! HF's `TrainerState` (with the stateful callbacks) and the loss window of
//! the loop, so the logs after a resume are the logs of the uninterrupted
//! run. Resuming restores all of it and skips the batches already seen
//! without loading them. The file layout and atomic writing are in
//! [`crate::checkpoint`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{LossWindow, TrainerCore, TrainerState, TrainingPlan};
use crate::args::TrainingArguments;
use crate::checkpoint::{self, *};
use crate::error::{Error, Result};
use crate::optim::OptimizerState;
use crate::precision::{LossScaler, LossScalerState};

/// Where the loop continues after a resume.
#[derive(Debug, Default)]
pub(super) struct ResumePoint {
    /// The epoch to continue in.
    pub epoch: usize,
    /// Optimizer steps of that epoch already done (skipped without loading their batches).
    pub updates_done: usize,
    /// The loss window as it was when the checkpoint was written.
    pub losses: LossWindow,
}

/// The loop's own state, saved as `taper_loop_state.json`.
#[derive(Debug, Serialize, Deserialize)]
struct LoopState {
    losses: LossWindow,
    world_size: usize,
    /// fp16's loss scaler (PyTorch saves it as `scaler.pt`); absent without fp16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss_scaler: Option<LossScalerState>,
}

impl TrainerCore {
    /// Writes the model's weights to `dir` (default: `output_dir`) as
    /// `model.safetensors`, with `training_args.json` beside them.
    pub fn save_model(&self, dir: Option<&Path>) -> Result<PathBuf> {
        let dir = dir.map_or_else(|| PathBuf::from(&self.args.output_dir), Path::to_path_buf);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(WEIGHTS_NAME);
        let partial = dir.join(format!(".{WEIGHTS_NAME}.partial"));
        self.model.varmap().save(&partial)?;
        std::fs::rename(&partial, &path)?;
        write_text(&dir.join(TRAINING_ARGS_NAME), &self.args.to_json_string())?;
        Ok(path)
    }

    /// Writes `trainer_state.json` into `dir` (keys sorted, indent 2, as HF).
    pub fn save_state(&self, dir: &Path) -> Result<()> {
        write_json(
            &dir.join(TRAINER_STATE_NAME),
            &serde_json::to_value(&self.state)?,
        )
    }

    /// Saves `output_dir/checkpoint-{global_step}/` and rotates old ones (HF's `_save_checkpoint`).
    pub(super) fn save_checkpoint(&mut self, losses: &LossWindow) -> Result<PathBuf> {
        let output_dir = PathBuf::from(&self.args.output_dir);
        let dir = checkpoint_dir(&output_dir, self.state.global_step);
        if self.state.best_global_step == Some(self.state.global_step) {
            self.state.best_model_checkpoint = Some(dir.display().to_string());
        }
        let mut stateful = self.callbacks.states();
        stateful.insert("TrainerControl".into(), control_state(&self.control));
        self.state.stateful_callbacks = stateful;
        let optimizer = self
            .optimizer
            .as_ref()
            .expect("saving happens inside train()")
            .state();
        let scheduler = self
            .scheduler
            .as_ref()
            .expect("saving happens inside train()")
            .state();
        let loop_state = serde_json::to_value(LoopState {
            losses: losses.clone(),
            world_size: self.dist.world_size,
            loss_scaler: self.scaler.as_ref().map(LossScaler::saved_state),
        })?;
        checkpoint::write_atomically(&dir, |tmp| {
            self.model.varmap().save(tmp.join(WEIGHTS_NAME))?;
            pause_for_kill_test();
            let tensors: HashMap<String, candle_core::Tensor> =
                optimizer.tensors.clone().into_iter().collect();
            candle_core::safetensors::save(&tensors, tmp.join(OPTIMIZER_TENSORS_NAME))?;
            write_json(
                &tmp.join(OPTIMIZER_SCALARS_NAME),
                &json!({ "optim": self.args.optim, "scalars": optimizer.scalars }),
            )?;
            write_json(&tmp.join(SCHEDULER_NAME), &scheduler)?;
            write_json(&tmp.join(RNG_STATE_NAME), &rng_state(&self.args))?;
            self.save_state(tmp)?;
            write_text(&tmp.join(TRAINING_ARGS_NAME), &self.args.to_json_string())?;
            write_json(&tmp.join(LOOP_STATE_NAME), &loop_state)
        })?;
        let best = self.state.best_model_checkpoint.as_ref().map(PathBuf::from);
        rotate_checkpoints(&output_dir, self.args.save_total_limit, best.as_deref())?;
        Ok(dir)
    }

    /// Restores a checkpoint when `resume_from_checkpoint` asks for one.
    pub(super) fn maybe_resume(&mut self, plan: &TrainingPlan) -> Result<ResumePoint> {
        let Some(spec) = self
            .args
            .resume_from_checkpoint
            .clone()
            .filter(|s| s != "false")
        else {
            return Ok(ResumePoint::default());
        };
        let dir = checkpoint::resolve_with_log(&spec, Path::new(&self.args.output_dir), &self.log)?;
        let read_json = |name: &str| -> Result<serde_json::Value> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path)?;
            serde_json::from_str(&text)
                .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
        };
        self.warn_about_changed_arguments(
            &dir,
            &read_json(TRAINING_ARGS_NAME)?,
            &read_json(LOOP_STATE_NAME)?,
        );

        self.model
            .varmap()
            .clone()
            .load(dir.join(WEIGHTS_NAME))
            .map_err(|e| Error::Usage(format!("{}: {e}", dir.join(WEIGHTS_NAME).display())))?;
        let scalars = read_json(OPTIMIZER_SCALARS_NAME)?;
        if scalars["optim"] != json!(self.args.optim) {
            return Err(Error::Usage(format!(
                "{} was trained with optim {}, but this run uses `{}`; resume with the same optimizer",
                dir.display(),
                scalars["optim"],
                self.args.optim
            )));
        }
        let tensors =
            candle_core::safetensors::load(dir.join(OPTIMIZER_TENSORS_NAME), &self.device)?;
        self.optimizer
            .as_mut()
            .expect("created before resuming")
            .load_state(&OptimizerState {
                tensors: tensors.into_iter().collect(),
                scalars: scalars["scalars"].as_object().cloned().unwrap_or_default(),
            })?;
        self.scheduler
            .as_mut()
            .expect("created before resuming")
            .load_state(&read_json(SCHEDULER_NAME)?)?;

        let saved: TrainerState = serde_json::from_value(read_json(TRAINER_STATE_NAME)?)?;
        self.callbacks
            .load_states(&saved.stateful_callbacks, &self.log)?;
        let fresh = std::mem::replace(&mut self.state, saved);
        // The plan of this run wins over the saved one, as in HF.
        self.state.max_steps = fresh.max_steps;
        self.state.num_train_epochs = fresh.num_train_epochs;
        self.state.logging_steps = fresh.logging_steps;
        self.state.eval_steps = fresh.eval_steps;
        self.state.save_steps = fresh.save_steps;
        self.state.train_batch_size = fresh.train_batch_size;
        let loop_state: LoopState = serde_json::from_value(read_json(LOOP_STATE_NAME)?)?;
        if let (Some(scaler), Some(saved)) = (self.scaler.as_mut(), loop_state.loss_scaler) {
            scaler.load_state(saved);
        }

        let step = self.state.global_step;
        let updates_done = if self.args.ignore_data_skip {
            0
        } else {
            step % plan.updates_per_epoch
        };
        self.log.info(format_args!(
            "resuming from {} at step {step} (epoch {}, skipping {updates_done} optimizer steps of batches)",
            dir.display(),
            step / plan.updates_per_epoch
        ));
        Ok(ResumePoint {
            epoch: step / plan.updates_per_epoch,
            updates_done,
            losses: loop_state.losses,
        })
    }

    /// Loads the best checkpoint's weights (HF's `load_best_model_at_end`).
    pub(super) fn load_best_model(&mut self) -> Result<()> {
        let Some(best) = self.state.best_model_checkpoint.clone() else {
            return Ok(());
        };
        let path = Path::new(&best).join(WEIGHTS_NAME);
        eprintln!(
            "taper: loading best model from {best} (score: {})",
            self.state.best_metric.map_or("?".into(), |m| m.to_string())
        );
        self.model
            .varmap()
            .clone()
            .load(&path)
            .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
        Ok(())
    }

    fn warn_about_changed_arguments(
        &self,
        dir: &Path,
        saved_args: &serde_json::Value,
        loop_state: &serde_json::Value,
    ) {
        let now = self.args.to_json_value();
        let mut changed: Vec<String> = [
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "seed",
            "data_seed",
        ]
        .iter()
        .filter(|key| saved_args[**key] != now[**key])
        .map(|key| format!("{key} {} (checkpoint: {})", now[*key], saved_args[*key]))
        .collect();
        let world = loop_state["world_size"].as_u64().unwrap_or(1) as usize;
        if world != self.dist.world_size {
            changed.push(format!(
                "world size {} (checkpoint: {world})",
                self.dist.world_size
            ));
        }
        if !changed.is_empty() {
            self.log.warning(format_args!(
                "resuming from {} with changed arguments: {}; the batches after the resume will not be those of the uninterrupted run",
                dir.display(),
                changed.join(", ")
            ));
        }
    }
}

/// What decides data order. taper's models draw no random numbers while
/// training, and the loader's order depends only on `(data seed, epoch)`, so
/// the seeds are the whole state; they are saved so a resume can check them.
fn rng_state(args: &TrainingArguments) -> serde_json::Value {
    json!({
        "seed": args.seed,
        "data_seed": args.data_seed.unwrap_or(args.seed),
        "data_order": "a permutation drawn from ChaCha8(data_seed) on stream `epoch`",
    })
}

/// `TrainerControl` as HF stores it among the stateful callbacks.
fn control_state(control: &super::TrainerControl) -> serde_json::Value {
    json!({
        "args": {
            "should_epoch_stop": control.should_epoch_stop,
            "should_evaluate": control.should_evaluate,
            "should_log": control.should_log,
            "should_save": control.should_save,
            "should_training_stop": control.should_training_stop,
        },
        "attributes": {},
    })
}

/// The kill test's hook: `TAPER_TEST_PAUSE_IN_SAVE_MS` holds every save
/// half written (weights only) for that long, so a SIGKILL lands mid-save.
fn pause_for_kill_test() {
    if let Some(ms) = std::env::var("TAPER_TEST_PAUSE_IN_SAVE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_text(path, &text)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)?;
    Ok(())
}
