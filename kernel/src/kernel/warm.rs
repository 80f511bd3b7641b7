//! `taper install --warm`: compile what a notebook's first `:dep taper`
//! needs once, at install time, into evcxr's build cache.
//!
//! The cache (`$XDG_CACHE_HOME/evcxr`, usually `~/.cache/evcxr`) keeps the
//! compiled dependencies keyed by their exact compiler command line, so a
//! kernel started later with the same settings copies them instead of
//! compiling candle again. The warm-up runs the very engine a kernel runs,
//! in the kernel's environment ([`super::prepare_environment`]), which is
//! what makes the command lines, and so the cache keys, match.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{prepare_environment, resolve_taper_dep, Engine};

/// Builds `taper` (and `taper-widgets`) in a throw-away engine; returns how long it took.
pub fn warm_build_cache() -> Result<Duration> {
    prepare_environment();
    if super::trainer_crate_path().is_none() {
        bail!(
            "cannot find the taper trainer crate to build; set TAPER_CRATE_PATH to the \
             `trainer` folder of the taper source"
        );
    }
    let started = Instant::now();
    let (engine, ready) = Engine::start()?;
    let outputs = ready.recv()?.map_err(anyhow::Error::msg)?;
    // Nobody reads a warm-up's output; keep the channels drained.
    for lines in [outputs.stdout, outputs.stderr] {
        std::thread::spawn(move || for _ in lines {});
    }
    let code = resolve_taper_dep(
        ":dep taper\n:dep taper-widgets\nlet warm = taper::TrainingArguments::default();",
    );
    let built = engine.execute(&code)?;
    if let Some(pid) = engine.child_pid() {
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    match built {
        Ok(_) => Ok(started.elapsed()),
        Err(e) => bail!("building taper for the kernel failed: {e}"),
    }
}
