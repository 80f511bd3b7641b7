//! `taper`: the command-line front door.
//!
//! Today it has one subcommand, `taper train`, which runs a built-in recipe
//! with Hugging Face style arguments. The Jupyter kernel, the REPL, the
//! installer and the launcher join it as subcommands of their own.

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train { args } => train::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
