//! The `--ops` mode of the throughput bench: the reference GPT's
//! operations one by one on its shapes, forward and forward+backward, to
//! see where a step's time goes (notes/gpu-performance-calls-1-3.md, call 3).

use std::time::Instant;

use candle_core::{DType, Device};

use super::Setup;

/// ms per call of `f`, after two warm-up calls, between synchronisations.
fn time_ms(device: &Device, reps: usize, mut f: impl FnMut() -> candle_core::Result<()>) -> f64 {
    for _ in 0..2 {
        f().unwrap();
    }
    device.synchronize().unwrap();
    let start = Instant::now();
    for _ in 0..reps {
        f().unwrap();
    }
    device.synchronize().unwrap();
    start.elapsed().as_secs_f64() * 1e3 / reps as f64
}

/// The reference GPT's operations one by one, forward and forward+backward
/// (the backward of `sum`), to see where a step's time goes.
pub fn run_ops(setup: &Setup) {
    use candle_core::{Tensor, Var, D};
    let dev = &setup.device;
    let (b, t, d, v) = (
        setup.batch_size,
        setup.config.max_seq_len,
        setup.config.d_model,
        setup.config.vocab_size,
    );
    let h = setup.config.n_head;
    let reps = 10;
    let var = |shape: &[usize], dtype: DType| {
        Var::from_tensor(
            &Tensor::randn(0f32, 1.0, shape, dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap()
    };
    let fb = |y: Tensor| -> candle_core::Result<()> {
        y.to_dtype(DType::F32)?.sum_all()?.backward()?;
        Ok(())
    };
    let mask = Tensor::randn(0f32, 1.0, (t, t), dev).unwrap();
    println!("| op (shape) | dtype | forward ms | forward+backward ms |");
    println!("|---|---|---|---|");
    for dtype in [DType::F32, DType::BF16] {
        let row = |name: &str, fwd: f64, both: f64| {
            println!("| {name} | {dtype:?} | {fwd:.2} | {both:.2} |");
        };
        let x = var(&[b * t, d], dtype);
        let w = var(&[3 * d, d], dtype);
        let f = || x.as_tensor().matmul(&w.as_tensor().t()?);
        row(
            &format!("linear {}x{d} @ {d}x{}", b * t, 3 * d),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let s = var(&[b, h, t, t], dtype);
        let s2 = var(&[b, h, t, t], dtype);
        let big = format!("({b},{h},{t},{t})");
        let f = || s.as_tensor() + s2.as_tensor();
        row(
            &format!("add, contiguous {big}"),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let m = mask.to_dtype(dtype).unwrap();
        let f = || s.as_tensor().broadcast_add(&m);
        row(
            &format!("add causal mask ({t},{t}), broadcast {big}"),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let f = || candle_nn::ops::softmax(s.as_tensor(), D::Minus1);
        row(
            &format!("softmax, composed {big}"),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let f = || candle_nn::ops::softmax_last_dim(s.as_tensor());
        row(
            &format!("softmax_last_dim, fused, no backward {big}"),
            time_ms(dev, reps, || f().map(|_| ())),
            f64::NAN,
        );
        let f = || {
            taper::ops::attention_softmax(s.as_tensor(), 0.125, true)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        };
        row(
            &format!("attention_softmax, taper's kernels, scale + causal mask {big}"),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let f = || s.as_tensor().to_dtype(DType::F32)?.to_dtype(dtype);
        row(
            &format!("cast to f32 and back {big}"),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let hx = var(&[b, t, d], dtype);
        let (lw, lb) = (var(&[d], dtype), var(&[d], dtype));
        let f = || {
            candle_nn::ops::layer_norm_slow(hx.as_tensor(), lw.as_tensor(), lb.as_tensor(), 1e-5)
        };
        row(
            &format!("layer_norm_slow ({b},{t},{d})"),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let f = || {
            taper::ops::layer_norm(hx.as_tensor(), lw.as_tensor(), lb.as_tensor(), 1e-5)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        };
        row(
            &format!("layer_norm, taper's kernels ({b},{t},{d})"),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let g = var(&[b, t, 4 * d], dtype);
        let f = || g.as_tensor().gelu();
        row(
            &format!("gelu ({b},{t},{})", 4 * d),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let f =
            || taper::ops::gelu(g.as_tensor()).map_err(|e| candle_core::Error::Msg(e.to_string()));
        row(
            &format!("gelu, taper's kernels ({b},{t},{})", 4 * d),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let qkv = var(&[b, t, 3 * d], dtype);
        let f = || -> candle_core::Result<Tensor> {
            let p = qkv
                .as_tensor()
                .reshape((b, t, 3, h, d / h))?
                .permute((2, 0, 3, 1, 4))?;
            let (q, k) = (p.get(0)?.contiguous()?, p.get(1)?.contiguous()?);
            q.matmul(&k.t()?)
        };
        row(
            &format!("qkv split + q @ k^T -> {big}"),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let logits = var(&[b * t, v], dtype);
        let labels = Tensor::zeros(b * t, DType::I64, dev).unwrap();
        let f = || {
            taper::loss::cross_entropy(logits.as_tensor(), &labels, 0.0)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        };
        row(
            &format!("cross_entropy ({}, {v})", b * t),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        let emb = var(&[v, d], dtype);
        let ids = Tensor::zeros(b * t, DType::U32, dev).unwrap();
        let f = || emb.as_tensor().index_select(&ids, 0);
        row(
            &format!("embedding {} ids of ({v},{d})", b * t),
            time_ms(dev, reps, || f().map(|_| ())),
            time_ms(dev, reps, || fb(f()?)),
        );
        if dtype == DType::F32 {
            // Spread ids, as a batch's tokens: the zeros above would make
            // every atomic add of the backward collide on one row.
            let spread: Vec<u32> = (0..b * t).map(|i| (i * 7919 % v) as u32).collect();
            let ids = Tensor::from_vec(spread, b * t, dev).unwrap();
            let f = || {
                taper::ops::embedding(emb.as_tensor(), &ids)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))
            };
            row(
                &format!(
                    "embedding, taper's kernels, {} spread ids of ({v},{d})",
                    b * t
                ),
                time_ms(dev, reps, || f().map(|_| ())),
                time_ms(dev, reps, || fb(f()?)),
            );
        }
    }
}

/// The f32 matrix products of the reference GPT's linear layers (forward,
/// and the two products of each backward), by cuBLAS's FP32 path, by
/// taper's 3xTF32 split and by one TF32 product (HF's `tf32`): where the
/// split pays ([`taper::ops::split_pays`]) and by how much. Below the
/// threshold taper's product is the FP32 one, so the last rows probe it
/// from above.
pub fn run_products(setup: &Setup) {
    use candle_core::Tensor;
    let dev = &setup.device;
    let (n, d, v) = (
        setup.batch_size * setup.config.max_seq_len,
        setup.config.d_model,
        setup.config.vocab_size,
    );
    let shapes = [
        ("qkv forward", n, d, 3 * d),
        ("qkv input gradient", n, 3 * d, d),
        ("qkv weight gradient", d, n, 3 * d),
        ("proj weight gradient", d, n, d),
        ("fc forward", n, d, 4 * d),
        ("fc_proj forward", n, 4 * d, d),
        ("fc weight gradient", d, n, 4 * d),
        ("lm_head forward", n, d, v),
        ("lm_head input gradient", n, v, d),
        ("lm_head weight gradient", d, n, v),
        ("at the threshold", 512, n, 512),
        ("just above it", 640, n, 640),
    ];
    println!(
        "| f32 product (m x k x n) | FP32 ms | 3xTF32 ms | TF32 ms | FP32 / 3xTF32 | split pays |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, m, k, cols) in shapes {
        let a = Tensor::randn(0f32, 1.0, (m, k), dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (k, cols), dev).unwrap();
        let reps = 20;
        let fp32 = time_ms(dev, reps, || a.matmul(&b).map(|_| ()));
        let split = time_ms(dev, reps, || {
            taper::ops::matmul(&a, &b)
                .map(|_| ())
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        });
        taper::device::set_tf32(dev, Some(true)).unwrap();
        let tf32 = time_ms(dev, reps, || a.matmul(&b).map(|_| ()));
        taper::device::set_tf32(dev, Some(false)).unwrap();
        println!(
            "| {name} ({m} x {k} x {cols}) | {fp32:.3} | {split:.3} | {tf32:.3} | {:.2} | {} |",
            fp32 / split,
            taper::ops::split_pays(m, cols)
        );
    }
}
