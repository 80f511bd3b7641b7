//! `taper install`: writes the kernelspec Jupyter finds, so "Rust (taper)"
//! appears in the launcher.
//!
//! Where it goes follows `jupyter kernelspec install`: the user's data folder
//! (`--user`, the default), the active Python environment (`--sys-prefix`),
//! or any prefix (`--prefix P`). kernel.json runs this very binary with
//! `interrupt_mode: message`, so interrupts arrive on the control channel.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The launcher's icons, as Jupyter looks for them beside kernel.json.
const LOGOS: [(&str, &[u8]); 3] = [
    ("logo-32x32.png", include_bytes!("../assets/logo-32x32.png")),
    ("logo-64x64.png", include_bytes!("../assets/logo-64x64.png")),
    ("logo-svg.svg", include_bytes!("../assets/logo-svg.svg")),
];

/// `taper install` options.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Install for the current user (the default).
    #[arg(long, conflicts_with_all = ["sys_prefix", "prefix"])]
    user: bool,
    /// Install into the active Python environment (`$VIRTUAL_ENV`, `$CONDA_PREFIX` or python3's sys.prefix).
    #[arg(long = "sys-prefix", conflicts_with = "prefix")]
    sys_prefix: bool,
    /// Install under this prefix (`PREFIX/share/jupyter/kernels`).
    #[arg(long)]
    prefix: Option<PathBuf>,
    /// The kernelspec's folder name.
    #[arg(long, default_value = "taper")]
    name: String,
    /// The name shown in Jupyter.
    #[arg(long = "display-name", default_value = "Rust (taper)")]
    display_name: String,
    /// Also build taper and candle into the kernel's build cache now (a few
    /// minutes, once), so a notebook's first `:dep taper` does not compile them.
    #[arg(long)]
    warm: bool,
}

/// Writes the kernelspec and prints where.
pub fn run(args: InstallArgs) -> Result<()> {
    let data_dir = if let Some(prefix) = &args.prefix {
        prefix.join("share/jupyter")
    } else if args.sys_prefix {
        sys_prefix()?.join("share/jupyter")
    } else {
        user_data_dir()?
    };
    let _ = args.user;
    let dir = data_dir.join("kernels").join(&args.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe().context("finding the taper binary")?;
    // Where `:dep taper` finds the trainer crate: recorded now, so no
    // notebook needs a path.
    let mut env = serde_json::json!({ "TAPER_IN_KERNEL": "1" });
    if let Some(path) = crate::kernel::trainer_crate_path() {
        env["TAPER_CRATE_PATH"] = serde_json::json!(path);
    }
    let spec = serde_json::json!({
        "argv": [exe, "kernel", "--connection-file", "{connection_file}"],
        "display_name": args.display_name,
        "language": "rust",
        "interrupt_mode": "message",
        "env": env,
        "metadata": { "debugger": false },
    });
    std::fs::write(
        dir.join("kernel.json"),
        serde_json::to_string_pretty(&spec)? + "\n",
    )?;
    for (name, bytes) in LOGOS {
        std::fs::write(dir.join(name), bytes)?;
    }
    println!("installed kernelspec {} in {}", args.name, dir.display());
    if args.warm {
        println!("warming the build cache: compiling taper and candle once (a few minutes)");
        let took = crate::kernel::warm_build_cache()?;
        println!("build cache warm ({:.0} s)", took.as_secs_f64());
    }
    Ok(())
}

fn user_data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("JUPYTER_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; use --prefix")?;
    Ok(PathBuf::from(home).join(".local/share/jupyter"))
}

fn sys_prefix() -> Result<PathBuf> {
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(dir) = std::env::var_os(var) {
            return Ok(PathBuf::from(dir));
        }
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .context(
            "--sys-prefix asks python3 for sys.prefix, and python3 did not run; use --prefix",
        )?;
    let prefix = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if prefix.is_empty() {
        bail!("python3 gave no sys.prefix; use --prefix");
    }
    Ok(PathBuf::from(prefix))
}
