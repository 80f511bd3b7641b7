//! Real tabular classification data: UCI wine quality (red, 1599 wines, 11
//! features, quality 3 to 8) and Fisher's iris, the CSV files of the UCI
//! repository as linfa-datasets 0.8.1 ships them (`trainer/data/`, their
//! README says where they come from), compiled into taper.
//!
//! Why not linfa-datasets itself: it brought ndarray, linfa, csv, sprs and
//! flate2 (about 20 crates) into every notebook that writes `:dep taper`,
//! and each crate of that graph costs the notebook time on every cell
//! (cargo checks it, rust-analyzer reads it: notes/kernel-latency.md). Two
//! small numeric CSV files need none of it; the values parse to the same
//! f64s.
//!
//! Features are standardised with the training split's mean and deviation
//! (the test split never leaks into them).

use crate::data::{Dataset, Field, Sample, VecDataset};
use crate::error::{Error, Result};

/// The names [`load_tabular`] accepts, with a one-line description.
pub const TABULAR_DATASETS: &[(&str, &str)] = &[
    (
        "winequality",
        "UCI red wine quality: 1599 wines, 11 physico-chemical features, 6 quality classes",
    ),
    (
        "iris",
        "Fisher's iris: 150 flowers, 4 measurements, 3 species",
    ),
];

/// A tabular data set split for training and testing.
#[derive(Debug, Clone)]
pub struct TabularData {
    /// The data set's name.
    pub name: String,
    /// The training split (standardised).
    pub train: VecDataset,
    /// The test split (standardised with the training statistics).
    pub test: VecDataset,
    /// Features per sample.
    pub num_features: usize,
    /// Number of classes (labels are `0..num_classes`).
    pub num_classes: usize,
}

impl TabularData {
    /// The accuracy of always predicting the test split's most frequent class:
    /// the baseline a model has to beat.
    pub fn majority_class_rate(&self) -> f64 {
        let mut counts = vec![0usize; self.num_classes];
        for sample in self.test.samples() {
            if let Some(Field::Class(c)) = sample.label {
                counts[c as usize] += 1;
            }
        }
        *counts.iter().max().unwrap_or(&0) as f64 / self.test.len().max(1) as f64
    }
}

/// Loads `name` (see [`TABULAR_DATASETS`]) with a seeded `test_fraction` split.
pub fn load_tabular(name: &str, test_fraction: f64, seed: u64) -> Result<TabularData> {
    let (rows, labels) = match name {
        // Quality scores 3..=8 become classes 0..=5.
        "winequality" => csv_table(include_str!("../../data/winequality-red.csv"), 11, 3),
        "iris" => csv_table(include_str!("../../data/iris.csv"), 4, 0),
        other => {
            let known: Vec<&str> = TABULAR_DATASETS.iter().map(|(n, _)| *n).collect();
            return Err(Error::Config(format!(
                "unknown dataset `{other}`; built-in tabular data sets: {}",
                known.join(", ")
            )));
        }
    };
    let num_features = rows[0].len();
    let num_classes = *labels.iter().max().unwrap_or(&0) as usize + 1;
    let samples: Vec<Sample> = rows
        .into_iter()
        .zip(labels)
        .map(|(row, label)| Sample {
            input: Field::F32(row),
            label: Some(Field::Class(label)),
        })
        .collect();
    let (train, test) = VecDataset::new(samples).train_test_split(test_fraction, seed);
    let (mean, std) = feature_stats(&train, num_features);
    Ok(TabularData {
        name: name.to_string(),
        train: standardise(train, &mean, &std),
        test: standardise(test, &mean, &std),
        num_features,
        num_classes,
    })
}

/// The rows of a numeric CSV `table` with a header line: `features`
/// columns of features, then the label, less `label_offset`.
fn csv_table(table: &str, features: usize, label_offset: i64) -> (Vec<Vec<f32>>, Vec<i64>) {
    let parse = |field: &str| -> f64 {
        field
            .trim()
            .parse()
            .expect("the built-in CSV files hold numbers only")
    };
    table
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let values: Vec<f64> = line.split(',').map(parse).collect();
            let row = values[..features].iter().map(|&x| x as f32).collect();
            (row, values[features] as i64 - label_offset)
        })
        .unzip()
}

fn feature_stats(data: &VecDataset, n: usize) -> (Vec<f32>, Vec<f32>) {
    // Sums in f64: a feature like density (0.997 +- 0.002) loses its mean in f32.
    let rows: Vec<&Vec<f32>> = data
        .samples()
        .iter()
        .filter_map(|s| match &s.input {
            Field::F32(v) => Some(v),
            _ => None,
        })
        .collect();
    let count = rows.len().max(1) as f64;
    let mean: Vec<f64> = (0..n)
        .map(|j| rows.iter().map(|r| f64::from(r[j])).sum::<f64>() / count)
        .collect();
    let std: Vec<f32> = (0..n)
        .map(|j| {
            let var = rows
                .iter()
                .map(|r| (f64::from(r[j]) - mean[j]).powi(2))
                .sum::<f64>()
                / count;
            var.sqrt().max(1e-6) as f32
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

fn standardise(data: VecDataset, mean: &[f32], std: &[f32]) -> VecDataset {
    let samples = data
        .samples()
        .iter()
        .map(|s| match &s.input {
            Field::F32(v) => Sample {
                input: Field::F32(
                    v.iter()
                        .zip(mean.iter().zip(std))
                        .map(|(x, (m, sd))| (x - m) / sd)
                        .collect(),
                ),
                label: s.label.clone(),
            },
            _ => s.clone(),
        })
        .collect();
    VecDataset::new(samples)
}
