//! Building an optimizer by name (`optim::build`): the families, Adam's
//! hyper-parameters from the arguments and `optim_args`, and the errors for
//! malformed `optim_args` and unknown names.

use taper::optim::{self, Parameters};
use taper::{Error, TrainingArguments};

mod optim_common;
use optim_common::*;

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
