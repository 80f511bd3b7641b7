//! Checkpoint save and load throughput, in MB/s, for the reference GPT
//! (55M parameters) with its AdamW state: the bytes a checkpoint holds, on
//! the path training uses (a temporary folder, every file synced, a rename).
//!
//! Run: `cargo bench -p taper --bench checkpoint_io` (prints a table).

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use taper::checkpoint::{write_atomically, OPTIMIZER_TENSORS_NAME, WEIGHTS_NAME};
use taper::models::{Gpt, GptConfig};
use taper::optim::{AdamW, AdamWConfig, Gradients, Optimizer, Parameters};
use taper::Model;

const ROUNDS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let model = Gpt::new(&GptConfig::reference(), 0, &Device::Cpu).unwrap();
    let params = Parameters::from_varmap(model.varmap());
    let mut adamw = AdamW::new(
        params.clone(),
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decay_after_update: false,
        },
    );
    // One step with small gradients fills both moments of every parameter.
    let grads = Gradients::from_vec(
        params
            .iter()
            .map(|p| Some((p.var.as_tensor().ones_like().unwrap() * 1e-3).unwrap()))
            .collect(),
    );
    adamw.step(&grads, 1e-4).unwrap();
    let state: HashMap<String, Tensor> = adamw.state().tensors.into_iter().collect();

    let root = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let (mut saves, mut loads) = (Vec::new(), Vec::new());
    let mut bytes = 0u64;
    for round in 0..ROUNDS {
        let dir = root.path().join(format!("checkpoint-{round}"));
        let start = Instant::now();
        write_atomically(&dir, |tmp| {
            model.varmap().save(tmp.join(WEIGHTS_NAME))?;
            candle_core::safetensors::save(&state, tmp.join(OPTIMIZER_TENSORS_NAME))?;
            Ok(())
        })
        .unwrap();
        saves.push(start.elapsed().as_secs_f64());
        bytes = [WEIGHTS_NAME, OPTIMIZER_TENSORS_NAME]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
            .sum();

        let start = Instant::now();
        model.varmap().clone().load(dir.join(WEIGHTS_NAME)).unwrap();
        let loaded =
            candle_core::safetensors::load(dir.join(OPTIMIZER_TENSORS_NAME), &Device::Cpu).unwrap();
        loads.push(start.elapsed().as_secs_f64());
        assert_eq!(loaded.len(), state.len());
    }
    let mb = bytes as f64 / 1e6;
    let (save, load) = (median(saves), median(loads));
    println!("Checkpoint I/O, reference GPT + AdamW state (CPU, median of {ROUNDS})\n");
    println!("| parameters | checkpoint size | save (s) | save MB/s | load (s) | load MB/s |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {:.1}M | {mb:.0} MB | {save:.3} | {:.0} | {load:.3} | {:.0} |",
        model.num_parameters() as f64 / 1e6,
        mb / save,
        mb / load
    );
}
