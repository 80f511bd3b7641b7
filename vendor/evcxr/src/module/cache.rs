use super::artifacts::Artifact;
use super::artifacts::read_artifacts;
use anyhow::Context;
use anyhow::Result;
use anyhow::anyhow;
use std::borrow::Cow;
use std::fmt::Display;
use std::fmt::Write;
use std::hash::Hasher;
use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

pub(crate) const TARGET_DIR_ENV: &str = "EVCXR_TARGET_DIR";

pub(crate) enum CacheResult {
    /// We got a cache hit. The cache result has been written to appropriate output location.
    Hit,
    /// We got a cache miss. If compilation succeeds
    Miss(CacheMiss),
    /// The current compiler invocation can't be cached.
    NonCache,
}

pub(crate) struct CacheMiss {
    cache_subdirectory: PathBuf,
    output_directory: PathBuf,
    meta: String,
    target_dir: String,
}

// taper's patch (vendor/README.md): a dep-info file names the files a crate
// was built from, and for a crate with a build script these include its
// generated files under the target folder (`.../build/<crate>/out/...`).
// Cached as they were, a hit in another target folder pointed cargo at files
// that do not exist there, so cargo rebuilt the crate and everything above
// it for every cell. The cache keeps the target folder as a placeholder, as
// the cache key already does, and a hit writes in the current one.
const TARGET_DIR_PLACEHOLDER: &str = "<evcxr_target_dir>";

// Salted into the cache key, so that entries written before the placeholder
// (holding some other target folder's paths), or keyed without the contents
// of the crates they link (below), are never hit again.
const CACHE_FORMAT: &str = "extern-contents-2";

// taper's patch (vendor/README.md): a crate's build depends on the exact
// builds of the crates it links (`--extern`), not only on their paths.
// rustc records the hash (SVH) of every dependency a crate was built
// against, and a dependency built differently is not found at all ("can't
// find crate", E0463). Builds of the same crate differ from one target
// folder to the next (a crate that includes a generated file hashes that
// file's path, under the target folder), so a cached crate built against
// one kernel's serde, hit in a folder whose serde was built there, did not
// load. The key therefore takes the contents of every linked file.
const EXTERN_CONTENTS: &str = "extern-contents:";

fn is_dep_info(artifact: &Artifact) -> bool {
    artifact.emit == "dep-info"
}

/// The values of environment variables relevant to caching.
pub(crate) struct CacheEnv {
    target_dir: String,
}

/// Checks arguments to `command`, produces a cache key then checks to see if it already exists. If
/// it does, copies the cached output to where the actual output is expected. Note, we don't check
/// the rustc version, since we should have the path to the standard library on the command. Using a
/// different version of rustc would require also using a different standard library.
pub(crate) fn access_cache(command: &Command) -> Result<CacheResult> {
    if std::env::var(super::CACHE_ENABLED_ENV).is_err() {
        return Ok(CacheResult::NonCache);
    }
    let cache_dir = cache_directory()?;
    let cache_env = CacheEnv::from_env()?;
    let Some(rust_command_line) = RustCommandLine::parse(command) else {
        return Ok(CacheResult::NonCache);
    };
    // taper: the cell crate is never cached, whatever its flags. Its command
    // line stays the same from cell to cell while its source changes, so a
    // cached copy would be the first cell's library for every later cell.
    // Checked before the key, which reads every linked file.
    if super::execution_so_source(command).is_some() {
        return Ok(CacheResult::NonCache);
    }
    if rust_command_line.is_incremental {
        // Cargo disables incremental compilation for crates that that it downloads, which are the
        // ones that we want to cache the compilation of. So when incremental compilation is
        // enabled, that means its a local crate, so we disable caching.
        return Ok(CacheResult::NonCache);
    }
    let Some(key) = cache_key(command, &cache_env)? else {
        // A linked file that cannot be read: rustc reports it, uncached.
        return Ok(CacheResult::NonCache);
    };
    let output_directory = rust_command_line.output_directory;
    let cache_subdirectory = cache_dir.join(key.to_string());
    if let Ok(stderr) = std::fs::read_to_string(cache_subdirectory.join("stderr")) {
        let mut artifacts_out = Vec::new();
        for mut artifact in read_artifacts(&stderr) {
            let Some(filename) = artifact.path.file_name() else {
                continue;
            };
            let cache_path = cache_subdirectory.join(filename);
            let output_path = output_directory.join(filename);
            if is_dep_info(&artifact) {
                let text = std::fs::read_to_string(&cache_path)?;
                std::fs::write(
                    &output_path,
                    text.replace(TARGET_DIR_PLACEHOLDER, &cache_env.target_dir),
                )?;
            } else {
                std::fs::copy(&cache_path, &output_path).with_context(|| {
                    format!(
                        "Failed to copy from cache `{}` -> `{}`",
                        cache_path.display(),
                        output_path.display()
                    )
                })?;
            }
            artifact.path = output_path;
            artifacts_out.push(artifact);
        }

        // Update the hit counter file for this entry. The main purpose of this is to track how
        // recently this cache entry was used so that we can clean up the least recently used
        // entries after the build finishes.
        let hits_file = cache_subdirectory.join("hits");
        let mut hits: u32 = std::fs::read_to_string(&hits_file)?.parse()?;
        hits += 1;
        std::fs::write(&hits_file, format!("{hits}"))?;

        // We only emit the artifacts once we've copied all the cache files over, otherwise things
        // break for some reason that isn't obvious.
        for a in artifacts_out {
            eprintln!("{a}");
        }
        return Ok(CacheResult::Hit);
    }
    Ok(CacheResult::Miss(CacheMiss {
        output_directory,
        cache_subdirectory,
        meta: cache_key_inputs(command, &cache_env)?,
        target_dir: cache_env.target_dir,
    }))
}

fn cache_directory() -> Result<PathBuf> {
    Ok(dirs::cache_dir()
        .ok_or_else(|| anyhow!("Failed to get determine directory"))?
        .join("evcxr"))
}

struct RustCommandLine {
    output_directory: PathBuf,
    is_incremental: bool,
}

impl RustCommandLine {
    fn parse(command: &Command) -> Option<Self> {
        let mut args = command.get_args();
        let mut out_dir = None;
        let mut is_incremental = false;
        while let Some(arg) = args.next() {
            if arg == "--out-dir" {
                out_dir = args.next().map(PathBuf::from);
            }
            if arg == "-C" {
                let Some(next) = args.next() else {
                    break;
                };
                if next.to_string_lossy().starts_with("incremental=") {
                    is_incremental = true;
                }
            }
        }
        if let Some(output_directory) = out_dir {
            return Some(Self {
                output_directory,
                is_incremental,
            });
        }
        None
    }
}

impl CacheEnv {
    fn from_env() -> Result<Self> {
        fn get_env(var_name: &str) -> Result<String> {
            std::env::var(var_name)
                .with_context(|| format!("Failed to get environment variable `{var_name}`"))
        }

        Ok(CacheEnv {
            target_dir: get_env(TARGET_DIR_ENV)?,
        })
    }
}

fn cache_key_inputs(command: &Command, env: &CacheEnv) -> Result<String> {
    let mut out = String::new();
    cache_key_inputs_do(command, env, |input| {
        out.push_str(input);
        out.push('\n');
    })?;
    Ok(out)
}

/// Feeds `callback` what the key is made of: the format tag, each argument
/// with the target folder replaced by a placeholder, and after each
/// `--extern name=path` the digest of the file's contents. Returns `false`
/// when a linked file could not be read.
fn cache_key_inputs_do(
    command: &Command,
    env: &CacheEnv,
    mut callback: impl FnMut(&str),
) -> Result<bool> {
    (callback)(CACHE_FORMAT);
    let mut after_extern = false;
    for arg in command.get_args() {
        let raw = arg
            .to_str()
            .ok_or_else(|| anyhow!("Non-UTF8 argument to rustc. Caching not supported."))?;
        let mut arg = Cow::Borrowed(raw);
        if arg.contains(&env.target_dir) {
            arg = Cow::Owned(arg.replace(&env.target_dir, "<target_dir>"));
        }
        (callback)(&arg);
        if after_extern && let Some((_, path)) = raw.split_once('=') {
            let Some(digest) = contents_digest(std::path::Path::new(path)) else {
                return Ok(false);
            };
            (callback)(&format!("{EXTERN_CONTENTS}{digest:016x}"));
        }
        after_extern = raw == "--extern";
    }
    Ok(true)
}

/// A digest of a file's bytes (the same hasher as the key: stable for a
/// given toolchain, which the key's standard library path pins anyway).
fn contents_digest(path: &std::path::Path) -> Option<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Some(hasher.finish()),
            Ok(read) => hasher.write(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// The cache key of `command`, or `None` when a linked file could not be
/// read.
fn cache_key(command: &Command, env: &CacheEnv) -> Result<Option<u64>> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let complete = cache_key_inputs_do(command, env, |input| {
        std::hash::Hash::hash(input, &mut hasher)
    })?;
    Ok(complete.then(|| hasher.finish()))
}

impl CacheMiss {
    /// Stores the build's artifacts. taper's patch: they are written into a
    /// staging folder and renamed into place, so that two kernels building
    /// the same crate at once (in different target folders, so differently)
    /// never leave an entry mixing files of both builds; the first one
    /// stored stays.
    pub(super) fn update_cache(&self, artifacts: &[Artifact]) -> Result<()> {
        let parent = self
            .cache_subdirectory
            .parent()
            .ok_or_else(|| anyhow!("the cache entry has no parent folder"))?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("Failed to create cache directory `{}`", parent.display()))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(parent)?;
        for artifact in artifacts {
            let Some(filename) = artifact.path.file_name() else {
                continue;
            };
            let output_path = self.output_directory.join(filename);
            let cache_path = staging.path().join(filename);
            if is_dep_info(artifact) {
                let text = std::fs::read_to_string(&output_path)?;
                std::fs::write(
                    &cache_path,
                    text.replace(&self.target_dir, TARGET_DIR_PLACEHOLDER),
                )?;
                continue;
            }
            std::fs::copy(&output_path, &cache_path).with_context(|| {
                format!(
                    "Failed to copy output to cache `{}` -> `{}`",
                    output_path.display(),
                    cache_path.display()
                )
            })?;
        }

        std::fs::write(staging.path().join("meta"), &self.meta)?;
        std::fs::write(staging.path().join("hits"), "0")?;
        let mut stderr = String::new();
        for a in artifacts {
            writeln!(&mut stderr, "{a}").unwrap();
        }
        std::fs::write(staging.path().join("stderr"), stderr)?;
        match std::fs::rename(staging.path(), &self.cache_subdirectory) {
            // Renamed away: nothing left for the guard to remove.
            Ok(()) => std::mem::forget(staging),
            // Another build stored this entry first; the staging folder goes.
            Err(_) if self.cache_subdirectory.join("stderr").is_file() => {}
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "Failed to store cache entry `{}`",
                        self.cache_subdirectory.display()
                    )
                });
            }
        }
        Ok(())
    }
}

/// Reduces cache usage to <= `cache_bytes`. Returns the number of bytes freed.
pub(crate) fn cleanup(cache_bytes: u64) -> Result<u64> {
    let mut freed = 0;
    let mut entries = read_cache_entries()?;
    let total_size: u64 = entries.iter().map(|e| e.size).sum();
    if total_size <= cache_bytes {
        return Ok(freed);
    }
    entries.sort_by_key(|e| e.last_access);
    entries.reverse();
    let mut to_free = (total_size - cache_bytes) as i64;
    while to_free > 0 {
        let Some(entry) = entries.pop() else {
            break;
        };
        std::fs::remove_dir_all(entry.subdirectory)?;
        to_free -= entry.size as i64;
        freed += entry.size;
    }

    Ok(freed)
}

#[derive(Default)]
pub(crate) struct CacheStats {
    num_entries: u64,
    disk_used: u64,
    num_hits: u64,
}

impl CacheStats {
    pub(crate) fn get() -> Result<Self> {
        let mut result = CacheStats::default();
        for entry in read_cache_entries()? {
            result.num_entries += 1;
            result.disk_used += entry.size;
            if let Some(hits) = std::fs::read_to_string(entry.subdirectory.join("hits"))
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                result.num_hits += hits;
            }
        }
        Ok(result)
    }
}

impl Display for CacheStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Entries: {}", self.num_entries)?;
        writeln!(f, "Disk used: {} MiB", self.disk_used / 1024 / 1024)?;
        writeln!(f, "Hits: {}", self.num_hits)?;
        Ok(())
    }
}

struct CacheEntry {
    last_access: SystemTime,
    size: u64,
    subdirectory: PathBuf,
}

fn read_cache_entries() -> Result<Vec<CacheEntry>> {
    let mut cache_entries = Vec::new();
    let directory = cache_directory()?;
    if !directory.exists() {
        return Ok(vec![]);
    }
    for entry in directory.read_dir()? {
        let entry = entry?;
        // An entry being written (taper's patch: `update_cache`).
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(metadata) = std::fs::metadata(entry.path().join("hits")) else {
            continue;
        };
        let Ok(last_access) = metadata.modified() else {
            continue;
        };
        let mut size = 0;
        for item in entry.path().read_dir()? {
            let item = item?;
            let Ok(metadata) = item.metadata() else {
                continue;
            };
            size += metadata.len();
        }
        cache_entries.push(CacheEntry {
            last_access,
            size,
            subdirectory: entry.path().to_owned(),
        });
    }
    Ok(cache_entries)
}

#[cfg(test)]
mod tests {
    use super::cache_key;
    use std::path::Path;
    use std::process::Command;

    const SAMPLE_ARGS: &[&str] = &[
        "--crate-name",
        "regex",
        "--edition=2021",
        "/home/david/.cargo/registry/src/index.crates.io-6f17d22bba15001f/regex-1.10.2/src/lib.rs",
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
        "--crate-type",
        "lib",
        "--crate-type",
        "dylib",
        "--emit=dep-info,metadata,link",
        "-C",
        "opt-level=2",
        "-C",
        "embed-bitcode=no",
        "-C",
        "codegen-units=16",
        "-C",
        "debug-assertions=on",
        "--cfg",
        "feature=\"default\"",
        "--cfg",
        "feature=\"perf\"",
        "--cfg",
        "feature=\"perf-backtrack\"",
        "--cfg",
        "feature=\"perf-cache\"",
        "--cfg",
        "feature=\"perf-dfa\"",
        "--cfg",
        "feature=\"perf-inline\"",
        "--cfg",
        "feature=\"perf-literal\"",
        "--cfg",
        "feature=\"perf-onepass\"",
        "--cfg",
        "feature=\"std\"",
        "--cfg",
        "feature=\"unicode\"",
        "--cfg",
        "feature=\"unicode-age\"",
        "--cfg",
        "feature=\"unicode-perl\"",
        "--cfg",
        "feature=\"unicode-script\"",
        "--cfg",
        "feature=\"unicode-segment\"",
        "-C",
        "metadata=7a60aee6f9c9be14",
        "-C",
        "extra-filename=-7a60aee6f9c9be14",
        "-C",
        "rpath",
        "--out-dir",
        "/tmp/.tmpAGPAC4/target/x86_64-unknown-linux-gnu/debug/deps",
        "--target",
        "x86_64-unknown-linux-gnu",
        "-C",
        "linker=/usr/bin/clang-15",
        "-C",
        "strip=debuginfo",
        "-L",
        "dependency=/tmp/.tmpAGPAC4/target/x86_64-unknown-linux-gnu/debug/deps",
        "-L",
        "dependency=/tmp/.tmpAGPAC4/target/debug/deps",
        "--extern",
        "aho_corasick=/tmp/.tmpAGPAC4/target/x86_64-unknown-linux-gnu/debug/deps/libaho_corasick-4147e32b287a933f.so",
        "--extern",
        "memchr=/tmp/.tmpAGPAC4/target/x86_64-unknown-linux-gnu/debug/deps/libmemchr-3ac30149df7a21d7.so",
        "--extern",
        "regex_automata=/tmp/.tmpAGPAC4/target/x86_64-unknown-linux-gnu/debug/deps/libregex_automata-b68475a948dc5cb3.so",
        "--extern",
        "regex_syntax=/tmp/.tmpAGPAC4/target/x86_64-unknown-linux-gnu/debug/deps/libregex_syntax-e85cd106ae7f15b9.so",
        "--cap-lints",
        "allow",
        "-Cprefer-dynamic",
        "--extern",
        "core=/home/david/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/lib/rustlib/x86_64-unknown-linux-gnu/lib/libstd-6498d8891e016dca.so",
        "-C",
        "prefer-dynamic",
    ];

    fn replace(command: &Command, replacements: &[(&str, &str)]) -> Command {
        let mut new_command = Command::new(command.get_program());
        for arg in command.get_args() {
            let mut new_arg = arg.to_str().unwrap().to_owned();
            for (from, to) in replacements {
                new_arg = new_arg.replace(from, to);
            }
            new_command.arg(new_arg);
        }
        new_command
    }

    /// `SAMPLE_ARGS` built in the target folder `target_dir`, whose linked
    /// files are written there, each holding `contents` and its name.
    fn sample_build(target_dir: &Path, contents: &str) -> (Command, super::CacheEnv) {
        let sample_dir = "/tmp/.tmpAGPAC4";
        let dir = target_dir.to_str().unwrap();
        let command = replace(
            &sample_command(),
            &[(sample_dir, dir), ("/home/david/.rustup", dir)],
        );
        let mut args = command.get_args().peekable();
        while let Some(arg) = args.next() {
            if arg == "--extern" {
                let (_, path) = args
                    .next()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .split_once('=')
                    .unwrap();
                std::fs::create_dir_all(Path::new(path).parent().unwrap()).unwrap();
                std::fs::write(path, format!("{contents} {path}")).unwrap();
            }
        }
        let env = super::CacheEnv {
            target_dir: dir.to_owned(),
        };
        (command, env)
    }

    fn sample_command() -> Command {
        let mut command = Command::new(
            "/home/david/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/rustc",
        );
        command.args(SAMPLE_ARGS);
        command
    }

    #[test]
    fn test_hash() {
        let first = tempfile::tempdir().unwrap();
        let (command, cache_env) = sample_build(first.path(), "v1");
        let base = cache_key(&command, &cache_env).unwrap().unwrap();
        assert_eq!(cache_key(&command, &cache_env).unwrap(), Some(base));
        // Changing a crate name should affect the hash.
        let renamed = replace(&command, &[("memchr=", "mem_chr=")]);
        assert_ne!(cache_key(&renamed, &cache_env).unwrap(), Some(base));
        // Changing the target folder should not affect the hash, when the
        // linked files are the same.
        let second = tempfile::tempdir().unwrap();
        let moved = |contents| {
            let dir = second.path().to_str().unwrap();
            let (command, env) = sample_build(second.path(), contents);
            // The files name their own path: write the first folder's.
            let mut args = command.get_args().peekable();
            while let Some(arg) = args.next() {
                if arg == "--extern" {
                    let path = args
                        .next()
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .split_once('=')
                        .unwrap()
                        .1;
                    let original = path.replace(dir, first.path().to_str().unwrap());
                    std::fs::write(path, format!("{contents} {original}")).unwrap();
                }
            }
            (command, env)
        };
        let (command, cache_env) = moved("v1");
        assert_eq!(cache_key(&command, &cache_env).unwrap(), Some(base));
        // A linked crate built differently (what rustc refuses to load
        // into a crate built against the other build) changes the hash.
        let (command, cache_env) = moved("v2");
        assert_ne!(cache_key(&command, &cache_env).unwrap(), Some(base));
        // A linked file that is missing: no key, so no caching.
        let (command, cache_env) = moved("v1");
        let memchr = command
            .get_args()
            .filter_map(|a| a.to_str().unwrap().strip_prefix("memchr="))
            .next()
            .unwrap()
            .to_owned();
        std::fs::remove_file(memchr).unwrap();
        assert_eq!(cache_key(&command, &cache_env).unwrap(), None);
    }

    #[test]
    fn test_rustc_command_line() {
        let command = sample_command();
        let rustc_command_line = super::RustCommandLine::parse(&command).unwrap();
        assert_eq!(
            rustc_command_line.output_directory,
            Path::new("/tmp/.tmpAGPAC4/target/x86_64-unknown-linux-gnu/debug/deps")
        );
        assert!(!rustc_command_line.is_incremental);
    }
}
