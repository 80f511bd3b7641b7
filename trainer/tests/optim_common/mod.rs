//! Helpers shared by the optimizer tests (`optim.rs`, `optim_building.rs`,
//! `gradients.rs`): one parameter, its gradients at each step, arguments
//! for an optimizer by name, and the formulas' tolerance check.
// Each test file uses some of these.
#![allow(dead_code)]

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use taper::optim::{self, Gradients, Optimizer, Parameters};
use taper::{Error, TrainingArguments};

pub const LR: f64 = 1e-2;
pub const WD: f64 = 0.1;
pub const B1: f64 = 0.9;
pub const B2: f64 = 0.999;
pub const EPS: f64 = 1e-8;

/// The initial values of the one parameter the formula tests use.
pub const P0: [f32; 4] = [0.5, -1.0, 1.5, -0.25];

/// Its gradients at steps 1, 2, 3 (and 4 for the resume tests); no zeros, so
/// every sign is defined.
pub const G: [[f32; 4]; 4] = [
    [0.1, -0.2, 0.3, -0.4],
    [-0.05, 0.4, 0.2, 0.1],
    [0.3, 0.1, -0.6, 0.25],
    [-0.2, -0.3, 0.15, 0.05],
];

/// A `VarMap` holding one variable per entry.
pub fn varmap_with(entries: &[(&str, &[f32])]) -> VarMap {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().unwrap();
        for (name, values) in entries {
            let var = Var::from_slice(values, values.len(), &Device::Cpu).unwrap();
            data.insert((*name).to_string(), var);
        }
    }
    varmap
}

/// The current values of variable `name`.
pub fn values(varmap: &VarMap, name: &str) -> Vec<f32> {
    varmap.data().lock().unwrap()[name]
        .as_tensor()
        .to_vec1()
        .unwrap()
}

pub fn tensor(values: &[f32]) -> Tensor {
    Tensor::from_slice(values, values.len(), &Device::Cpu).unwrap()
}

/// One gradient per parameter, every one present.
pub fn grads(per_param: &[&[f32]]) -> Gradients {
    Gradients::from_vec(per_param.iter().map(|g| Some(tensor(g))).collect())
}

pub fn args(optim: &str, weight_decay: f64, optim_args: Option<&str>) -> TrainingArguments {
    let builder = TrainingArguments::builder()
        .optim(optim)
        .weight_decay(weight_decay)
        .adam_beta1(B1)
        .adam_beta2(B2)
        .adam_epsilon(EPS);
    match optim_args {
        Some(extra) => builder.optim_args(extra),
        None => builder,
    }
    .build()
    .unwrap()
}

pub fn build(args: &TrainingArguments, params: Parameters) -> Box<dyn Optimizer> {
    match optim::build(args, params) {
        Ok(optimizer) => optimizer,
        Err(e) => panic!("optimizer `{}` should build: {e}", args.optim),
    }
}

pub fn build_err(args: &TrainingArguments, params: Parameters) -> String {
    match optim::build(args, params) {
        Err(Error::Config(msg)) => msg,
        Err(other) => panic!("expected a Config error, got {other:?}"),
        Ok(_) => panic!(
            "expected `{}` with {:?} to fail",
            args.optim, args.optim_args
        ),
    }
}

/// Runs `steps` steps of `optim` on a single parameter `name` starting at `P0`
/// with the gradients `G`, and returns its final values.
pub fn run_single(name: &str, args: &TrainingArguments, steps: usize) -> Vec<f32> {
    let varmap = varmap_with(&[(name, &P0)]);
    let mut optimizer = build(args, Parameters::from_varmap(&varmap));
    for g in &G[..steps] {
        optimizer.step(&grads(&[g]), LR).unwrap();
    }
    values(&varmap, name)
}

pub fn assert_close(actual: &[f32], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (f64::from(*a) - e).abs() <= tol,
            "element {i}: got {a}, expected {e} (tolerance {tol}); all: {actual:?} vs {expected:?}"
        );
    }
}

pub fn p0() -> Vec<f64> {
    P0.iter().map(|&x| f64::from(x)).collect()
}

/// torch.optim.SGD on one coordinate.
pub fn sgd_reference(
    steps: usize,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    wd: f64,
) -> Vec<f64> {
    (0..4)
        .map(|j| {
            let mut p = f64::from(P0[j]);
            let mut buf: Option<f64> = None;
            for g in &G[..steps] {
                let mut d = f64::from(g[j]) + wd * p;
                if momentum != 0.0 {
                    let b = match buf {
                        None => d,
                        Some(b) => momentum * b + (1.0 - dampening) * d,
                    };
                    buf = Some(b);
                    d = if nesterov { d + momentum * b } else { b };
                }
                p -= LR * d;
            }
            p
        })
        .collect()
}
