//! taper's f32 matrix product (`ops::linear`, `ops::matmul`: 3xTF32 on a
//! GPU) against an f64 product and against cuBLAS's FP32 and TF32
//! products, and its gradients against candle's. The GPU tests are skipped
//! with a printed reason where there is no GPU or no `cuda` feature.

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};

// This file uses two of the shared helpers.
#[allow(dead_code)]
mod ops_common;
use ops_common::{gpu_or_skip, normal};

/// HF's `tf32` is the process's setting: the tests that read or change it
/// take turns.
static TF32: Mutex<()> = Mutex::new(());

/// `||c - reference|| / ||reference||`, both read as f64.
fn relative_error(c: &Tensor, reference: &Tensor) -> f64 {
    let c = c
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let diff = (c - reference).unwrap().sqr().unwrap().sum_all().unwrap();
    let norm = reference.sqr().unwrap().sum_all().unwrap();
    (diff.to_scalar::<f64>().unwrap() / norm.to_scalar::<f64>().unwrap()).sqrt()
}

#[test]
fn on_the_cpu_linear_is_candles_linear_layer() {
    let x = normal(&[2, 5, 16], 1.0, 1);
    let w = normal(&[24, 16], 0.3, 2);
    let ours = taper::ops::linear(&x, &w).unwrap();
    let candle = candle_nn::Module::forward(&candle_nn::Linear::new(w.clone(), None), &x).unwrap();
    assert_eq!(ours.dims(), [2, 5, 24]);
    assert_eq!(
        ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        candle.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

/// Products of row-major and transposed operands at shapes where the split
/// pays: 3xTF32 must be within 4x of cuBLAS's FP32 product's error against
/// the f64 product (an H200 measured 2.7x at k 768; without the chunked
/// sum of `hi hi` it was 5.2x: the tensor cores accumulate with less care
/// than f32's rounding), and far closer than one TF32 product (300x on
/// the H200), which this test would otherwise not tell apart.
#[test]
fn the_split_product_is_as_accurate_as_fp32_on_the_gpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let _tf32 = TF32.lock().unwrap();
    let (m, k, n) = (1024, 768, 2304);
    let a = normal(&[m, k], 1.0, 3);
    let b = normal(&[k, n], 0.05, 4);
    let a_t = normal(&[k, m], 1.0, 5);
    let b_t = normal(&[n, k], 0.05, 6);
    // A weight gradient's shape (the qkv projection's): a long sum, k 8192.
    let long_a = normal(&[8192, 768], 1.0, 12);
    let long_b = normal(&[8192, 2304], 1.0, 13);
    let cases: [(&str, Tensor, Tensor); 4] = [
        ("a b", a.clone(), b.clone()),
        ("a^T b", a_t.clone(), b.clone()),
        ("a b^T", a.clone(), b_t.clone()),
        ("a^T b, k 8192", long_a, long_b),
    ];
    let mut results: Vec<(&str, f64, f64, f64)> = Vec::new();
    for (name, a, b) in cases {
        let (a_gpu, b_gpu) = (a.to_device(&gpu).unwrap(), b.to_device(&gpu).unwrap());
        let (a_gpu, b_gpu, a, b) = match name {
            "a^T b" | "a^T b, k 8192" => (a_gpu.t().unwrap(), b_gpu, a.t().unwrap(), b),
            "a b^T" => (a_gpu, b_gpu.t().unwrap(), a, b.t().unwrap()),
            _ => (a_gpu, b_gpu, a, b),
        };
        let reference = a
            .to_dtype(DType::F64)
            .unwrap()
            .matmul(&b.to_dtype(DType::F64).unwrap())
            .unwrap();
        let (m, n) = (a.dims()[0], b.dims()[1]);
        assert!(
            taper::ops::split_pays(m, n),
            "{name}: the split must be the one tested"
        );
        let split = relative_error(&taper::ops::matmul(&a_gpu, &b_gpu).unwrap(), &reference);
        let fp32 = relative_error(&a_gpu.matmul(&b_gpu).unwrap(), &reference);
        taper::device::set_tf32(&gpu, Some(true)).unwrap();
        let tf32 = relative_error(&a_gpu.matmul(&b_gpu).unwrap(), &reference);
        taper::device::set_tf32(&gpu, Some(false)).unwrap();
        println!("{name}: relative error 3xTF32 {split:.3e}, FP32 {fp32:.3e}, TF32 {tf32:.3e}");
        results.push((name, split, fp32, tf32));
    }
    for (name, split, fp32, tf32) in results {
        assert!(
            split <= 4.0 * fp32,
            "{name}: 3xTF32 {split:e} against FP32 {fp32:e}"
        );
        assert!(
            tf32 >= 30.0 * split,
            "{name}: TF32 {tf32:e} against 3xTF32 {split:e}"
        );
    }
}

/// An inf or a NaN in `a` makes the same outputs non-finite as in cuBLAS's
/// FP32 product, and no others (the split keeps non-finite values whole;
/// an inf's outputs may come out NaN where FP32 gives inf).
#[test]
fn non_finite_inputs_reach_the_same_outputs_as_in_fp32() {
    let Some(gpu) = gpu_or_skip() else { return };
    let _tf32 = TF32.lock().unwrap();
    let (m, k, n) = (1024, 512, 1024);
    let mut values = normal(&[m, k], 1.0, 7)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    values[3 * k + 5] = f32::INFINITY;
    values[700 * k + 1] = f32::NAN;
    let a = Tensor::from_vec(values, (m, k), &gpu).unwrap();
    let b = normal(&[k, n], 1.0, 8).to_device(&gpu).unwrap();
    let finite = |t: Tensor| -> Vec<bool> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.is_finite()).collect()
    };
    let split = finite(taper::ops::matmul(&a, &b).unwrap());
    let fp32 = finite(a.matmul(&b).unwrap());
    assert_eq!(split.iter().filter(|f| !**f).count(), 2 * n);
    assert_eq!(split, fp32);
}

/// The gradients of `sum(linear(x, w) * g)` through the split product and
/// through candle's FP32 product agree to f32's accuracy.
#[test]
fn linear_gradients_match_candles_on_the_gpu() {
    let Some(gpu) = gpu_or_skip() else { return };
    let _tf32 = TF32.lock().unwrap();
    let x = Var::from_tensor(&normal(&[4, 256, 768], 1.0, 9).to_device(&gpu).unwrap()).unwrap();
    let w = Var::from_tensor(&normal(&[3072, 768], 0.02, 10).to_device(&gpu).unwrap()).unwrap();
    let g = normal(&[4, 256, 3072], 1.0, 11).to_device(&gpu).unwrap();
    let grads = |y: Tensor| {
        let store = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let get = |v: &Var| {
            let grad = store.get(v.as_tensor()).unwrap();
            grad.to_device(&Device::Cpu)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
        };
        (get(&x), get(&w))
    };
    let (x_ours, w_ours) = grads(taper::ops::linear(x.as_tensor(), w.as_tensor()).unwrap());
    let candle_y = x
        .as_tensor()
        .broadcast_matmul(&w.as_tensor().t().unwrap())
        .unwrap();
    let (x_candle, w_candle) = grads(candle_y);
    let (dx, dw) = (
        relative_error(&x_ours, &x_candle),
        relative_error(&w_ours, &w_candle),
    );
    println!("gradients' relative difference: x {dx:.3e}, w {dw:.3e}");
    assert!(dx < 1e-5 && dw < 1e-5, "x {dx:e}, w {dw:e}");
}
