//! Reading training arguments from JSON (a value, a string or a file) and from
//! CLI `--key value` pairs, and applying CLI pairs over a JSON config.
//!
//! Every route works the same way: start from the [`Default`] arguments as a
//! JSON object, overlay each layer of user values after checking its keys and
//! types against [`FIELDS`](super::FIELDS) (so every bad key or value becomes a
//! problem instead of stopping at the first), deserialize, then validate.

use std::path::Path;

use serde_json::{Map, Value};

use super::fields::{self, FieldInfo, FieldKind};
use super::validate::Problem;
use super::{IntervalStrategy, TrainingArguments};
use crate::{Error, Result};

/// Argument values gathered layer by layer, with the problems found so far.
struct Layers {
    values: Map<String, Value>,
    problems: Vec<Problem>,
}

impl Layers {
    /// Starts from `args` (usually the defaults).
    fn start(args: &TrainingArguments) -> Self {
        let values = match args.to_json_value() {
            Value::Object(map) => map,
            _ => unreachable!("TrainingArguments serializes to an object"),
        };
        Self {
            values,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, field: Option<&'static str>, message: String) {
        self.problems
            .push(Problem::new(field.into_iter().collect(), message));
    }

    /// Overlays the keys of a JSON object, checking each key and value.
    fn overlay_json(&mut self, value: Value) {
        let map = match value {
            Value::Object(map) => map,
            other => {
                self.problem(
                    None,
                    format!(
                        "training arguments must be a JSON object with one key per argument, \
                         got `{}`",
                        abbreviate(&other.to_string())
                    ),
                );
                return;
            }
        };
        for (key, value) in &map {
            let Some(field) = fields::lookup(key) else {
                self.problem(None, fields::unknown_key_message(key));
                continue;
            };
            if key != field.name && map.contains_key(field.name) {
                self.problem(
                    Some(field.name),
                    format!(
                        "`{key}` is the old name of `{}` and both are given; keep only `{}`",
                        field.name, field.name
                    ),
                );
                continue;
            }
            match check_json(field, value) {
                Ok(value) => {
                    self.values.insert(field.name.to_string(), value);
                }
                Err(message) => self.problem(Some(field.name), message),
            }
        }
    }

    /// Overlays CLI `--key value` / `--key=value` / `--flag` pairs.
    fn overlay_cli<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tokens: Vec<String> = args.into_iter().map(|s| s.as_ref().to_string()).collect();
        let is_flag = |token: &str| token.starts_with("--") && token.len() > 2;
        let mut i = 0;
        while i < tokens.len() {
            let token = &tokens[i];
            i += 1;
            if !is_flag(token) {
                self.problem(
                    None,
                    format!(
                        "unexpected `{token}`: arguments are given as `--key value` \
                         or `--key=value`"
                    ),
                );
                continue;
            }
            let body = &token[2..];
            let (key, inline) = match body.split_once('=') {
                Some((key, value)) => (key.replace('-', "_"), Some(value.to_string())),
                None => (body.replace('-', "_"), None),
            };
            let Some(field) = fields::lookup(&key) else {
                self.problem(None, fields::unknown_key_message(&key));
                // Skip the values of the unknown key so they are not reported again.
                while i < tokens.len() && !is_flag(&tokens[i]) {
                    i += 1;
                }
                continue;
            };
            let next_is_value = i < tokens.len() && !is_flag(&tokens[i]);
            let raw: Vec<String> = match (inline, field.kind) {
                (Some(value), _) => vec![value],
                (None, FieldKind::Bool | FieldKind::OptBool) if !next_is_value => {
                    vec!["true".to_string()]
                }
                (None, FieldKind::StrList) => {
                    let start = i;
                    while i < tokens.len() && !is_flag(&tokens[i]) {
                        i += 1;
                    }
                    tokens[start..i].to_vec()
                }
                (None, _) if next_is_value => {
                    i += 1;
                    vec![tokens[i - 1].clone()]
                }
                (None, _) => Vec::new(),
            };
            if raw.is_empty() {
                self.problem(
                    Some(field.name),
                    format!(
                        "`--{}` needs a value ({})",
                        field.name,
                        field.kind.expected()
                    ),
                );
                continue;
            }
            match coerce_cli(field, &raw).and_then(|value| check_json(field, &value)) {
                Ok(value) => {
                    self.values.insert(field.name.to_string(), value);
                }
                Err(message) => self.problem(Some(field.name), message),
            }
        }
    }

    /// Deserializes the gathered values and validates them.
    fn finish(self) -> Result<TrainingArguments> {
        match serde_json::from_value::<TrainingArguments>(Value::Object(self.values)) {
            Ok(mut args) => {
                args.validate_after(self.problems)?;
                Ok(args)
            }
            Err(error) => {
                let mut messages: Vec<String> =
                    self.problems.into_iter().map(|p| p.message).collect();
                messages.push(error.to_string());
                Err(Error::InvalidArguments(messages))
            }
        }
    }
}

/// Shortens a long value for an error message.
fn abbreviate(text: &str) -> String {
    const MAX: usize = 60;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(MAX).collect::<String>())
    }
}

fn wrong_type(field: &FieldInfo, shown: &str) -> String {
    format!(
        "`{}` expects {}, got `{}`",
        field.name,
        field.kind.expected(),
        abbreviate(shown)
    )
}

/// An integral JSON number as `f64` (JSON `8` and `8.0` both count).
fn integral(value: &Value) -> Option<f64> {
    value.as_f64().filter(|x| x.fract() == 0.0 && x.is_finite())
}

/// Checks a JSON value against the field's kind and normalizes it (one string
/// for a list, a lowercase strategy, an integral float for an integer).
fn check_json(field: &FieldInfo, value: &Value) -> std::result::Result<Value, String> {
    use FieldKind::*;
    let bad = || wrong_type(field, &value.to_string());
    if value.is_null() {
        return if field.kind.is_optional() {
            Ok(Value::Null)
        } else {
            Err(bad())
        };
    }
    match field.kind {
        Bool | OptBool => value.as_bool().map(Value::from).ok_or_else(bad),
        Int => match value.as_i64() {
            Some(x) => Ok(Value::from(x)),
            None => integral(value)
                .filter(|x| x.abs() < 9.0e15)
                .map(|x| Value::from(x as i64))
                .ok_or_else(bad),
        },
        UInt | OptUInt => match value.as_u64() {
            Some(x) => Ok(Value::from(x)),
            None => integral(value)
                .filter(|x| (0.0..9.0e15).contains(x))
                .map(|x| Value::from(x as u64))
                .ok_or_else(bad),
        },
        Float | OptFloat => value.as_f64().map(Value::from).ok_or_else(bad),
        Str | OptStr => value.as_str().map(Value::from).ok_or_else(bad),
        Strategy => {
            let Some(name) = value.as_str() else {
                return Err(bad());
            };
            let lower = name.to_ascii_lowercase();
            match IntervalStrategy::from_name(&lower) {
                Some(strategy) => Ok(Value::from(strategy.name())),
                None => {
                    let mut message = wrong_type(field, name);
                    let names = IntervalStrategy::NAMES.iter().copied();
                    if let Some(close) = fields::closest(&lower, names) {
                        message.push_str(&format!("; did you mean `{close}`?"));
                    }
                    Err(message)
                }
            }
        }
        StrList => match value {
            Value::String(s) => Ok(Value::Array(vec![Value::from(s.as_str())])),
            Value::Array(items) if items.iter().all(Value::is_string) => Ok(value.clone()),
            _ => Err(bad()),
        },
        JsonMap => match value {
            Value::Object(_) => Ok(value.clone()),
            Value::String(s) if s.trim_start().starts_with('{') => {
                match serde_json::from_str::<Value>(s) {
                    Ok(parsed @ Value::Object(_)) => Ok(parsed),
                    Ok(_) => Err(bad()),
                    Err(e) => Err(format!("{} ({e})", bad())),
                }
            }
            _ => Err(bad()),
        },
    }
}

/// HF's `string_to_bool`.
fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// Turns the CLI strings given for a field into the JSON value they stand for.
fn coerce_cli(field: &FieldInfo, raw: &[String]) -> std::result::Result<Value, String> {
    use FieldKind::*;
    let first = raw[0].as_str();
    let bad = || wrong_type(field, &raw.join(" "));
    if field.kind.is_optional() && matches!(first.to_ascii_lowercase().as_str(), "none" | "null") {
        return Ok(Value::Null);
    }
    match field.kind {
        Bool | OptBool => parse_bool(first).map(Value::from).ok_or_else(bad),
        Int => first.parse::<i64>().map(Value::from).map_err(|_| bad()),
        UInt | OptUInt => first.parse::<u64>().map(Value::from).map_err(|_| bad()),
        Float | OptFloat => match first.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Value::from(x)),
            _ => Err(bad()),
        },
        Str | OptStr | Strategy => Ok(Value::from(first)),
        StrList if raw.len() == 1 && first.trim_start().starts_with('[') => {
            serde_json::from_str::<Value>(first).map_err(|e| format!("{} ({e})", bad()))
        }
        StrList => Ok(Value::Array(
            raw.iter().map(|s| Value::from(s.as_str())).collect(),
        )),
        JsonMap => match serde_json::from_str::<Value>(first) {
            Ok(value @ Value::Object(_)) => Ok(value),
            Ok(_) => Err(bad()),
            Err(e) => Err(format!("{} ({e})", bad())),
        },
    }
}

fn read_json_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!(
                "cannot read training arguments from {}: {e}",
                path.display()
            ),
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{} is not valid JSON: {e}", path.display())))
}

impl TrainingArguments {
    /// Reads arguments from a JSON object keyed by HF names; missing keys take
    /// their defaults. Ends in [`TrainingArguments::validate`].
    pub fn from_json_value(value: Value) -> Result<Self> {
        let mut layers = Layers::start(&Self::default());
        layers.overlay_json(value);
        layers.finish()
    }

    /// Reads arguments from JSON text (see [`TrainingArguments::from_json_value`]).
    /// Text that is not JSON is an [`Error::Json`].
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json_value(serde_json::from_str(text)?)
    }

    /// Reads arguments from a JSON file such as a checkpoint's `training_args.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_json_value(read_json_file(path.as_ref())?)
    }

    /// Reads arguments from CLI pairs (the program name and subcommand already
    /// removed): `--key value`, `--key=value`, a bare `--flag` for `true`,
    /// `--flag false`, `--report_to none`, JSON for `--lr_scheduler_kwargs`,
    /// `none`/`null` for an optional value. Dashes in keys read as underscores.
    pub fn from_cli_args<I, S>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut layers = Layers::start(&Self::default());
        layers.overlay_cli(args);
        layers.finish()
    }

    /// Reads a JSON object, then applies CLI pairs over it (the CLI wins), then
    /// validates once: `taper train --config f.json --learning_rate 1e-3`.
    /// Problems of both layers are reported together.
    pub fn from_json_value_with_overrides<I, S>(value: Value, args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut layers = Layers::start(&Self::default());
        layers.overlay_json(value);
        layers.overlay_cli(args);
        layers.finish()
    }

    /// [`TrainingArguments::from_json_value_with_overrides`] with the JSON read from a file.
    pub fn from_json_file_with_overrides<I, S>(path: impl AsRef<Path>, args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::from_json_value_with_overrides(read_json_file(path.as_ref())?, args)
    }

    /// Applies CLI pairs over these arguments and validates the result; on error
    /// `self` is left unchanged.
    ///
    /// Values that validation derived earlier (`eval_steps` from `logging_steps`,
    /// `run_name` from `output_dir`, `metric_for_best_model`, `greater_is_better`,
    /// `do_eval`) are kept as they are: to derive them from the overridden values,
    /// build from the raw config with [`TrainingArguments::from_json_value_with_overrides`].
    pub fn apply_cli_args<I, S>(&mut self, args: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut layers = Layers::start(self);
        layers.overlay_cli(args);
        *self = layers.finish()?;
        Ok(())
    }
}
