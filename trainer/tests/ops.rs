//! taper's fused attention softmax, cross-entropy, GELU, layer norm and
//! embedding against candle's composed ops: the forward values and the
//! gradients they pass back (softmax with and without the causal mask;
//! cross-entropy with ignored labels), on the CPU (the ops' CPU paths) and, when taper is built with
//! `cuda` and a GPU is present, on the GPU (taper's kernels; skipped with a
//! printed reason otherwise).

use candle_core::{DType, Device, Tensor, Var, D};

mod ops_common;
use ops_common::{gpu_or_skip, max_diff, normal, scale_of};

/// `softmax(scale * x + causal mask)` from candle's differentiable ops.
fn composed(x: &Tensor, scale: f64, causal: bool) -> Tensor {
    let scores = (x.to_dtype(DType::F32).unwrap() * scale).unwrap();
    let scores = if causal {
        let (q, k) = (x.dim(D::Minus2).unwrap(), x.dim(D::Minus1).unwrap());
        let mask: Vec<f32> = (0..q)
            .flat_map(|i| {
                (0..k).map(move |j| {
                    if j > i + k - q {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (q, k), x.device()).unwrap();
        scores.broadcast_add(&mask).unwrap()
    } else {
        scores
    };
    candle_nn::ops::softmax(&scores, D::Minus1).unwrap()
}

/// Compares values and gradients (of `sum(y * w)` for a random `w`) of the
/// fused op in `dtype` on `device` with the composed ops in f32 on the CPU.
fn check(device: &Device, shape: &[usize], dtype: DType, causal: bool, tolerance: f32) {
    let scale = 0.37;
    let x = normal(shape, 3.0, 1);
    let w = normal(shape, 1.0, 2);
    // The composed reference sees the values the fused op sees (rounded to dtype).
    let x = x.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();

    let reference_x = Var::from_tensor(&x).unwrap();
    let reference = composed(reference_x.as_tensor(), scale, causal);
    let reference_grads = (&reference * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let reference_grad = reference_grads.get(reference_x.as_tensor()).unwrap();

    let fused_x = Var::from_tensor(&x.to_dtype(dtype).unwrap().to_device(device).unwrap()).unwrap();
    let fused = taper::ops::attention_softmax(fused_x.as_tensor(), scale, causal).unwrap();
    assert_eq!(fused.dtype(), dtype);
    assert_eq!(fused.dims(), shape);
    let w_here = w.to_dtype(dtype).unwrap().to_device(device).unwrap();
    let fused_grads = (&fused * &w_here)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let fused_grad = fused_grads.get(fused_x.as_tensor()).unwrap();

    let fused = fused.to_device(&Device::Cpu).unwrap();
    let fused_grad = fused_grad.to_device(&Device::Cpu).unwrap();
    let (dy, dg) = (
        max_diff(&fused, &reference),
        max_diff(&fused_grad, reference_grad),
    );
    let what = format!("{device:?} {dtype:?} {shape:?} causal {causal}");
    assert!(dy <= tolerance, "{what}: values differ by {dy}");
    assert!(dg <= tolerance, "{what}: gradients differ by {dg}");
    // Every row sums to 1, and the causal mask hides keys after the query.
    let sums = fused.to_dtype(DType::F32).unwrap().sum(D::Minus1).unwrap();
    let ones = sums.ones_like().unwrap();
    assert!(
        max_diff(&sums, &ones) <= tolerance.max(1e-5),
        "{what}: rows do not sum to 1"
    );
    if causal {
        let first_row: Vec<f32> = fused
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_to(D::Minus2)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let (q, k) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        assert!(
            first_row[k - q + 1..].iter().all(|v| *v == 0.0),
            "{what}: {first_row:?}"
        );
    }
}

/// Cross-entropy per row, fused in `dtype` on `device`, against the
/// composed log-softmax in f32 on the CPU: the losses, and the gradients of
/// their mean over the labelled rows (as `taper::loss::cross_entropy`).
fn check_cross_entropy(device: &Device, rows: usize, classes: usize, dtype: DType, tolerance: f32) {
    let x = normal(&[rows, classes], 3.0, 3);
    let x = x.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
    // Every fourth row ignored (-100), the others a label from the row index.
    let labels: Vec<i64> = (0..rows)
        .map(|r| {
            if r % 4 == 3 {
                -100
            } else {
                (r * 7 % classes) as i64
            }
        })
        .collect();
    let active = labels.iter().filter(|l| **l >= 0).count() as f64;
    let labels = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();

    let reference_x = Var::from_tensor(&x).unwrap();
    let reference_loss = taper::loss::cross_entropy(reference_x.as_tensor(), &labels, 0.0).unwrap();
    let reference_grad = reference_loss.backward().unwrap();
    let reference_grad = reference_grad.get(reference_x.as_tensor()).unwrap();

    let fused_x = Var::from_tensor(&x.to_dtype(dtype).unwrap().to_device(device).unwrap()).unwrap();
    let fused_rows =
        taper::ops::cross_entropy_rows(fused_x.as_tensor(), &labels.to_device(device).unwrap())
            .unwrap();
    assert_eq!(fused_rows.dims(), [rows]);
    let fused_loss = (fused_rows.sum_all().unwrap() / active).unwrap();
    let fused_grad = fused_loss.backward().unwrap();
    let fused_grad = fused_grad
        .get(fused_x.as_tensor())
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    assert_eq!(fused_grad.dtype(), dtype);

    let what = format!("{device:?} {dtype:?} cross-entropy ({rows}, {classes})");
    let dl = max_diff(
        &fused_loss.to_device(&Device::Cpu).unwrap(),
        &reference_loss,
    );
    // The loss is about ln(classes) or more: compare it relatively.
    let scale = reference_loss.to_scalar::<f32>().unwrap().abs().max(1.0);
    assert!(dl <= tolerance * scale, "{what}: losses differ by {dl}");
    let dg = max_diff(&fused_grad, reference_grad);
    assert!(dg <= tolerance, "{what}: gradients differ by {dg}");
    // Ignored rows contribute nothing, and get no gradient.
    let rows_cpu: Vec<f32> = fused_rows
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(rows_cpu[3], 0.0, "{what}");
    let ignored: Vec<f32> = fused_grad
        .get(3)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(ignored.iter().all(|g| *g == 0.0), "{what}");
}

/// The fused GELU in `dtype` on `device` against candle's `gelu` in f32 on
/// the CPU: values, and gradients of `sum(y * w)`.
fn check_gelu(device: &Device, n: usize, dtype: DType, tolerance: f32) {
    let x = normal(&[n], 3.0, 4)
        .to_dtype(dtype)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let w = normal(&[n], 1.0, 5);
    let reference_x = Var::from_tensor(&x).unwrap();
    let reference = reference_x.as_tensor().gelu().unwrap();
    let grads = (&reference * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let reference_grad = grads.get(reference_x.as_tensor()).unwrap();
    let fused_x = Var::from_tensor(&x.to_dtype(dtype).unwrap().to_device(device).unwrap()).unwrap();
    let fused = taper::ops::gelu(fused_x.as_tensor()).unwrap();
    assert_eq!(fused.dtype(), dtype);
    let w_here = w.to_dtype(dtype).unwrap().to_device(device).unwrap();
    let grads = (&fused * &w_here)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let fused_grad = grads
        .get(fused_x.as_tensor())
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    let fused = fused.to_device(&Device::Cpu).unwrap();
    let what = format!("{device:?} {dtype:?} gelu ({n})");
    // Values reach about 3 x 3 = 9: compare relatively to the largest.
    let (dy, dg) = (
        max_diff(&fused, &reference),
        max_diff(&fused_grad, reference_grad),
    );
    assert!(dy <= tolerance * 10.0, "{what}: values differ by {dy}");
    assert!(dg <= tolerance * 4.0, "{what}: gradients differ by {dg}");
}

/// taper's layer norm in `dtype` on `device` against candle-nn's composed
/// `layer_norm_slow` in f32 on the CPU: values, and the gradients of
/// `sum(y * r)` for a random `r` with respect to x, weight and bias, each
/// compared relative to its largest value.
fn check_layer_norm(device: &Device, shape: &[usize], dtype: DType, tolerance: f32) {
    let d = *shape.last().unwrap();
    let round = |t: Tensor| t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
    let x = round((normal(shape, 2.0, 6) + 0.5).unwrap());
    let w = round((normal(&[d], 0.2, 7) + 1.0).unwrap());
    let b = round(normal(&[d], 0.2, 8));
    let r = normal(shape, 1.0, 9);
    let vars = |device: &Device, dtype: DType| -> Vec<Var> {
        [&x, &w, &b]
            .iter()
            .map(|t| {
                Var::from_tensor(&t.to_dtype(dtype).unwrap().to_device(device).unwrap()).unwrap()
            })
            .collect()
    };
    let grads_of = |y: &Tensor, vars: &[Var], r: &Tensor| -> Vec<Tensor> {
        let grads = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .unwrap()
                    .to_device(&Device::Cpu)
                    .unwrap()
            })
            .collect()
    };
    let reference_vars = vars(&Device::Cpu, DType::F32);
    let [rx, rw, rb] = [0, 1, 2].map(|i| reference_vars[i].as_tensor().clone());
    let reference = candle_nn::ops::layer_norm_slow(&rx, &rw, &rb, 1e-5).unwrap();
    let reference_grads = grads_of(&reference, &reference_vars, &r);

    let fused_vars = vars(device, dtype);
    let [fx, fw, fb] = [0, 1, 2].map(|i| fused_vars[i].as_tensor().clone());
    let fused = taper::ops::layer_norm(&fx, &fw, &fb, 1e-5).unwrap();
    assert_eq!(fused.dtype(), dtype);
    assert_eq!(fused.dims(), shape);
    let r_here = r.to_dtype(dtype).unwrap().to_device(device).unwrap();
    let fused_grads = grads_of(&fused, &fused_vars, &r_here);

    let what = format!("{device:?} {dtype:?} layer_norm {shape:?}");
    let dy = max_diff(&fused.to_device(&Device::Cpu).unwrap(), &reference);
    assert!(
        dy <= tolerance * scale_of(&reference),
        "{what}: values differ by {dy}"
    );
    for ((name, fused), reference) in ["x", "weight", "bias"]
        .iter()
        .zip(&fused_grads)
        .zip(&reference_grads)
    {
        assert_eq!(fused.dtype(), dtype, "{what}: d{name}");
        let diff = max_diff(fused, reference);
        let scale = scale_of(reference);
        assert!(
            diff <= tolerance * scale,
            "{what}: d{name} differs by {diff} (largest {scale})"
        );
    }
}

/// taper's embedding (f32 table) on `device` against candle's
/// `index_select` on the CPU: the picked rows, and the table's gradient of
/// `sum(y * r)` with ids that repeat (the scatter-add's collisions).
fn check_embedding(device: &Device, rows: usize, d: usize, n_ids: usize) {
    let w = normal(&[rows, d], 1.0, 10);
    let ids: Vec<u32> = (0..n_ids).map(|i| ((i * 7919) % rows) as u32).collect();
    let ids = Tensor::from_vec(ids, (2, n_ids / 2), &Device::Cpu).unwrap();
    let r = normal(&[2, n_ids / 2, d], 1.0, 11);
    let reference_w = Var::from_tensor(&w).unwrap();
    let reference = reference_w
        .as_tensor()
        .index_select(&ids.flatten_all().unwrap(), 0)
        .unwrap()
        .reshape((2, n_ids / 2, d))
        .unwrap();
    let grads = (&reference * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let reference_grad = grads.get(reference_w.as_tensor()).unwrap();

    let fused_w = Var::from_tensor(&w.to_device(device).unwrap()).unwrap();
    let fused =
        taper::ops::embedding(fused_w.as_tensor(), &ids.to_device(device).unwrap()).unwrap();
    assert_eq!(fused.dims(), [2, n_ids / 2, d]);
    let r_here = r.to_device(device).unwrap();
    let grads = (&fused * &r_here)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let fused_grad = grads
        .get(fused_w.as_tensor())
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    let what = format!("{device:?} embedding ({rows}, {d}), {n_ids} ids");
    let dy = max_diff(&fused.to_device(&Device::Cpu).unwrap(), &reference);
    assert_eq!(dy, 0.0, "{what}: values differ by {dy}");
    let dg = max_diff(&fused_grad, reference_grad);
    assert!(
        dg <= 1e-5 * scale_of(reference_grad),
        "{what}: gradients differ by {dg}"
    );
}

fn check_all(device: &Device) {
    check_embedding(device, 50, 16, 300);
    check_layer_norm(device, &[2, 3, 40], DType::F32, 1e-5);
    check_layer_norm(device, &[5, 768], DType::F32, 1e-5);
    check_layer_norm(device, &[2, 3, 40], DType::BF16, 2e-2);
    check_layer_norm(device, &[2, 3, 40], DType::F16, 4e-3);
    check_gelu(device, 1000, DType::F32, 1e-5);
    check_gelu(device, 1000, DType::BF16, 1e-2);
    check_gelu(device, 1000, DType::F16, 2e-3);
    check_cross_entropy(device, 12, 10, DType::F32, 1e-6);
    check_cross_entropy(device, 16, 300, DType::F32, 1e-6);
    check_cross_entropy(device, 16, 300, DType::BF16, 1e-3);
    check_cross_entropy(device, 16, 300, DType::F16, 1e-3);
    for causal in [false, true] {
        check(device, &[2, 3, 5, 5], DType::F32, causal, 1e-6);
        check(device, &[2, 3, 4, 7], DType::F32, causal, 1e-6);
        check(device, &[3, 200], DType::F32, false, 1e-6);
        // bf16 values and gradients carry 8 bits of mantissa.
        check(device, &[2, 3, 9, 9], DType::BF16, causal, 1e-2);
        check(device, &[2, 3, 9, 9], DType::F16, causal, 2e-3);
    }
}

#[test]
fn fused_ops_match_the_composed_ops_on_the_cpu() {
    check_all(&Device::Cpu);
    check(&Device::Cpu, &[2, 3, 5, 5], DType::F64, true, 1e-6);
    check_cross_entropy(&Device::Cpu, 12, 10, DType::F64, 1e-6);
    check_layer_norm(&Device::Cpu, &[3, 50], DType::F64, 1e-6);
}

#[test]
fn fused_ops_match_the_composed_ops_on_the_gpu() {
    let Some(gpu) = gpu_or_skip() else {
        return;
    };
    check_all(&gpu);
    // The reference GPT's shapes: 512 keys a row, more rows than one grid row.
    check(&gpu, &[2, 12, 512, 512], DType::F32, true, 1e-5);
    check(&gpu, &[2, 12, 512, 512], DType::BF16, true, 1e-2);
    // The longest rows a warp takes (1024), and longer ones (a block a row).
    check(&gpu, &[1, 4, 1024], DType::BF16, true, 1e-2);
    check(&gpu, &[2, 3, 1025], DType::F32, false, 1e-5);
    check(&gpu, &[2, 3, 1500], DType::F32, true, 1e-5);
    // And the reference GPT's logits: 8192 classes.
    check_cross_entropy(&gpu, 1024, 8192, DType::F32, 5e-5);
    check_cross_entropy(&gpu, 1024, 8192, DType::BF16, 1e-3);
    // The reference GPT's MLP activation, more elements than one grid covers.
    check_gelu(&gpu, 16 * 512 * 3072, DType::F32, 1e-5);
    check_gelu(&gpu, 16 * 512 * 3072, DType::BF16, 1e-2);
    // The reference GPT's layer norm: 8192 rows of 768, more rows than the
    // backward kernel has blocks.
    check_layer_norm(&gpu, &[16, 512, 768], DType::F32, 1e-4);
    check_layer_norm(&gpu, &[16, 512, 768], DType::BF16, 2e-2);
    // The reference GPT's token embedding: 8192 ids into (8192, 768).
    check_embedding(&gpu, 8192, 768, 8192);
    println!(
        "fused softmax, cross-entropy, GELU, layer norm and embedding on {gpu:?}: values and gradients match the composed ops"
    );
}

#[test]
fn fused_softmax_refuses_what_it_cannot_do() {
    let x = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
    let err = taper::ops::attention_softmax(&x, 1.0, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least as many keys as queries"), "{err}");
    let ints = Tensor::zeros((2, 2), DType::U32, &Device::Cpu).unwrap();
    assert!(taper::ops::attention_softmax(&ints, 1.0, false).is_err());
}
