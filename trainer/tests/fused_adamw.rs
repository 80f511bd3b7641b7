//! The fused AdamW kernel (GPU) against the composed update (CPU): both
//! flavours (`adamw_torch`, `adamw_hf`), parameters with and without weight
//! decay, several steps, a tensor larger than one launch grid covers;
//! parameters and both moments compared; the same with gradients clipped
//! to a global norm of 1 (on the GPU the coefficient is applied inside the
//! fused kernel), and the fused norm against the CPU's. Runs where taper is built with
//! `cuda` and a GPU is present; skipped with a printed reason otherwise.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use taper::optim::{AdamW, AdamWConfig, Gradients, Optimizer, Parameters};

// This file uses two of the shared helpers.
#[allow(dead_code)]
mod ops_common;
use ops_common::{gpu_or_skip, max_diff};

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

/// A norm before clipping (f32 on the device) and the exact one (f64, host).
type Norms = (f64, f64);

/// Runs `steps` AdamW steps on `device`, clipping gradients to a global norm
/// of `max_norm` when given (as the Trainer does: read on the CPU, deferred
/// to the optimizer on the GPU); the parameters, then the optimizer state, as
/// CPU tensors by name, and the norms before clipping with each the exact
/// norm (summed in f64 on the host).
fn train(
    device: &Device,
    config: AdamWConfig,
    steps: usize,
    max_norm: Option<f64>,
) -> (Vec<(String, Tensor)>, Vec<Norms>) {
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
    let mut norms = Vec::new();
    for step in 0..steps {
        let mut exact = 0.0f64;
        let grads = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let n = p.var.elem_count();
                let g = values(n, 100 + (step * 10 + i) as u64);
                exact += g.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>();
                Some(Tensor::from_vec(g, n, device).unwrap())
            })
            .collect();
        let mut grads = Gradients::from_vec(grads);
        if let Some(max_norm) = max_norm {
            if device.is_cuda() {
                assert!(opt.applies_clip_coefficient(&grads));
                let norm = grads.clip_global_norm_deferred(max_norm).unwrap();
                let norm = f64::from(norm.unwrap().to_scalar::<f32>().unwrap());
                norms.push((norm, exact.sqrt()));
            } else {
                norms.push((grads.clip_global_norm(max_norm).unwrap(), exact.sqrt()));
            }
        }
        opt.step(&grads, 1e-3 * (step + 1) as f64).unwrap();
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
    (out, norms)
}

#[test]
fn fused_adamw_on_the_gpu_matches_the_composed_update() {
    let Some(gpu) = gpu_or_skip() else {
        return;
    };
    // Gradients in [-1, 1) over 17M elements have a norm of about 2400: a
    // clip to 1 scales them by about 4e-4, which the moments would show.
    for (decay_after_update, max_norm) in [
        (false, None),
        (true, None),
        (false, Some(1.0)),
        (true, Some(1.0)),
    ] {
        let config = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
            decay_after_update,
        };
        let (cpu, cpu_norms) = train(&Device::Cpu, config, 3, max_norm);
        let (fused, fused_norms) = train(&gpu, config, 3, max_norm);
        assert_eq!(cpu.len(), fused.len());
        assert_eq!(cpu.len(), 3 * SHAPES.len());
        for ((name, a), (other, b)) in cpu.iter().zip(&fused) {
            assert_eq!(name, other);
            let diff = max_diff(a, b);
            // f32 values of size ~1 (parameters) or below; the two differ
            // only in rounding (fused multiply-adds, f32 step scalars, the
            // clipping coefficient in f32 and the norm summed in another order).
            assert!(
                diff <= 2e-6,
                "decay_after_update {decay_after_update}, max_norm {max_norm:?}: \
                 {name} differs by {diff}"
            );
        }
        assert_eq!(cpu_norms.len(), fused_norms.len());
        for ((composed, exact), (fused, _)) in cpu_norms.iter().zip(&fused_norms) {
            // candle's CPU sum adds 17M squares one after another in f32 and
            // is about 7e-5 (relative) off here; the fused norm sums short
            // runs per thread, then blocks, and comes much closer.
            assert!(*exact > 1000.0);
            let rel = |a: f64| (a - exact).abs() / exact;
            assert!(
                rel(*composed) <= 1e-4,
                "composed norm {composed} vs {exact}"
            );
            assert!(rel(*fused) <= 2e-5, "fused norm {fused} vs {exact}");
            assert!(
                (fused - composed).abs() <= 1e-4 * exact,
                "fused norm {fused} vs composed {composed}"
            );
        }
    }
    println!(
        "fused AdamW on {gpu:?}: parameters and moments match the CPU update, both flavours, \
         with and without clipping (the norm close to the exact one)"
    );
}
