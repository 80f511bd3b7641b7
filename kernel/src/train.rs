//! `taper train`: runs a built-in recipe from the command line.
//!
//! The recipe flags (`--model`, `--dataset`, `--config`) are taken out first;
//! everything else is TrainingArguments as `--key value` pairs, parsed and
//! validated by the trainer crate so that the command line and the library
//! accept exactly the same things.

use anyhow::{Context, Result};
use taper::recipes::{Recipe, MODELS};

/// Parses `args` and trains.
pub fn run(args: &[String]) -> Result<()> {
    let mut model = None;
    let mut dataset = None;
    let mut config = None;
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if arg.starts_with("--") => (k, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let slot = match key {
            "-h" | "--help" => {
                print!("{}", help());
                return Ok(());
            }
            "--model" => &mut model,
            "--dataset" => &mut dataset,
            "--config" => &mut config,
            _ => {
                rest.push(arg.clone());
                continue;
            }
        };
        let value = match inline {
            Some(v) => v,
            None => iter
                .next()
                .cloned()
                .with_context(|| format!("{key} needs a value"))?,
        };
        *slot = Some(value);
    }
    let recipe = Recipe::new(model.as_deref(), dataset.as_deref())?;
    let config = match &config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {path}"))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("config file {path} is not valid JSON"))?,
            )
        }
        None => None,
    };
    let args = recipe.arguments(config, &rest)?;
    let env = taper::dist::DistEnv::from_env()?;
    if env.rank == 0 {
        println!(
            "taper train: {} on {} (output_dir {}, world size {})",
            recipe.model, recipe.dataset, args.output_dir, env.world_size
        );
    }
    recipe.run(args)?;
    Ok(())
}

fn help() -> String {
    let mut out = String::from(
        "Train a built-in recipe with Hugging Face style TrainingArguments.\n\n\
         Usage: taper train [--model NAME] [--dataset NAME] [--config FILE.json] [--ARGUMENT VALUE]...\n\n\
         With no arguments: the MLP on the UCI wine quality data, in under a minute on 2 CPU cores.\n\
         Arguments come from the recipe's defaults, then the config file, then the command line.\n\n\
         Recipes (--model, then its --dataset choices; the first is the default):\n",
    );
    // The column fits the longest recipe name, so a new recipe cannot break it.
    let width = MODELS
        .iter()
        .map(|(name, ..)| name.len())
        .max()
        .unwrap_or(0);
    for (name, description, datasets) in MODELS {
        out.push_str(&format!(
            "  {name:<width$} {description}\n  {:width$} data sets: {}\n",
            "",
            datasets.join(", ")
        ));
    }
    out.push_str("\nData sets:\n");
    for (name, description) in taper::datasets::TABULAR_DATASETS {
        out.push_str(&format!("  {name:<17} {description}\n"));
    }
    for (name, _, description) in taper::datasets::SequenceTask::ALL {
        out.push_str(&format!("  {name:<17} synthetic: {description}\n"));
    }
    out.push_str(
        "\nTrainingArguments (Hugging Face names and defaults; a recipe may change a default):\n",
    );
    out.push_str(&taper::args::help_text());
    out
}
