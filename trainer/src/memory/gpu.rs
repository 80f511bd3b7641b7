//! GPU memory through the CUDA driver (the `cuda` feature); without it,
//! no GPUs. See the [parent module](super) for what "used" means.

#[cfg(feature = "cuda")]
pub(super) use cuda::{record_peak, used};
#[cfg(not(feature = "cuda"))]
pub(super) use none::{record_peak, used};

#[cfg(feature = "cuda")]
mod cuda {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, OnceLock};

    use candle_core::cuda_backend::cudarc::driver::{result, sys, CudaContext};

    /// The peak used bytes seen per device.
    static PEAKS: Mutex<BTreeMap<usize, u64>> = Mutex::new(BTreeMap::new());

    /// Records a reading; returns the device's peak so far.
    pub(crate) fn record_peak(device: usize, used: u64) -> u64 {
        let mut peaks = PEAKS.lock().unwrap_or_else(|p| p.into_inner());
        let peak = peaks.entry(device).or_insert(0);
        *peak = (*peak).max(used);
        *peak
    }

    /// `(ordinal, used bytes)` of every GPU whose primary context is active
    /// in this process (candle uses primary contexts). A device the process
    /// never used is not touched: retaining its context would allocate one.
    pub(crate) fn used() -> Vec<(usize, u64)> {
        static CONTEXTS: OnceLock<Mutex<Vec<Option<Arc<CudaContext>>>>> = OnceLock::new();
        let Ok(count) = CudaContext::device_count() else {
            return Vec::new();
        };
        let mut contexts = CONTEXTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        contexts.resize(count.max(0) as usize, None);
        let mut out = Vec::new();
        for (ordinal, slot) in contexts.iter_mut().enumerate() {
            if slot.is_none() && primary_context_active(ordinal) {
                // Retaining an active primary context costs nothing more.
                *slot = CudaContext::new(ordinal).ok();
            }
            if let Some(Ok((free, total))) = slot.as_ref().map(|c| c.mem_get_info()) {
                out.push((ordinal, total.saturating_sub(free) as u64));
            }
        }
        out
    }

    fn primary_context_active(ordinal: usize) -> bool {
        let Ok(device) = result::device::get(ordinal as i32) else {
            return false;
        };
        let (mut flags, mut active) = (0, 0);
        // SAFETY: `device` comes from the driver, the pointers from locals.
        let status = unsafe { sys::cuDevicePrimaryCtxGetState(device, &mut flags, &mut active) };
        status == sys::CUresult::CUDA_SUCCESS && active != 0
    }
}

/// Without the `cuda` feature there are no GPUs to read.
#[cfg(not(feature = "cuda"))]
mod none {
    pub(crate) fn record_peak(_device: usize, used: u64) -> u64 {
        used
    }

    pub(crate) fn used() -> Vec<(usize, u64)> {
        Vec::new()
    }
}
