//! `taper`: the command-line front door.
//!
//! `taper train` runs a built-in recipe with Hugging Face style arguments;
//! `taper launch` starts one process per device as torchrun does; `taper
//! kernel` serves Jupyter, `taper install` writes its kernelspec and `taper
//! repl` runs the same engine in a terminal.

mod cell_stdout;
mod install;
mod kernel;
mod launch;
mod repl;
mod train;

use clap::{Parser, Subcommand};

/// taper: train candle models with a Hugging Face style Trainer.
#[derive(Parser)]
#[command(name = "taper", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a built-in recipe (`taper train --help` lists recipes and arguments).
    #[command(disable_help_flag = true)]
    Train {
        /// `--model NAME`, `--dataset NAME`, `--config FILE` and any TrainingArguments as `--key value`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a program once per device, with torchrun's environment (RANK, WORLD_SIZE, ...).
    Launch(launch::LaunchArgs),
    /// Serve a Jupyter kernel (what kernel.json runs).
    Kernel {
        /// The connection file Jupyter wrote.
        #[arg(long = "connection-file", short = 'f')]
        connection_file: std::path::PathBuf,
    },
    /// Install the Jupyter kernelspec.
    Install(install::InstallArgs),
    /// Rust with `:dep taper` in the terminal: the kernel's engine with line editing.
    Repl,
}

fn main() -> std::process::ExitCode {
    // evcxr runs each notebook's code in a child process started from this
    // very binary; in that child this call never returns.
    // There, partial lines of output are passed on too (see cell_stdout).
    cell_stdout::install_in_cell_process();
    evcxr::runtime_hook();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train { args } => train::run(&args).map(|()| 0),
        Command::Launch(args) => launch::run(args),
        Command::Kernel { connection_file } => kernel::run(&connection_file).map(|()| 0),
        Command::Install(args) => install::run(args).map(|()| 0),
        Command::Repl => repl::run().map(|()| 0),
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
