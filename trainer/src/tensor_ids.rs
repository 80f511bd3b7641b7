//! Tensor ids that stay distinct across notebook cells.
//!
//! candle numbers tensors from a counter that is a `static` of candle-core,
//! and its backward pass tells tensors apart by that number. In a notebook
//! every cell is compiled into a shared library of its own, and evcxr links
//! dependencies statically (its dynamic mode does not build with current
//! compilers), so each cell carries its own copy of candle and of that
//! counter. A model built in one cell and trained in another can then have a
//! weight and an activation with the same id, and backward mixes up their
//! gradients (or fails with a shape mismatch). Before it differentiates,
//! the Trainer moves the counter of the code that is running past every
//! parameter's id, so the two can no longer meet. Outside notebooks the
//! counter is already past them and this costs one tensor.

use candle_core::{DType, Device, Tensor, TensorId};

/// The number inside a [`TensorId`] (candle keeps it private; its Debug
/// form is `TensorId(N)`).
fn number(id: TensorId) -> usize {
    let text = format!("{id:?}");
    text.trim_start_matches("TensorId(")
        .trim_end_matches(')')
        .parse()
        .unwrap_or(0)
}

/// Makes every tensor created from now on (by this copy of candle) get an
/// id above all of `ids`. Returns how many ids were skipped.
pub fn advance_past(ids: impl IntoIterator<Item = TensorId>) -> usize {
    let highest = ids.into_iter().map(number).max().unwrap_or(0);
    let mut skipped = 0;
    loop {
        let Ok(probe) = Tensor::zeros((), DType::U8, &Device::Cpu) else {
            return skipped;
        };
        if number(probe.id()) > highest {
            return skipped;
        }
        skipped += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_tensors_come_after_the_given_ids() {
        let old = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
        // Already past: one probe, nothing skipped.
        assert_eq!(advance_past([old.id()]), 0);
        let fresh = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
        assert!(number(fresh.id()) > number(old.id()));
        assert_eq!(
            format!("{:?}", fresh.id()),
            format!("TensorId({})", number(fresh.id()))
        );
    }
}
