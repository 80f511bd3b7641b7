//! Synthetic sequence tasks for language models: copy, reverse and modular
//! addition. Generated from a seed, so every run and every test sees the same
//! data; small enough that a tiny GPT learns them in seconds on a CPU.
//!
//! Labels are aligned with inputs: only the positions that predict the answer
//! carry a label, the rest are `-100`, so accuracy measures the answer alone.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::{Field, Sample, VecDataset};
use crate::error::{Error, Result};
use crate::loss::IGNORE_INDEX;

/// Which task to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceTask {
    /// `s1..sk SEP s1..sk`: repeat the symbols.
    Copy,
    /// `s1..sk SEP sk..s1`: repeat them backwards.
    Reverse,
    /// `a + b = (a + b) mod p`, with `p` = the number of symbols.
    ModularAddition,
}

impl SequenceTask {
    /// Every task with its name and a one-line description.
    pub const ALL: &'static [(&'static str, SequenceTask, &'static str)] = &[
        (
            "copy",
            SequenceTask::Copy,
            "repeat a random sequence after a separator",
        ),
        (
            "reverse",
            SequenceTask::Reverse,
            "repeat a random sequence backwards",
        ),
        (
            "modular_addition",
            SequenceTask::ModularAddition,
            "a + b = c (mod p)",
        ),
    ];

    /// The task with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, t, _)| *t)
    }
}

/// How much data of which shape.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceTaskConfig {
    /// The task.
    pub task: SequenceTask,
    /// Distinct symbols (the modulus for modular addition).
    pub num_symbols: u32,
    /// Symbols per sequence (copy and reverse).
    pub length: usize,
    /// Samples to generate.
    pub num_samples: usize,
    /// Generator seed.
    pub seed: u64,
}

impl SequenceTaskConfig {
    /// Token ids the model must know: the symbols plus the task's markers.
    pub fn vocab_size(&self) -> usize {
        match self.task {
            SequenceTask::Copy | SequenceTask::Reverse => self.num_symbols as usize + 1,
            SequenceTask::ModularAddition => self.num_symbols as usize + 2,
        }
    }

    /// Tokens per input sequence.
    pub fn seq_len(&self) -> usize {
        match self.task {
            SequenceTask::Copy | SequenceTask::Reverse => 2 * self.length,
            SequenceTask::ModularAddition => 4,
        }
    }

    /// Generates the data set.
    pub fn generate(&self) -> Result<VecDataset> {
        if self.num_symbols < 2 {
            return Err(Error::Config(format!(
                "a sequence task needs at least 2 symbols, got {}",
                self.num_symbols
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let samples = (0..self.num_samples)
            .map(|_| self.sample(&mut rng))
            .collect();
        Ok(VecDataset::new(samples))
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> Sample {
        let n = self.num_symbols;
        let full: Vec<u32> = match self.task {
            SequenceTask::Copy | SequenceTask::Reverse => {
                let symbols: Vec<u32> = (0..self.length).map(|_| rng.random_range(0..n)).collect();
                let mut answer = symbols.clone();
                if self.task == SequenceTask::Reverse {
                    answer.reverse();
                }
                let mut seq = symbols;
                seq.push(n); // separator
                seq.extend(answer);
                seq
            }
            SequenceTask::ModularAddition => {
                let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
                vec![a, n, b, n + 1, (a + b) % n] // n is `+`, n + 1 is `=`
            }
        };
        // Position t predicts token t + 1; only the answer's tokens are labelled.
        let inputs = full[..full.len() - 1].to_vec();
        let answer_start = match self.task {
            SequenceTask::Copy | SequenceTask::Reverse => self.length,
            SequenceTask::ModularAddition => 3,
        };
        let labels = (0..inputs.len())
            .map(|t| {
                if t >= answer_start {
                    full[t + 1] as i64
                } else {
                    IGNORE_INDEX
                }
            })
            .collect();
        Sample {
            input: Field::U32(inputs),
            label: Some(Field::I64(labels)),
        }
    }
}
