//! `:dep taper` without a path, built once and then copied.
//!
//! A notebook writes `:dep taper`; the kernel turns it into a path
//! dependency on the trainer crate recorded at install time
//! ([`trainer_crate_path`]), so no notebook names a folder.
//!
//! evcxr's build cache keeps a compiled crate under its rustc command line,
//! but it skips every crate cargo compiles incrementally, and cargo compiles
//! path dependencies incrementally. Left at that, the first `:dep taper` of
//! every kernel compiled taper itself for about a minute, even after
//! `taper install --warm`. Two things make taper cacheable like candle:
//! - a `.cargo/config.toml` above evcxr's crate folder turns incremental
//!   compilation off for `taper` and `taper-widgets` alone (evcxr's own cell
//!   crate stays incremental: its command line never changes while its
//!   source does, so it must never be cached);
//! - the dependency points at a snapshot of the sources in a folder named by
//!   their content hash ([`SourceSnapshot`]), so an edited trainer gets a new
//!   path, a new command line and a fresh build rather than a stale cache hit.
//!
//! The snapshot also carries taper's patched candle-core (`vendor/`), and
//! the same configuration patches crates.io's candle-core with it
//! ([`cargo_config`]), so a notebook trains with the candle the workspace
//! builds and tests: the faster backward pass, and none of the
//! `tokenizers` crates that upstream candle-core depends on.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// Which crates of taper's a notebook may `:dep` by name.
const CRATES: [(&str, &str); 2] = [("taper", "trainer"), ("taper-widgets", "widgets")];

/// The vendored crates a snapshot carries, patched over crates.io's.
const VENDORED: [&str; 1] = ["candle-core"];

/// Cargo configuration for the folder above evcxr's crate folder: taper's
/// crates (and the vendored ones, path dependencies too) built without
/// incremental compilation, and, once `sources` (the snapshot) is known,
/// its vendored crates patched over crates.io's.
pub fn cargo_config(sources: Option<&Path>) -> String {
    let mut config = String::from(
        "# Written by the taper kernel: taper's crates are path dependencies, which\n\
         # cargo builds incrementally and evcxr's build cache therefore skips. Built\n\
         # without incremental compilation, they are cached like any other crate.\n",
    );
    let path_crates = CRATES.iter().map(|(name, _)| *name).chain(VENDORED);
    for name in path_crates {
        config.push_str(&format!(
            "[profile.dev.package.{name}]\nincremental = false\n"
        ));
    }
    let vendored: Vec<_> = sources
        .map(|root| {
            VENDORED
                .iter()
                .map(|name| (name, root.join("vendor").join(name)))
                .filter(|(_, path)| path.join("Cargo.toml").is_file())
                .collect()
        })
        .unwrap_or_default();
    if !vendored.is_empty() {
        config.push_str("# taper's patched crates (vendor/README.md in taper's sources).\n");
        config.push_str("[patch.crates-io]\n");
        for (name, path) in vendored {
            config.push_str(&format!(
                "{name} = {{ path = {:?} }}\n",
                path.display().to_string()
            ));
        }
    }
    config
}

/// The trainer crate's folder, for `:dep taper`: `TAPER_CRATE_PATH`, else
/// the source tree this binary was built from, when it is still there.
pub fn trainer_crate_path() -> Option<String> {
    if let Ok(path) = std::env::var("TAPER_CRATE_PATH") {
        return Some(path);
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainer");
    built_from
        .join("Cargo.toml")
        .is_file()
        .then(|| built_from.canonicalize().ok())
        .flatten()
        .map(|p| p.display().to_string())
}

/// `:dep taper` and `:dep taper-widgets` (without a source) become path
/// dependencies on the snapshot of the recorded sources, so no notebook
/// needs an absolute path and the build is cached across kernels.
pub fn resolve_taper_dep(code: &str) -> String {
    if !code.lines().any(|line| asked_crate(line).is_some()) {
        return code.to_string();
    }
    match patched_sources_root() {
        Some(root) => rewrite_deps(code, &root),
        None => code.to_string(),
    }
}

/// [`sources_root`], with the cargo configuration above the cell crate
/// patching crates.io's candle-core with the snapshot's.
fn patched_sources_root() -> Option<PathBuf> {
    let root = sources_root()?;
    super::scratch::write_cargo_config(&cargo_config(Some(&root)));
    Some(root)
}

/// The crate (name, folder) a `:dep` line asks for without a source.
fn asked_crate(line: &str) -> Option<(&'static str, &'static str)> {
    let asked = line.trim().strip_prefix(":dep ")?.trim().replace('_', "-");
    CRATES.iter().find(|(name, _)| *name == asked).copied()
}

/// `code` with each bare `:dep taper` / `:dep taper-widgets` pointed at the
/// crate's folder under `root`.
fn rewrite_deps(code: &str, root: &Path) -> String {
    code.lines()
        .map(|line| match asked_crate(line) {
            Some((name, folder)) => format!(":dep {name} = {}", dep_spec(root, folder)),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The dependency specification `:dep taper` becomes, for the crate in
/// `folder` under `root`.
fn dep_spec(root: &Path, folder: &str) -> String {
    format!("{{ path = \"{}\" }}", root.join(folder).display())
}

/// `(name, specification)` of what `:dep taper` and `:dep taper-widgets`
/// become in this process, for evcxr's trusted dependencies: a `:dep
/// taper` then skips evcxr's validating `cargo metadata` over taper's
/// graph (1-2 s), and rust-analyzer can load taper's graph whenever the
/// kernel is idle, rather than in the first cell that uses it
/// (notes/kernel-latency.md). The cargo configuration is written now, so
/// that the analysis sees the patched candle-core the builds will use.
pub fn trusted_deps() -> Vec<(String, String)> {
    patched_sources_root().map_or_else(Vec::new, |root| trusted_deps_under(&root))
}

/// [`trusted_deps`] for the sources under `root`.
fn trusted_deps_under(root: &Path) -> Vec<(String, String)> {
    CRATES
        .iter()
        .map(|(name, folder)| (name.to_string(), dep_spec(root, folder)))
        .collect()
}

/// Where evcxr keeps a cell crate's lock file that resolves taper's graph,
/// for the next kernel's first `:dep taper` (evcxr's `trusted_deps.rs`):
/// cargo would otherwise resolve the graph again, looking at the registry.
pub fn trusted_lock() -> PathBuf {
    cache_home().join("taper").join("cell-Cargo.lock")
}

/// The folder that holds `trainer/` and `widgets/` for this process: the
/// content-addressed snapshot, or the recorded sources themselves when no
/// snapshot can be written (a read-only cache still works, uncached).
fn sources_root() -> Option<PathBuf> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let trainer = PathBuf::from(trainer_crate_path()?);
        let workspace = trainer.parent()?.to_path_buf();
        match SourceSnapshot::of(&workspace).and_then(|s| s.materialise()) {
            Ok(root) => Some(root),
            Err(e) => {
                super::log(&format!(
                    "deps: no source snapshot of {} ({e}); :dep taper builds from the sources",
                    workspace.display()
                ));
                Some(workspace)
            }
        }
    })
    .clone()
}

/// The trainer and widgets sources, their workspace manifest, and a hash
/// of all of it.
pub struct SourceSnapshot {
    workspace: PathBuf,
    files: Vec<PathBuf>,
    hash: String,
}

impl SourceSnapshot {
    /// Lists and hashes the crates' files under `workspace` (the folder
    /// holding the workspace `Cargo.toml`), and those of the vendored crates
    /// it has, leaving out build output.
    pub fn of(workspace: &Path) -> std::io::Result<Self> {
        let mut files = vec![PathBuf::from("Cargo.toml")];
        for (_, folder) in CRATES {
            list_files(workspace, Path::new(folder), &mut files)?;
        }
        for name in VENDORED {
            let folder = Path::new("vendor").join(name);
            if workspace.join(&folder).is_dir() {
                list_files(workspace, &folder, &mut files)?;
            }
        }
        files.sort();
        let mut hasher = Sha256::new();
        for file in &files {
            hasher.update(file.to_string_lossy().as_bytes());
            hasher.update([0]);
            hasher.update(std::fs::read(workspace.join(file))?);
            hasher.update([0]);
        }
        let hash = hex::encode(&hasher.finalize()[..8]);
        Ok(Self {
            workspace: workspace.to_path_buf(),
            files,
            hash,
        })
    }

    /// Where this snapshot lives: `$XDG_CACHE_HOME/taper/sources/<hash>`
    /// (`~/.cache/...` by default).
    pub fn folder(&self) -> PathBuf {
        cache_home().join("taper").join("sources").join(&self.hash)
    }

    /// Copies the files into [`Self::folder`] unless they are there; returns
    /// the folder. Written into a temporary sibling and renamed, so two
    /// kernels starting at once, or a kill half-way, never leave a partial
    /// snapshot.
    pub fn materialise(&self) -> std::io::Result<PathBuf> {
        let folder = self.folder();
        if folder.join("Cargo.toml").is_file() {
            return Ok(folder);
        }
        let parent = folder.parent().expect("the snapshot folder has a parent");
        std::fs::create_dir_all(parent)?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(parent)?;
        for file in &self.files {
            let to = staging.path().join(file);
            std::fs::create_dir_all(to.parent().expect("files sit in folders"))?;
            std::fs::copy(self.workspace.join(file), &to)?;
        }
        // The workspace's other members (the kernel) are not part of the
        // snapshot: the manifest lists only the two crates it holds.
        let manifest = std::fs::read_to_string(staging.path().join("Cargo.toml"))?;
        std::fs::write(
            staging.path().join("Cargo.toml"),
            only_library_members(&manifest),
        )?;
        match std::fs::rename(staging.path(), &folder) {
            Ok(()) => {
                // Renamed away: nothing left for the guard to remove.
                std::mem::forget(staging);
                Ok(folder)
            }
            // Another kernel made the same snapshot first.
            Err(_) if folder.join("Cargo.toml").is_file() => Ok(folder),
            Err(e) => Err(e),
        }
    }
}

/// The workspace manifest with `members` and `default-members` cut down to
/// the crates a snapshot holds.
fn only_library_members(manifest: &str) -> String {
    let members = CRATES
        .iter()
        .map(|(_, folder)| format!("\"{folder}\""))
        .collect::<Vec<_>>()
        .join(", ");
    manifest
        .lines()
        .map(|line| {
            let key = line.split('=').next().unwrap_or("").trim();
            if key == "members" || key == "default-members" {
                format!("{key} = [{members}]")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn list_files(root: &Path, relative: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = relative.join(&name);
        if entry.file_type()?.is_dir() {
            list_files(root, &path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn cache_home() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .canonicalize()
            .unwrap()
    }

    #[test]
    fn the_snapshot_holds_both_crates_and_a_manifest_without_the_kernel() {
        let cache = tempfile::tempdir().unwrap();
        let snapshot = SourceSnapshot::of(&workspace()).unwrap();
        assert!(snapshot
            .files
            .contains(&PathBuf::from("trainer/src/lib.rs")));
        assert!(snapshot
            .files
            .contains(&PathBuf::from("widgets/Cargo.toml")));
        assert!(!snapshot.files.iter().any(|f| f.starts_with("kernel")));
        assert!(snapshot
            .files
            .contains(&PathBuf::from("vendor/candle-core/Cargo.toml")));
        let made = with_cache_home(cache.path(), || snapshot.materialise().unwrap());
        assert!(made.starts_with(cache.path()), "{}", made.display());
        assert!(made.ends_with(&snapshot.hash));
        let manifest = std::fs::read_to_string(made.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("members = [\"trainer\", \"widgets\"]"),
            "{manifest}"
        );
        assert!(!manifest.contains("\"kernel\""), "{manifest}");
        assert!(made.join("trainer/src/lib.rs").is_file());
        // A second call finds it and copies nothing.
        std::fs::remove_file(made.join("trainer/src/lib.rs")).unwrap();
        let again = with_cache_home(cache.path(), || snapshot.materialise().unwrap());
        assert_eq!(again, made);
        assert!(!made.join("trainer/src/lib.rs").exists());
    }

    #[test]
    fn the_cargo_config_patches_candle_once_the_snapshot_is_known() {
        let before = cargo_config(None);
        assert!(before.contains("[profile.dev.package.taper]\nincremental = false"));
        assert!(before.contains("[profile.dev.package.candle-core]\nincremental = false"));
        assert!(!before.contains("[patch"), "{before}");
        let after = cargo_config(Some(&workspace()));
        let vendored = workspace().join("vendor/candle-core").display().to_string();
        assert!(
            after.contains(&format!(
                "[patch.crates-io]\ncandle-core = {{ path = {vendored:?} }}"
            )),
            "{after}"
        );
        // A source tree without vendor/ patches nothing.
        let bare = tempfile::tempdir().unwrap();
        assert!(!cargo_config(Some(bare.path())).contains("[patch"));
    }

    #[test]
    fn the_hash_follows_the_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        for (_, folder) in CRATES {
            std::fs::create_dir_all(dir.path().join(folder).join("src")).unwrap();
            std::fs::write(dir.path().join(folder).join("src/lib.rs"), "// one").unwrap();
        }
        let first = SourceSnapshot::of(dir.path()).unwrap().hash;
        assert_eq!(first, SourceSnapshot::of(dir.path()).unwrap().hash);
        std::fs::write(dir.path().join("trainer/src/lib.rs"), "// two").unwrap();
        assert_ne!(first, SourceSnapshot::of(dir.path()).unwrap().hash);
    }

    #[test]
    fn the_trusted_dependencies_are_exactly_what_dep_lines_become() {
        // evcxr skips validating a `:dep` only when its text matches.
        let root = Path::new("/snap/abc");
        for (name, spec) in trusted_deps_under(root) {
            assert_eq!(
                rewrite_deps(&format!(":dep {name}"), root),
                format!(":dep {name} = {spec}")
            );
        }
        assert_eq!(trusted_deps_under(root).len(), CRATES.len());
    }

    #[test]
    fn only_dep_lines_naming_taper_are_rewritten() {
        let code = ":dep taper\n:dep serde = \"1\"\n :dep taper_widgets\nlet x = 1;";
        let resolved = rewrite_deps(code, Path::new("/snap/abc"));
        assert_eq!(
            resolved.lines().collect::<Vec<_>>(),
            [
                ":dep taper = { path = \"/snap/abc/trainer\" }",
                ":dep serde = \"1\"",
                ":dep taper-widgets = { path = \"/snap/abc/widgets\" }",
                "let x = 1;"
            ]
        );
        assert_eq!(resolve_taper_dep("let y = 2;"), "let y = 2;");
    }

    fn with_cache_home<T>(home: &Path, f: impl FnOnce() -> T) -> T {
        // Tests in this module are the only ones that read XDG_CACHE_HOME.
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = LOCK.lock().unwrap();
        let before = std::env::var_os("XDG_CACHE_HOME");
        std::env::set_var("XDG_CACHE_HOME", home);
        let out = f();
        match before {
            Some(v) => std::env::set_var("XDG_CACHE_HOME", v),
            None => std::env::remove_var("XDG_CACHE_HOME"),
        }
        out
    }
}
