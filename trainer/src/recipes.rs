//! Built-in recipes: a model, a data set and argument defaults that train
//! well together. `taper train` runs them; tests and benchmarks use them.
//!
//! A recipe's defaults replace a few of HF's (a from-scratch MLP wants a
//! larger learning rate than HF's fine-tuning default of 5e-5); a config
//! file and `--key value` pairs override both.

use serde_json::json;

use crate::args::TrainingArguments;
use crate::data::VecDataset;
use crate::datasets::{load_tabular, SequenceTask, SequenceTaskConfig, TABULAR_DATASETS};
use crate::error::{Error, Result};
use crate::metrics::{accuracy, argmax_logits, format_metrics_block, save_metrics, Metrics};
use crate::models::{Gpt, GptConfig, Mlp, MlpConfig};
use crate::trainer::Trainer;

/// The built-in models, with the data sets each trains on (the first is its default).
pub const MODELS: &[(&str, &str, &[&str])] = &[
    (
        "mlp",
        "a multi-layer perceptron classifier (2 hidden layers of 64)",
        &["winequality", "iris"],
    ),
    (
        "gpt",
        "a small decoder-only transformer (2 layers, d 64, 4 heads)",
        &["reverse", "copy", "modular_addition"],
    ),
    (
        REFERENCE_GPT,
        "the GPU benchmarks' GPT (6 layers, d 768, 12 heads, vocab 8192, 512 tokens; 55M \
         parameters): for GPUs",
        &["copy", "reverse"],
    ),
];

/// The model name of the GPU benchmarks' GPT ([`GptConfig::reference`]) as
/// a recipe: the multi-GPU runs (`tests/gpu/multi_gpu.sh`) train it through
/// `taper train`, so that they measure the command a user runs. Its data is
/// a copy or reverse task of 256 symbols, so that a sample fills the
/// reference's 512 positions and every sample has as many labelled tokens
/// (the mean loss over N ranks is then the mean over their whole batch, as
/// on one GPU). The symbols are drawn from [`REFERENCE_SYMBOLS`], not from
/// the whole vocabulary of 8192: the loss then falls from ln 8192 (9.0) to
/// ln 512 (6.2) in the first hundred steps, a curve whose shape a
/// comparison of runs can check; over 8191 symbols it stays near 9.0 for
/// hundreds of steps until the model learns to copy.
pub const REFERENCE_GPT: &str = "gpt-reference";

/// How many symbols the reference GPT's copy or reverse task draws from.
pub const REFERENCE_SYMBOLS: u32 = 512;

/// The model of the default recipe.
pub const DEFAULT_MODEL: &str = "mlp";

/// A recipe: which model on which data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// `mlp` or `gpt`.
    pub model: String,
    /// A data set the model trains on.
    pub dataset: String,
}

impl Recipe {
    /// The recipe for `model` (default `mlp`) and `dataset` (default: the model's first).
    pub fn new(model: Option<&str>, dataset: Option<&str>) -> Result<Self> {
        let model = model.unwrap_or(DEFAULT_MODEL);
        let (_, _, datasets) = MODELS
            .iter()
            .find(|(name, _, _)| *name == model)
            .ok_or_else(|| {
                let names: Vec<&str> = MODELS.iter().map(|(n, _, _)| *n).collect();
                Error::Config(format!(
                    "unknown model `{model}`; built-in models: {}",
                    names.join(", ")
                ))
            })?;
        let dataset = dataset.unwrap_or(datasets[0]);
        if !datasets.contains(&dataset) {
            return Err(Error::Config(format!(
                "model `{model}` does not train on `{dataset}`; its data sets: {}",
                datasets.join(", ")
            )));
        }
        Ok(Self {
            model: model.to_string(),
            dataset: dataset.to_string(),
        })
    }

    /// Argument defaults of this recipe, as a JSON object of TrainingArguments keys.
    pub fn defaults(&self) -> serde_json::Value {
        let output_dir = format!("taper_output/{}-{}", self.model, self.dataset);
        match self.model.as_str() {
            "mlp" => json!({
                "output_dir": output_dir,
                "learning_rate": 3e-3,
                "weight_decay": 0.01,
                "num_train_epochs": 30.0,
                "per_device_train_batch_size": 32,
                "per_device_eval_batch_size": 256,
                "warmup_ratio": 0.05,
                "logging_steps": 100,
                "eval_strategy": "epoch",
            }),
            REFERENCE_GPT => json!({
                "output_dir": output_dir,
                "learning_rate": 3e-4,
                "weight_decay": 0.01,
                "max_steps": 200,
                "per_device_train_batch_size": 16,
                "per_device_eval_batch_size": 16,
                "warmup_steps": 20,
                "lr_scheduler_type": "cosine",
                "logging_steps": 10,
                "eval_strategy": "no",
            }),
            _ => json!({
                "output_dir": output_dir,
                "learning_rate": 3e-3,
                "weight_decay": 0.01,
                "max_steps": 600,
                "per_device_train_batch_size": 32,
                "per_device_eval_batch_size": 256,
                "warmup_steps": 30,
                "lr_scheduler_type": "cosine",
                "logging_steps": 50,
                "eval_strategy": "steps",
                "eval_steps": 200,
            }),
        }
    }

    /// Builds the arguments: recipe defaults, then `config` (a JSON file's
    /// object), then `--key value` pairs.
    pub fn arguments(
        &self,
        config: Option<serde_json::Value>,
        cli: &[String],
    ) -> Result<TrainingArguments> {
        let mut merged = self.defaults();
        if let Some(serde_json::Value::Object(file)) = config {
            merged
                .as_object_mut()
                .expect("defaults are an object")
                .extend(file);
        } else if config.is_some() {
            return Err(Error::Config(
                "a config file must hold a JSON object of TrainingArguments".into(),
            ));
        }
        TrainingArguments::from_json_value_with_overrides(merged, cli)
    }

    /// Trains and evaluates on the device [`crate::device::select`] picks
    /// (a GPU with the `cuda` feature, unless `use_cpu`): prints progress and
    /// the metric blocks, writes the model and `*_results.json` to
    /// `output_dir`; returns the train and eval metrics.
    pub fn run(&self, args: TrainingArguments) -> Result<(Metrics, Metrics)> {
        let device = crate::device::select(&args)?;
        let output_dir = std::path::PathBuf::from(&args.output_dir);
        let seed = args.seed;
        let (train, eval) = self.data(seed)?;
        let (train_metrics, eval_metrics) = match self.model.as_str() {
            "mlp" => {
                let (num_features, num_classes) = feature_shape(&train)?;
                let config = MlpConfig {
                    input_dim: num_features,
                    hidden: vec![64, 64],
                    num_classes,
                };
                run_trainer(
                    Trainer::new(args, Mlp::new(&config, seed, &device)?)?,
                    train,
                    eval,
                )?
            }
            _ => {
                let config = self.gpt_config(seed)?;
                run_trainer(
                    Trainer::new(args, Gpt::new(&config, seed, &device)?)?,
                    train,
                    eval,
                )?
            }
        };
        if crate::dist::process_group()?.0.rank == 0 {
            print!("{}", format_metrics_block("train", &train_metrics));
            print!("{}", format_metrics_block("eval", &eval_metrics));
            println!("model and metrics written to {}", output_dir.display());
        }
        Ok((train_metrics, eval_metrics))
    }

    /// The recipe's train and evaluation data.
    pub fn data(&self, seed: u64) -> Result<(VecDataset, VecDataset)> {
        if TABULAR_DATASETS.iter().any(|(n, _)| *n == self.dataset) {
            let data = load_tabular(&self.dataset, 0.2, seed)?;
            return Ok((data.train, data.test));
        }
        Ok((
            self.sequence_task(seed, 4000)?.generate()?,
            self.sequence_task(seed + 1, 500)?.generate()?,
        ))
    }

    /// The GPT the recipe trains: the reference shape, or a small one sized
    /// to its task.
    fn gpt_config(&self, seed: u64) -> Result<GptConfig> {
        if self.model == REFERENCE_GPT {
            return Ok(GptConfig::reference());
        }
        let task = self.sequence_task(seed, 0)?;
        Ok(GptConfig {
            vocab_size: task.vocab_size(),
            max_seq_len: task.seq_len(),
            n_layer: 2,
            n_head: 4,
            d_model: 64,
        })
    }

    fn sequence_task(&self, seed: u64, num_samples: usize) -> Result<SequenceTaskConfig> {
        let task = SequenceTask::from_name(&self.dataset)
            .ok_or_else(|| Error::Config(format!("`{}` is not a sequence task", self.dataset)))?;
        // The reference GPT's task fills its positions.
        let reference = self.model == REFERENCE_GPT;
        Ok(SequenceTaskConfig {
            task,
            num_symbols: match task {
                _ if reference => REFERENCE_SYMBOLS,
                SequenceTask::ModularAddition => 13,
                _ => 10,
            },
            length: if reference {
                GptConfig::reference().max_seq_len / 2
            } else {
                6
            },
            num_samples,
            seed,
        })
    }
}

fn feature_shape(train: &VecDataset) -> Result<(usize, usize)> {
    use crate::data::Field;
    let mut features = 0;
    let mut classes = 0;
    for sample in train.samples() {
        if let Field::F32(v) = &sample.input {
            features = v.len();
        }
        if let Some(Field::Class(c)) = sample.label {
            classes = classes.max(c as usize + 1);
        }
    }
    Ok((features, classes))
}

fn run_trainer<M: crate::model::AnyModel>(
    trainer: Trainer<M>,
    train: VecDataset,
    eval: VecDataset,
) -> Result<(Metrics, Metrics)> {
    let mut trainer = trainer
        .with_train_dataset(train)
        .with_eval_dataset(eval)
        .with_compute_metrics(accuracy)
        // Keep the predicted ids, not the logits (8 GB for the reference GPT).
        .with_preprocess_logits_for_metrics(argmax_logits);
    let output = trainer.train()?;
    let eval_metrics = trainer.evaluate()?;
    if trainer.is_world_process_zero() {
        let dir = std::path::PathBuf::from(&trainer.args().output_dir);
        trainer.save_model(None)?;
        trainer.save_state(&dir)?;
        save_metrics(&dir, "train", &output.metrics)?;
        save_metrics(&dir, "eval", &eval_metrics)?;
    }
    Ok((output.metrics, eval_metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Field;

    #[test]
    fn the_reference_recipe_fills_the_reference_gpt() {
        let recipe = Recipe::new(Some(REFERENCE_GPT), None).unwrap();
        assert_eq!(recipe.dataset, "copy");
        let shape = GptConfig::reference();
        let task = recipe.sequence_task(7, 3).unwrap();
        assert!(task.vocab_size() <= shape.vocab_size);
        assert_eq!(task.seq_len(), shape.max_seq_len);
        for sample in task.generate().unwrap().samples() {
            let Field::U32(tokens) = &sample.input else {
                panic!("token ids expected, got {:?}", sample.input)
            };
            assert_eq!(tokens.len(), shape.max_seq_len);
            assert!(tokens.iter().all(|&t| t <= REFERENCE_SYMBOLS));
            let Some(Field::I64(labels)) = &sample.label else {
                panic!("token labels expected")
            };
            // Every sample labels the same number of tokens, the answer's.
            let labelled = labels.iter().filter(|&&l| l >= 0).count();
            assert_eq!(labelled, shape.max_seq_len / 2);
        }
        let args = recipe.arguments(None, &[]).unwrap();
        assert_eq!(args.per_device_train_batch_size, 16);
        assert_eq!(args.output_dir, "taper_output/gpt-reference-copy");
    }
}
