//! taper's recomputing causal attention, its bias add and its casts against
//! candle's composed ops: forward values and the gradients they pass back, on the
//! CPU (the ops' CPU paths) and, when taper is built with `cuda` and a GPU
//! is present, on the GPU (skipped with a printed reason otherwise).

use candle_core::{DType, Device, Tensor, Var, D};

mod ops_common;
use ops_common::{gpu_or_skip, max_diff, normal, scale_of};

/// Causal attention over `qkv` `(b, t, 3d)` composed of candle's
/// differentiable ops in f32, the way the GPT computes it on the CPU.
fn composed_attention(qkv: &Tensor, n_head: usize) -> Tensor {
    let (b, t, width) = qkv.dims3().unwrap();
    let (d, head_dim) = (width / 3, width / 3 / n_head);
    let heads = qkv
        .reshape((b, t, 3, n_head, head_dim))
        .unwrap()
        .permute((2, 0, 3, 1, 4))
        .unwrap();
    let part = |i: usize| heads.get(i).unwrap().contiguous().unwrap();
    let (q, k, v) = (part(0), part(1), part(2));
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), qkv.device()).unwrap();
    let scores = (q.matmul(&k.t().unwrap()).unwrap() / (head_dim as f64).sqrt())
        .unwrap()
        .broadcast_add(&mask)
        .unwrap();
    candle_nn::ops::softmax(&scores, D::Minus1)
        .unwrap()
        .matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((b, t, d))
        .unwrap()
}

/// Values, and the gradient of `sum(y * w)` for a random `w`, of `f`
/// applied to `inputs` (moved to `device` in `dtype`), back on the CPU.
fn value_and_grads(
    inputs: &[&Tensor],
    device: &Device,
    dtype: DType,
    f: impl Fn(&[&Tensor]) -> Tensor,
    seed: u64,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|x| Var::from_tensor(&x.to_dtype(dtype).unwrap().to_device(device).unwrap()).unwrap())
        .collect();
    let tensors: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
    let y = f(&tensors);
    assert_eq!(y.dtype(), dtype);
    let w = normal(y.dims(), 1.0, seed)
        .to_dtype(dtype)
        .unwrap()
        .to_device(device)
        .unwrap();
    let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let cpu = |t: &Tensor| t.to_device(&Device::Cpu).unwrap();
    let grads = tensors.iter().map(|t| cpu(grads.get(t).unwrap())).collect();
    (cpu(&y), grads)
}

/// `taper::ops::causal_attention` in `dtype` on `device` against the
/// composed attention in f32 on the CPU, relative to the largest value.
fn check_attention(
    device: &Device,
    shape: (usize, usize, usize, usize),
    dtype: DType,
    tolerance: f32,
) {
    let (b, t, n_head, head_dim) = shape;
    let round = |x: Tensor| x.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
    let qkv = round(normal(&[b, t, 3 * n_head * head_dim], 1.0, 11));
    let (reference, reference_grads) = value_and_grads(
        &[&qkv],
        &Device::Cpu,
        DType::F32,
        |x| composed_attention(x[0], n_head),
        12,
    );
    let (fused, fused_grads) = value_and_grads(
        &[&qkv],
        device,
        dtype,
        |x| taper::ops::causal_attention(x[0], n_head).unwrap(),
        12,
    );
    let what = format!("{device:?} {dtype:?} causal_attention {shape:?}");
    let dy = max_diff(&fused, &reference);
    assert!(
        dy <= tolerance * scale_of(&reference),
        "{what}: values differ by {dy}"
    );
    let dg = max_diff(&fused_grads[0], &reference_grads[0]);
    assert!(
        dg <= tolerance * scale_of(&reference_grads[0]),
        "{what}: gradients differ by {dg}"
    );
}

/// `taper::ops::bias_add` in `dtype` on `device` against candle's
/// `broadcast_add` in f32 on the CPU: values and both gradients.
fn check_bias_add(device: &Device, rows: usize, cols: usize, dtype: DType, tolerance: f32) {
    let round = |x: Tensor| x.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
    let x = round(normal(&[rows, cols], 1.0, 21));
    let bias = round(normal(&[cols], 1.0, 22));
    let add = |x: &[&Tensor]| x[0].broadcast_add(x[1]).unwrap();
    let (reference, reference_grads) =
        value_and_grads(&[&x, &bias], &Device::Cpu, DType::F32, add, 23);
    let fused_add = |x: &[&Tensor]| taper::ops::bias_add(x[0], x[1]).unwrap();
    let (fused, fused_grads) = value_and_grads(&[&x, &bias], device, dtype, fused_add, 23);
    let what = format!("{device:?} {dtype:?} bias_add ({rows}, {cols})");
    let dy = max_diff(&fused, &reference);
    assert!(
        dy <= tolerance * scale_of(&reference),
        "{what}: values differ by {dy}"
    );
    for (i, name) in ["x", "bias"].iter().enumerate() {
        let dg = max_diff(&fused_grads[i], &reference_grads[i]);
        assert!(
            dg <= tolerance * scale_of(&reference_grads[i]),
            "{what}: the gradients of {name} differ by {dg}"
        );
    }
}

/// `taper::ops::cast` from `from` to `to` on `device` against candle's
/// `to_dtype`: the values and the gradient, which must be the same bits
/// (both round to nearest even), for a tensor of `n` elements (its last
/// few past the vector loads) and for a view that starts mid-vector.
fn check_cast(device: &Device, n: usize, from: DType, to: DType) {
    let here = |x: Tensor, dtype| x.to_dtype(dtype).unwrap().to_device(device).unwrap();
    let x = Var::from_tensor(&here(normal(&[n], 2.0, 31), from)).unwrap();
    let w = here(normal(&[n], 1.0, 32), to);
    let what = format!("{device:?} cast {from:?} -> {to:?} ({n})");
    let y = taper::ops::cast(x.as_tensor(), to).unwrap();
    assert_eq!(y.dtype(), to);
    let expected = x.as_tensor().to_dtype(to).unwrap();
    assert_eq!(max_diff(&y, &expected), 0.0, "{what}: values differ");
    let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let grad = grads.get(x.as_tensor()).unwrap();
    assert_eq!(grad.dtype(), from);
    let expected = w.to_dtype(from).unwrap();
    assert_eq!(max_diff(grad, &expected), 0.0, "{what}: gradients differ");
    let view = x.as_tensor().narrow(0, 1, n - 1).unwrap();
    let y = taper::ops::cast(&view, to).unwrap();
    let expected = view.to_dtype(to).unwrap();
    assert_eq!(
        max_diff(&y, &expected),
        0.0,
        "{what}: a view's values differ"
    );
}

fn check_all(device: &Device) {
    check_attention(device, (2, 5, 3, 4), DType::F32, 1e-5);
    check_attention(device, (1, 17, 2, 8), DType::F32, 1e-5);
    check_attention(device, (2, 9, 2, 8), DType::BF16, 3e-2);
    check_bias_add(device, 7, 5, DType::F32, 1e-6);
    check_bias_add(device, 300, 40, DType::BF16, 1e-2);
    // The bias's gradient is a matrix product, which the CPU's f16 gemm
    // accumulates in f16 (cuBLAS in f32).
    check_bias_add(device, 300, 40, DType::F16, 1e-2);
    for (from, to) in [
        (DType::BF16, DType::F32),
        (DType::F32, DType::BF16),
        (DType::F16, DType::F32),
        (DType::F32, DType::F16),
    ] {
        check_cast(device, 1003, from, to);
    }
}

#[test]
fn attention_and_bias_add_match_the_composed_ops_on_the_cpu() {
    check_all(&Device::Cpu);
}

#[test]
fn attention_and_bias_add_match_the_composed_ops_on_the_gpu() {
    let Some(gpu) = gpu_or_skip() else {
        return;
    };
    check_all(&gpu);
    // The reference GPT's shapes: 512 tokens, 12 heads of 64; its widest bias.
    check_attention(&gpu, (2, 512, 12, 64), DType::F32, 1e-4);
    check_attention(&gpu, (2, 512, 12, 64), DType::BF16, 3e-2);
    check_bias_add(&gpu, 16 * 512, 3072, DType::BF16, 1e-2);
    check_bias_add(&gpu, 16 * 512, 3072, DType::F32, 1e-5);
    // Head rows of 6 bytes (3 bf16) and 20 bytes (5 f32): the narrower words.
    check_attention(&gpu, (2, 7, 2, 3), DType::BF16, 3e-2);
    check_attention(&gpu, (1, 9, 3, 5), DType::F32, 1e-5);
    // The reference GPT's residual stream, more elements than one grid covers.
    check_cast(&gpu, 16 * 512 * 768 + 3, DType::BF16, DType::F32);
    println!(
        "causal attention, bias add and casts on {gpu:?}: values and gradients match the composed ops"
    );
}

#[test]
fn attention_and_bias_add_refuse_bad_shapes() {
    let qkv = Tensor::zeros((1, 2, 7), DType::F32, &Device::Cpu).unwrap();
    let err = taper::ops::causal_attention(&qkv, 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 x n_head"), "{err}");
    let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    let bias = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let err = taper::ops::bias_add(&x, &bias).unwrap_err().to_string();
    assert!(err.contains("bias of shape [3]"), "{err}");
}
