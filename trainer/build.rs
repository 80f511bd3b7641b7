//! Compiles taper's own CUDA kernels (`kernels/*.cu`) to PTX with nvcc when
//! the `cuda` feature is on; `src/ops.rs` embeds the PTX, and the CUDA
//! driver compiles it for the GPU it runs on. Without `cuda` there is
//! nothing to do (CI has no CUDA toolkit). candle's own kernels are built
//! the same way, so a CUDA build of taper needs nothing more than candle's.
//!
//! `CUDA_COMPUTE_CAP` (as for candle; 90 for the H100/H200 when
//! `install/cuda-build-env.sh` set it) picks the PTX's virtual architecture;
//! without it, 80, which any GPU from the A100 on can run.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: [&str; 11] = [
    "heads",
    "cast",
    "bias_add",
    "softmax",
    "cross_entropy",
    "gelu",
    "adamw",
    "layer_norm",
    "embedding",
    "clip",
    "split_tf32",
];

fn main() {
    println!("cargo::rerun-if-changed=kernels");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap: String = cap.chars().filter(|c| c.is_ascii_digit()).collect();
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    for kernel in KERNELS {
        let source = format!("kernels/{kernel}.cu");
        let ptx = out.join(format!("{kernel}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17"])
            .arg(format!("-arch=compute_{cap}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&source)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("nvcc failed on {source} ({s})"),
            Err(e) => panic!(
                "cannot run {nvcc} for {source} ({e}): the `cuda` feature needs nvcc \
                 (a CUDA toolkit, or `eval \"$(bash install/cuda-build-env.sh)\"`)"
            ),
        }
    }
}
