//! Writing a run to disk: the model's weights, the trainer state and the
//! arguments, in HF's layout (`output_dir/checkpoint-{step}/`).
//!
//! Every folder is written under a temporary name and renamed when complete,
//! so a crash never leaves a folder that looks whole but is not. Optimizer,
//! scheduler and RNG state, rotation and resume belong to the checkpoint
//! work that builds on this.

use std::path::{Path, PathBuf};

use super::Trainer;
use crate::error::Result;
use crate::model::Model;

/// The weights file, as HF names it.
pub const WEIGHTS_NAME: &str = "model.safetensors";
/// The trainer state file.
pub const TRAINER_STATE_NAME: &str = "trainer_state.json";
/// The arguments file.
pub const TRAINING_ARGS_NAME: &str = "training_args.json";

impl<M: Model> Trainer<M> {
    /// Writes the model's weights to `dir` (default: `output_dir`) as `model.safetensors`.
    pub fn save_model(&self, dir: Option<&Path>) -> Result<PathBuf> {
        let dir = dir.map_or_else(|| PathBuf::from(&self.args.output_dir), Path::to_path_buf);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(WEIGHTS_NAME);
        let partial = dir.join(format!("{WEIGHTS_NAME}.partial"));
        self.model.varmap().save(&partial)?;
        std::fs::rename(&partial, &path)?;
        self.write_args(&dir)?;
        Ok(path)
    }

    /// Writes `trainer_state.json` into `dir` (keys sorted, indent 2, as HF).
    pub fn save_state(&self, dir: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(&serde_json::to_value(&self.state)?)?;
        text.push('\n');
        std::fs::write(dir.join(TRAINER_STATE_NAME), text)?;
        Ok(())
    }

    fn write_args(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join(TRAINING_ARGS_NAME), self.args.to_json_string())?;
        Ok(())
    }

    /// Saves `output_dir/checkpoint-{global_step}/` (weights, state, arguments).
    pub(super) fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let output_dir = PathBuf::from(&self.args.output_dir);
        let name = format!("checkpoint-{}", self.state.global_step);
        let tmp = output_dir.join(format!(".{name}.tmp"));
        let done = output_dir.join(&name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        self.model.varmap().save(tmp.join(WEIGHTS_NAME))?;
        self.write_args(&tmp)?;
        self.save_state(&tmp)?;
        if done.exists() {
            std::fs::remove_dir_all(&done)?;
        }
        std::fs::rename(&tmp, &done)?;
        Ok(done)
    }
}
