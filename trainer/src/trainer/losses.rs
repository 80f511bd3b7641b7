//! The training losses between logs, kept on the device until a log needs
//! them, and the last step's gradient norm (see `mod.rs` for the loop).

use candle_core::Tensor;

use crate::error::Result;
use crate::log::Log;

/// Training losses between two logs, and over the whole run (HF's `tr_loss`
/// and `_total_loss_scalar`).
///
/// The micro-batches' losses wait as device tensors in `pending` and are
/// read back (one device-to-host copy for all of them) only when a log, a
/// checkpoint or the end of training needs the sums: reading each loss at
/// once would make every step wait for the GPU, which then idles while the
/// CPU queues the optimizer step and the next batch (5.4 ms of an 85 ms bf16
/// step of the reference GPT on an H200, notes/gpu-performance.md). The sums are
/// the same f64 additions in the same order as reading them one by one.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct LossWindow {
    pub(super) sum: f64,
    pub(super) total: f64,
    pub(super) last_logged_step: usize,
    #[serde(skip)]
    pub(super) pending: Vec<PendingLoss>,
}

/// The last step's gradient norm (before clipping), read back or not yet.
#[derive(Debug, Clone)]
pub(super) enum GradNorm {
    /// Read back at once (on the CPU).
    Read(f64),
    /// An f32 scalar on the GPU, read when logged.
    OnDevice(Tensor),
}

impl GradNorm {
    /// The norm, read back from the device if it is still there.
    pub(super) fn value(&self) -> Result<f64> {
        match self {
            Self::Read(norm) => Ok(*norm),
            Self::OnDevice(norm) => Ok(f64::from(
                norm.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?,
            )),
        }
    }
}

/// A micro-batch's loss not read back yet, with where it came from.
#[derive(Debug, Clone)]
pub(super) struct PendingLoss {
    pub(super) loss: Tensor,
    /// `global_step` when the loss was computed (before the step's increment).
    pub(super) global_step: usize,
    /// The micro-batch's index in the epoch.
    pub(super) index: usize,
}

impl LossWindow {
    /// Reads the pending losses back and adds them to the window, in order,
    /// warning about non-finite ones (HF's `logging_nan_inf_filter` replaces
    /// them by the window's mean so far, see [`LossWindow::add`]).
    pub(super) fn read_pending(&mut self, log: &Log, nan_inf_filter: bool) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        // One copy for all: each loss in f64 (as a single read would give it), stacked.
        let values = pending
            .iter()
            .map(|p| p.loss.to_dtype(candle_core::DType::F64))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let values = Tensor::stack(&values, 0)?.to_vec1::<f64>()?;
        for (p, loss) in pending.iter().zip(values) {
            if !loss.is_finite() {
                log.warning(format_args!(
                    "non-finite loss ({loss}) at step {} (micro-batch {} of the epoch){}",
                    p.global_step + 1,
                    p.index,
                    if nan_inf_filter {
                        "; logging_nan_inf_filter keeps it out of the logged loss"
                    } else {
                        ""
                    }
                ));
            }
            self.add(loss, nan_inf_filter, p.global_step);
        }
        Ok(())
    }

    /// Adds a micro-batch loss; a non-finite one is replaced by the window's
    /// mean so far when `nan_inf_filter` is on (HF's `logging_nan_inf_filter`).
    pub(super) fn add(&mut self, loss: f64, nan_inf_filter: bool, global_step: usize) {
        if nan_inf_filter && !loss.is_finite() {
            self.sum += self.sum / (1 + global_step - self.last_logged_step) as f64;
        } else {
            self.sum += loss;
        }
    }
}
