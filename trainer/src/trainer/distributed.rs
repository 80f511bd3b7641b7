//! What the Trainer does differently in a data-parallel job: every rank
//! starts from rank 0's weights, trains on its share of each batch, averages
//! gradients before clipping, averages logged losses, and gathers evaluation
//! results, so the run matches one process with `world_size` times the batch.
//! In a world of one every method here returns at once, unless the job was
//! launched on a GPU: NCCL then runs with one rank, as DDP would.

use candle_core::{DType, Device, Tensor};

use super::TrainerCore;
use crate::dist::ReduceOp;
use crate::error::{Error, Result};
use crate::metrics::EvalPrediction;
use crate::optim::Gradients;

impl TrainerCore {
    /// True on the process that prints, draws and writes files (world rank 0).
    pub fn is_world_process_zero(&self) -> bool {
        self.dist.rank == 0
    }

    /// Whether the collectives run: in every multi-process job, and on a
    /// GPU launched as a world of one (NCCL); not in a plain world of one.
    fn distributed(&self) -> bool {
        self.collective.exchanges()
    }

    /// Sets every rank's parameters to rank 0's.
    pub(super) fn broadcast_parameters(&self) -> Result<()> {
        if !self.distributed() {
            return Ok(());
        }
        for param in self.params.iter() {
            param
                .var
                .set(&self.collective.broadcast(param.var.as_tensor(), 0)?)?;
        }
        Ok(())
    }

    /// Averages the gradients over the ranks, in one bucket (one exchange for
    /// all parameters rather than one per parameter).
    pub(super) fn average_gradients(&self, grads: &mut Gradients) -> Result<()> {
        if !self.distributed() {
            return Ok(());
        }
        let present: Vec<&Tensor> = grads.iter().flatten().collect();
        let flat: Vec<Tensor> = present
            .iter()
            .map(|g| g.to_dtype(DType::F32)?.flatten_all())
            .collect::<candle_core::Result<_>>()?;
        let bucket = self
            .collective
            .all_reduce(&Tensor::cat(&flat, 0)?, ReduceOp::Average)?;
        let mut offset = 0;
        let averaged: Vec<Option<Tensor>> = grads
            .iter()
            .map(|g| {
                g.map(|g| {
                    let n = g.elem_count();
                    let part = bucket
                        .narrow(0, offset, n)?
                        .reshape(g.shape())?
                        .to_dtype(g.dtype());
                    offset += n;
                    part
                })
                .transpose()
            })
            .collect::<candle_core::Result<_>>()?;
        *grads = Gradients::from_vec(averaged);
        Ok(())
    }

    /// The mean of `value` over the ranks (exactly `value` in a world of one).
    pub(super) fn mean_over_ranks(&self, value: f64) -> Result<f64> {
        if !self.distributed() {
            return Ok(value);
        }
        let t = Tensor::new(&[value as f32], &Device::Cpu)?;
        Ok(f64::from(
            self.collective
                .all_reduce(&t, ReduceOp::Average)?
                .to_vec1::<f32>()?[0],
        ))
    }

    /// Element-wise sums of `values` over the ranks.
    pub(super) fn sum_over_ranks(&self, values: &[f64]) -> Result<Vec<f64>> {
        if !self.distributed() {
            return Ok(values.to_vec());
        }
        let t = Tensor::from_vec(
            values.iter().map(|v| *v as f32).collect::<Vec<_>>(),
            values.len(),
            &Device::Cpu,
        )?;
        let summed = self
            .collective
            .all_reduce(&t, ReduceOp::Sum)?
            .to_vec1::<f32>()?;
        Ok(summed.into_iter().map(f64::from).collect())
    }

    /// Every rank's predictions and labels, concatenated in rank order (the
    /// evaluation shards are consecutive, so this is the data set's order).
    pub(super) fn gather_prediction(
        &self,
        local: Option<EvalPrediction>,
    ) -> Result<Option<EvalPrediction>> {
        if !self.distributed() {
            return Ok(local);
        }
        let local = local.ok_or_else(|| {
            Error::Usage(format!(
                "rank {} has no evaluation samples: the evaluation set is smaller than the world of {}",
                self.dist.rank, self.dist.world_size
            ))
        })?;
        let predictions = Tensor::cat(&self.collective.all_gather(&local.predictions)?, 0)?;
        let label_ids = match &local.label_ids {
            Some(labels) => Some(Tensor::cat(&self.collective.all_gather(labels)?, 0)?),
            None => None,
        };
        Ok(Some(EvalPrediction {
            predictions,
            label_ids,
        }))
    }

    /// Waits for every rank (after rank 0 wrote a checkpoint the others may read).
    pub(super) fn barrier(&self) -> Result<()> {
        if self.distributed() {
            self.collective.barrier()?;
        }
        Ok(())
    }
}
