//! Tests of `TrainingArguments`: HF defaults, the JSON, CLI and builder routes,
//! every kind of problem validation reports, HF's derived values and the JSON
//! round trip.

use serde_json::json;
use taper::args::{help_text, FieldKind, IntervalStrategy, FIELDS};
use taper::{Error, Result, TrainingArguments};

/// The problems of a result that must be `Error::InvalidArguments`.
fn problems(result: Result<TrainingArguments>) -> Vec<String> {
    match result {
        Err(Error::InvalidArguments(list)) => list,
        Err(other) => panic!("expected InvalidArguments, got {other:?}"),
        Ok(args) => panic!("expected problems, got valid arguments {args:?}"),
    }
}

/// The problems of a JSON config.
fn json_problems(value: serde_json::Value) -> Vec<String> {
    problems(TrainingArguments::from_json_value(value))
}

/// The problems of CLI pairs.
fn cli_problems(args: &[&str]) -> Vec<String> {
    problems(TrainingArguments::from_cli_args(args))
}

/// Asserts there is exactly one problem and it contains every fragment.
fn assert_single(list: &[String], fragments: &[&str]) {
    assert_eq!(list.len(), 1, "expected one problem, got {list:#?}");
    for fragment in fragments {
        assert!(
            list[0].contains(fragment),
            "`{}` lacks `{fragment}`",
            list[0]
        );
    }
}

/// Asserts that some problem contains every fragment.
fn assert_listed(list: &[String], fragments: &[&str]) {
    assert!(
        list.iter().any(|p| fragments.iter().all(|f| p.contains(f))),
        "no problem contains all of {fragments:?} in {list:#?}"
    );
}

fn cli(args: &[&str]) -> TrainingArguments {
    TrainingArguments::from_cli_args(args).unwrap()
}

fn from_json(value: serde_json::Value) -> TrainingArguments {
    TrainingArguments::from_json_value(value).unwrap()
}

#[test]
fn defaults_match_hugging_face() {
    let args = TrainingArguments::default();
    assert_eq!(args.output_dir, "trainer_output");
    assert_eq!(args.learning_rate, 5e-5);
    assert_eq!(args.per_device_train_batch_size, 8);
    assert_eq!(args.per_device_eval_batch_size, 8);
    assert_eq!(args.gradient_accumulation_steps, 1);
    assert_eq!(args.num_train_epochs, 3.0);
    assert_eq!(args.max_steps, -1);
    assert_eq!(args.lr_scheduler_type, "linear");
    assert_eq!(args.eval_strategy, IntervalStrategy::No);
    assert_eq!(args.logging_strategy, IntervalStrategy::Steps);
    assert_eq!(args.save_strategy, IntervalStrategy::Steps);
    assert_eq!((args.logging_steps, args.save_steps), (500.0, 500.0));
    assert_eq!(args.seed, 42);
    assert_eq!(args.optim, "adamw_hf");
    assert_eq!(args.max_grad_norm, 1.0);
    assert_eq!(
        (args.adam_beta1, args.adam_beta2, args.adam_epsilon),
        (0.9, 0.999, 1e-8)
    );
    assert_eq!(
        (args.weight_decay, args.warmup_ratio, args.warmup_steps),
        (0.0, 0.0, 0)
    );
    assert!(args.logging_nan_inf_filter && args.skip_memory_metrics);
    assert!(!args.disable_tqdm && !args.fp16 && !args.bf16 && !args.use_cpu);
    assert!(args.report_to.is_empty());
    assert_eq!(
        (args.log_level.as_str(), args.log_level_replica.as_str()),
        ("passive", "warning")
    );
    assert_eq!(args.save_total_limit, None);
    assert_eq!(args.eval_steps, None);
}

#[test]
fn defaults_validate_and_resolve_like_post_init() {
    let mut args = TrainingArguments::default();
    args.validate().unwrap();
    assert_eq!(args.run_name.as_deref(), Some("trainer_output"));
    assert!(!args.do_eval);
    assert_eq!(args.eval_steps, None);
    assert_eq!(args.metric_for_best_model, None);
    assert_eq!(args.greater_is_better, None);
    // An empty JSON object, no CLI pairs and a bare builder give the same.
    assert_eq!(from_json(json!({})), args);
    assert_eq!(cli(&[]), args);
    assert_eq!(TrainingArguments::builder().build().unwrap(), args);
}

#[test]
fn json_cli_and_builder_agree() {
    let from_json = from_json(json!({
        "output_dir": "runs/a",
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 16,
        "num_train_epochs": 2.5,
        "eval_strategy": "steps",
        "eval_steps": 50,
        "save_steps": 100,
        "load_best_model_at_end": true,
        "metric_for_best_model": "accuracy",
        "lr_scheduler_type": "cosine_with_restarts",
        "lr_scheduler_kwargs": {"num_cycles": 2},
        "optim": "sgd",
        "save_total_limit": 2,
        "bf16": true,
        "report_to": "none",
        "seed": 7
    }));
    let from_cli = cli(&[
        "--output_dir",
        "runs/a",
        "--learning_rate",
        "1e-3",
        "--per_device_train_batch_size=16",
        "--num_train_epochs",
        "2.5",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "50",
        "--save_steps",
        "100",
        "--load_best_model_at_end",
        "--metric_for_best_model",
        "accuracy",
        "--lr_scheduler_type",
        "cosine_with_restarts",
        "--lr_scheduler_kwargs",
        r#"{"num_cycles": 2}"#,
        "--optim",
        "sgd",
        "--save_total_limit",
        "2",
        "--bf16",
        "true",
        "--report_to",
        "none",
        "--seed",
        "7",
    ]);
    let from_builder = TrainingArguments::builder()
        .output_dir("runs/a")
        .learning_rate(1e-3)
        .per_device_train_batch_size(16)
        .num_train_epochs(2.5)
        .eval_strategy(IntervalStrategy::Steps)
        .eval_steps(50.0)
        .save_steps(100.0)
        .load_best_model_at_end(true)
        .metric_for_best_model("accuracy")
        .lr_scheduler_type("cosine_with_restarts")
        .lr_scheduler_kwarg("num_cycles", 2)
        .optim("sgd")
        .save_total_limit(2)
        .bf16(true)
        .report_to(["none"])
        .seed(7)
        .build()
        .unwrap();
    assert_eq!(from_json, from_cli);
    assert_eq!(from_json, from_builder);
    assert_eq!(from_json.learning_rate, 1e-3);
    assert_eq!(from_json.lr_scheduler_kwargs["num_cycles"], json!(2));
    assert_eq!(from_json.greater_is_better, Some(true));
    assert!(from_json.do_eval);
}

#[test]
fn booleans_as_bare_flags_or_values() {
    let args = cli(&[
        "--do_train",
        "--logging_first_step",
        "false",
        "--dataloader_drop_last=true",
    ]);
    assert!(args.do_train && !args.logging_first_step && args.dataloader_drop_last);
    // A bare flag before another flag, at the end, and HF's other spellings.
    let args = cli(&[
        "--skip_memory_metrics",
        "no",
        "--do_predict",
        "--overwrite_output_dir",
    ]);
    assert!(!args.skip_memory_metrics && args.do_predict && args.overwrite_output_dir);
    let args = cli(&[
        "--logging_nan_inf_filter=False",
        "--greater_is_better",
        "--use_cpu",
        "1",
    ]);
    assert!(!args.logging_nan_inf_filter && args.use_cpu);
    assert_eq!(args.greater_is_better, Some(true));
    // HF's tf32 is optional: unset by default, false when given as false.
    assert_eq!(args.tf32, None);
    assert_eq!(cli(&["--tf32", "false"]).tf32, Some(false));
}

#[test]
fn cli_optional_values_lists_and_json() {
    let args = cli(&[
        "--save_total_limit",
        "none",
        "--eval_steps=null",
        "--run_name",
        "None",
        "--data_seed",
        "3",
        "--report_to",
        "none",
        "all",
        "--lr_scheduler_kwargs={\"power\": 2.0, \"lr_end\": 1e-7}",
        "--max_steps",
        "-1",
        "--optim-args",
        "a=1,b=2",
    ]);
    assert_eq!(args.save_total_limit, None);
    assert_eq!(args.run_name.as_deref(), Some("trainer_output"));
    assert_eq!(args.data_seed, Some(3));
    assert!(args.report_to.is_empty());
    assert_eq!(args.lr_scheduler_kwargs["power"], json!(2.0));
    assert_eq!(args.optim_args.as_deref(), Some("a=1,b=2"));
    // JSON takes a JSON-text object and a single report_to string too.
    let args = from_json(json!({"lr_scheduler_kwargs": "{\"num_cycles\": 3}", "report_to": "all"}));
    assert_eq!(args.lr_scheduler_kwargs["num_cycles"], json!(3));
    assert!(args.report_to.is_empty());
}

#[test]
fn old_names_are_aliases() {
    let args = from_json(json!({"evaluation_strategy": "epoch", "no_cuda": true}));
    assert_eq!(args.eval_strategy, IntervalStrategy::Epoch);
    assert!(args.use_cpu);
    assert_eq!(cli(&["--evaluation_strategy", "epoch", "--no_cuda"]), args);
    let list = json_problems(json!({"evaluation_strategy": "epoch", "eval_strategy": "steps"}));
    assert_single(
        &list,
        &["`evaluation_strategy` is the old name of `eval_strategy`"],
    );
}

#[test]
fn unknown_key_suggests_the_closest() {
    let list = json_problems(json!({"learnig_rate": 1e-3}));
    assert_single(
        &list,
        &["unknown argument `learnig_rate`; did you mean `learning_rate`?"],
    );
    let list = cli_problems(&["--num_train_epoch", "3", "--seed", "1"]);
    assert_single(
        &list,
        &["unknown argument `num_train_epoch`; did you mean `num_train_epochs`?"],
    );
    let list = cli_problems(&["--evaluation_stratgy", "epoch"]);
    assert_single(&list, &["did you mean `eval_strategy`?"]);
    let list = json_problems(json!({"zzz": 1}));
    assert_single(&list, &["unknown argument `zzz`", "--help"]);
    let list = cli_problems(&["learning_rate", "1e-3"]);
    assert_listed(&list, &["unexpected `learning_rate`", "--key value"]);
}

#[test]
fn wrong_types_name_key_value_and_expected_type() {
    let list = json_problems(json!({"learning_rate": "fast"}));
    assert_single(&list, &["`learning_rate` expects a number, got `\"fast\"`"]);
    let list = cli_problems(&["--learning_rate", "fast"]);
    assert_single(&list, &["`learning_rate` expects a number, got `fast`"]);
    let list = cli_problems(&["--per_device_train_batch_size", "-4"]);
    assert_single(
        &list,
        &["`per_device_train_batch_size` expects a non-negative integer, got `-4`"],
    );
    let list = json_problems(json!({"max_steps": 2.5}));
    assert_single(&list, &["`max_steps` expects an integer, got `2.5`"]);
    let list = cli_problems(&["--fp16", "maybe"]);
    assert_single(
        &list,
        &["`fp16` expects a boolean (true or false), got `maybe`"],
    );
    let list = cli_problems(&["--eval_strategy", "step"]);
    assert_single(
        &list,
        &[
            "`eval_strategy` expects one of",
            "got `step`",
            "did you mean `steps`?",
        ],
    );
    let list = cli_problems(&["--lr_scheduler_kwargs", "num_cycles=2"]);
    assert_single(
        &list,
        &["`lr_scheduler_kwargs` expects a JSON object, got `num_cycles=2`"],
    );
    let list = cli_problems(&["--learning_rate", "inf"]);
    assert_single(&list, &["`learning_rate` expects a number, got `inf`"]);
    let list = json_problems(json!({"output_dir": null}));
    assert_single(&list, &["`output_dir` expects a string, got `null`"]);
    let list = cli_problems(&["--seed"]);
    assert_single(&list, &["`--seed` needs a value (a non-negative integer)"]);
    let list = json_problems(json!([1, 2]));
    assert_single(&list, &["must be a JSON object", "got `[1,2]`"]);
    // Integral floats are integers.
    assert_eq!(
        from_json(json!({"per_device_train_batch_size": 4.0})).per_device_train_batch_size,
        4
    );
}

#[test]
fn out_of_range_values() {
    let cases = [
        (json!({"per_device_train_batch_size": 0}), "`per_device_train_batch_size` must be at least 1, got 0"),
        (json!({"per_device_eval_batch_size": 0}), "`per_device_eval_batch_size` must be at least 1, got 0"),
        (json!({"gradient_accumulation_steps": 0}), "`gradient_accumulation_steps` must be at least 1, got 0"),
        (json!({"eval_accumulation_steps": 0}), "`eval_accumulation_steps` must be at least 1 when set"),
        (json!({"learning_rate": -0.1}), "`learning_rate` must be >= 0, got -0.1"),
        (json!({"weight_decay": -1.0}), "`weight_decay` must be >= 0, got -1"),
        (json!({"adam_beta1": 1.0}), "`adam_beta1` must be in [0, 1), got 1"),
        (json!({"adam_beta2": -0.5}), "`adam_beta2` must be in [0, 1), got -0.5"),
        (json!({"adam_epsilon": -1e-8}), "`adam_epsilon` must be >= 0"),
        (json!({"max_grad_norm": -1.0}), "`max_grad_norm` must be >= 0, got -1 (0 disables clipping)"),
        (json!({"num_train_epochs": -3.0}), "`num_train_epochs` must be >= 0, got -3"),
        (json!({"max_steps": -2}), "`max_steps` must be -1 (train for num_train_epochs)"),
        (json!({"warmup_ratio": 1.5}), "`warmup_ratio` must be in [0, 1], got 1.5"),
        (json!({"label_smoothing_factor": 1.0}), "`label_smoothing_factor` must be in [0, 1), got 1"),
        (json!({"eval_delay": -1.0}), "`eval_delay` must be >= 0, got -1"),
        (json!({"logging_steps": 0}), "`logging_steps` must be > 0 with logging_strategy `steps`, got 0"),
        (json!({"save_steps": -5}), "`save_steps` must be > 0 with save_strategy `steps`, got -5"),
        (json!({"save_steps": 2.5}), "`save_steps` must be an integer when > 1"),
        (json!({"eval_steps": 0}), "`eval_steps` must be > 0 when set, got 0"),
        (json!({"eval_steps": 10.5}), "`eval_steps` must be an integer when > 1"),
        (json!({"save_total_limit": 0}), "`save_total_limit` must be at least 1 when set, got 0"),
        (json!({"output_dir": ""}), "`output_dir` is empty"),
        (json!({"log_level": "verbose"}), "`log_level` `verbose` is not a log level; use one of: debug, info, warning, error, critical, passive"),
        (json!({"log_level_replica": "warn"}), "(did you mean `warning`?)"),
    ];
    for (config, fragment) in cases {
        let list = json_problems(config.clone());
        assert_eq!(list.len(), 1, "{config}: {list:#?}");
        assert!(
            list[0].contains(fragment),
            "{config}: `{}` lacks `{fragment}`",
            list[0]
        );
    }
    // Edge values that are fine: ratios below 1, zero where HF allows it.
    let args = from_json(json!({
        "logging_steps": 0.1, "save_steps": 0.25, "max_steps": 0, "warmup_ratio": 1.0,
        "learning_rate": 0.0, "max_grad_norm": 0.0, "logging_strategy": "epoch"
    }));
    assert_eq!(args.logging_steps, 0.1);
    let args = from_json(
        json!({"logging_strategy": "no", "logging_steps": 0, "save_strategy": "epoch", "save_steps": 0}),
    );
    assert_eq!(args.logging_steps, 0.0);
}

#[test]
fn unknown_optimizer_lists_names_and_suggests() {
    let list = json_problems(json!({"optim": "adamw_torhc"}));
    assert_single(
        &list,
        &[
            "`optim` `adamw_torhc` is not an optimizer taper supports",
            "adamw_hf, adamw_torch, adamw_torch_fused, adamw, sgd, lion_32bit, lion",
            "did you mean `adamw_torch`?",
        ],
    );
    let list = cli_problems(&["--optim", "adafactor"]);
    assert_single(
        &list,
        &[
            "`optim` `adafactor` is not an optimizer taper supports",
            "sgd",
        ],
    );
}

#[test]
fn unknown_scheduler_lists_names_and_suggests() {
    let list = cli_problems(&["--lr_scheduler_type", "cosin"]);
    assert_single(
        &list,
        &[
            "`lr_scheduler_type` `cosin` is not a scheduler taper supports",
            "linear, cosine, cosine_with_restarts",
            "warmup_stable_decay",
            "did you mean `cosine`?",
        ],
    );
}

#[test]
fn report_to_integrations_are_refused() {
    let list = cli_problems(&["--report_to", "wandb", "tensorboard"]);
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_listed(
        &list,
        &["report_to `wandb` is not supported by taper; use `none`"],
    );
    assert_listed(
        &list,
        &["report_to `tensorboard` is not supported by taper"],
    );
}

#[test]
fn load_best_model_needs_matching_strategies() {
    let list = json_problems(json!({"load_best_model_at_end": true, "eval_strategy": "epoch"}));
    assert_single(
        &list,
        &[
            "`load_best_model_at_end` needs eval_strategy and save_strategy to match",
            "`epoch`",
            "`steps`",
        ],
    );
    let list = json_problems(json!({"load_best_model_at_end": true, "save_strategy": "no"}));
    assert_single(
        &list,
        &[
            "`load_best_model_at_end` needs evaluations",
            "`eval_strategy` is `no`",
        ],
    );
    // save_strategy `best` works with any evaluating strategy.
    let args = from_json(
        json!({"load_best_model_at_end": true, "eval_strategy": "epoch", "save_strategy": "best"}),
    );
    assert_eq!(args.metric_for_best_model.as_deref(), Some("loss"));
    assert_eq!(args.greater_is_better, Some(false));
}

#[test]
fn load_best_model_needs_save_steps_multiple_of_eval_steps() {
    let config = json!({"load_best_model_at_end": true, "eval_strategy": "steps", "eval_steps": 30, "save_steps": 100});
    let list = json_problems(config);
    assert_single(
        &list,
        &[
            "round multiple of `eval_steps`",
            "save_steps 100 and eval_steps 30",
            "set save_steps to 120",
        ],
    );
    // eval_steps defaults to logging_steps for the check.
    let list = json_problems(
        json!({"load_best_model_at_end": true, "eval_strategy": "steps", "logging_steps": 300}),
    );
    assert_single(&list, &["save_steps 500 and eval_steps 300"]);
    let list = json_problems(
        json!({"load_best_model_at_end": true, "eval_strategy": "steps", "eval_steps": 0.1, "save_steps": 100}),
    );
    assert_single(
        &list,
        &["one is a ratio (< 1) and the other a number of steps"],
    );
    let list = json_problems(
        json!({"load_best_model_at_end": true, "eval_strategy": "steps", "eval_steps": 0.2, "save_steps": 0.3}),
    );
    assert_single(
        &list,
        &[
            "multiple of `eval_steps`",
            "save_steps 0.3 and eval_steps 0.2",
        ],
    );
    from_json(
        json!({"load_best_model_at_end": true, "eval_strategy": "steps", "eval_steps": 0.1, "save_steps": 0.3}),
    );
    from_json(
        json!({"load_best_model_at_end": true, "eval_strategy": "steps", "eval_steps": 50, "save_steps": 200}),
    );
}

#[test]
fn eval_steps_strategy_needs_steps() {
    let list = json_problems(
        json!({"eval_strategy": "steps", "logging_strategy": "epoch", "logging_steps": 0}),
    );
    assert_single(
        &list,
        &[
            "`eval_strategy` `steps` needs `eval_steps` or `logging_steps` > 0",
            "set `eval_steps`",
        ],
    );
}

#[test]
fn reduce_lr_on_plateau_needs_evaluation() {
    let list = json_problems(json!({"lr_scheduler_type": "reduce_lr_on_plateau"}));
    assert_single(
        &list,
        &[
            "`reduce_lr_on_plateau` needs evaluation metrics",
            "set eval_strategy to `steps` or `epoch`",
        ],
    );
    let args =
        from_json(json!({"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "epoch"}));
    assert_eq!(args.metric_for_best_model.as_deref(), Some("loss"));
}

#[test]
fn save_strategy_best_needs_evaluation_and_metric() {
    let list = json_problems(json!({"save_strategy": "best", "eval_strategy": "epoch"}));
    assert_single(
        &list,
        &["`save_strategy` `best` needs `metric_for_best_model`"],
    );
    let list = json_problems(json!({"save_strategy": "best", "metric_for_best_model": "accuracy"}));
    assert_single(
        &list,
        &[
            "`save_strategy` `best` needs evaluations",
            "`eval_strategy` is `no`",
        ],
    );
    let args = from_json(
        json!({"save_strategy": "best", "eval_strategy": "epoch", "metric_for_best_model": "eval_loss"}),
    );
    assert_eq!(args.greater_is_better, Some(false));
}

#[test]
fn best_is_only_a_save_strategy() {
    let list = json_problems(json!({"eval_strategy": "best", "logging_strategy": "best"}));
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_listed(
        &list,
        &["`eval_strategy` `best` is only valid for save_strategy"],
    );
    assert_listed(
        &list,
        &["`logging_strategy` `best` is only valid for save_strategy"],
    );
}

#[test]
fn mixed_precision_rules() {
    let list = cli_problems(&["--fp16", "--bf16"]);
    assert_single(
        &list,
        &["`fp16` and `bf16` are both true; choose at most one"],
    );
    let list = cli_problems(&["--fp16", "--use_cpu"]);
    assert_single(
        &list,
        &[
            "`fp16` needs a GPU but `use_cpu` is true",
            "use `bf16` on the CPU",
        ],
    );
    assert!(cli(&["--bf16", "--no_cuda"]).bf16);
}

#[test]
fn every_problem_is_reported_at_once() {
    let result = TrainingArguments::from_json_value(json!({
        "learnig_rate": 1e-3,
        "num_train_epochs": "three",
        "per_device_train_batch_size": 0,
        "optim": "adam",
        "lr_scheduler_type": "cosine_annealing",
        "fp16": true,
        "bf16": true,
        "load_best_model_at_end": true,
        "eval_strategy": "epoch",
        "report_to": ["wandb"],
    }));
    let message = result.as_ref().unwrap_err().to_string();
    let list = problems(result);
    assert_eq!(list.len(), 8, "{list:#?}");
    assert_listed(&list, &["did you mean `learning_rate`?"]);
    assert_listed(
        &list,
        &["`num_train_epochs` expects a number, got `\"three\"`"],
    );
    assert_listed(&list, &["`per_device_train_batch_size` must be at least 1"]);
    assert_listed(&list, &["`optim` `adam`"]);
    assert_listed(&list, &["`lr_scheduler_type` `cosine_annealing`"]);
    assert_listed(&list, &["`fp16` and `bf16`"]);
    assert_listed(
        &list,
        &["`load_best_model_at_end` needs eval_strategy and save_strategy to match"],
    );
    assert_listed(&list, &["report_to `wandb`"]);
    assert!(
        message.starts_with("invalid training arguments (8 problems):"),
        "{message}"
    );
    // CLI problems are collected the same way.
    let list = cli_problems(&[
        "--seed",
        "x",
        "--adam_beta1",
        "2",
        "--warmup_ratio=-1",
        "--bogus",
    ]);
    assert_eq!(list.len(), 4, "{list:#?}");
}

#[test]
fn a_value_that_did_not_parse_is_not_judged_by_its_default() {
    // The strategy is misspelt: no second problem about the default `no` strategy.
    let list = json_problems(json!({"eval_strategy": "epochs", "load_best_model_at_end": true}));
    assert_single(
        &list,
        &["`eval_strategy` expects one of", "did you mean `epoch`?"],
    );
}

#[test]
fn post_init_resolution() {
    let args = cli(&[
        "--eval_strategy",
        "steps",
        "--logging_steps",
        "20",
        "--output_dir",
        "out",
    ]);
    assert!(args.do_eval);
    assert_eq!(args.eval_steps, Some(20.0));
    assert_eq!(args.run_name.as_deref(), Some("out"));
    assert_eq!(args.metric_for_best_model, None);
    let args = cli(&[
        "--eval_strategy",
        "epoch",
        "--metric_for_best_model",
        "accuracy",
        "--run_name",
        "r1",
    ]);
    assert_eq!(args.greater_is_better, Some(true));
    assert_eq!(args.run_name.as_deref(), Some("r1"));
    assert_eq!(args.eval_steps, None);
    let args = cli(&[
        "--metric_for_best_model",
        "f1",
        "--greater_is_better",
        "false",
    ]);
    assert_eq!(args.greater_is_better, Some(false));
    // Validating again changes nothing.
    let mut again = args.clone();
    again.validate().unwrap();
    assert_eq!(again, args);
}

#[test]
fn builder_validates() {
    let list = problems(
        TrainingArguments::builder()
            .learning_rate(-1.0)
            .optim("adam")
            .build(),
    );
    assert_eq!(list.len(), 2, "{list:#?}");
    let args = TrainingArguments::builder()
        .eval_strategy(IntervalStrategy::Epoch)
        .save_strategy(IntervalStrategy::Epoch)
        .load_best_model_at_end(true)
        .build()
        .unwrap();
    assert_eq!(args.metric_for_best_model.as_deref(), Some("loss"));
    assert!(args.do_eval);
}

#[test]
fn json_round_trip() {
    let args = TrainingArguments::builder()
        .output_dir("runs/round")
        .learning_rate(3e-4)
        .eval_strategy(IntervalStrategy::Steps)
        .eval_steps(0.25)
        .save_strategy(IntervalStrategy::Best)
        .metric_for_best_model("eval_accuracy")
        .lr_scheduler_type("polynomial")
        .lr_scheduler_kwarg("power", 2.0)
        .save_total_limit(3)
        .data_seed(9)
        .max_steps(1000)
        .build()
        .unwrap();
    let text = args.to_json_string();
    assert!(
        text.starts_with("{\n  \"output_dir\": \"runs/round\",\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  \"eval_strategy\": \"steps\",\n"),
        "{text}"
    );
    assert_eq!(TrainingArguments::from_json_str(&text).unwrap(), args);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("training_args.json");
    args.to_json_file(&path).unwrap();
    assert_eq!(TrainingArguments::from_json_file(&path).unwrap(), args);
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let error = TrainingArguments::from_json_file(&missing).unwrap_err();
    assert!(matches!(error, Error::Io(_)), "{error:?}");
    assert!(error.to_string().contains("missing.json"), "{error}");
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"learning_rate\": }").unwrap();
    let error = TrainingArguments::from_json_file(&broken).unwrap_err();
    assert!(
        error.to_string().contains("broken.json is not valid JSON"),
        "{error}"
    );
    assert!(matches!(
        TrainingArguments::from_json_str("{"),
        Err(Error::Json(_))
    ));
}

#[test]
fn cli_overrides_a_json_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"learning_rate": 1e-4, "seed": 3, "eval_strategy": "steps"}"#,
    )
    .unwrap();
    let args = TrainingArguments::from_json_file_with_overrides(
        &path,
        ["--learning_rate", "1e-3", "--logging_steps", "10"],
    )
    .unwrap();
    assert_eq!((args.learning_rate, args.seed), (1e-3, 3));
    // Derived values come from the overridden ones.
    assert_eq!(args.eval_steps, Some(10.0));
    // Problems of both layers come together.
    let list = problems(TrainingArguments::from_json_value_with_overrides(
        json!({"seed": -1}),
        ["--learning_rate", "x"],
    ));
    assert_eq!(list.len(), 2, "{list:#?}");
}

#[test]
fn apply_cli_args_overrides_or_leaves_unchanged() {
    let mut args = from_json(json!({"learning_rate": 1e-4}));
    args.apply_cli_args(["--learning_rate", "2e-4", "--do_train"])
        .unwrap();
    assert_eq!(args.learning_rate, 2e-4);
    assert!(args.do_train);
    let before = args.clone();
    let list = problems(
        args.apply_cli_args(["--learning_rate", "-1"])
            .map(|_| before.clone()),
    );
    assert_single(&list, &["`learning_rate` must be >= 0"]);
    assert_eq!(args, before);
}

#[test]
fn fields_table_matches_the_struct() {
    let defaults = TrainingArguments::default().to_json_value();
    let keys: Vec<&String> = defaults.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), FIELDS.len());
    for field in FIELDS {
        assert!(
            defaults.get(field.name).is_some(),
            "{} is not a field",
            field.name
        );
        assert!(!field.help.is_empty());
        if field.kind.is_optional() {
            assert!(
                defaults[field.name].is_null(),
                "{} defaults to null",
                field.name
            );
        }
    }
    let kind = |name: &str| FIELDS.iter().find(|f| f.name == name).unwrap().kind;
    assert_eq!(kind("learning_rate"), FieldKind::Float);
    assert_eq!(kind("save_strategy"), FieldKind::Strategy);
    assert_eq!(kind("lr_scheduler_kwargs"), FieldKind::JsonMap);
}

#[test]
fn help_lists_every_argument_with_type_and_default() {
    let help = help_text();
    for field in FIELDS {
        assert!(
            help.contains(&format!("--{} <", field.name)),
            "{} missing",
            field.name
        );
    }
    assert!(
        help.contains("--learning_rate <float>  [default: 5e-5]"),
        "{help}"
    );
    assert!(
        help.contains("--optim <str>  [default: adamw_hf]"),
        "{help}"
    );
    assert!(
        help.contains("--save_total_limit <uint|none>  [default: none]"),
        "{help}"
    );
    assert!(
        help.contains("--evaluation_strategy (= --eval_strategy)"),
        "{help}"
    );
}
