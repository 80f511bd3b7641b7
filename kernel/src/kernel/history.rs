//! The history of executed cells: kept in a file across sessions, served
//! to `history_request` (tail, range, search with glob patterns).

use jupyter_protocol::JupyterMessageContent as Content;
use serde_json::{json, Value};

use super::handlers::content;

/// Executed cells, kept across sessions in a history file (outputs for
/// this session only, as text).
pub struct History {
    session: u64,
    entries: Vec<(u64, usize, String)>,
    outputs: std::collections::HashMap<usize, String>,
    path: std::path::PathBuf,
}

impl History {
    /// The history file's entries (`TAPER_HISTORY`, default `~/.local/share/taper/history.jsonl`).
    pub fn load() -> Self {
        let path = std::env::var_os("TAPER_HISTORY")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(std::path::PathBuf::from)
                    .unwrap_or_default()
                    .join(".local/share/taper/history.jsonl")
            });
        let entries: Vec<(u64, usize, String)> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let session = entries.iter().map(|e| e.0).max().unwrap_or(0) + 1;
        Self {
            session,
            entries,
            outputs: Default::default(),
            path,
        }
    }

    /// Records the text result of cell `count` of this session.
    pub fn set_output(&mut self, count: usize, text: &str) {
        self.outputs.insert(count, text.to_string());
    }

    /// Records a cell.
    pub fn push(&mut self, count: usize, code: &str) {
        let entry = (self.session, count, code.to_string());
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            use std::io::Write;
            let _ = writeln!(
                file,
                "{}",
                serde_json::to_string(&entry).unwrap_or_default()
            );
        }
        self.entries.push(entry);
    }

    /// A `history_reply` for the request's `tail`, `range` or `search`.
    pub fn reply(&self, request: &Value) -> Content {
        let n = request["n"].as_u64().unwrap_or(10) as usize;
        let picked: Vec<&(u64, usize, String)> =
            match request["hist_access_type"].as_str().unwrap_or("tail") {
                "range" => {
                    let session = request["session"].as_i64().unwrap_or(0);
                    let session = if session <= 0 {
                        (self.session as i64 + session) as u64
                    } else {
                        session as u64
                    };
                    let start = request["start"].as_u64().unwrap_or(0) as usize;
                    let stop = request["stop"]
                        .as_u64()
                        .map(|s| s as usize)
                        .unwrap_or(usize::MAX);
                    self.entries
                        .iter()
                        .filter(|e| e.0 == session && e.1 >= start && e.1 < stop)
                        .collect()
                }
                "search" => {
                    let pattern = request["pattern"].as_str().unwrap_or("*");
                    let mut found: Vec<&(u64, usize, String)> = self
                        .entries
                        .iter()
                        .filter(|e| glob(pattern, &e.2))
                        .collect();
                    if request["unique"].as_bool().unwrap_or(false) {
                        let mut seen = std::collections::HashSet::new();
                        found.retain(|e| seen.insert(e.2.clone()));
                    }
                    let skip = found
                        .len()
                        .saturating_sub(if n == 0 { found.len() } else { n });
                    found.into_iter().skip(skip).collect()
                }
                _ => self
                    .entries
                    .iter()
                    .skip(self.entries.len().saturating_sub(n))
                    .collect(),
            };
        let with_output = request["output"].as_bool().unwrap_or(false);
        let history: Vec<Value> = picked
            .iter()
            .map(|(s, c, code)| {
                if with_output {
                    let output = (*s == self.session).then(|| self.outputs.get(c)).flatten();
                    json!([s, c, [code, output]])
                } else {
                    json!([s, c, code])
                }
            })
            .collect();
        content(
            "history_reply",
            json!({ "status": "ok", "history": history }),
        )
    }
}

/// Shell-style glob: `*` any run, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    go(&p, &t)
}
