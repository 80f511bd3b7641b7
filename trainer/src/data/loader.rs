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

/// How a data set is split among the ranks of a data-parallel job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharding {
    /// Training, as torch's `DistributedSampler`: the epoch's order padded
    /// (repeating its start) to a multiple of the world, rank `r` taking every
    /// `world`-th sample from `r`. Step `i` of all ranks together then covers
    /// the samples step `i` of one process with `world` times the batch covers.
    Strided,
    /// Evaluation: consecutive, unpadded chunks, so gathering them in rank
    /// order gives back the data set's order.
    Contiguous,
}

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
    shard: Option<(usize, usize, Sharding)>,
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
            shard: None,
        }
    }

    /// Keeps rank `rank`'s share of a world of `world_size` (see [`Sharding`]).
    pub fn sharded(mut self, rank: usize, world_size: usize, sharding: Sharding) -> Self {
        if world_size > 1 {
            self.shard = Some((rank, world_size, sharding));
        }
        self
    }

    /// The number of samples this rank sees in an epoch, before batching.
    fn shard_len(&self) -> usize {
        let n = self.dataset.len();
        match self.shard {
            None => n,
            Some((_, world, Sharding::Strided)) => n.div_ceil(world),
            Some((rank, world, Sharding::Contiguous)) => {
                let chunk = n.div_ceil(world);
                n.saturating_sub(rank * chunk).min(chunk)
            }
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
        let n = self.shard_len();
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
            self.shard_len()
        }
    }

    /// The sample order of `epoch` (this rank's share of it when sharded).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(epoch);
            order.shuffle(&mut rng);
        }
        match self.shard {
            None => order,
            Some((rank, world, Sharding::Strided)) => {
                let total = order.len().div_ceil(world) * world;
                let padding: Vec<usize> = order
                    .iter()
                    .cycle()
                    .take(total - order.len())
                    .copied()
                    .collect();
                order.extend(padding);
                order.into_iter().skip(rank).step_by(world).collect()
            }
            Some((rank, world, Sharding::Contiguous)) => {
                let chunk = order.len().div_ceil(world);
                order.into_iter().skip(rank * chunk).take(chunk).collect()
            }
        }
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
