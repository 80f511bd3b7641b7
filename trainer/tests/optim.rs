//! Tests of taper's optimizers against their formulas written out by hand
//! (PyTorch's AdamW, SGD and Lion, transformers' AdamW), the weight-decay
//! groups, exact resume from a saved state, `optim::build` with `optim_args`,
//! and gradient accumulation, norm and clipping.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use taper::optim::{self, is_no_decay, Gradients, Optimizer, OptimizerState, Parameters};
use taper::{Error, TrainingArguments};

const LR: f64 = 1e-2;
const WD: f64 = 0.1;
const B1: f64 = 0.9;
const B2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// The initial values of the one parameter the formula tests use.
const P0: [f32; 4] = [0.5, -1.0, 1.5, -0.25];

/// Its gradients at steps 1, 2, 3 (and 4 for the resume tests); no zeros, so
/// every sign is defined.
const G: [[f32; 4]; 4] = [
    [0.1, -0.2, 0.3, -0.4],
    [-0.05, 0.4, 0.2, 0.1],
    [0.3, 0.1, -0.6, 0.25],
    [-0.2, -0.3, 0.15, 0.05],
];

/// A `VarMap` holding one variable per entry.
fn varmap_with(entries: &[(&str, &[f32])]) -> VarMap {
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
fn values(varmap: &VarMap, name: &str) -> Vec<f32> {
    varmap.data().lock().unwrap()[name]
        .as_tensor()
        .to_vec1()
        .unwrap()
}

fn tensor(values: &[f32]) -> Tensor {
    Tensor::from_slice(values, values.len(), &Device::Cpu).unwrap()
}

/// One gradient per parameter, every one present.
fn grads(per_param: &[&[f32]]) -> Gradients {
    Gradients::from_vec(per_param.iter().map(|g| Some(tensor(g))).collect())
}

fn args(optim: &str, weight_decay: f64, optim_args: Option<&str>) -> TrainingArguments {
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

fn build(args: &TrainingArguments, params: Parameters) -> Box<dyn Optimizer> {
    match optim::build(args, params) {
        Ok(optimizer) => optimizer,
        Err(e) => panic!("optimizer `{}` should build: {e}", args.optim),
    }
}

fn build_err(args: &TrainingArguments, params: Parameters) -> String {
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
fn run_single(name: &str, args: &TrainingArguments, steps: usize) -> Vec<f32> {
    let varmap = varmap_with(&[(name, &P0)]);
    let mut optimizer = build(args, Parameters::from_varmap(&varmap));
    for g in &G[..steps] {
        optimizer.step(&grads(&[g]), LR).unwrap();
    }
    values(&varmap, name)
}

fn assert_close(actual: &[f32], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (f64::from(*a) - e).abs() <= tol,
            "element {i}: got {a}, expected {e} (tolerance {tol}); all: {actual:?} vs {expected:?}"
        );
    }
}

fn p0() -> Vec<f64> {
    P0.iter().map(|&x| f64::from(x)).collect()
}

/// PyTorch's `torch.optim.AdamW` on one coordinate, for `steps` steps.
fn adamw_torch_reference(steps: usize, lr: f64, wd: f64) -> Vec<f64> {
    (0..4)
        .map(|j| {
            let (mut p, mut m, mut v) = (f64::from(P0[j]), 0.0, 0.0);
            for (t, g) in G[..steps].iter().enumerate() {
                let g = f64::from(g[j]);
                let t = (t + 1) as i32;
                p *= 1.0 - lr * wd;
                m = B1 * m + (1.0 - B1) * g;
                v = B2 * v + (1.0 - B2) * g * g;
                let (bc1, bc2) = (1.0 - B1.powi(t), 1.0 - B2.powi(t));
                p -= lr / bc1 * m / (v.sqrt() / bc2.sqrt() + EPS);
            }
            p
        })
        .collect()
}

/// transformers' `AdamW` (`adamw_hf`) on one coordinate, for `steps` steps.
fn adamw_hf_reference(steps: usize, lr: f64, wd: f64) -> Vec<f64> {
    (0..4)
        .map(|j| {
            let (mut p, mut m, mut v) = (f64::from(P0[j]), 0.0, 0.0);
            for (t, g) in G[..steps].iter().enumerate() {
                let g = f64::from(g[j]);
                let t = (t + 1) as i32;
                m = B1 * m + (1.0 - B1) * g;
                v = B2 * v + (1.0 - B2) * g * g;
                let (bc1, bc2) = (1.0 - B1.powi(t), 1.0 - B2.powi(t));
                let step_size = lr * bc2.sqrt() / bc1;
                p -= step_size * m / (v.sqrt() + EPS);
                p -= lr * wd * p;
            }
            p
        })
        .collect()
}

#[test]
fn adamw_torch_matches_pytorch_formula() {
    let actual = run_single("fc.weight", &args("adamw_torch", WD, None), 3);
    assert_close(&actual, &adamw_torch_reference(3, LR, WD), 1e-6);
}

#[test]
fn adamw_torch_aliases_use_the_pytorch_formula() {
    let expected = adamw_torch_reference(3, LR, WD);
    for name in ["adamw", "adamw_torch_fused"] {
        let actual = run_single("fc.weight", &args(name, WD, None), 3);
        assert_close(&actual, &expected, 1e-6);
    }
}

#[test]
fn adamw_hf_matches_transformers_formula() {
    let actual = run_single("fc.weight", &args("adamw_hf", WD, None), 3);
    assert_close(&actual, &adamw_hf_reference(3, LR, WD), 1e-6);
}

#[test]
fn adamw_flavours_differ_with_weight_decay() {
    // A large learning rate and decay make the difference (lr^2 * wd * update
    // per step) far above f32 resolution.
    let (lr, wd) = (0.1, 0.5);
    let run = |optim: &str| {
        let varmap = varmap_with(&[("fc.weight", &P0)]);
        let mut optimizer = build(&args(optim, wd, None), Parameters::from_varmap(&varmap));
        for g in &G[..3] {
            optimizer.step(&grads(&[g]), lr).unwrap();
        }
        values(&varmap, "fc.weight")
    };
    let torch = run("adamw_torch");
    let hf = run("adamw_hf");
    assert_close(&torch, &adamw_torch_reference(3, lr, wd), 1e-5);
    assert_close(&hf, &adamw_hf_reference(3, lr, wd), 1e-5);
    let max_diff = torch
        .iter()
        .zip(&hf)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff > 1e-4,
        "adamw_torch {torch:?} and adamw_hf {hf:?} should differ with weight decay"
    );
}

#[test]
fn adamw_flavours_agree_without_weight_decay() {
    // Without decay only the placement of eps differs, which is invisible here.
    let torch = run_single("fc.weight", &args("adamw_torch", 0.0, None), 3);
    let hf = run_single("fc.weight", &args("adamw_hf", 0.0, None), 3);
    let expected = adamw_torch_reference(3, LR, 0.0);
    assert_close(&torch, &expected, 1e-6);
    assert_close(&hf, &expected, 1e-6);
}

#[test]
fn no_decay_rule_follows_hugging_face() {
    for name in [
        "fc.bias",
        "ln_1.weight",
        "h.0.ln_2.bias",
        "norm.weight",
        "h.3.layer_norm.weight",
        "LayerNorm.weight",
        "ln_f.weight",
    ] {
        assert!(is_no_decay(name), "`{name}` should get no weight decay");
    }
    for name in [
        "fc.weight",
        "wte.weight",
        "h.0.attn.c_attn.weight",
        "lm_head.weight",
    ] {
        assert!(!is_no_decay(name), "`{name}` should get weight decay");
    }
}

#[test]
fn parameters_are_sorted_by_name_with_decay_flags() {
    let varmap = varmap_with(&[
        ("wte.weight", &[1.0]),
        ("fc.weight", &[1.0]),
        ("h.0.ln_2.bias", &[1.0]),
        ("norm.weight", &[1.0]),
        ("fc.bias", &[1.0]),
        ("ln_1.weight", &[1.0]),
    ]);
    let params = Parameters::from_varmap(&varmap);
    assert_eq!(params.len(), 6);
    assert!(!params.is_empty());
    let listed: Vec<(&str, bool)> = params.iter().map(|p| (p.name.as_str(), p.decay)).collect();
    assert_eq!(
        listed,
        vec![
            ("fc.bias", false),
            ("fc.weight", true),
            ("h.0.ln_2.bias", false),
            ("ln_1.weight", false),
            ("norm.weight", false),
            ("wte.weight", true),
        ]
    );
}

#[test]
fn no_decay_parameters_are_not_decayed_by_adamw() {
    // The same values and gradients under a decayed and an exempt name.
    let varmap = varmap_with(&[("fc.bias", &P0), ("fc.weight", &P0)]);
    let mut optimizer = build(
        &args("adamw_torch", WD, None),
        Parameters::from_varmap(&varmap),
    );
    for g in &G[..3] {
        optimizer.step(&grads(&[g, g]), LR).unwrap();
    }
    assert_close(
        &values(&varmap, "fc.bias"),
        &adamw_torch_reference(3, LR, 0.0),
        1e-6,
    );
    assert_close(
        &values(&varmap, "fc.weight"),
        &adamw_torch_reference(3, LR, WD),
        1e-6,
    );
}

#[test]
fn parameters_without_gradient_are_left_alone() {
    let varmap = varmap_with(&[("a.weight", &P0), ("b.weight", &P0)]);
    let mut optimizer = build(
        &args("adamw_torch", WD, None),
        Parameters::from_varmap(&varmap),
    );
    let g = Gradients::from_vec(vec![None, Some(tensor(&G[0]))]);
    optimizer.step(&g, LR).unwrap();
    assert_eq!(values(&varmap, "a.weight"), P0.to_vec());
    assert_close(
        &values(&varmap, "b.weight"),
        &adamw_torch_reference(1, LR, WD),
        1e-6,
    );
    // No buffer exists for the parameter that never had a gradient.
    let state = optimizer.state();
    let keys: Vec<&str> = state.tensors.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["exp_avg.b.weight", "exp_avg_sq.b.weight"]);
}

/// torch.optim.SGD on one coordinate.
fn sgd_reference(steps: usize, momentum: f64, dampening: f64, nesterov: bool, wd: f64) -> Vec<f64> {
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

#[test]
fn sgd_plain() {
    let actual = run_single("fc.weight", &args("sgd", 0.0, None), 3);
    assert_close(&actual, &sgd_reference(3, 0.0, 0.0, false, 0.0), 1e-6);
    // Plain SGD is p - lr * sum(g).
    let by_hand: Vec<f64> = (0..4)
        .map(|j| p0()[j] - LR * G[..3].iter().map(|g| f64::from(g[j])).sum::<f64>())
        .collect();
    assert_close(&actual, &by_hand, 1e-6);
}

#[test]
fn sgd_momentum_starts_from_the_first_gradient() {
    let a = args("sgd", 0.0, Some("momentum=0.9"));
    // After one step the buffer is g itself (torch), not (1 - dampening) g.
    let one = run_single("fc.weight", &a, 1);
    let expected: Vec<f64> = (0..4).map(|j| p0()[j] - LR * f64::from(G[0][j])).collect();
    assert_close(&one, &expected, 1e-6);
    let three = run_single("fc.weight", &a, 3);
    assert_close(&three, &sgd_reference(3, 0.9, 0.0, false, 0.0), 1e-6);
}

#[test]
fn sgd_momentum_with_dampening() {
    let a = args("sgd", 0.0, Some("momentum=0.9,dampening=0.5"));
    let actual = run_single("fc.weight", &a, 3);
    assert_close(&actual, &sgd_reference(3, 0.9, 0.5, false, 0.0), 1e-6);
    // Dampening changes the result (the buffer of step 2 onwards).
    let undamped = sgd_reference(3, 0.9, 0.0, false, 0.0);
    assert!(actual
        .iter()
        .zip(&undamped)
        .any(|(a, u)| (f64::from(*a) - u).abs() > 1e-4));
}

#[test]
fn sgd_nesterov() {
    let a = args("sgd", 0.0, Some("momentum=0.9,nesterov=true"));
    let actual = run_single("fc.weight", &a, 3);
    assert_close(&actual, &sgd_reference(3, 0.9, 0.0, true, 0.0), 1e-6);
    let classic = sgd_reference(3, 0.9, 0.0, false, 0.0);
    assert!(actual
        .iter()
        .zip(&classic)
        .any(|(a, c)| (f64::from(*a) - c).abs() > 1e-4));
}

#[test]
fn sgd_weight_decay_is_coupled_l2() {
    let a = args("sgd", WD, Some("momentum=0.9,nesterov=true"));
    let actual = run_single("fc.weight", &a, 3);
    assert_close(&actual, &sgd_reference(3, 0.9, 0.0, true, WD), 1e-6);
    // One plain step: p - lr * (g + wd * p).
    let plain = run_single("fc.weight", &args("sgd", WD, None), 1);
    let expected: Vec<f64> = (0..4)
        .map(|j| p0()[j] - LR * (f64::from(G[0][j]) + WD * p0()[j]))
        .collect();
    assert_close(&plain, &expected, 1e-6);
    // Biases take no decay.
    let bias = run_single("fc.bias", &a, 3);
    assert_close(&bias, &sgd_reference(3, 0.9, 0.0, true, 0.0), 1e-6);
}

#[test]
fn sgd_nesterov_needs_momentum_and_no_dampening() {
    let params = || Parameters::from_varmap(&varmap_with(&[("fc.weight", &P0)]));
    let msg = build_err(&args("sgd", 0.0, Some("nesterov=true")), params());
    assert!(
        msg.contains("nesterov") && msg.contains("momentum"),
        "{msg}"
    );
    let msg = build_err(
        &args("sgd", 0.0, Some("momentum=0.9,dampening=0.1,nesterov=true")),
        params(),
    );
    assert!(msg.contains("dampening"), "{msg}");
}

/// Lion on one coordinate.
fn lion_reference(steps: usize, b1: f64, b2: f64, wd: f64) -> Vec<f64> {
    (0..4)
        .map(|j| {
            let (mut p, mut m) = (f64::from(P0[j]), 0.0);
            for g in &G[..steps] {
                let g = f64::from(g[j]);
                let c = b1 * m + (1.0 - b1) * g;
                p = p * (1.0 - LR * wd) - LR * c.signum();
                m = b2 * m + (1.0 - b2) * g;
            }
            p
        })
        .collect()
}

#[test]
fn lion_matches_its_formula() {
    let actual = run_single("fc.weight", &args("lion", WD, None), 3);
    assert_close(&actual, &lion_reference(3, 0.9, 0.99, WD), 1e-6);
    let same = run_single("fc.weight", &args("lion_32bit", WD, None), 3);
    assert_eq!(actual, same);
}

#[test]
fn lion_betas_from_optim_args() {
    // beta1 = 0.99 makes the momentum dominate at step 3 for the coordinates
    // whose gradient changed sign, so the result differs from the defaults.
    let a = args("lion", WD, Some("beta1=0.99,beta2=0.5"));
    let actual = run_single("fc.weight", &a, 3);
    let expected = lion_reference(3, 0.99, 0.5, WD);
    assert_close(&actual, &expected, 1e-6);
    assert_ne!(expected, lion_reference(3, 0.9, 0.99, WD));
}

/// Every optimizer configuration the resume test covers.
fn resume_cases() -> Vec<TrainingArguments> {
    vec![
        args("adamw_torch", WD, None),
        args("adamw_hf", WD, None),
        args("sgd", WD, Some("momentum=0.9")),
        args("sgd", WD, Some("momentum=0.9,dampening=0.3")),
        args("sgd", WD, Some("momentum=0.8,nesterov=true")),
        args("lion", WD, Some("beta1=0.95,beta2=0.5")),
    ]
}

/// Two parameters (one decayed, one not) with distinct gradients per step.
fn resume_varmap() -> VarMap {
    varmap_with(&[("fc.bias", &[0.1, -0.2]), ("fc.weight", &P0)])
}

fn resume_grads(step: usize) -> Gradients {
    let g = G[step];
    grads(&[&[g[1], g[3]], &g])
}

fn snapshot(varmap: &VarMap) -> Vec<Vec<u32>> {
    ["fc.bias", "fc.weight"]
        .iter()
        .map(|name| values(varmap, name).iter().map(|x| x.to_bits()).collect())
        .collect()
}

#[test]
fn state_resumes_every_optimizer_exactly() {
    for a in resume_cases() {
        let label = format!("{} {:?}", a.optim, a.optim_args);
        // A: four uninterrupted steps.
        let varmap_a = resume_varmap();
        let mut opt_a = build(&a, Parameters::from_varmap(&varmap_a));
        for step in 0..4 {
            opt_a.step(&resume_grads(step), LR).unwrap();
        }
        // B: two steps, then its state goes to C, a new optimizer over B's variables.
        let varmap_b = resume_varmap();
        let mut opt_b = build(&a, Parameters::from_varmap(&varmap_b));
        for step in 0..2 {
            opt_b.step(&resume_grads(step), LR).unwrap();
        }
        let state = opt_b.state();
        assert_eq!(state.scalars["step"], 2, "{label}");
        drop(opt_b);
        let mut opt_c = build(&a, Parameters::from_varmap(&varmap_b));
        opt_c.load_state(&state).unwrap();
        for step in 2..4 {
            opt_c.step(&resume_grads(step), LR).unwrap();
        }
        assert_eq!(snapshot(&varmap_a), snapshot(&varmap_b), "{label}");
        assert_eq!(opt_c.state().scalars["step"], 4, "{label}");

        // Without the state, the continuation is different: the state matters.
        let varmap_d = resume_varmap();
        let mut opt_d = build(&a, Parameters::from_varmap(&varmap_d));
        for step in 0..2 {
            opt_d.step(&resume_grads(step), LR).unwrap();
        }
        let mut opt_e = build(&a, Parameters::from_varmap(&varmap_d));
        for step in 2..4 {
            opt_e.step(&resume_grads(step), LR).unwrap();
        }
        assert_ne!(snapshot(&varmap_a), snapshot(&varmap_d), "{label}");
    }
}

#[test]
fn state_names_buffers_by_parameter() {
    let expect = [
        (
            args("adamw_torch", WD, None),
            vec![
                "exp_avg.fc.bias",
                "exp_avg.fc.weight",
                "exp_avg_sq.fc.bias",
                "exp_avg_sq.fc.weight",
            ],
        ),
        (
            args("sgd", WD, Some("momentum=0.9")),
            vec!["momentum_buffer.fc.bias", "momentum_buffer.fc.weight"],
        ),
        (args("sgd", WD, None), vec![]),
        (
            args("lion", WD, None),
            vec!["exp_avg.fc.bias", "exp_avg.fc.weight"],
        ),
    ];
    for (a, keys) in expect {
        let varmap = resume_varmap();
        let mut optimizer = build(&a, Parameters::from_varmap(&varmap));
        assert!(optimizer.state().tensors.is_empty());
        assert_eq!(optimizer.state().scalars["step"], 0);
        optimizer.step(&resume_grads(0), LR).unwrap();
        let state = optimizer.state();
        let names: Vec<&str> = state.tensors.keys().map(String::as_str).collect();
        assert_eq!(names, keys, "{} {:?}", a.optim, a.optim_args);
        assert_eq!(state.scalars["step"], 1);
    }
    // Adam's first moment after one step is (1 - beta1) g.
    let varmap = resume_varmap();
    let mut optimizer = build(
        &args("adamw_torch", WD, None),
        Parameters::from_varmap(&varmap),
    );
    optimizer.step(&resume_grads(0), LR).unwrap();
    let m: Vec<f32> = optimizer.state().tensors["exp_avg.fc.weight"]
        .to_vec1()
        .unwrap();
    let expected: Vec<f64> = G[0].iter().map(|g| (1.0 - B1) * f64::from(*g)).collect();
    assert_close(&m, &expected, 1e-7);
}

#[test]
fn load_state_rejects_a_different_model_or_a_missing_step() {
    let a = args("adamw_torch", WD, None);
    let varmap = resume_varmap();
    let mut optimizer = build(&a, Parameters::from_varmap(&varmap));
    optimizer.step(&resume_grads(0), LR).unwrap();
    let mut state = optimizer.state();

    // Same names, other shapes.
    let other = varmap_with(&[("fc.bias", &[0.0; 3]), ("fc.weight", &P0)]);
    let mut wrong = build(&a, Parameters::from_varmap(&other));
    match wrong.load_state(&state) {
        Err(Error::Usage(msg)) => {
            assert!(msg.contains("exp_avg.fc.bias"), "{msg}");
            assert!(msg.contains("different model"), "{msg}");
        }
        Err(other) => panic!("expected a Usage error, got {other:?}"),
        Ok(()) => panic!("a state of another shape should not load"),
    }

    state.scalars.remove("step");
    let mut fresh = build(&a, Parameters::from_varmap(&resume_varmap()));
    match fresh.load_state(&state) {
        Err(Error::Usage(msg)) => assert!(msg.contains("step"), "{msg}"),
        Err(other) => panic!("expected a Usage error, got {other:?}"),
        Ok(()) => panic!("a state without a step counter should not load"),
    }
    // An empty state is no state either.
    assert!(fresh.load_state(&OptimizerState::default()).is_err());
}

#[test]
fn build_selects_the_optimizer_by_name() {
    // One step from P0 with G[0], no decay: each family moves differently.
    let step_of = |optim: &str| run_single("fc.weight", &args(optim, 0.0, None), 1);
    // SGD: p - lr g.
    let sgd: Vec<f64> = (0..4).map(|j| p0()[j] - LR * f64::from(G[0][j])).collect();
    assert_close(&step_of("sgd"), &sgd, 1e-6);
    // Lion and Adam's first step: p - lr sign(g) (Adam up to eps).
    let sign: Vec<f64> = (0..4)
        .map(|j| p0()[j] - LR * f64::from(G[0][j]).signum())
        .collect();
    assert_close(&step_of("lion"), &sign, 1e-6);
    assert_close(&step_of("adamw_torch"), &sign, 1e-6);
    assert_close(&step_of("adamw_hf"), &sign, 1e-6);
    // The state tells the families apart.
    let kinds = [
        ("adamw_torch", 2),
        ("adamw_hf", 2),
        ("adamw", 2),
        ("lion", 1),
        ("sgd", 0),
    ];
    for (name, buffers) in kinds {
        let varmap = varmap_with(&[("fc.weight", &P0)]);
        let mut optimizer = build(&args(name, 0.0, None), Parameters::from_varmap(&varmap));
        optimizer.step(&grads(&[&G[0]]), LR).unwrap();
        assert_eq!(optimizer.state().tensors.len(), buffers, "{name}");
    }
}

#[test]
fn build_reads_adam_hyper_parameters_from_arguments_and_optim_args() {
    // optim_args override adam_beta1/adam_beta2/adam_epsilon.
    let base = args("adamw_torch", 0.0, Some("beta1=0.5,beta2=0.9,eps=0.1"));
    let actual = run_single("fc.weight", &base, 2);
    let expected: Vec<f64> = (0..4)
        .map(|j| {
            let (b1, b2, eps) = (0.5f64, 0.9f64, 0.1f64);
            let (mut p, mut m, mut v) = (p0()[j], 0.0, 0.0);
            for (t, g) in G[..2].iter().enumerate() {
                let g = f64::from(g[j]);
                let t = (t + 1) as i32;
                m = b1 * m + (1.0 - b1) * g;
                v = b2 * v + (1.0 - b2) * g * g;
                let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                p -= LR / bc1 * m / (v.sqrt() / bc2.sqrt() + eps);
            }
            p
        })
        .collect();
    assert_close(&actual, &expected, 1e-6);
}

#[test]
fn optim_args_parse_with_spaces() {
    let a = args("sgd", 0.0, Some(" momentum = 0.9 , nesterov = true "));
    let actual = run_single("fc.weight", &a, 3);
    assert_close(&actual, &sgd_reference(3, 0.9, 0.0, true, 0.0), 1e-6);
}

#[test]
fn optim_args_unknown_key_lists_accepted_keys() {
    let params = || Parameters::from_varmap(&varmap_with(&[("fc.weight", &P0)]));
    let msg = build_err(&args("sgd", 0.0, Some("momentum=0.9,betas=0.5")), params());
    assert!(msg.contains("betas"), "{msg}");
    assert!(msg.contains("`sgd`"), "{msg}");
    assert!(
        msg.contains("momentum, dampening, nesterov"),
        "accepted keys missing: {msg}"
    );
    let msg = build_err(&args("adamw_torch", 0.0, Some("momentum=0.9")), params());
    assert!(msg.contains("momentum"), "{msg}");
    assert!(
        msg.contains("beta1, beta2, eps"),
        "accepted keys missing: {msg}"
    );
    let msg = build_err(&args("lion", 0.0, Some("eps=1e-8")), params());
    assert!(msg.contains("beta1, beta2"), "accepted keys missing: {msg}");
}

#[test]
fn optim_args_malformed_items_are_errors() {
    let params = || Parameters::from_varmap(&varmap_with(&[("fc.weight", &P0)]));
    let msg = build_err(&args("sgd", 0.0, Some("momentum")), params());
    assert!(
        msg.contains("`momentum`") && msg.contains("key=value"),
        "{msg}"
    );
    let msg = build_err(&args("sgd", 0.0, Some("momentum=fast")), params());
    assert!(
        msg.contains("fast") && msg.contains("not a number"),
        "{msg}"
    );
    let msg = build_err(
        &args("sgd", 0.0, Some("momentum=0.9,nesterov=yes")),
        params(),
    );
    assert!(msg.contains("true or false"), "{msg}");
}

#[test]
fn unknown_optimizer_names_are_rejected() {
    // Validation stops the name before it reaches `optim::build`...
    let result = TrainingArguments::builder().optim("adafactor9").build();
    match result {
        Err(Error::InvalidArguments(problems)) => {
            assert!(
                problems.iter().any(|p| p.contains("adafactor9")),
                "{problems:?}"
            );
        }
        other => panic!("expected InvalidArguments, got {other:?}"),
    }
    // ...and `build` itself rejects an unvalidated one, listing the names.
    let mut a = args("sgd", 0.0, None);
    a.optim = "adafactor9".into();
    let msg = build_err(&a, Parameters::from_varmap(&varmap_with(&[("w", &P0)])));
    assert!(msg.contains("adafactor9"), "{msg}");
    for name in ["adamw_hf", "adamw_torch", "sgd", "lion"] {
        assert!(msg.contains(name), "`{name}` missing from {msg}");
    }
    assert_eq!(
        optim::optimizer_kind("adamw"),
        optim::optimizer_kind("adamw_torch")
    );
    assert!(optim::optimizer_kind("adafactor9").is_none());
}

fn grad_values(g: &Gradients) -> Vec<Option<Vec<f32>>> {
    g.iter()
        .map(|t| t.map(|t| t.to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn gradients_accumulate_by_summing() {
    let mut total = Gradients::default();
    total
        .accumulate(Gradients::from_vec(vec![
            Some(tensor(&[1.0, 2.0])),
            None,
            Some(tensor(&[0.5])),
        ]))
        .unwrap();
    total
        .accumulate(Gradients::from_vec(vec![
            Some(tensor(&[0.25, -4.0])),
            Some(tensor(&[3.0, 3.0, 3.0])),
            None,
        ]))
        .unwrap();
    total
        .accumulate(Gradients::from_vec(vec![
            Some(tensor(&[1.0, 1.0])),
            Some(tensor(&[1.0, 2.0, 3.0])),
            None,
        ]))
        .unwrap();
    assert_eq!(
        grad_values(&total),
        vec![
            Some(vec![2.25, -1.0]),
            Some(vec![4.0, 5.0, 6.0]),
            Some(vec![0.5]),
        ]
    );
    assert!(total.get(3).is_none());
}

#[test]
fn gradients_global_norm_is_the_l2_norm_of_everything() {
    let g = Gradients::from_vec(vec![
        Some(tensor(&[3.0, 0.0])),
        None,
        Some(tensor(&[4.0, 12.0])),
    ]);
    assert!((g.global_norm().unwrap() - 13.0).abs() < 1e-6);
    assert_eq!(Gradients::default().global_norm().unwrap(), 0.0);
    let none = Gradients::from_vec(vec![None, None]);
    assert_eq!(none.global_norm().unwrap(), 0.0);
}

#[test]
fn clip_global_norm_scales_down_large_gradients_only() {
    let make = || {
        Gradients::from_vec(vec![
            Some(tensor(&[3.0, 0.0])),
            None,
            Some(tensor(&[4.0, 12.0])),
        ])
    };
    // Larger than the limit: scaled to the limit, direction kept.
    let mut g = make();
    let before = g.clip_global_norm(1.0).unwrap();
    assert!((before - 13.0).abs() < 1e-6);
    let after = g.global_norm().unwrap();
    assert!((after - 1.0).abs() <= 1e-5, "norm after clipping: {after}");
    let values = grad_values(&g);
    assert!(values[1].is_none());
    let scaled: Vec<f32> = values[0]
        .iter()
        .chain(values[2].iter())
        .flatten()
        .copied()
        .collect();
    let expected: Vec<f64> = [3.0, 0.0, 4.0, 12.0].iter().map(|x| x / 13.0).collect();
    assert_close(&scaled, &expected, 1e-6);

    // Smaller than the limit: untouched.
    let mut g = make();
    let before = g.clip_global_norm(20.0).unwrap();
    assert!((before - 13.0).abs() < 1e-6);
    assert_eq!(grad_values(&g), grad_values(&make()));
}

#[test]
fn gradients_scale() {
    let mut g = Gradients::from_vec(vec![Some(tensor(&[1.0, -2.0])), None]);
    g.scale(0.25).unwrap();
    assert_eq!(grad_values(&g), vec![Some(vec![0.25, -0.5]), None]);
}

#[test]
fn lion_zero_direction_only_decays() {
    // sign(0) = 0 (torch.sign): a zero gradient on a fresh momentum moves the
    // parameter by the decay alone.
    let varmap = varmap_with(&[("fc.weight", &P0)]);
    let mut optimizer = build(&args("lion", WD, None), Parameters::from_varmap(&varmap));
    optimizer.step(&grads(&[&[0.0; 4]]), LR).unwrap();
    let expected: Vec<f64> = p0().iter().map(|p| p * (1.0 - LR * WD)).collect();
    assert_close(&values(&varmap, "fc.weight"), &expected, 1e-7);
}
