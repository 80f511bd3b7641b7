//! Checkpoints on disk: the layout, atomic writing, finding, checking and rotating.
//!
//! A checkpoint is `output_dir/checkpoint-{global_step}/` with HF's file
//! names. It is written under a hidden temporary name beside its final place,
//! every file synced, then renamed in one step, so a kill at any moment
//! leaves the earlier checkpoints whole and never a `checkpoint-N` folder that
//! looks complete but is not. This module knows files, not training: what
//! goes into a checkpoint is decided by the Trainer (`trainer/checkpointing.rs`).

mod rotate;

pub use rotate::{rotate_checkpoints, sorted_checkpoints};

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix of checkpoint folders, as HF's `PREFIX_CHECKPOINT_DIR`.
pub const PREFIX: &str = "checkpoint";
/// The model's weights.
pub const WEIGHTS_NAME: &str = "model.safetensors";
/// Optimizer buffers (moments, momentum), one tensor per parameter and buffer.
pub const OPTIMIZER_TENSORS_NAME: &str = "optimizer.safetensors";
/// Optimizer counters and its name.
pub const OPTIMIZER_SCALARS_NAME: &str = "optimizer.json";
/// The learning-rate scheduler's state.
pub const SCHEDULER_NAME: &str = "scheduler.json";
/// What decides data order (and, when models draw random numbers, their generators).
pub const RNG_STATE_NAME: &str = "rng_state.json";
/// HF's `TrainerState`.
pub const TRAINER_STATE_NAME: &str = "trainer_state.json";
/// The arguments of the run that wrote the checkpoint.
pub const TRAINING_ARGS_NAME: &str = "training_args.json";
/// taper's own loop state (loss window), which makes resumed logs exact.
pub const LOOP_STATE_NAME: &str = "taper_loop_state.json";

/// Every file a complete checkpoint holds.
pub const CHECKPOINT_FILES: &[&str] = &[
    WEIGHTS_NAME,
    OPTIMIZER_TENSORS_NAME,
    OPTIMIZER_SCALARS_NAME,
    SCHEDULER_NAME,
    RNG_STATE_NAME,
    TRAINER_STATE_NAME,
    TRAINING_ARGS_NAME,
    LOOP_STATE_NAME,
];

/// The folder of the checkpoint at `step`.
pub fn checkpoint_dir(output_dir: &Path, step: usize) -> PathBuf {
    output_dir.join(format!("{PREFIX}-{step}"))
}

/// The step of a folder named `checkpoint-{step}`.
pub fn checkpoint_step(path: &Path) -> Option<usize> {
    path.file_name()?
        .to_str()?
        .strip_prefix(&format!("{PREFIX}-"))?
        .parse()
        .ok()
}

/// Writes a checkpoint folder atomically: `fill` writes the files into a
/// temporary sibling, which is synced and renamed to `dir` (replacing an
/// older folder of the same name only once the new one is complete).
pub fn write_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir
        .parent()
        .ok_or_else(|| Error::Usage(format!("{} has no parent folder", dir.display())))?;
    std::fs::create_dir_all(parent)?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("checkpoint");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp)?;
    fill(&tmp)?;
    for entry in std::fs::read_dir(&tmp)? {
        File::open(entry?.path())?.sync_all()?;
    }
    sync_dir(&tmp)?;
    if dir.exists() {
        // Same step saved twice (a resumed run saving where it started):
        // move the old one aside first, drop it only after the swap.
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old)?;
        std::fs::rename(&tmp, dir)?;
        std::fs::remove_dir_all(&old)?;
    } else {
        std::fs::rename(&tmp, dir)?;
    }
    sync_dir(parent)
}

/// Makes a rename durable: the folder's own entry list is synced.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// What is wrong with a checkpoint folder: missing files and files that do
/// not parse. Empty when it is usable.
pub fn problems(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for file in CHECKPOINT_FILES {
        let path = dir.join(file);
        if !path.is_file() {
            problems.push(format!("missing {file}"));
            continue;
        }
        let readable = if file.ends_with(".json") {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .is_some()
        } else {
            std::fs::read(&path)
                .ok()
                .and_then(|bytes| {
                    safetensors::SafeTensors::deserialize(&bytes)
                        .ok()
                        .map(|_| ())
                })
                .is_some()
        };
        if !readable {
            problems.push(format!("{file} is damaged (it does not parse)"));
        }
    }
    problems
}

/// The checkpoint to resume from: `spec` is a folder, or `true` for the
/// newest usable checkpoint in `output_dir`. Errors name what is wrong and
/// which checkpoints are usable.
pub fn resolve(spec: &str, output_dir: &Path) -> Result<PathBuf> {
    resolve_with_log(spec, output_dir, &crate::log::Log::default())
}

/// [`resolve`], printing its warnings (a damaged checkpoint skipped) at
/// the level `log` allows.
pub fn resolve_with_log(spec: &str, output_dir: &Path, log: &crate::log::Log) -> Result<PathBuf> {
    if spec == "true" {
        let all = sorted_checkpoints(output_dir)?;
        for dir in all.iter().rev() {
            let problems = problems(dir);
            if problems.is_empty() {
                return Ok(dir.clone());
            }
            log.warning(format_args!(
                "skipping {} ({}); trying an older checkpoint",
                dir.display(),
                problems.join(", ")
            ));
        }
        return Err(Error::Usage(format!(
            "resume_from_checkpoint=true, but {} holds no usable checkpoint{}",
            output_dir.display(),
            if all.is_empty() {
                ""
            } else {
                " (every one is damaged)"
            }
        )));
    }
    let dir = PathBuf::from(spec);
    let problems = problems(&dir);
    if problems.is_empty() {
        return Ok(dir);
    }
    let parent = dir.parent().unwrap_or(output_dir);
    let usable: Vec<String> = sorted_checkpoints(parent)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| self::problems(d).is_empty())
        .map(|d| d.display().to_string())
        .collect();
    Err(Error::Usage(format!(
        "cannot resume from {}: {}; usable checkpoints: {}",
        dir.display(),
        problems.join(", "),
        if usable.is_empty() {
            "none".to_string()
        } else {
            usable.join(", ")
        }
    )))
}
