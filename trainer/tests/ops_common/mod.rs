//! Helpers shared by the fused ops' tests (`ops.rs`, `attention_ops.rs`,
//! `fused_adamw.rs`, `matmul_ops.rs`).

use candle_core::{DType, Device, Tensor};

/// Normal values of standard deviation `std` from a fixed seed (a 64-bit
/// LCG and Box-Muller), so every run checks the same inputs.
pub fn normal(shape: &[usize], std: f32, seed: u64) -> Tensor {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32 * std
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// The largest absolute difference between two tensors, in f32.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The largest absolute value of a tensor, at least 1: a scale for sums
/// over many rows (the layer norm's weight and bias gradients).
pub fn scale_of(t: &Tensor) -> f32 {
    max_diff(t, &t.zeros_like().unwrap()).max(1.0)
}

/// The first GPU, or `None` after printing why a GPU test is skipped.
pub fn gpu_or_skip() -> Option<Device> {
    let gpu = taper::device::gpu(0).unwrap();
    if gpu.is_none() {
        println!(
            "skipped: {}",
            if cfg!(feature = "cuda") {
                "no GPU on this machine"
            } else {
                "taper was built without the `cuda` feature"
            }
        );
    }
    gpu
}
