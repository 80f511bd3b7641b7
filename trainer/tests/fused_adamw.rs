//! The fused AdamW kernel (GPU) against the composed update (CPU): both
//! flavours (`adamw_torch`, `adamw_hf`), parameters with and without weight
//! decay, several steps, a tensor larger than one launch grid covers;
//! parameters and both moments compared. Runs where taper is built with
//! `cuda` and a GPU is present; skipped with a printed reason otherwise.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use taper::optim::{AdamW, AdamWConfig, Gradients, Optimizer, Parameters};

/// Deterministic values in [-1, 1) from a 64-bit LCG.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005) ^ 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Shapes of the parameters: a weight that decays, a norm and a bias that
/// do not, and one tensor of more elements than a grid of 65535 x 256.
const SHAPES: [(&str, usize); 4] = [
    ("h.0.attn.weight", 768 * 96),
    ("h.0.ln_1.weight", 768),
    ("h.0.mlp.bias", 3072),
    ("wte.weight", 65535 * 256 + 1000),
];

/// Runs `steps` AdamW steps on `device`; the parameters, then the optimizer
/// state, as CPU tensors by name.
fn train(device: &Device, config: AdamWConfig, steps: usize) -> Vec<(String, Tensor)> {
    let mut varmap = VarMap::new();
    for (i, (name, n)) in SHAPES.iter().enumerate() {
        let init = Tensor::from_vec(values(*n, i as u64), *n, device).unwrap();
        varmap
            .get(*n, name, candle_nn::Init::Const(0.0), DType::F32, device)
            .unwrap();
        varmap.set_one(*name, &init).unwrap();
    }
    let params = Parameters::from_varmap(&varmap);
    let mut opt = AdamW::new(params.clone(), config);
    for step in 0..steps {
        let grads = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let n = p.var.elem_count();
                let g = values(n, 100 + (step * 10 + i) as u64);
                Some(Tensor::from_vec(g, n, device).unwrap())
            })
            .collect();
        opt.step(&Gradients::from_vec(grads), 1e-3 * (step + 1) as f64)
            .unwrap();
    }
    let mut out: Vec<(String, Tensor)> = params
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.var.as_tensor().to_device(&Device::Cpu).unwrap(),
            )
        })
        .collect();
    for (name, tensor) in opt.state().tensors {
        out.push((name, tensor.to_device(&Device::Cpu).unwrap()));
    }
    out
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn fused_adamw_on_the_gpu_matches_the_composed_update() {
    let Some(gpu) = taper::device::gpu(0).unwrap() else {
        println!(
            "skipped: {}",
            if cfg!(feature = "cuda") {
                "no GPU on this machine"
            } else {
                "taper was built without the `cuda` feature"
            }
        );
        return;
    };
    for decay_after_update in [false, true] {
        let config = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
            decay_after_update,
        };
        let cpu = train(&Device::Cpu, config, 3);
        let fused = train(&gpu, config, 3);
        assert_eq!(cpu.len(), fused.len());
        assert_eq!(cpu.len(), 3 * SHAPES.len());
        for ((name, a), (other, b)) in cpu.iter().zip(&fused) {
            assert_eq!(name, other);
            let diff = max_diff(a, b);
            // f32 values of size ~1 (parameters) or below; the two differ
            // only in rounding (fused multiply-adds, f32 step scalars).
            assert!(
                diff <= 2e-6,
                "decay_after_update {decay_after_update}: {name} differs by {diff}"
            );
        }
    }
    println!("fused AdamW on {gpu:?}: parameters and moments match the CPU update, both flavours");
}
