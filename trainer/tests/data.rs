//! Tests of taper's data layer: the seeded DataLoader order and batching,
//! `default_collate` shapes, dtypes and errors, `VecDataset::train_test_split`,
//! the built-in tabular data (wine quality, iris) and the synthetic sequence tasks.

use std::sync::Arc;

use candle_core::{DType, Device};
use taper::data::{default_collate, DataLoader, Dataset, Field, Sample, VecDataset};
use taper::datasets::{load_tabular, SequenceTask, SequenceTaskConfig, TABULAR_DATASETS};
use taper::Error;

/// `n` samples whose input is their own index (so a batch tells which samples it holds).
fn indexed(n: usize) -> VecDataset {
    VecDataset::new(
        (0..n)
            .map(|i| Sample {
                input: Field::F32(vec![i as f32, -(i as f32)]),
                label: Some(Field::Class(i as i64)),
            })
            .collect(),
    )
}

fn loader(n: usize, batch_size: usize) -> DataLoader {
    DataLoader::new(Arc::new(indexed(n)), batch_size)
}

/// The indices of the samples in a batch (read back from their labels).
fn batch_indices(loader: &DataLoader, order: &[usize], index: usize) -> Vec<usize> {
    let batch = loader.batch(order, index).unwrap();
    let labels: Vec<i64> = batch.labels.unwrap().to_vec1().unwrap();
    assert_eq!(labels.len(), batch.size);
    labels.into_iter().map(|l| l as usize).collect()
}

#[test]
fn shuffled_order_depends_only_on_seed_and_epoch() {
    let a = loader(50, 4).shuffled(7);
    let b = loader(50, 4).shuffled(7);
    // Same (seed, epoch): same order, whatever was asked before.
    let first = a.epoch_order(3);
    let _ = a.epoch_order(0);
    let _ = a.epoch_order(1);
    assert_eq!(a.epoch_order(3), first);
    assert_eq!(b.epoch_order(3), first);
    // Other epochs and other seeds: other orders.
    assert_ne!(a.epoch_order(0), a.epoch_order(1));
    assert_ne!(a.epoch_order(3), a.epoch_order(4));
    assert_ne!(
        loader(50, 4).shuffled(8).epoch_order(3),
        first,
        "another seed should give another order"
    );
    // It is shuffled at all.
    assert_ne!(first, (0..50).collect::<Vec<_>>());
}

#[test]
fn shuffled_order_is_a_permutation() {
    let l = loader(97, 8).shuffled(123);
    for epoch in 0..5 {
        let mut order = l.epoch_order(epoch);
        assert_eq!(order.len(), 97);
        order.sort_unstable();
        assert_eq!(order, (0..97).collect::<Vec<_>>(), "epoch {epoch}");
    }
}

#[test]
fn unshuffled_order_is_the_identity() {
    let l = loader(10, 3);
    for epoch in [0, 1, 9] {
        assert_eq!(l.epoch_order(epoch), (0..10).collect::<Vec<_>>());
    }
}

#[test]
fn num_batches_with_and_without_drop_last() {
    let l = loader(10, 3);
    assert_eq!(l.num_batches(), 4);
    assert_eq!(l.num_samples(), 10);
    let l = loader(10, 3).drop_last(true);
    assert_eq!(l.num_batches(), 3);
    assert_eq!(l.num_samples(), 9);
    // Exact multiples lose nothing either way.
    assert_eq!(loader(12, 3).num_batches(), 4);
    assert_eq!(loader(12, 3).drop_last(true).num_batches(), 4);
    // Fewer samples than a batch.
    assert_eq!(loader(2, 3).num_batches(), 1);
    assert_eq!(loader(2, 3).drop_last(true).num_batches(), 0);
    assert_eq!(loader(2, 3).drop_last(true).num_samples(), 0);
}

#[test]
fn batches_follow_the_order_and_the_last_one_is_short() {
    let l = loader(10, 3).shuffled(5);
    let order = l.epoch_order(2);
    let sizes: Vec<usize> = l.iter_epoch(2).map(|b| b.unwrap().size).collect();
    assert_eq!(sizes, vec![3, 3, 3, 1]);
    let mut seen = Vec::new();
    for index in 0..l.num_batches() {
        seen.extend(batch_indices(&l, &order, index));
    }
    assert_eq!(seen, order);
    let last = l.batch(&order, 3).unwrap();
    assert_eq!(last.inputs.dims(), &[1, 2]);
    let row: Vec<Vec<f32>> = last.inputs.to_vec2().unwrap();
    assert_eq!(row, vec![vec![order[9] as f32, -(order[9] as f32)]]);

    // drop_last: the short batch is never produced.
    let l = loader(10, 3).shuffled(5).drop_last(true);
    let sizes: Vec<usize> = l.iter_epoch(2).map(|b| b.unwrap().size).collect();
    assert_eq!(sizes, vec![3, 3, 3]);
}

#[test]
fn iter_epoch_matches_epoch_order() {
    let l = loader(7, 2).shuffled(11);
    let from_iter: Vec<usize> = l
        .iter_epoch(4)
        .flat_map(|b| {
            let labels: Vec<i64> = b.unwrap().labels.unwrap().to_vec1().unwrap();
            labels.into_iter().map(|x| x as usize)
        })
        .collect();
    assert_eq!(from_iter, l.epoch_order(4));
}

fn sample(input: Field, label: Option<Field>) -> Sample {
    Sample { input, label }
}

#[test]
fn default_collate_shapes_and_dtypes() {
    let cpu = Device::Cpu;

    // F32 inputs with Class labels.
    let batch = default_collate(
        &[
            sample(Field::F32(vec![1.0, 2.0, 3.0]), Some(Field::Class(2))),
            sample(Field::F32(vec![4.0, 5.0, 6.0]), Some(Field::Class(0))),
        ],
        &cpu,
    )
    .unwrap();
    assert_eq!(batch.size, 2);
    assert_eq!(batch.inputs.dims(), &[2, 3]);
    assert_eq!(batch.inputs.dtype(), DType::F32);
    assert_eq!(
        batch.inputs.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]
    );
    let labels = batch.labels.unwrap();
    assert_eq!(labels.dims(), &[2]);
    assert_eq!(labels.dtype(), DType::I64);
    assert_eq!(labels.to_vec1::<i64>().unwrap(), vec![2, 0]);

    // U32 token ids with I64 per-position labels.
    let batch = default_collate(
        &[
            sample(Field::U32(vec![1, 2]), Some(Field::I64(vec![-100, 2]))),
            sample(Field::U32(vec![3, 4]), Some(Field::I64(vec![5, -100]))),
            sample(Field::U32(vec![5, 6]), Some(Field::I64(vec![7, 8]))),
        ],
        &cpu,
    )
    .unwrap();
    assert_eq!(batch.size, 3);
    assert_eq!(batch.inputs.dims(), &[3, 2]);
    assert_eq!(batch.inputs.dtype(), DType::U32);
    assert_eq!(
        batch.inputs.to_vec2::<u32>().unwrap(),
        vec![vec![1, 2], vec![3, 4], vec![5, 6]]
    );
    let labels = batch.labels.unwrap();
    assert_eq!(labels.dims(), &[3, 2]);
    assert_eq!(labels.dtype(), DType::I64);
    assert_eq!(
        labels.to_vec2::<i64>().unwrap(),
        vec![vec![-100, 2], vec![5, -100], vec![7, 8]]
    );

    // Scalar targets (regression).
    let batch = default_collate(
        &[
            sample(Field::F32(vec![0.5]), Some(Field::Scalar(1.5))),
            sample(Field::F32(vec![0.25]), Some(Field::Scalar(-2.0))),
        ],
        &cpu,
    )
    .unwrap();
    let labels = batch.labels.unwrap();
    assert_eq!(labels.dims(), &[2]);
    assert_eq!(labels.dtype(), DType::F32);
    assert_eq!(labels.to_vec1::<f32>().unwrap(), vec![1.5, -2.0]);

    // Unlabelled data: no labels tensor.
    let batch = default_collate(
        &[
            sample(Field::I64(vec![1, 2, 3, 4]), None),
            sample(Field::I64(vec![5, 6, 7, 8]), None),
        ],
        &cpu,
    )
    .unwrap();
    assert!(batch.labels.is_none());
    assert_eq!(batch.inputs.dims(), &[2, 4]);
    assert_eq!(batch.inputs.dtype(), DType::I64);
}

fn collate_err(samples: &[Sample]) -> String {
    match default_collate(samples, &Device::Cpu) {
        Err(Error::Usage(msg)) => msg,
        Err(other) => panic!("expected a Usage error, got {other:?}"),
        Ok(batch) => panic!(
            "expected an error, got a batch of {:?}",
            batch.inputs.dims()
        ),
    }
}

#[test]
fn default_collate_rejects_ragged_or_mixed_samples() {
    let msg = collate_err(&[
        sample(Field::U32(vec![1, 2, 3]), None),
        sample(Field::U32(vec![1, 2]), None),
    ]);
    assert!(msg.contains("collate function"), "{msg}");
    assert!(
        msg.contains("length 3") && msg.contains("length 2"),
        "{msg}"
    );

    let msg = collate_err(&[
        sample(Field::F32(vec![1.0]), Some(Field::Class(1))),
        sample(Field::F32(vec![1.0]), Some(Field::I64(vec![1]))),
    ]);
    assert!(msg.contains("Class") && msg.contains("I64"), "{msg}");

    let msg = collate_err(&[
        sample(Field::F32(vec![1.0]), Some(Field::Class(1))),
        sample(Field::F32(vec![1.0]), None),
    ]);
    assert!(
        msg.contains("sample 1") && msg.contains("no label"),
        "{msg}"
    );
}

#[test]
fn custom_collate_is_used() {
    use taper::data::{Batch, CollateFn};
    // A collate that pads token sequences to the longest one with 0.
    let pad: Arc<CollateFn> = Arc::new(|samples: &[Sample], device: &Device| {
        let longest = samples
            .iter()
            .map(|s| match &s.input {
                Field::U32(v) => v.len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let mut flat = Vec::new();
        for s in samples {
            if let Field::U32(v) = &s.input {
                flat.extend(v.iter().copied());
                flat.extend(std::iter::repeat_n(0u32, longest - v.len()));
            }
        }
        Ok(Batch {
            inputs: candle_core::Tensor::from_vec(flat, (samples.len(), longest), device)?,
            labels: None,
            size: samples.len(),
        })
    });
    let data = VecDataset::new(vec![
        sample(Field::U32(vec![1, 2, 3]), None),
        sample(Field::U32(vec![4]), None),
    ]);
    let l = DataLoader::new(Arc::new(data), 2).with_collate(pad);
    let batch = l.batch(&l.epoch_order(0), 0).unwrap();
    assert_eq!(
        batch.inputs.to_vec2::<u32>().unwrap(),
        vec![vec![1, 2, 3], vec![4, 0, 0]]
    );
}

#[test]
fn vec_dataset_get_out_of_range_is_an_error() {
    let data = indexed(3);
    assert_eq!(data.len(), 3);
    assert!(!data.is_empty());
    assert_eq!(data.get(2).unwrap().label, Some(Field::Class(2)));
    match data.get(3) {
        Err(Error::Usage(msg)) => assert!(msg.contains('3'), "{msg}"),
        other => panic!("expected a Usage error, got {other:?}"),
    }
    assert!(VecDataset::default().is_empty());
}

fn labels_of(data: &VecDataset) -> Vec<i64> {
    data.samples()
        .iter()
        .map(|s| match s.label {
            Some(Field::Class(c)) => c,
            ref other => panic!("unexpected label {other:?}"),
        })
        .collect()
}

#[test]
fn train_test_split_sizes_and_determinism() {
    let (train, test) = indexed(100).train_test_split(0.2, 42);
    assert_eq!((train.len(), test.len()), (80, 20));
    // Every sample lands in exactly one split.
    let mut all: Vec<i64> = labels_of(&train)
        .into_iter()
        .chain(labels_of(&test))
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    // Shuffled, and the same for the same seed.
    assert_ne!(labels_of(&test), (0..20).collect::<Vec<_>>());
    let (train2, test2) = indexed(100).train_test_split(0.2, 42);
    assert_eq!(labels_of(&train2), labels_of(&train));
    assert_eq!(labels_of(&test2), labels_of(&test));
    let (_, test3) = indexed(100).train_test_split(0.2, 43);
    assert_ne!(labels_of(&test3), labels_of(&test));
    // Edge fractions.
    let (train, test) = indexed(10).train_test_split(0.0, 1);
    assert_eq!((train.len(), test.len()), (10, 0));
    let (train, test) = indexed(10).train_test_split(0.25, 1);
    assert_eq!((train.len(), test.len()), (7, 3));
}

#[test]
fn train_test_split_rounds_the_test_size_up_like_scikit_learn() {
    // scikit-learn: n_test = ceil(test_size * n_samples), n_train = n - n_test.
    let mut wrong = Vec::new();
    for (n, fraction, n_test) in [(10, 0.22, 3), (10, 0.11, 2), (150, 0.101, 16), (7, 0.3, 3)] {
        let (train, test) = indexed(n).train_test_split(fraction, 0);
        if (train.len(), test.len()) != (n - n_test, n_test) {
            wrong.push(format!(
                "{n} samples, test_size {fraction}: got ({}, {}), scikit-learn gives ({}, {n_test})",
                train.len(),
                test.len(),
                n - n_test
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn winequality_is_split_and_standardised() {
    let data = load_tabular("winequality", 0.2, 42).unwrap();
    assert_eq!(data.name, "winequality");
    assert_eq!(data.train.len() + data.test.len(), 1599);
    assert_eq!(data.test.len(), 320);
    assert_eq!(data.num_features, 11);
    assert_eq!(data.num_classes, 6);

    let mut counts = [0usize; 6];
    for s in data.train.samples().iter().chain(data.test.samples()) {
        match (&s.input, &s.label) {
            (Field::F32(x), Some(Field::Class(c))) => {
                assert_eq!(x.len(), 11);
                counts[*c as usize] += 1;
            }
            other => panic!("unexpected sample {other:?}"),
        }
    }
    // Red wine quality 3..=8: every class occurs, 5 and 6 dominate.
    assert_eq!(counts, [10, 53, 681, 638, 199, 18]);
    let majority = data.majority_class_rate();
    assert!(majority > 0.3 && majority < 0.6, "{majority}");

    // Train features: mean 0, (population) standard deviation 1, per feature
    // (to f32 accuracy: the statistics are accumulated in f32, and the density
    // feature, 0.997 +- 0.002, loses a few 1e-4 of a deviation to that).
    let rows: Vec<&Vec<f32>> = data
        .train
        .samples()
        .iter()
        .map(|s| match &s.input {
            Field::F32(x) => x,
            _ => unreachable!(),
        })
        .collect();
    let n = rows.len() as f64;
    for j in 0..11 {
        let mean = rows.iter().map(|r| f64::from(r[j])).sum::<f64>() / n;
        let var = rows
            .iter()
            .map(|r| (f64::from(r[j]) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 1e-4, "feature {j}: mean {mean}");
        assert!(
            (var.sqrt() - 1.0).abs() < 1e-4,
            "feature {j}: std {}",
            var.sqrt()
        );
    }

    // Same seed, same data.
    let again = load_tabular("winequality", 0.2, 42).unwrap();
    assert_eq!(again.train.samples(), data.train.samples());
    assert_eq!(again.test.samples(), data.test.samples());
    let other = load_tabular("winequality", 0.2, 43).unwrap();
    assert_ne!(other.test.samples(), data.test.samples());
}

#[test]
fn iris_loads() {
    let data = load_tabular("iris", 0.2, 0).unwrap();
    assert_eq!(data.train.len(), 120);
    assert_eq!(data.test.len(), 30);
    assert_eq!(data.num_features, 4);
    assert_eq!(data.num_classes, 3);
}

#[test]
fn unknown_tabular_names_list_the_built_in_ones() {
    let msg = match load_tabular("mnist", 0.2, 0) {
        Err(Error::Config(msg)) => msg,
        Err(other) => panic!("expected a Config error, got {other:?}"),
        Ok(_) => panic!("mnist is not built in"),
    };
    assert!(msg.contains("mnist"), "{msg}");
    assert!(msg.contains("winequality") && msg.contains("iris"), "{msg}");
    for (name, _) in TABULAR_DATASETS {
        assert!(msg.contains(name), "{msg}");
    }
}

/// Inputs and labels of every sample of a generated task.
fn generated(config: &SequenceTaskConfig) -> Vec<(Vec<u32>, Vec<i64>)> {
    let data = config.generate().unwrap();
    assert_eq!(data.len(), config.num_samples);
    data.samples()
        .iter()
        .map(|s| match (&s.input, &s.label) {
            (Field::U32(x), Some(Field::I64(y))) => {
                assert_eq!(x.len(), config.seq_len());
                assert_eq!(y.len(), config.seq_len());
                assert!(x.iter().all(|&t| (t as usize) < config.vocab_size()));
                (x.clone(), y.clone())
            }
            other => panic!("unexpected sample {other:?}"),
        })
        .collect()
}

fn config(task: SequenceTask, num_symbols: u32, length: usize) -> SequenceTaskConfig {
    SequenceTaskConfig {
        task,
        num_symbols,
        length,
        num_samples: 50,
        seed: 3,
    }
}

#[test]
fn copy_task_inputs_and_labels() {
    let c = config(SequenceTask::Copy, 10, 5);
    assert_eq!(c.vocab_size(), 11);
    assert_eq!(c.seq_len(), 10);
    for (x, y) in generated(&c) {
        let symbols = &x[..5];
        assert!(symbols.iter().all(|&s| s < 10));
        assert_eq!(x[5], 10, "separator");
        // Answer so far as input (teacher forcing), then labels shifted by one.
        assert_eq!(&x[6..], &symbols[..4]);
        assert_eq!(&y[..5], &[-100; 5]);
        let answer: Vec<i64> = symbols.iter().map(|&s| i64::from(s)).collect();
        assert_eq!(&y[5..], answer.as_slice());
    }
}

#[test]
fn reverse_task_inputs_and_labels() {
    let c = config(SequenceTask::Reverse, 7, 4);
    assert_eq!(c.vocab_size(), 8);
    assert_eq!(c.seq_len(), 8);
    for (x, y) in generated(&c) {
        let symbols = &x[..4];
        assert_eq!(x[4], 7, "separator");
        let reversed: Vec<u32> = symbols.iter().rev().copied().collect();
        assert_eq!(&x[5..], &reversed[..3]);
        assert_eq!(&y[..4], &[-100; 4]);
        let answer: Vec<i64> = reversed.iter().map(|&s| i64::from(s)).collect();
        assert_eq!(&y[4..], answer.as_slice());
    }
}

#[test]
fn modular_addition_inputs_and_labels() {
    let c = config(SequenceTask::ModularAddition, 13, 0);
    assert_eq!(c.vocab_size(), 15);
    assert_eq!(c.seq_len(), 4);
    let samples = generated(&c);
    for (x, y) in &samples {
        let (a, b) = (x[0], x[2]);
        assert!(a < 13 && b < 13);
        assert_eq!((x[1], x[3]), (13, 14), "`+` and `=` markers");
        assert_eq!(y, &vec![-100, -100, -100, i64::from((a + b) % 13)]);
    }
    // Some sums wrap around.
    assert!(samples.iter().any(|(x, _)| x[0] + x[2] >= 13));
}

#[test]
fn sequence_tasks_are_seeded_and_named() {
    let c = config(SequenceTask::Copy, 10, 5);
    assert_eq!(generated(&c), generated(&c));
    let other = SequenceTaskConfig {
        seed: 4,
        ..c.clone()
    };
    assert_ne!(generated(&other), generated(&c));
    assert_eq!(SequenceTask::from_name("copy"), Some(SequenceTask::Copy));
    assert_eq!(
        SequenceTask::from_name("reverse"),
        Some(SequenceTask::Reverse)
    );
    assert_eq!(
        SequenceTask::from_name("modular_addition"),
        Some(SequenceTask::ModularAddition)
    );
    assert_eq!(SequenceTask::from_name("sort"), None);
    let too_few = SequenceTaskConfig {
        num_symbols: 1,
        ..c
    };
    match too_few.generate() {
        Err(Error::Config(msg)) => assert!(msg.contains("at least 2 symbols"), "{msg}"),
        other => panic!("expected a Config error, got {other:?}"),
    }
}
