//! Learning-rate schedules against values worked out by hand from the formulas
//! of transformers' `optimization.py` and torch's `ReduceLROnPlateau`.
//!
//! Unless a test says otherwise: base_lr = 1e-3, 10 warmup steps, 100 training steps.

use serde_json::{json, Map, Value};
use taper::schedule::{warmup_steps, LrScheduler, SchedulerType};
use taper::Error;

const BASE: f64 = 1e-3;
const W: usize = 10;
const T: usize = 100;

fn kwargs(value: Value) -> Map<String, Value> {
    value.as_object().expect("kwargs are an object").clone()
}

fn build(kind: SchedulerType, kw: Value) -> LrScheduler {
    LrScheduler::new(kind, BASE, W, T, &kwargs(kw)).expect("valid scheduler")
}

fn build_err(kind: SchedulerType, kw: Value) -> String {
    match LrScheduler::new(kind, BASE, W, T, &kwargs(kw)) {
        Err(Error::Config(msg)) => msg,
        Err(other) => panic!("expected a Config error, got {other:?}"),
        Ok(_) => panic!("expected a Config error for {kind}"),
    }
}

/// The learning rate after `step` calls of `step()`.
fn lr_at(s: &LrScheduler, step: usize) -> f64 {
    let mut s = s.clone();
    for _ in 0..step {
        s.step();
    }
    assert_eq!(s.current_step(), step);
    s.lr()
}

fn close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-12,
        "got {actual:e}, expected {expected:e}"
    );
}

/// Checks (step, expected lr) pairs.
fn check(s: &LrScheduler, expected: &[(usize, f64)]) {
    for &(step, lr) in expected {
        let actual = lr_at(s, step);
        assert!(
            (actual - lr).abs() < 1e-12,
            "{} at step {step}: got {actual:e}, expected {lr:e}",
            s.kind()
        );
    }
}

#[test]
fn constant() {
    let s = build(SchedulerType::Constant, json!({}));
    check(&s, &[(0, 1e-3), (5, 1e-3), (55, 1e-3), (100, 1e-3)]);
}

#[test]
fn constant_with_warmup() {
    let s = build(SchedulerType::ConstantWithWarmup, json!({}));
    // warmup: 1e-3 * step / 10.
    check(
        &s,
        &[(0, 0.0), (1, 1e-4), (5, 5e-4), (55, 1e-3), (100, 1e-3)],
    );
}

#[test]
fn linear() {
    let s = build(SchedulerType::Linear, json!({}));
    // decay: 1e-3 * (100 - step) / 90; step 55 -> 45/90 = 0.5; step 100 -> 0.
    check(
        &s,
        &[(0, 0.0), (5, 5e-4), (10, 1e-3), (55, 5e-4), (100, 0.0)],
    );
    // Past the end it stays at 0 (HF's max(0, ...)).
    check(&s, &[(130, 0.0)]);
}

#[test]
fn cosine() {
    let s = build(SchedulerType::Cosine, json!({}));
    // progress = (step - 10) / 90. Step 40: 1/3 -> 0.5 * (1 + cos(pi/3)) = 0.75.
    // Step 55: 1/2 -> 0.5 * (1 + cos(pi/2)) = 0.5. Step 100: 1 -> 0.5 * (1 + cos(pi)) = 0.
    check(&s, &[(5, 5e-4), (40, 7.5e-4), (55, 5e-4), (100, 0.0)]);
    // A full wave (num_cycles = 1): step 55 is at the trough, step 100 back at the top.
    let s = build(SchedulerType::Cosine, json!({ "num_cycles": 1.0 }));
    check(&s, &[(5, 5e-4), (55, 0.0), (100, 1e-3)]);
}

#[test]
fn cosine_with_restarts() {
    let s = build(
        SchedulerType::CosineWithRestarts,
        json!({ "num_cycles": 2 }),
    );
    // progress = (step - 10) / 90; factor = 0.5 * (1 + cos(pi * ((2 * progress) % 1))).
    // Step 28: progress 0.2 -> 0.4 -> 0.5 * (1 + cos(0.4 pi)), cos(0.4 pi) = (sqrt(5) - 1) / 4.
    let at_28 = 0.5 * (1.0 + (5f64.sqrt() - 1.0) / 4.0) * 1e-3;
    // Step 55: progress 0.5 -> 1.0 % 1 = 0 -> a restart at the full rate.
    // Step 100: progress 1 -> 0.
    check(&s, &[(5, 5e-4), (28, at_28), (55, 1e-3), (100, 0.0)]);
    // Default: one cycle, i.e. plain cosine. Step 55 -> 0.5.
    let s = build(SchedulerType::CosineWithRestarts, json!({}));
    check(&s, &[(55, 5e-4), (100, 0.0)]);
}

#[test]
fn polynomial() {
    let s = build(
        SchedulerType::Polynomial,
        json!({ "lr_end": 1e-5, "power": 2.0 }),
    );
    // Step 55: remaining = 1 - 45/90 = 0.5 -> (1e-3 - 1e-5) * 0.25 + 1e-5 = 2.575e-4.
    // Step 100: remaining 0 -> lr_end. Past the end: lr_end.
    check(&s, &[(5, 5e-4), (55, 2.575e-4), (100, 1e-5), (150, 1e-5)]);
    // Defaults: lr_end = 1e-7, power = 1. Step 55: 0.99999e-3 * 0.5 + 1e-7.
    let s = build(SchedulerType::Polynomial, json!({}));
    check(&s, &[(55, 5.0005e-4), (100, 1e-7)]);
    // HF refuses lr_end >= the learning rate.
    let msg = build_err(SchedulerType::Polynomial, json!({ "lr_end": 1e-3 }));
    assert!(msg.contains("lr_end"), "{msg}");
}

#[test]
fn inverse_sqrt() {
    // timescale defaults to the warmup steps (10): step 40 -> 1/sqrt(40/10) = 0.5;
    // step 100 -> 1/sqrt(10).
    let s = build(SchedulerType::InverseSqrt, json!({}));
    check(
        &s,
        &[
            (5, 5e-4),
            (10, 1e-3),
            (40, 5e-4),
            (100, 1e-3 / 10f64.sqrt()),
        ],
    );
    // An explicit timescale of 20: shift = 10; step 70 -> 1/sqrt(80/20) = 0.5.
    let s = build(SchedulerType::InverseSqrt, json!({ "timescale": 20 }));
    check(&s, &[(5, 5e-4), (70, 5e-4)]);
    // No warmup: timescale 10_000; step 30_000 -> 1/sqrt(40_000/10_000) = 0.5.
    let s = LrScheduler::new(SchedulerType::InverseSqrt, BASE, 0, T, &Map::new()).unwrap();
    check(&s, &[(0, 1e-3), (30_000, 5e-4)]);
}

#[test]
fn cosine_with_min_lr() {
    // min_lr 1e-4 -> rate 0.1; factor * 0.9 + 0.1.
    // Step 55: 0.5 -> 0.55; step 100: 0 -> 0.1.
    let s = build(SchedulerType::CosineWithMinLr, json!({ "min_lr": 1e-4 }));
    check(&s, &[(5, 5e-4), (55, 5.5e-4), (100, 1e-4)]);
    // min_lr_rate 0.2: step 55 -> 0.5 * 0.8 + 0.2 = 0.6; step 100 -> 0.2.
    let s = build(
        SchedulerType::CosineWithMinLr,
        json!({ "min_lr_rate": 0.2 }),
    );
    check(&s, &[(5, 5e-4), (55, 6e-4), (100, 2e-4)]);
    // Exactly one of the two.
    let both = json!({ "min_lr": 1e-4, "min_lr_rate": 0.1 });
    assert!(build_err(SchedulerType::CosineWithMinLr, both).contains("min_lr_rate"));
    assert!(build_err(SchedulerType::CosineWithMinLr, json!({})).contains("min_lr"));
    // null counts as not given (Python's None).
    let s = build(
        SchedulerType::CosineWithMinLr,
        json!({ "min_lr": null, "min_lr_rate": 0.2 }),
    );
    check(&s, &[(100, 2e-4)]);
}

#[test]
fn warmup_stable_decay_defaults() {
    // 30 decay steps -> 60 stable steps: stable [10, 70), decay [70, 100).
    let s = build(
        SchedulerType::WarmupStableDecay,
        json!({ "num_decay_steps": 30 }),
    );
    // Linear warmup; cosine decay: step 85 -> progress 0.5 -> 0.5 * (1 + cos(pi/2)) = 0.5.
    check(
        &s,
        &[(5, 5e-4), (10, 1e-3), (69, 1e-3), (85, 5e-4), (100, 0.0)],
    );
}

#[test]
fn warmup_stable_decay_shapes() {
    let kw = json!({
        "num_decay_steps": 30, "min_lr_ratio": 0.1,
        "warmup_type": "cosine", "decay_type": "linear",
    });
    let s = build(SchedulerType::WarmupStableDecay, kw);
    // Step 5: cosine warmup 0.5 * (1 - cos(pi/2)) = 0.5 -> 0.5 * 0.9 + 0.1 = 0.55.
    // Step 0 starts at min_lr_ratio. Step 85: linear decay 1 - 0.5 -> 0.55. End: 0.1.
    check(
        &s,
        &[
            (0, 1e-4),
            (5, 5.5e-4),
            (50, 1e-3),
            (85, 5.5e-4),
            (100, 1e-4),
        ],
    );

    let kw = json!({ "num_decay_steps": 30, "warmup_type": "1-sqrt", "decay_type": "1-sqrt" });
    let s = build(SchedulerType::WarmupStableDecay, kw);
    // Both at progress 0.5: 1 - sqrt(0.5).
    let half = (1.0 - 0.5f64.sqrt()) * 1e-3;
    check(&s, &[(5, half), (85, half), (100, 0.0)]);

    // Explicit stable phase of 20: decay [30, 60); step 45 at its middle; then min ratio.
    let kw = json!({ "num_decay_steps": 30, "num_stable_steps": 20, "decay_type": "linear" });
    let s = build(SchedulerType::WarmupStableDecay, kw);
    check(&s, &[(29, 1e-3), (45, 5e-4), (60, 0.0), (100, 0.0)]);
}

#[test]
fn warmup_stable_decay_errors() {
    let msg = build_err(SchedulerType::WarmupStableDecay, json!({}));
    assert!(msg.contains("num_decay_steps"), "{msg}");
    assert!(msg.contains("warmup_stable_decay"), "{msg}");
    let msg = build_err(
        SchedulerType::WarmupStableDecay,
        json!({ "num_decay_steps": 95 }),
    );
    assert!(msg.contains("num_decay_steps"), "{msg}");
    let kw = json!({ "num_decay_steps": 30, "decay_type": "exponential" });
    let msg = build_err(SchedulerType::WarmupStableDecay, kw);
    assert!(
        msg.contains("decay_type") && msg.contains("1-sqrt"),
        "{msg}"
    );
}

fn plateau(kw: Value) -> LrScheduler {
    build(SchedulerType::ReduceLrOnPlateau, kw)
}

#[test]
fn plateau_reduces_after_patience() {
    let mut s = plateau(json!({ "patience": 2, "factor": 0.5 }));
    // No warmup, and step() leaves the rate alone.
    for _ in 0..50 {
        s.step();
    }
    close(s.lr(), 1e-3);
    s.step_metric(1.0); // best
    s.step_metric(1.0); // bad 1
    s.step_metric(1.0); // bad 2
    close(s.lr(), 1e-3);
    s.step_metric(1.0); // bad 3 > patience: reduce
    close(s.lr(), 5e-4);
    assert_eq!(s.current_step(), 4);
    // An improvement resets the count; an improvement smaller than the relative
    // threshold (1e-4 of the best) does not count.
    s.step_metric(0.5); // best
    s.step_metric(0.49999); // not below 0.5 * (1 - 1e-4) = 0.49995: bad 1
    s.step_metric(0.49999); // bad 2
    close(s.lr(), 5e-4);
    s.step_metric(0.49999); // bad 3: reduce
    close(s.lr(), 2.5e-4);
}

#[test]
fn plateau_defaults_min_lr_and_eps() {
    // Default patience 10, factor 0.1: the 12th flat metric reduces.
    let mut s = plateau(json!({}));
    for _ in 0..11 {
        s.step_metric(3.0);
    }
    close(s.lr(), 1e-3);
    s.step_metric(3.0);
    close(s.lr(), 1e-4);

    // min_lr floors the rate.
    let mut s = plateau(json!({ "patience": 0, "factor": 0.1, "min_lr": 5e-4 }));
    s.step_metric(1.0);
    s.step_metric(1.0);
    close(s.lr(), 5e-4);
    s.step_metric(1.0);
    close(s.lr(), 5e-4);

    // A reduction smaller than eps is not applied.
    let mut s = plateau(json!({ "patience": 0, "eps": 1e-3 }));
    s.step_metric(1.0);
    s.step_metric(1.0); // 1e-3 - 1e-4 = 9e-4 < eps
    close(s.lr(), 1e-3);
}

#[test]
fn plateau_cooldown() {
    let mut s = plateau(json!({ "patience": 2, "factor": 0.5, "cooldown": 2 }));
    let mut reduced_at = vec![];
    let mut last = s.lr();
    for call in 1..=12 {
        s.step_metric(1.0);
        if s.lr() != last {
            reduced_at.push(call);
            last = s.lr();
        }
    }
    // First at call 4; then 2 cooldown calls where bad epochs are not counted,
    // then 3 bad ones: call 9.
    assert_eq!(reduced_at, vec![4, 9]);
    close(s.lr(), 2.5e-4);
}

#[test]
fn plateau_mode_max_and_abs_threshold() {
    let mut s =
        plateau(json!({ "mode": "max", "patience": 1, "threshold_mode": "abs", "threshold": 0.1 }));
    for metric in [0.5, 0.7, 0.9] {
        s.step_metric(metric); // each beats best + 0.1
    }
    close(s.lr(), 1e-3);
    s.step_metric(0.95); // bad 1 (not above 1.0)
    s.step_metric(0.2); // bad 2: reduce
    close(s.lr(), 1e-4);

    let msg = build_err(
        SchedulerType::ReduceLrOnPlateau,
        json!({ "mode": "maximum" }),
    );
    assert!(msg.contains("mode") && msg.contains("`max`"), "{msg}");
    let msg = build_err(SchedulerType::ReduceLrOnPlateau, json!({ "factor": 1.0 }));
    assert!(msg.contains("factor"), "{msg}");
}

#[test]
fn step_metric_is_ignored_by_lambda_schedules() {
    let mut s = build(SchedulerType::Linear, json!({}));
    s.step();
    s.step_metric(1.0);
    s.step_metric(1.0);
    assert_eq!(s.current_step(), 1);
    close(s.lr(), 1e-4);
}

/// Runs `original` and a copy restored from its JSON (through a string, as a
/// checkpoint would) side by side and requires identical learning rates.
fn assert_resumes(mut original: LrScheduler, fresh: LrScheduler, metrics: &[f64]) {
    let text = serde_json::to_string(&original.state()).unwrap();
    let mut restored = fresh;
    restored
        .load_state(&serde_json::from_str(&text).unwrap())
        .unwrap();
    assert_eq!(restored.current_step(), original.current_step());
    for (i, &m) in metrics.iter().enumerate() {
        assert_eq!(restored.lr().to_bits(), original.lr().to_bits(), "call {i}");
        original.step();
        restored.step();
        original.step_metric(m);
        restored.step_metric(m);
    }
    assert_eq!(restored.state(), original.state());
}

#[test]
fn state_round_trip_lambda() {
    let kw = json!({ "num_cycles": 0.7 });
    // serde_json's default parser does not read this one back exactly: the state must not
    // store it as a JSON number.
    let base = 0.0009856906946328695;
    let make = || LrScheduler::new(SchedulerType::Cosine, base, W, T, &kwargs(kw.clone())).unwrap();
    let mut s = make();
    for _ in 0..37 {
        s.step();
    }
    assert_eq!(s.state()["current_step"], json!(37));
    assert_resumes(s, make(), &[0.0; 80]);
}

#[test]
fn state_round_trip_plateau() {
    let kw = json!({ "patience": 1, "factor": 0.7, "cooldown": 1 });
    let make = || {
        LrScheduler::new(
            SchedulerType::ReduceLrOnPlateau,
            3e-4,
            0,
            T,
            &kwargs(kw.clone()),
        )
        .unwrap()
    };
    let mut s = make();
    for m in [2.0, 1.9, 1.9, 1.95, 1.9, 1.9, 1.9] {
        s.step_metric(m);
    }
    assert!(s.lr() < 3e-4);
    let metrics: Vec<f64> = (0..40).map(|i| 1.0 + (i % 5) as f64 * 0.01).collect();
    assert_resumes(s, make(), &metrics);
}

#[test]
fn state_of_another_type_is_rejected() {
    let s = build(SchedulerType::Cosine, json!({}));
    let mut other = build(SchedulerType::Linear, json!({}));
    match other.load_state(&s.state()) {
        Err(Error::Config(msg)) => {
            assert!(msg.contains("cosine") && msg.contains("linear"), "{msg}")
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
    assert_eq!(other.current_step(), 0);
}

#[test]
fn names_parse() {
    for (name, kind) in SchedulerType::NAMES.iter().zip(SchedulerType::ALL) {
        assert_eq!(name.parse::<SchedulerType>().unwrap(), kind);
        assert_eq!(kind.name(), *name);
        assert_eq!(kind.to_string(), *name);
        assert_eq!(SchedulerType::from_name(name), Some(kind));
    }
}

#[test]
fn unknown_name_suggests_and_lists() {
    let supported = "supported: linear, cosine, cosine_with_restarts, polynomial, constant, \
                     constant_with_warmup, inverse_sqrt, reduce_lr_on_plateau, \
                     cosine_with_min_lr, warmup_stable_decay";
    let err = "cosinus".parse::<SchedulerType>().unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    assert_eq!(
        err.to_string(),
        format!("unknown lr_scheduler_type `cosinus`; did you mean `cosine`? {supported}")
    );
    let msg = "Constant_With_Warmup"
        .parse::<SchedulerType>()
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("did you mean `constant_with_warmup`?"),
        "{msg}"
    );
    let msg = "plateau".parse::<SchedulerType>().unwrap_err().to_string();
    assert!(
        msg.contains("did you mean `reduce_lr_on_plateau`?"),
        "{msg}"
    );
    // Nothing close: no suggestion, just the list.
    let msg = "adam".parse::<SchedulerType>().unwrap_err().to_string();
    assert_eq!(
        msg,
        format!("unknown lr_scheduler_type `adam`; {supported}")
    );
}

#[test]
fn unknown_or_mistyped_kwargs() {
    let msg = build_err(SchedulerType::Linear, json!({ "num_cycles": 2 }));
    assert!(
        msg.contains("`num_cycles`")
            && msg.contains("`linear`")
            && msg.contains("accepted keys: none"),
        "{msg}"
    );
    let msg = build_err(SchedulerType::Cosine, json!({ "num_cycle": 2 }));
    assert!(
        msg.contains("`num_cycle`")
            && msg.contains("`cosine`")
            && msg.contains("accepted keys: num_cycles"),
        "{msg}"
    );
    let msg = build_err(SchedulerType::Cosine, json!({ "num_cycles": "half" }));
    assert!(
        msg.contains("`num_cycles`") && msg.contains("number"),
        "{msg}"
    );
    let msg = build_err(
        SchedulerType::CosineWithRestarts,
        json!({ "num_cycles": 1.5 }),
    );
    assert!(msg.contains("integer"), "{msg}");
    let msg = build_err(SchedulerType::ReduceLrOnPlateau, json!({ "patience": -1 }));
    assert!(
        msg.contains("`patience`") && msg.contains("reduce_lr_on_plateau"),
        "{msg}"
    );
}

#[test]
fn warmup_steps_from_ratio() {
    assert_eq!(warmup_steps(5, 0.5, 100), 5);
    assert_eq!(warmup_steps(0, 0.1, 100), 10);
    assert_eq!(warmup_steps(0, 0.05, 90), 5); // ceil(4.5)
    assert_eq!(warmup_steps(0, 0.0, 100), 0);
}

#[test]
fn first_steps_follow_lambda_lr() {
    // The first optimizer step runs at lambda(0) = 0; after one step() the
    // logged rate is lambda(1) * base_lr.
    let mut s = build(SchedulerType::Linear, json!({}));
    close(s.lr(), 0.0);
    s.step();
    close(s.lr(), 1e-4);
}
