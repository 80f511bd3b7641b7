//! The data loader: a seeded order per epoch, cut into batches on demand.
//!
//! The order of epoch `e` depends only on `(seed, e)`, never on what ran
//! before, so a resumed run sees the same batches as an uninterrupted one, and
//! batches are collated only when asked for, so skipping them costs nothing.

use std::sync::Arc;

use candle_core::Device;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{default_collate, Batch, Dataset, Sample};
use crate::error::Result;

/// Turns samples into a batch on a device.
pub type CollateFn = dyn Fn(&[Sample], &Device) -> Result<Batch> + Send + Sync;

/// Batches of a data set, in a seeded order.
#[derive(Clone)]
pub struct DataLoader {
    dataset: Arc<dyn Dataset>,
    batch_size: usize,
    drop_last: bool,
    shuffle: bool,
    seed: u64,
    collate: Arc<CollateFn>,
    device: Device,
}

impl DataLoader {
    /// A loader over `dataset` with the default collate, no shuffling, on the CPU.
    pub fn new(dataset: Arc<dyn Dataset>, batch_size: usize) -> Self {
        Self {
            dataset,
            batch_size: batch_size.max(1),
            drop_last: false,
            shuffle: false,
            seed: 0,
            collate: Arc::new(default_collate),
            device: Device::Cpu,
        }
    }

    /// Shuffles every epoch, seeded from `(seed, epoch)`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle = true;
        self.seed = seed;
        self
    }

    /// Drops the last batch when it is smaller than the batch size.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Uses `collate` instead of [`default_collate`](super::default_collate).
    pub fn with_collate(mut self, collate: Arc<CollateFn>) -> Self {
        self.collate = collate;
        self
    }

    /// Puts batches on `device`.
    pub fn on_device(mut self, device: &Device) -> Self {
        self.device = device.clone();
        self
    }

    /// The number of batches in an epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.dataset.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The number of samples in an epoch (less the dropped tail).
    pub fn num_samples(&self) -> usize {
        if self.drop_last {
            self.num_batches() * self.batch_size
        } else {
            self.dataset.len()
        }
    }

    /// The sample order of `epoch`.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(epoch);
            order.shuffle(&mut rng);
        }
        order
    }

    /// Batch `index` of an epoch whose order is `order`.
    pub fn batch(&self, order: &[usize], index: usize) -> Result<Batch> {
        let start = index * self.batch_size;
        let end = (start + self.batch_size).min(order.len());
        let samples = order[start..end]
            .iter()
            .map(|&i| self.dataset.get(i))
            .collect::<Result<Vec<_>>>()?;
        (self.collate)(&samples, &self.device)
    }

    /// Every batch of `epoch`, in order.
    pub fn iter_epoch(&self, epoch: u64) -> impl Iterator<Item = Result<Batch>> + '_ {
        let order = self.epoch_order(epoch);
        (0..self.num_batches()).map(move |i| self.batch(&order, i))
    }
}
