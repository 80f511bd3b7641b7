//! The distributed environment a notebook's cells see, and `%dist`.
//!
//! Hugging Face's notebooks emulate a launcher by hand (`os.environ["RANK"]
//! = "0"`, a `MASTER_PORT` picked by the user), and two notebooks that pick
//! the same port collide. The kernel does it once, before the cell process
//! starts: unless a launcher (torchrun's variables) or SLURM already set the
//! job's environment, cells see a world of one with a port that was free
//! when the kernel started ([`emulate_world_of_one`]). `%dist` shows that
//! environment; `%dist NAME=VALUE ...` changes it in the cell process and
//! the kernel (so `%%launch` and a restarted cell process see it too), after
//! checking the values as taper's trainer will read them; `%dist reset`
//! returns to a world of one on a fresh port.

use taper_widgets::{Cell, MetricsTable};

/// The variables `%dist` shows and sets, as torchrun names them.
pub const VARIABLES: [&str; 6] = [
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
];

/// Marks variables the kernel set itself, so `%dist` can say where a value
/// came from.
const EMULATED: &str = "TAPER_DIST_EMULATED";

/// Sets a world of one (rank 0 of 1, `127.0.0.1`, a free port) unless the
/// environment already describes a job; returns whether it did. Call it
/// before the cell process starts, which inherits the variables.
pub fn emulate_world_of_one() -> bool {
    let launched = ["RANK", "WORLD_SIZE", "SLURM_PROCID"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if launched {
        return false;
    }
    set_world_of_one();
    true
}

fn set_world_of_one() {
    set_here_and_there(&world_of_one(), &VARIABLES);
}

fn world_of_one() -> Vec<(String, String)> {
    let port = free_port().unwrap_or(29500).to_string();
    let values = ["0", "0", "1", "1", "127.0.0.1", port.as_str()];
    VARIABLES
        .iter()
        .zip(values)
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// A port nobody listens on now: the kernel binds port 0 and lets it go.
fn free_port() -> Option<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    Some(listener.local_addr().ok()?.port())
}

/// What a `%dist` cell asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistCommand {
    /// `%dist`: show the environment.
    Show,
    /// `%dist NAME=VALUE ...`: change it.
    Set(Vec<(String, String)>),
    /// `%dist reset`: a world of one on a fresh port.
    Reset,
}

/// Reads the words after `%dist`.
pub fn parse(args: &str) -> Result<DistCommand, String> {
    let words: Vec<&str> = args.split_whitespace().collect();
    match words.as_slice() {
        [] => return Ok(DistCommand::Show),
        ["reset"] => return Ok(DistCommand::Reset),
        _ => {}
    }
    let mut pairs = Vec::new();
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(format!(
                "`{word}` is not NAME=VALUE; usage: `%dist`, `%dist NAME=VALUE ...` \
                 (NAME one of {}) or `%dist reset`",
                VARIABLES.join(", ")
            ));
        };
        let name = name.to_ascii_uppercase();
        if !VARIABLES.contains(&name.as_str()) {
            return Err(format!(
                "`%dist` sets {}; `{name}` is not one of them",
                VARIABLES.join(", ")
            ));
        }
        pairs.push((name, value.to_string()));
    }
    Ok(DistCommand::Set(pairs))
}

/// Checks `pairs` against the current environment as taper's trainer reads
/// it (rank below the world size, numbers, a port), then applies them to
/// this process. Returns the Rust code that applies them in the cell
/// process. Nothing changes when the check fails.
pub fn apply(pairs: &[(String, String)]) -> Result<String, String> {
    let merged = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    };
    taper::dist::DistEnv::from_vars(merged).map_err(|e| format!("{e}; nothing was changed"))?;
    let still_emulated: Vec<String> = std::env::var(EMULATED)
        .unwrap_or_default()
        .split(',')
        .filter(|n| !n.is_empty() && !pairs.iter().any(|(p, _)| p == n))
        .map(str::to_string)
        .collect();
    Ok(set_here_and_there(pairs, &still_emulated))
}

/// `%dist reset`: a world of one on a fresh port, here; returns the code
/// that sets the same in the cell process.
pub fn reset() -> String {
    set_here_and_there(&world_of_one(), &VARIABLES)
}

/// Sets `pairs` (and the list of variables the kernel chose) in this
/// process; returns the Rust code that does the same in the cell process.
fn set_here_and_there(pairs: &[(String, String)], emulated: &[impl AsRef<str>]) -> String {
    let emulated = emulated
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(",");
    let all = pairs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain([(EMULATED, emulated.as_str())]);
    let mut code = String::new();
    for (name, value) in all {
        std::env::set_var(name, value);
        // Edition 2024 (evcxr's) makes set_var unsafe; the cell process runs
        // one cell at a time, and this cell reads nothing else.
        code.push_str(&format!(
            "unsafe {{ std::env::set_var({name:?}, {value:?}); }}\n"
        ));
    }
    code
}

/// The environment as a table: each variable, its value, and who set it.
pub fn table() -> MetricsTable {
    let emulated = std::env::var(EMULATED).unwrap_or_default();
    let mut table = MetricsTable::new(&["Variable", "Value", "Set by"]);
    for name in VARIABLES {
        let (value, by) = match std::env::var(name) {
            Ok(v) if emulated.split(',').any(|n| n == name) => (v, "the kernel (a world of one)"),
            Ok(v) => (v, "the environment or %dist"),
            Err(_) => ("(not set)".to_string(), "-"),
        };
        table.write_line(&[
            ("Variable", Cell::Text(name.into())),
            ("Value", Cell::Text(value)),
            ("Set by", Cell::Text(by.into())),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_cells_are_read_with_clear_errors() {
        assert_eq!(parse("  "), Ok(DistCommand::Show));
        assert_eq!(parse("reset"), Ok(DistCommand::Reset));
        assert_eq!(
            parse("world_size=2 RANK=1"),
            Ok(DistCommand::Set(vec![
                ("WORLD_SIZE".into(), "2".into()),
                ("RANK".into(), "1".into())
            ]))
        );
        let bad = parse("RANK").unwrap_err();
        assert!(
            bad.contains("not NAME=VALUE") && bad.contains("%dist reset"),
            "{bad}"
        );
        let unknown = parse("NODE=3").unwrap_err();
        assert!(unknown.contains("`NODE` is not one of them"), "{unknown}");
    }

    // One test touches the process environment, so the steps run in order.
    #[test]
    fn the_world_of_one_is_emulated_checked_and_changed() {
        for name in VARIABLES.iter().chain(["SLURM_PROCID", EMULATED].iter()) {
            std::env::remove_var(name);
        }
        assert!(emulate_world_of_one());
        assert_eq!(std::env::var("WORLD_SIZE").unwrap(), "1");
        let port: u16 = std::env::var("MASTER_PORT").unwrap().parse().unwrap();
        assert!(port > 0);
        assert!(!emulate_world_of_one(), "a set environment is kept");
        let text = table().text();
        assert!(text.contains("the kernel (a world of one)"), "{text}");

        let refused = apply(&[("RANK".into(), "3".into())]).unwrap_err();
        assert!(
            refused.contains("out of range") && refused.contains("nothing was changed"),
            "{refused}"
        );
        assert_eq!(std::env::var("RANK").unwrap(), "0");

        let code = apply(&[
            ("WORLD_SIZE".into(), "2".into()),
            ("RANK".into(), "1".into()),
        ])
        .unwrap();
        assert!(
            code.contains("std::env::set_var(\"WORLD_SIZE\", \"2\")"),
            "{code}"
        );
        assert_eq!(std::env::var("RANK").unwrap(), "1");
        let text = table().text();
        assert!(text.contains("the environment or %dist"), "{text}");

        reset();
        assert_eq!(std::env::var("RANK").unwrap(), "0");
        assert_eq!(std::env::var("WORLD_SIZE").unwrap(), "1");
        assert!(!table().text().contains("%dist"));
    }
}
