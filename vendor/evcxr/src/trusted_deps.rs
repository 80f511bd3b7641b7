// taper patch (vendor/README.md): not part of upstream evcxr.

//! Dependencies the embedder vouches for, and what evcxr does faster
//! because of them.
//!
//! taper's kernel knows that `:dep taper` resolves (it built the crate at
//! install), so evcxr need not prove it. Three things follow:
//! - `:dep` of a trusted dependency, written exactly as trusted, skips the
//!   validating `cargo metadata` (`ContextState::add_dep`).
//! - rust-analyzer reads its own manifest (`analysis/Cargo.toml`) rather
//!   than the cell crate's: the same dependencies without the build
//!   profiles, plus the trusted ones once the embedder asks
//!   (`EvalContext::analyse_trusted_deps`), so the analysis can load
//!   taper's graph while the user types, and the later `:dep taper`
//!   does not reload it.
//! - A lock file that resolves the trusted dependencies is kept beside
//!   them and copied into a crate whose manifest names one and whose lock
//!   does not: cargo cuts the cell crate's lock back to the cell's
//!   dependencies at every build, so each kernel's first `:dep taper`
//!   otherwise resolved taper's graph again (1.5 s, with a look at the
//!   registry index), once for the analysis and once for the build.

use std::path::Path;
use std::path::PathBuf;

use crate::eval_context::ContextState;

/// The trusted dependencies of a context: see the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedDeps {
    /// `(name, config)`, as `:dep name = config` writes them.
    pub(crate) deps: Vec<(String, String)>,
    /// Whether rust-analyzer sees them before a `:dep` asks for them.
    pub(crate) analysed: bool,
    /// A lock file that resolves them, kept across kernels.
    pub(crate) lock: Option<PathBuf>,
}

impl TrustedDeps {
    /// Whether `:dep name = config` may skip validation.
    pub(crate) fn vouches_for(&self, name: &str, config: &str) -> bool {
        self.deps.iter().any(|(n, c)| n == name && c == config)
    }

    /// Copies the kept lock file over `lock` when `deps` name a trusted
    /// dependency that `lock` does not resolve. Best effort: without the
    /// copy cargo resolves, as it always did.
    /// It runs for every cell, so a cell that names no trusted dependency
    /// reads no file.
    pub(crate) fn seed_lock(&self, lock: &Path, deps: &[(String, String)]) {
        let named: Vec<&str> = deps
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| self.is_trusted(name))
            .collect();
        if named.is_empty() {
            return;
        }
        let Some(kept) = self.lock.as_deref().filter(|kept| kept.is_file()) else {
            return;
        };
        let current = std::fs::read_to_string(lock).unwrap_or_default();
        if named.iter().any(|name| !resolves(&current, name)) {
            let _ = std::fs::copy(kept, lock);
        }
    }

    /// Keeps `lock` (a lock file cargo just used) when it resolves every
    /// trusted dependency and differs from the one kept. Written beside
    /// and renamed, so concurrent kernels never read half a file. With no
    /// trusted dependency there is nothing to keep (every lock would
    /// "resolve them all" and overwrite the kept one).
    pub(crate) fn save_lock(&self, lock: &Path) {
        let Some(kept) = self.lock.as_deref().filter(|_| !self.deps.is_empty()) else {
            return;
        };
        let Ok(current) = std::fs::read_to_string(lock) else {
            return;
        };
        let complete = self.deps.iter().all(|(name, _)| resolves(&current, name));
        if !complete || std::fs::read_to_string(kept).ok().as_deref() == Some(current.as_str()) {
            return;
        }
        let staging = kept.with_extension(format!("{}.partial", std::process::id()));
        if std::fs::write(&staging, &current).is_ok() && std::fs::rename(&staging, kept).is_err() {
            let _ = std::fs::remove_file(&staging);
        }
    }

    fn is_trusted(&self, name: &str) -> bool {
        self.deps.iter().any(|(n, _)| n == name)
    }
}

/// Whether lock file text `lock` has a package called `name`.
fn resolves(lock: &str, name: &str) -> bool {
    lock.contains(&format!("name = \"{name}\"\n"))
}

/// The cell crate's dependencies, `(name, config)`.
pub(crate) fn build_deps(state: &ContextState) -> Vec<(String, String)> {
    state
        .external_deps
        .values()
        .map(|krate| (krate.name.clone(), krate.config.clone()))
        .collect()
}

/// The dependencies rust-analyzer sees: the cell crate's, and the trusted
/// ones once analysed, sorted (a `HashMap` holds the cell crate's, and a
/// new order would reload the analysis).
pub(crate) fn analysis_deps(state: &ContextState) -> Vec<(String, String)> {
    let mut deps = build_deps(state);
    let trusted = &state.config.trusted;
    if trusted.analysed {
        for (name, config) in &trusted.deps {
            if !deps.iter().any(|(known, _)| known == name) {
                deps.push((name.clone(), config.clone()));
            }
        }
    }
    deps.sort();
    deps
}

/// rust-analyzer's manifest: a package named `crate_name` whose library is
/// the cell crate's source, with `deps`.
pub(crate) fn analysis_cargo_toml(crate_name: &str, deps: &[(String, String)]) -> String {
    let deps: String = deps
        .iter()
        .map(|(name, config)| format!("{name} = {config}\n"))
        .collect();
    format!(
        r#"
[package]
name = "{crate_name}"
version = "1.0.0"
edition = "2024"

[lib]
path = "../src/lib.rs"

[dependencies]
{deps}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(lock: Option<PathBuf>) -> TrustedDeps {
        TrustedDeps {
            deps: vec![("taper".into(), "{ path = \"/t\" }".into())],
            analysed: false,
            lock,
        }
    }

    #[test]
    fn only_the_exact_dependency_is_vouched_for() {
        let t = trusted(None);
        assert!(t.vouches_for("taper", "{ path = \"/t\" }"));
        assert!(!t.vouches_for("taper", "\"*\""));
        assert!(!t.vouches_for("serde", "{ path = \"/t\" }"));
    }

    #[test]
    fn a_lock_without_the_trusted_crate_is_seeded_and_a_complete_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept.lock");
        let lock = dir.path().join("Cargo.lock");
        let t = trusted(Some(kept.clone()));
        let full = "[[package]]\nname = \"taper\"\nversion = \"0.1.0\"\n";
        let bare = "[[package]]\nname = \"ctx\"\nversion = \"1.0.0\"\n";
        let deps = vec![("taper".to_string(), "{ path = \"/t\" }".to_string())];

        // Nothing kept yet: the lock stays as it is.
        std::fs::write(&lock, bare).unwrap();
        t.seed_lock(&lock, &deps);
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), bare);
        // A lock that does not resolve taper is not kept...
        t.save_lock(&lock);
        assert!(!kept.exists());
        // ... nor any lock, when nothing is trusted ...
        let nothing_trusted = TrustedDeps {
            deps: Vec::new(),
            ..trusted(Some(kept.clone()))
        };
        nothing_trusted.save_lock(&lock);
        assert!(!kept.exists());
        // ... one that does is.
        std::fs::write(&lock, full).unwrap();
        t.save_lock(&lock);
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), full);
        // A crate that names taper gets it; one that does not keeps its own.
        std::fs::write(&lock, bare).unwrap();
        t.seed_lock(&lock, &[]);
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), bare);
        t.seed_lock(&lock, &deps);
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), full);
    }

    #[test]
    fn the_analysis_manifest_points_at_the_cell_source_without_profiles() {
        let toml = analysis_cargo_toml("ctx", &[("taper".into(), "{ path = \"/t\" }".into())]);
        assert!(toml.contains("path = \"../src/lib.rs\""));
        assert!(toml.contains("taper = { path = \"/t\" }\n"));
        assert!(!toml.contains("[profile"));
    }
}
