//! Which checkpoints to keep: HF's `_sorted_checkpoints` and `_rotate_checkpoints`.

use std::path::{Path, PathBuf};

use super::checkpoint_step;
use crate::error::Result;

/// The `checkpoint-N` folders of `output_dir`, oldest step first.
/// Hidden temporary folders of unfinished saves are not checkpoints.
pub fn sorted_checkpoints(output_dir: &Path) -> Result<Vec<PathBuf>> {
    if !output_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(output_dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .filter_map(|path| checkpoint_step(&path).map(|step| (step, path)))
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// Deletes the oldest checkpoints beyond `limit`, never the best one: as in
/// HF, the best is moved just before the newest in the deletion order, and
/// with a limit of 1 two are kept when the best is not the newest (so a run
/// can still resume from its last step).
pub fn rotate_checkpoints(
    output_dir: &Path,
    limit: Option<usize>,
    best: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let Some(limit) = limit.filter(|l| *l > 0) else {
        return Ok(Vec::new());
    };
    let mut sorted = sorted_checkpoints(output_dir)?;
    if sorted.len() <= limit {
        return Ok(Vec::new());
    }
    let best_index = best.and_then(|b| sorted.iter().position(|p| same_path(p, b)));
    if let Some(index) = best_index {
        // HF's bubble: swap the best forward until it is second to last.
        for i in index..sorted.len().saturating_sub(2) {
            sorted.swap(i, i + 1);
        }
    }
    let keep = if best_index.is_some()
        && limit == 1
        && !same_path(sorted.last().expect("non-empty"), best.expect("has best"))
    {
        2
    } else {
        limit
    };
    let delete: Vec<PathBuf> = sorted[..sorted.len().saturating_sub(keep)].to_vec();
    for dir in &delete {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(delete)
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b
        || a.file_name() == b.file_name()
            && a.parent().map(std::fs::canonicalize).and_then(|r| r.ok())
                == b.parent().map(std::fs::canonicalize).and_then(|r| r.ok())
}
