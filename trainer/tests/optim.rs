//! Tests of taper's optimizers against their formulas written out by hand
//! (PyTorch's AdamW, SGD and Lion, transformers' AdamW), the weight-decay
//! groups and exact resume from a saved state. Building an optimizer by name
//! with `optim_args`: `optim_building.rs`; gradient accumulation, norm and
//! clipping: `gradients.rs`.

use candle_nn::VarMap;
use taper::optim::{is_no_decay, Gradients, OptimizerState, Parameters};
use taper::{Error, TrainingArguments};

mod optim_common;
use optim_common::*;

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
fn lion_zero_direction_only_decays() {
    // sign(0) = 0 (torch.sign): a zero gradient on a fresh momentum moves the
    // parameter by the decay alone.
    let varmap = varmap_with(&[("fc.weight", &P0)]);
    let mut optimizer = build(&args("lion", WD, None), Parameters::from_varmap(&varmap));
    optimizer.step(&grads(&[&[0.0; 4]]), LR).unwrap();
    let expected: Vec<f64> = p0().iter().map(|p| p * (1.0 - LR * WD)).collect();
    assert_close(&values(&varmap, "fc.weight"), &expected, 1e-7);
}
