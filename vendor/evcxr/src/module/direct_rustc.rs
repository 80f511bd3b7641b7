// taper patch (vendor/README.md): not part of upstream evcxr.

//! The cell crate built by rustc alone, while nothing cargo decides from has
//! changed.
//!
//! A warm cell is one rustc run on a small crate, but cargo wraps it: it
//! reads the manifests and the lock file, checks the fingerprint of every
//! dependency (taper's graph is about a hundred crates) and starts evcxr's
//! rustc wrapper, about 40 ms of a warm `x + 1` (notes/kernel-latency.md).
//! Its answer is the same rustc command line as long as its inputs are the
//! same, so the wrapper records the command it ran ([`record`]) and the next
//! cells replay it ([`Recipe::command`]) while
//! - the cargo command, the manifest, the cargo configuration files and the
//!   lock file hash as they did when it was recorded ([`fingerprint`]);
//! - no dependency names a `path` the embedder does not vouch for (a local
//!   crate can be edited between cells, and only cargo would see it:
//!   [`deps_are_fixed`]);
//! - every file the command links (`--extern`) is still there, unchanged.
//!
//! Anything else goes back to cargo, which records again; so does a replay
//! that fails for any reason but compile errors in the cell's own source
//! ([`errors_are_the_cells`]). The recipe lives in the kernel's memory: a later kernel in the same
//! folder starts with cargo. `TAPER_DIRECT_RUSTC=0` turns replays off.

use crate::errors::CompilationError;
use anyhow::Result;
use serde::Deserialize;
use serde::Serialize;
use std::hash::Hash;
use std::hash::Hasher;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

/// Where the wrapper writes the cell crate's rustc command (set by the
/// build that wants one).
pub(crate) const RECIPE_PATH_ENV: &str = "EVCXR_RUSTC_RECIPE_PATH";

/// Environment variables that are not passed on to a replay: the job server
/// cargo shared with rustc is gone when the cell is replayed.
const NOT_REPLAYED: &[&str] = &["CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS", RECIPE_PATH_ENV];

/// A rustc command line with its environment and folder, as cargo ran it
/// for the cell crate (after the wrapper's changes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Recipe {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

/// Writes `command` as a recipe to the file [`RECIPE_PATH_ENV`] names, if it
/// names one. Called by the wrapper for the cell crate only; a command that
/// is not valid UTF-8 is not recorded (the cell then always uses cargo).
pub(crate) fn record(command: &Command) -> Result<()> {
    let Some(path) = std::env::var_os(RECIPE_PATH_ENV) else {
        return Ok(());
    };
    let Some(recipe) = Recipe::of(command, std::env::vars_os(), std::env::current_dir()?) else {
        return Ok(());
    };
    std::fs::write(path, serde_json::to_vec(&recipe)?)?;
    Ok(())
}

impl Recipe {
    fn of(
        command: &Command,
        env: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
        cwd: PathBuf,
    ) -> Option<Recipe> {
        let text = |s: &std::ffi::OsStr| s.to_str().map(str::to_owned);
        let mut env: Vec<(String, String)> = env
            .map(|(k, v)| Some((text(&k)?, text(&v)?)))
            .collect::<Option<_>>()?;
        env.retain(|(k, _)| !NOT_REPLAYED.contains(&k.as_str()));
        // Variables the command itself sets win over the inherited ones.
        for (key, value) in command.get_envs() {
            let key = text(key)?;
            env.retain(|(k, _)| *k != key);
            if let Some(value) = value {
                env.push((key, text(value)?));
            }
        }
        Some(Recipe {
            program: text(command.get_program())?,
            args: command.get_args().map(text).collect::<Option<_>>()?,
            env,
            cwd: command.get_current_dir().map(Path::to_owned).unwrap_or(cwd),
        })
    }

    /// Reads the recipe a build just recorded at `path`, and removes the file.
    pub(crate) fn take(path: &Path) -> Option<Recipe> {
        let bytes = std::fs::read(path).ok()?;
        let _ = std::fs::remove_file(path);
        serde_json::from_slice(&bytes).ok()
    }

    /// The command to run: the recorded one, in its folder, with exactly its
    /// environment.
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd);
        command
    }

    /// The files the command links against (`--extern name=path`).
    fn externs(&self) -> impl Iterator<Item = &Path> {
        self.args
            .windows(2)
            .filter(|pair| pair[0] == "--extern")
            .filter_map(|pair| pair[1].split_once('=').map(|(_, path)| Path::new(path)))
    }
}

/// A recipe, with what must stay the same for it to be replayed.
pub(crate) struct DirectBuild {
    pub(crate) recipe: Recipe,
    fingerprint: u64,
    externs: Vec<(PathBuf, Option<SystemTime>)>,
}

impl DirectBuild {
    /// `recipe`, valid while the inputs hash to `fingerprint` and its
    /// `--extern` files keep their present modification times.
    pub(crate) fn new(recipe: Recipe, fingerprint: u64) -> DirectBuild {
        let externs = recipe
            .externs()
            .map(|path| (path.to_owned(), modified(path)))
            .collect();
        DirectBuild {
            recipe,
            fingerprint,
            externs,
        }
    }

    /// Whether the recipe still builds what cargo would: the inputs hash as
    /// they did and every linked file is there, unchanged.
    pub(crate) fn still_valid(&self, fingerprint: u64) -> bool {
        fingerprint == self.fingerprint
            && self
                .externs
                .iter()
                .all(|(path, when)| when.is_some() && modified(path) == *when)
    }
}

/// Error codes of a crate that could not be loaded: what a replay whose
/// dependencies changed under it reports.
const CRATE_LOADING: &[&str] = &[
    "E0460", "E0461", "E0462", "E0463", "E0464", "E0514", "E0519", "E0523",
];

/// Whether a failed replay's `errors` are the cell's own (what cargo would
/// report too): there are some, each points into the cell crate's source,
/// and none is about loading a dependency. Otherwise cargo builds again.
pub(crate) fn errors_are_the_cells(errors: &[CompilationError]) -> bool {
    let failures: Vec<&CompilationError> = errors.iter().filter(|e| e.level() == "error").collect();
    !failures.is_empty()
        && failures.iter().all(|e| {
            e.points_into_source() && !e.code().is_some_and(|code| CRATE_LOADING.contains(&code))
        })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether replays are allowed: on unless `TAPER_DIRECT_RUSTC=0`.
pub(crate) fn enabled() -> bool {
    std::env::var("TAPER_DIRECT_RUSTC").map_or(true, |v| v.trim() != "0")
}

/// A hash of everything cargo reads to decide the cell crate's command line:
/// the cargo command (program, arguments, environment it sets), the
/// crate's manifest and lock file, and every cargo configuration file from
/// the crate's folder up and in cargo's home. A file that is missing hashes
/// as missing.
pub(crate) fn fingerprint(cargo: &Command, crate_dir: &Path) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    format!("{cargo:?}").hash(&mut hasher);
    let mut files = vec![crate_dir.join("Cargo.toml"), crate_dir.join("Cargo.lock")];
    for dir in crate_dir.ancestors() {
        files.push(dir.join(".cargo/config.toml"));
        files.push(dir.join(".cargo/config"));
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    if let Some(home) = cargo_home {
        files.push(home.join("config.toml"));
        files.push(home.join("config"));
    }
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file).ok().hash(&mut hasher);
    }
    hasher.finish()
}

/// Whether every dependency `(name, config)` is fixed between cells: one
/// that names a local `path` is fixed only when `vouched` for it (taper's
/// kernel names its crates by a snapshot of their sources, named by its
/// content hash).
pub(crate) fn deps_are_fixed(
    deps: &[(String, String)],
    vouched: impl Fn(&str, &str) -> bool,
) -> bool {
    deps.iter()
        .all(|(name, config)| !names_a_path(config) || vouched(name, config))
}

/// Whether a dependency's configuration (`"1.0"`, `{ path = "..." }`, ...)
/// names a path. One that does not parse counts as naming one.
fn names_a_path(config: &str) -> bool {
    match toml::from_str::<toml::Table>(&format!("dep = {config}")) {
        Ok(table) => table["dep"].get("path").is_some(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipe_replays_the_command_with_its_own_environment() {
        let mut command = Command::new("/bin/rustc");
        command
            .args(["--crate-name", "ctx", "--extern", "taper=/t/libtaper.so"])
            .env("RUSTFLAGS", "-Cprefer-dynamic")
            .current_dir("/crate");
        let inherited = [
            ("HOME", "/root"),
            ("CARGO_MAKEFLAGS", "--jobserver-fds=3,4"),
            ("RUSTFLAGS", "old"),
        ]
        .map(|(k, v)| (k.into(), v.into()));
        let recipe = Recipe::of(&command, inherited.into_iter(), "/elsewhere".into()).unwrap();
        let replay = recipe.command();
        assert_eq!(replay.get_program(), "/bin/rustc");
        assert_eq!(replay.get_current_dir(), Some(Path::new("/crate")));
        let env: Vec<_> = replay
            .get_envs()
            .map(|(k, v)| (k.to_str().unwrap(), v.unwrap().to_str().unwrap()))
            .collect();
        assert_eq!(env, [("HOME", "/root"), ("RUSTFLAGS", "-Cprefer-dynamic")]);
        let externs: Vec<_> = recipe.externs().collect();
        assert_eq!(externs, [Path::new("/t/libtaper.so")]);
    }

    #[test]
    fn a_recipe_is_valid_while_its_inputs_and_linked_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libdep.so");
        std::fs::write(&lib, "v1").unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]").unwrap();
        let cargo = Command::new("cargo");
        let recipe = Recipe {
            program: "rustc".into(),
            args: vec!["--extern".into(), format!("dep={}", lib.display())],
            env: vec![],
            cwd: dir.path().into(),
        };
        let print = fingerprint(&cargo, dir.path());
        let build = DirectBuild::new(recipe, print);
        assert!(build.still_valid(fingerprint(&cargo, dir.path())));

        std::fs::write(dir.path().join("Cargo.toml"), "[package]\n# edited").unwrap();
        assert!(!build.still_valid(fingerprint(&cargo, dir.path())));
        let mut other = Command::new("cargo");
        other.env("RUSTFLAGS", "-Clink-arg=-fuse-ld=lld");
        assert_ne!(fingerprint(&other, dir.path()), print);

        std::fs::remove_file(&lib).unwrap();
        assert!(!build.still_valid(print));
    }

    #[test]
    fn only_errors_in_the_cells_source_are_reported_without_cargo() {
        let block = crate::code_block::CodeBlock::new().generated("fn f() -> u32 { \"x\" }");
        let error = |level: &str, code: &str, spans: serde_json::Value| {
            let json = serde_json::json!({
                "$message_type": "diagnostic", "message": "m", "level": level,
                "code": { "code": code, "explanation": null }, "spans": spans, "children": [],
            });
            CompilationError::opt_new(json, &block).unwrap()
        };
        let in_cell = serde_json::json!([{
            "file_name": "src/lib.rs", "line_start": 1, "line_end": 1,
            "column_start": 17, "column_end": 20, "byte_start": 16, "byte_end": 19,
            "is_primary": true, "text": [], "label": null, "expansion": null,
        }]);
        let mismatch = error("error", "E0308", in_cell.clone());
        assert!(errors_are_the_cells(&[mismatch.clone()]));
        let missing_crate = error("error", "E0463", in_cell.clone());
        assert!(!errors_are_the_cells(&[mismatch.clone(), missing_crate]));
        let link_failure = error("error", "", serde_json::json!([]));
        assert!(!errors_are_the_cells(&[link_failure]));
        assert!(!errors_are_the_cells(&[error(
            "warning", "unused", in_cell
        )]));
        assert!(!errors_are_the_cells(&[]));
    }

    #[test]
    fn only_vouched_for_path_dependencies_are_fixed() {
        let deps = |config: &str| vec![("d".to_owned(), config.to_owned())];
        let nobody = |_: &str, _: &str| false;
        assert!(deps_are_fixed(&deps("\"1.0\""), nobody));
        assert!(deps_are_fixed(
            &deps("{ version = \"1\", features = [\"path\"] }"),
            nobody
        ));
        assert!(!deps_are_fixed(&deps("{ path = \"/src/d\" }"), nobody));
        assert!(!deps_are_fixed(&deps("{path=\"/src/d\"}"), nobody));
        assert!(deps_are_fixed(&deps("{ path = \"/src/d\" }"), |n, _| n == "d"));
    }
}
