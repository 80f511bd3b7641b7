//! Checked reading of JSON: `lr_scheduler_kwargs` against the keys a scheduler
//! type accepts, and the fields of a saved scheduler state.
//!
//! Kept apart from the schedule maths so that every config error is worded the
//! same way: it names the key, the scheduler type and the accepted keys.

use serde_json::{Map, Value};

use super::SchedulerType;
use crate::error::{Error, Result};

/// `lr_scheduler_kwargs` checked against one scheduler type.
pub(super) struct Kwargs<'a> {
    kind: SchedulerType,
    map: &'a Map<String, Value>,
}

impl<'a> Kwargs<'a> {
    /// Rejects any key the type does not accept.
    pub(super) fn new(kind: SchedulerType, map: &'a Map<String, Value>) -> Result<Self> {
        let kw = Self { kind, map };
        let accepted = kind.accepted_kwargs();
        match map.keys().find(|k| !accepted.contains(&k.as_str())) {
            Some(key) => Err(kw.error(key, "is not a parameter of this scheduler")),
            None => Ok(kw),
        }
    }

    /// A config error about `key`, naming the type and the accepted keys.
    pub(super) fn error(&self, key: &str, problem: &str) -> Error {
        let accepted = self.kind.accepted_kwargs();
        let accepted = if accepted.is_empty() {
            "none".to_string()
        } else {
            accepted.join(", ")
        };
        Error::Config(format!(
            "lr_scheduler_kwargs `{key}` {problem} (lr_scheduler_type `{}`; accepted keys: {accepted})",
            self.kind
        ))
    }

    /// The value of `key`; `null` counts as not given (Python's `None`).
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A number.
    pub(super) fn float(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.error(key, &format!("must be a number, got {v}")))
            })
            .transpose()
    }

    /// A non-negative integer; `2.0` is accepted as 2.
    pub(super) fn int(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| match v.as_f64() {
                Some(x) if x >= 0.0 && x.fract() == 0.0 => Ok(x as usize),
                _ => Err(self.error(key, &format!("must be a non-negative integer, got {v}"))),
            })
            .transpose()
    }

    /// The index in `allowed` of the string given for `key`, or of `default`.
    pub(super) fn choice(&self, key: &str, allowed: &[&str], default: &str) -> Result<usize> {
        let value = match self.get(key) {
            None => default,
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.error(key, &format!("must be a string, got {v}")))?,
        };
        allowed.iter().position(|a| *a == value).ok_or_else(|| {
            let list = allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ");
            self.error(key, &format!("must be one of {list}, got `{value}`"))
        })
    }
}

/// A float field of a saved state: a decimal string (exact) or a JSON number.
pub(super) fn state_f64(state: &Value, key: &str) -> Result<f64> {
    match state.get(key) {
        Some(Value::String(s)) => s.parse().ok(),
        Some(v) => v.as_f64(),
        None => None,
    }
    .ok_or_else(|| state_error(key, "a number"))
}

/// A count field of a saved state.
pub(super) fn state_usize(state: &Value, key: &str) -> Result<usize> {
    state
        .get(key)
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .ok_or_else(|| state_error(key, "a count"))
}

fn state_error(key: &str, what: &str) -> Error {
    Error::Config(format!(
        "lr scheduler state: `{key}` is missing or not {what}"
    ))
}
