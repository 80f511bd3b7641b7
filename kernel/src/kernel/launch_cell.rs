//! `%%launch -n N`: a cell run as a program on N processes, under `taper launch`.
//!
//! The cell's code becomes the body of `main` in a small cargo project whose
//! dependencies are the notebook's `:dep` lines so far, built with cargo
//! (dependencies optimised, in a target folder kept across kernels, so only
//! the first launch compiles candle), then run as `taper launch
//! --nproc-per-node N -- PROGRAM`. Its lines stream into the cell as they
//! come, each prefixed with its rank; the ranks inherit the display channel,
//! so rank 0's trainer draws its live view in the notebook. Interrupting
//! the cell sends SIGINT to the launcher, which forwards it to every rank;
//! the notebook's own variables are not touched (the ranks are other
//! processes, which also means they cannot see the notebook's variables).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// A parsed `%%launch` cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchCell {
    /// Processes to start.
    pub nproc: usize,
    /// The Rust code each runs.
    pub body: String,
}

/// `Some` when `code` is a `%%launch` cell (`Err` says what is wrong with its first line).
pub fn parse(code: &str) -> Option<Result<LaunchCell, String>> {
    let code = code.trim_start();
    let (first, body) = code.split_once('\n').unwrap_or((code, ""));
    let args = first.strip_prefix("%%launch")?;
    let usage = "usage: `%%launch -n N` on the first line (N processes), the Rust code below";
    let words: Vec<&str> = args.split_whitespace().collect();
    let nproc = match words.as_slice() {
        [] => Ok(1),
        ["-n" | "--nproc-per-node", n] => n
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{n}` is not a number of processes; {usage}")),
        _ => Err(format!("unexpected `{}`; {usage}", args.trim())),
    };
    Some(nproc.map(|nproc| LaunchCell {
        nproc,
        body: body.to_string(),
    }))
}

/// The notebook's `:dep` lines as `[dependencies]` entries.
pub fn dependency_lines(deps: &[String]) -> Vec<String> {
    deps.iter()
        .filter_map(|line| line.trim().strip_prefix(":dep"))
        .map(|spec| match spec.split_once('=') {
            Some((name, value)) => format!("{} = {}", name.trim(), value.trim()),
            None => format!("{} = \"*\"", spec.trim()),
        })
        .collect()
}

/// The project's Cargo.toml: dependencies optimised (a training program),
/// the cell's own code compiled quickly.
pub fn manifest(deps: &[String]) -> String {
    format!(
        "[package]\nname = \"taper-launch-cell\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
         [dependencies]\n{}\n\n[profile.dev.package.\"*\"]\nopt-level = 3\n\n[workspace]\n",
        dependency_lines(deps).join("\n")
    )
}

/// `main` around the cell's code; an error returned with `?` exits with code 1.
pub fn program(body: &str) -> String {
    format!(
        "#![allow(unused)]\nfn main() {{\n    let result = (|| -> Result<(), Box<dyn std::error::Error>> {{\n{body}\n        ;\n        Ok(())\n    }})();\n    if let Err(error) = result {{\n        eprintln!(\"error: {{error}}\");\n        std::process::exit(1);\n    }}\n}}\n"
    )
}

/// Where launched cells are built: `TAPER_LAUNCH_TARGET_DIR`, else a folder
/// in the user's cache kept across kernels.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TAPER_LAUNCH_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("taper").join("launch-target")
}

/// Writes the project in `dir` and builds it; returns the program, or the
/// compiler's messages. `lockfile` (the taper workspace's Cargo.lock) pins
/// the versions taper was tested with.
pub fn build(
    dir: &Path,
    deps: &[String],
    body: &str,
    lockfile: Option<&Path>,
) -> Result<PathBuf, String> {
    let io = |e: std::io::Error| format!("writing the launch project in {}: {e}", dir.display());
    std::fs::create_dir_all(dir.join("src")).map_err(io)?;
    std::fs::write(dir.join("Cargo.toml"), manifest(deps)).map_err(io)?;
    std::fs::write(dir.join("src/main.rs"), program(body)).map_err(io)?;
    if let Some(lock) = lockfile.filter(|l| l.is_file()) {
        if !dir.join("Cargo.lock").exists() {
            std::fs::copy(lock, dir.join("Cargo.lock")).map_err(io)?;
        }
    }
    let target = target_dir();
    let output = Command::new("cargo")
        .args(["build", "--quiet", "--message-format=short"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(target.join("debug").join("taper-launch-cell"))
}

/// Runs `program` under `taper launch` with `nproc` processes, handing each
/// output line to `line` as it comes; the launcher's pid sits in `pid`
/// while it runs (for interrupts). Returns the launcher's exit code.
pub fn run(
    program: &Path,
    nproc: usize,
    pid: &Arc<AtomicU32>,
    line: impl Fn(&str, String) + Send + Sync + 'static,
) -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding the taper binary: {e}"))?;
    let mut child = Command::new(exe)
        .args(["launch", "--nproc-per-node", &nproc.to_string(), "--"])
        .arg(program)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting taper launch: {e}"))?;
    pid.store(child.id(), Ordering::SeqCst);
    let line = Arc::new(line);
    let readers: Vec<_> = [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ),
    ]
    .into_iter()
    .filter_map(|(name, stream)| Some((name, stream?)))
    .map(|(name, stream)| {
        let line = line.clone();
        std::thread::spawn(move || {
            for text in BufReader::new(stream).lines().map_while(Result::ok) {
                line(name, text);
            }
        })
    })
    .collect();
    let status = child
        .wait()
        .map_err(|e| format!("waiting for taper launch: {e}"));
    pid.store(0, Ordering::SeqCst);
    for reader in readers {
        let _ = reader.join();
    }
    Ok(status?.code().unwrap_or(130))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_names_the_process_count() {
        let cell = parse("%%launch -n 2\nprintln!(\"hi\");").unwrap().unwrap();
        assert_eq!(cell.nproc, 2);
        assert_eq!(cell.body, "println!(\"hi\");");
        assert!(parse("%%launch -n zero\nx").unwrap().is_err());
        assert!(parse("%%launch --nodes 2\nx").unwrap().is_err());
        assert!(parse("let x = 1;").is_none());
    }

    #[test]
    fn dep_lines_become_dependencies() {
        let deps = vec![
            ":dep taper = { path = \"/src/trainer\" }".to_string(),
            ":dep rand".to_string(),
        ];
        assert_eq!(
            dependency_lines(&deps),
            ["taper = { path = \"/src/trainer\" }", "rand = \"*\""]
        );
    }
}
