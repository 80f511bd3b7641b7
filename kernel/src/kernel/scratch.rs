//! Where evcxr builds the cells: a scratch folder per running kernel,
//! reused by the next kernel.
//!
//! evcxr builds every cell in a crate folder with its own cargo target
//! folder (hundreds of MB once candle is in). Its own temporary folder is
//! removed only when its context is dropped, which a kernel that exits or is
//! killed never does, so kernels leaked gigabytes into `/tmp`. taper
//! therefore picks the folder: `taper-evcxr/slot-<n>` in the temporary
//! folder, the first slot no running kernel holds (each holds an exclusive
//! lock on `slot-<n>.lock` until its process ends, however it ends).
//!
//! Why slots that outlive the kernel, rather than a folder per process
//! removed at exit: the next kernel finds the dependencies an earlier one
//! (or `taper install --warm`) built still fresh, and cargo rebuilds only the
//! cell. A folder per process also defeated evcxr's build cache: the cached
//! dependency files (`.d`) name the build-script outputs under the target
//! folder of the process that first built them, so in any other folder
//! cargo found them missing and rebuilt candle, taper and every crate with a
//! build script for every cell, about 0.4 s of each cell after `:dep taper`
//! (notes/kernel-latency.md). With slots the paths are the same from one
//! kernel to the next. There are at most as many folders as kernels that
//! ever ran at the same time; folders of one process (older taper versions'
//! `taper-evcxr-<pid>`, and the fallback when all slots are taken) are
//! removed once their process is gone.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::log;

/// How many kernels can build at once before they fall back to a folder
/// of their own (`pid-<pid>`, not reused).
const SLOTS: usize = 64;

/// The scratch folder of this process (see the module docs).
fn scratch_dir() -> PathBuf {
    static SLOT: OnceLock<PathBuf> = OnceLock::new();
    SLOT.get_or_init(|| claim_slot(&slots_dir())).clone()
}

/// The folder that holds the slots.
fn slots_dir() -> PathBuf {
    std::env::temp_dir().join("taper-evcxr")
}

/// The first free slot under `base`, locked for the rest of this process.
fn claim_slot(base: &Path) -> PathBuf {
    let _ = std::fs::create_dir_all(base);
    for slot in 0..SLOTS {
        let lock = base.join(format!("slot-{slot}.lock"));
        let Ok(file) = File::options()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&lock)
        else {
            continue;
        };
        if file.try_lock().is_ok() {
            // Held open (and so locked) until the process ends; the file is
            // opened close-on-exec, so the cell process does not inherit it.
            static HELD: std::sync::Mutex<Vec<File>> = std::sync::Mutex::new(Vec::new());
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(file);
            return base.join(format!("slot-{slot}"));
        }
    }
    log("engine: every scratch slot is taken; building in a folder of this process");
    base.join(format!("pid-{}", std::process::id()))
}

/// Creates the crate folder's parent with its `.cargo/config.toml` and
/// points evcxr at it; removes the folders of processes that are gone.
pub fn prepare(cargo_config: &str) {
    remove_dead_process_folders();
    let scratch = scratch_dir();
    let cells = scratch.join("cells");
    let config = scratch.join(".cargo");
    if std::fs::create_dir_all(&cells).is_ok() && std::fs::create_dir_all(&config).is_ok() {
        remove_cell_incremental_state(&cells.join("target"));
        write_cargo_config(cargo_config);
        std::env::set_var("EVCXR_TMPDIR", &cells);
    }
}

/// Removes the incremental compilation state under `target` (only evcxr's
/// cell crate is built incrementally). An earlier kernel's state is of no
/// use to the next one's first cell, and loading it made that cell 0.5-1 s
/// slower (notes/kernel-latency.md); the built dependencies stay.
fn remove_cell_incremental_state(target: &Path) {
    let Ok(entries) = std::fs::read_dir(target) else {
        return;
    };
    for entry in entries.flatten() {
        // target/<triple>/debug/incremental, and target/debug/incremental.
        for profile_dir in [entry.path().join("debug"), entry.path()] {
            let incremental = profile_dir.join("incremental");
            if incremental.is_dir() {
                let _ = std::fs::remove_dir_all(incremental);
            }
        }
    }
}

/// (Re)writes the scratch folder's `.cargo/config.toml`, which cargo reads
/// above evcxr's crate folder (see `deps`).
pub fn write_cargo_config(contents: &str) {
    let path = scratch_dir().join(".cargo").join("config.toml");
    if let Err(e) = std::fs::write(&path, contents) {
        log(&format!(
            "engine: could not write the cargo configuration {}: {e}",
            path.display()
        ));
    }
}

/// The folders of one process whose process is gone: `taper-evcxr-<pid>`
/// (taper before slots) and the `pid-<pid>` fallback of [`claim_slot`].
fn remove_dead_process_folders() {
    remove_dead(&std::env::temp_dir(), "taper-evcxr-");
    remove_dead(&slots_dir(), "pid-");
}

/// Removes the folders `<prefix><pid>` in `parent` whose process is gone.
fn remove_dead(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_folders_of_dead_processes_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        let alive = parent.path().join(format!("pid-{}", std::process::id()));
        // Linux pids stay far below this.
        let dead = parent.path().join("pid-4000000000");
        let slot = parent.path().join("slot-0");
        for folder in [&alive, &dead, &slot] {
            std::fs::create_dir_all(folder).unwrap();
        }
        remove_dead(parent.path(), "pid-");
        assert!(alive.is_dir() && slot.is_dir());
        assert!(!dead.exists());
    }

    #[test]
    fn only_the_incremental_state_is_removed() {
        let target = tempfile::tempdir().unwrap();
        let debug = target.path().join("x86_64-unknown-linux-gnu/debug");
        std::fs::create_dir_all(debug.join("incremental/ctx-abc")).unwrap();
        std::fs::create_dir_all(debug.join("deps")).unwrap();
        std::fs::write(debug.join("deps/libcandle_core.rlib"), "built").unwrap();
        remove_cell_incremental_state(target.path());
        assert!(!debug.join("incremental").exists());
        assert!(debug.join("deps/libcandle_core.rlib").is_file());
    }

    #[test]
    fn a_held_slot_is_skipped_and_a_released_one_reused() {
        let base = tempfile::tempdir().unwrap();
        // Another process's lock, as a second open file description.
        let holder = File::create(base.path().join("slot-0.lock")).unwrap();
        holder.lock().unwrap();
        let lock_path = base.path().join("slot-1.lock");
        assert_eq!(claim_slot(base.path()), base.path().join("slot-1"));
        // This process now holds slot 1: a fresh open of its lock cannot lock it.
        let other = File::options().write(true).open(&lock_path).unwrap();
        assert!(other.try_lock().is_err(), "slot 1 is held");
        drop(holder);
        let again = File::options()
            .write(true)
            .open(base.path().join("slot-0.lock"))
            .unwrap();
        assert!(again.try_lock().is_ok(), "a released slot can be taken");
    }
}
