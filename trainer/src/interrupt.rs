//! Stopping at a safe point when the notebook's interrupt button is pressed.
//!
//! The kernel interrupts a cell by sending SIGINT to the cell process. Inside
//! a taper kernel (`TAPER_IN_KERNEL` is set) the first use of this module
//! turns SIGINT into a flag, so code that checks it (the Trainer at every
//! optimizer step, or any loop through [`check`]) stops where its state is
//! consistent and the notebook keeps every variable. Code that never checks
//! is stopped by the kernel's second stage, a restart after a grace period.
//! Outside a kernel nothing is installed and Ctrl-C keeps its usual meaning.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};

fn flag() -> Option<&'static Arc<AtomicBool>> {
    static FLAG: OnceLock<Option<Arc<AtomicBool>>> = OnceLock::new();
    FLAG.get_or_init(|| {
        // Only inside a kernel: elsewhere Ctrl-C keeps its usual meaning.
        std::env::var_os("TAPER_IN_KERNEL")?;
        let flag = Arc::new(AtomicBool::new(false));
        #[cfg(unix)]
        signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone()).ok()?;
        Some(flag)
    })
    .as_ref()
}

/// Arms the interrupt flag (inside a kernel); the Trainer calls it when training starts.
pub fn arm() {
    let _ = flag();
}

/// True (once) if an interrupt arrived since the last call.
pub fn take() -> bool {
    flag().is_some_and(|f| f.swap(false, Ordering::SeqCst))
}

/// `Err(Error::Interrupted)` if an interrupt arrived: for long loops in cells.
///
/// ```
/// for step in 0..3 {
///     taper::interrupt::check()?; // returns early when the notebook interrupts
///     let _ = step;
/// }
/// # Ok::<(), taper::Error>(())
/// ```
pub fn check() -> Result<()> {
    if take() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}
