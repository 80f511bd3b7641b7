//! The Trainer's cost over a bare candle loop, on the same model and batch.
//!
//! Both run in this process, in alternating rounds, so machine noise hits
//! both alike; the table gives the median ms per optimizer step and the ratio.
//! The bare loop is forward, backward and taper's AdamW on one pre-collated
//! batch; the Trainer adds collating from a data set, the scheduler, the
//! callbacks and logging, and (in the last row) clipping by the global norm.
//! A second baseline uses candle-nn's own AdamW, for reference.
//!
//! Run: `cargo bench -p taper --bench overhead` (prints a table).

use std::time::Instant;

use candle_core::Device;
use candle_nn::Optimizer as _;
use taper::data::{default_collate, VecDataset};
use taper::datasets::{SequenceTask, SequenceTaskConfig};
use taper::models::{Gpt, GptConfig, Mlp, MlpConfig};
use taper::optim::{self, Gradients, Parameters};
use taper::{Model, Trainer, TrainingArguments};

const STEPS: usize = 20;
const ROUNDS: usize = 3;

struct Case {
    name: &'static str,
    data: VecDataset,
    build: fn() -> Box<dyn Fn() -> BenchModel>,
}

enum BenchModel {
    Gpt(Gpt),
    Mlp(Mlp),
}

fn args(max_grad_norm: f64) -> TrainingArguments {
    TrainingArguments::builder()
        .output_dir(
            std::env::temp_dir()
                .join("taper-bench")
                .display()
                .to_string(),
        )
        .learning_rate(1e-3)
        .max_steps(STEPS as i64)
        .logging_steps(STEPS as f64)
        .save_strategy(taper::args::IntervalStrategy::No)
        .per_device_train_batch_size(16)
        .max_grad_norm(max_grad_norm)
        .optim("adamw_torch".to_string())
        .disable_tqdm(true)
        .build()
        .expect("valid benchmark arguments")
}

/// ms per step of the bare loop with taper's AdamW.
fn bare_taper_adamw<M: Model>(model: &M, data: &VecDataset) -> f64 {
    let batch = default_collate(data.samples(), &Device::Cpu).unwrap();
    let params = Parameters::from_varmap(model.varmap());
    let mut opt = optim::build(&args(0.0), params.clone()).unwrap();
    let start = Instant::now();
    for _ in 0..STEPS {
        let loss = model.forward(&batch, true).unwrap().loss.unwrap();
        let grads = Gradients::from_store(&params, &loss.backward().unwrap());
        opt.step(&grads, 1e-3).unwrap();
        let _ = loss.to_scalar::<f32>().unwrap();
    }
    start.elapsed().as_secs_f64() * 1e3 / STEPS as f64
}

/// ms per step of the bare loop with candle-nn's AdamW.
fn bare_candle_adamw<M: Model>(model: &M, data: &VecDataset) -> f64 {
    let batch = default_collate(data.samples(), &Device::Cpu).unwrap();
    let mut opt = candle_nn::AdamW::new(
        model.varmap().all_vars(),
        candle_nn::ParamsAdamW {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let start = Instant::now();
    for _ in 0..STEPS {
        let loss = model.forward(&batch, true).unwrap().loss.unwrap();
        opt.backward_step(&loss).unwrap();
        let _ = loss.to_scalar::<f32>().unwrap();
    }
    start.elapsed().as_secs_f64() * 1e3 / STEPS as f64
}

/// ms per step of `Trainer::train` over the same samples.
fn trainer<M: taper::AnyModel>(model: M, data: &VecDataset, max_grad_norm: f64) -> f64 {
    let mut trainer = Trainer::new(args(max_grad_norm), model)
        .unwrap()
        .with_train_dataset(data.clone());
    trainer.callbacks_mut().pop("PrinterCallback");
    let start = Instant::now();
    trainer.train().unwrap();
    start.elapsed().as_secs_f64() * 1e3 / STEPS as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn measure(case: &Case) -> [f64; 4] {
    let make = (case.build)();
    let mut rows = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for round in 0..=ROUNDS {
        let times = match (make(), make(), make(), make()) {
            (BenchModel::Gpt(a), BenchModel::Gpt(b), BenchModel::Gpt(c), BenchModel::Gpt(d)) => [
                bare_taper_adamw(&a, &case.data),
                bare_candle_adamw(&b, &case.data),
                trainer(c, &case.data, 0.0),
                trainer(d, &case.data, 1.0),
            ],
            (BenchModel::Mlp(a), BenchModel::Mlp(b), BenchModel::Mlp(c), BenchModel::Mlp(d)) => [
                bare_taper_adamw(&a, &case.data),
                bare_candle_adamw(&b, &case.data),
                trainer(c, &case.data, 0.0),
                trainer(d, &case.data, 1.0),
            ],
            _ => unreachable!("one case builds one kind of model"),
        };
        if round > 0 {
            // Round 0 warms caches and the allocator.
            for (row, t) in rows.iter_mut().zip(times) {
                row.push(t);
            }
        }
    }
    rows.map(median)
}

fn main() {
    let gpt_task = SequenceTaskConfig {
        task: SequenceTask::Reverse,
        num_symbols: 60,
        length: 16,
        num_samples: 16,
        seed: 0,
    };
    let gpt_data = gpt_task.generate().unwrap();
    let wine = taper::datasets::load_tabular("winequality", 0.2, 0).unwrap();
    let cases = [
        Case {
            name: "GPT 2x64, 16x32 tokens",
            data: gpt_data,
            build: || {
                Box::new(|| {
                    let config = GptConfig {
                        vocab_size: 61,
                        max_seq_len: 32,
                        n_layer: 2,
                        n_head: 4,
                        d_model: 64,
                    };
                    BenchModel::Gpt(Gpt::new(&config, 0, &Device::Cpu).unwrap())
                })
            },
        },
        Case {
            name: "MLP 11-64-64-6, batch 16",
            data: VecDataset::new(wine.train.samples()[..16].to_vec()),
            build: || {
                Box::new(|| {
                    let config = MlpConfig {
                        input_dim: 11,
                        hidden: vec![64, 64],
                        num_classes: 6,
                    };
                    BenchModel::Mlp(Mlp::new(&config, 0, &Device::Cpu).unwrap())
                })
            },
        },
    ];
    println!("Trainer overhead over a bare candle loop (CPU, {STEPS} steps x {ROUNDS} rounds, median ms/step)\n");
    println!("| model | bare loop, taper AdamW | bare loop, candle-nn AdamW | Trainer, no clipping | Trainer, clip 1.0 | Trainer / bare (no clip) | Trainer / bare (clip) |");
    println!("|---|---|---|---|---|---|---|");
    for case in &cases {
        let [bare, candle, plain, clipped] = measure(case);
        println!(
            "| {} | {bare:.3} | {candle:.3} | {plain:.3} | {clipped:.3} | {:+.1}% | {:+.1}% |",
            case.name,
            (plain / bare - 1.0) * 100.0,
            (clipped / bare - 1.0) * 100.0
        );
    }
}
