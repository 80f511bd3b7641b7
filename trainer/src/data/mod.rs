//! Data: samples, data sets and batches.
//!
//! A [`Dataset`] hands out one [`Sample`] at a time by index, so a loader can
//! skip batches without loading them (resume) and a distributed sampler can
//! pick each rank's share. Collating turns samples into a [`Batch`] of tensors
//! on the training device; the default collate stacks equal-length fields and
//! a custom one can pad.

mod loader;

pub use loader::{CollateFn, DataLoader, Sharding};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// One field of a sample: a vector (a row of features, a token sequence) or a scalar label.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// Real-valued features; batched as `(batch, len)` f32.
    F32(Vec<f32>),
    /// Token ids; batched as `(batch, len)` u32.
    U32(Vec<u32>),
    /// Integer labels per position (`-100` is ignored by the losses); batched as `(batch, len)` i64.
    I64(Vec<i64>),
    /// One class index; batched as `(batch,)` i64.
    Class(i64),
    /// One real target; batched as `(batch,)` f32.
    Scalar(f32),
}

impl Field {
    fn kind(&self) -> &'static str {
        match self {
            Field::F32(_) => "F32",
            Field::U32(_) => "U32",
            Field::I64(_) => "I64",
            Field::Class(_) => "Class",
            Field::Scalar(_) => "Scalar",
        }
    }

    fn len(&self) -> usize {
        match self {
            Field::F32(v) => v.len(),
            Field::U32(v) => v.len(),
            Field::I64(v) => v.len(),
            Field::Class(_) | Field::Scalar(_) => 1,
        }
    }
}

/// One example: the model's input and, for training and evaluation, its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// What the model reads.
    pub input: Field,
    /// What the model should predict; `None` for unlabelled data.
    pub label: Option<Field>,
}

/// Collated tensors for one step, on the training device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Stacked inputs.
    pub inputs: Tensor,
    /// Stacked labels, when the samples had them.
    pub labels: Option<Tensor>,
    /// The number of samples.
    pub size: usize,
}

/// A data set indexed from 0 to `len() - 1`.
pub trait Dataset: Send + Sync {
    /// The number of samples.
    fn len(&self) -> usize;
    /// The sample at `index`.
    fn get(&self, index: usize) -> Result<Sample>;
    /// True when there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A data set held in memory.
#[derive(Debug, Clone, Default)]
pub struct VecDataset {
    samples: Vec<Sample>,
}

impl VecDataset {
    /// Wraps `samples`.
    pub fn new(samples: Vec<Sample>) -> Self {
        Self { samples }
    }

    /// The samples.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Splits off a shuffled `test_fraction` of the samples (seeded), as
    /// scikit-learn's `train_test_split` does: `(train, test)`.
    pub fn train_test_split(self, test_fraction: f64, seed: u64) -> (VecDataset, VecDataset) {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut samples = self.samples;
        samples.shuffle(&mut rng);
        let n_test = ((samples.len() as f64) * test_fraction).ceil() as usize;
        let train = samples.split_off(n_test);
        (VecDataset::new(train), VecDataset::new(samples))
    }
}

impl Dataset for VecDataset {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        self.samples.get(index).cloned().ok_or_else(|| {
            Error::Usage(format!(
                "sample {index} is out of range for a data set of {} samples",
                self.samples.len()
            ))
        })
    }
}

/// The default collate: stacks each field of equal-length samples.
pub fn default_collate(samples: &[Sample], device: &Device) -> Result<Batch> {
    let inputs = stack(samples.iter().map(|s| Some(&s.input)), "input", device)?
        .expect("inputs are always present");
    let has_labels = samples.iter().any(|s| s.label.is_some());
    let labels = if has_labels {
        stack(samples.iter().map(|s| s.label.as_ref()), "label", device)?
    } else {
        None
    };
    Ok(Batch {
        inputs,
        labels,
        size: samples.len(),
    })
}

fn stack<'a>(
    fields: impl Iterator<Item = Option<&'a Field>>,
    what: &str,
    device: &Device,
) -> Result<Option<Tensor>> {
    let fields: Vec<&Field> = fields
        .enumerate()
        .map(|(i, f)| {
            f.ok_or_else(|| {
                Error::Usage(format!("sample {i} of the batch has no {what}, others do"))
            })
        })
        .collect::<Result<_>>()?;
    let Some(first) = fields.first() else {
        return Ok(None);
    };
    let (kind, len) = (first.kind(), first.len());
    for (i, field) in fields.iter().enumerate() {
        if field.kind() != kind || field.len() != len {
            return Err(Error::Usage(format!(
                "cannot stack {what}s: sample 0 has {kind} of length {len}, sample {i} has {} of length {}; \
                 give the DataLoader a collate function that pads them",
                field.kind(),
                field.len()
            )));
        }
    }
    let n = fields.len();
    let tensor = match first {
        Field::F32(_) => Tensor::from_vec(flatten(&fields, as_f32), (n, len), device)?,
        Field::U32(_) => Tensor::from_vec(flatten(&fields, as_u32), (n, len), device)?,
        Field::I64(_) => Tensor::from_vec(flatten(&fields, as_i64), (n, len), device)?,
        Field::Class(_) => Tensor::from_vec(flatten(&fields, as_i64), n, device)?,
        Field::Scalar(_) => Tensor::from_vec(flatten(&fields, as_f32), n, device)?,
    };
    Ok(Some(tensor))
}

fn flatten<T: Copy>(fields: &[&Field], values: impl Fn(&Field) -> Vec<T>) -> Vec<T> {
    fields.iter().flat_map(|f| values(f)).collect()
}

fn as_f32(field: &Field) -> Vec<f32> {
    match field {
        Field::F32(v) => v.clone(),
        Field::Scalar(x) => vec![*x],
        _ => unreachable!("checked by stack"),
    }
}

fn as_u32(field: &Field) -> Vec<u32> {
    match field {
        Field::U32(v) => v.clone(),
        _ => unreachable!("checked by stack"),
    }
}

fn as_i64(field: &Field) -> Vec<i64> {
    match field {
        Field::I64(v) => v.clone(),
        Field::Class(c) => vec![*c],
        _ => unreachable!("checked by stack"),
    }
}
