//! `taper repl`: the kernel's engine in a terminal.
//!
//! The same evcxr engine, the same `:` commands, `%memory` and `name?`, with
//! line editing and a history file from rustyline. A cell is read until it
//! is complete (open brackets continue on the next line). Live output from
//! cells (the trainer's view, `taper::widgets::display`) arrives through
//! the display channel, as in a notebook, and is drawn as text that updates
//! in place. Ctrl-C while a cell runs stops training at the next step and
//! keeps every variable; a cell that does not stop within the grace period
//! loses the cell process, and the message says so.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustyline::error::ReadlineError;
use taper_widgets::protocol::{Ack, ChannelMessage, DISPLAY_ENV};

use crate::kernel::display::{DisplayHandler, DisplayServer};
use crate::kernel::magics::{self, Magic};
use crate::kernel::text::{completeness, Completeness};
use crate::kernel::{interrupt_grace, prepare_environment, resolve_taper_dep, Engine};

/// Lines printed by cells so far: a live view is redrawn in place only when
/// nothing was printed below it since its last frame.
static PRINTED: AtomicU64 = AtomicU64::new(0);

/// Runs the REPL until end of input (Ctrl-D) or `:quit`.
pub fn run() -> Result<()> {
    prepare_environment();
    // The cell process turns Ctrl-C into a stop at the next training step.
    std::env::set_var("TAPER_IN_KERNEL", "1");
    let display = DisplayServer::start(Arc::new(TerminalDisplay::default()))
        .context("starting the display channel")?;
    std::env::set_var(DISPLAY_ENV, display.path());
    let (engine, ready) = Engine::start()?;
    let outputs = ready.recv()?.map_err(anyhow::Error::msg)?;
    for (lines, to_stderr) in [(outputs.stdout, false), (outputs.stderr, true)] {
        std::thread::spawn(move || {
            for line in lines {
                PRINTED.fetch_add(1, Ordering::SeqCst);
                if to_stderr {
                    eprintln!("{line}");
                } else {
                    let (text, newline) = crate::cell_stdout::split_partial(&line);
                    let mut out = std::io::stdout().lock();
                    let _ = write!(out, "{text}{}", if newline { "\n" } else { "" });
                    let _ = out.flush();
                }
            }
        });
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())?;

    let mut editor = rustyline::DefaultEditor::new()?;
    let history = history_file();
    let _ = editor.load_history(&history);
    println!(
        "taper {} REPL: Rust with `:dep taper`. `:help` for commands, Ctrl-D to leave.",
        env!("CARGO_PKG_VERSION")
    );
    while let Some(cell) = read_cell(&mut editor)? {
        if cell.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(cell.as_str());
        if let Some(parent) = history.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = editor.save_history(&history);
        if matches!(cell.trim(), ":quit" | ":q" | ":exit") {
            break;
        }
        interrupted.store(false, Ordering::SeqCst);
        match magics::parse(&cell) {
            Some(magic) => run_magic(&engine, magic),
            None => run_cell(&engine, &cell, &interrupted),
        }
    }
    if let Some(pid) = engine.child_pid() {
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    Ok(())
}

fn history_file() -> std::path::PathBuf {
    std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default()
        .join(".local/share/taper/repl_history")
}

/// Reads lines until they form a complete cell; `None` at end of input.
fn read_cell(editor: &mut rustyline::DefaultEditor) -> Result<Option<String>> {
    let mut cell = String::new();
    loop {
        let prompt = if cell.is_empty() { ">> " } else { ".. " };
        match editor.readline(prompt) {
            Ok(line) => {
                cell.push_str(&line);
                cell.push('\n');
                if completeness(&cell) != Completeness::Incomplete {
                    return Ok(Some(cell));
                }
            }
            // Ctrl-C at the prompt drops the lines typed so far.
            Err(ReadlineError::Interrupted) => cell.clear(),
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

fn run_cell(engine: &Engine, cell: &str, interrupted: &Arc<AtomicBool>) {
    let code = resolve_taper_dep(cell);
    let running = Arc::new(AtomicBool::new(true));
    watch_for_interrupt(engine.clone(), running.clone(), interrupted.clone());
    let result = engine.execute(&code);
    running.store(false, Ordering::SeqCst);
    // Let the output threads print the cell's last lines first.
    std::thread::sleep(Duration::from_millis(20));
    match result {
        Ok(Ok(outputs)) => {
            if let Some(text) = outputs.content_by_mime_type.get("text/plain") {
                println!("{text}");
            }
        }
        Ok(Err(evcxr::Error::CompilationErrors(errors))) => {
            for error in errors {
                eprintln!("{}", error.rendered());
            }
        }
        Ok(Err(evcxr::Error::SubprocessTerminated(why))) => {
            eprintln!("{}", engine.process_ended_message(&why))
        }
        Ok(Err(e)) => eprintln!("{e}"),
        Err(e) => eprintln!("error: {e}"),
    }
}

/// Stage two of an interrupt: when Ctrl-C came (the terminal sent it to
/// the cell process too) and the cell still runs after the grace period,
/// the cell process is killed; evcxr restarts it.
fn watch_for_interrupt(engine: Engine, running: Arc<AtomicBool>, interrupted: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut since: Option<Instant> = None;
        while running.load(Ordering::SeqCst) {
            if since.is_none() && interrupted.load(Ordering::SeqCst) {
                since = Some(Instant::now());
            }
            if since.is_some_and(|t| t.elapsed() >= interrupt_grace()) {
                if let Some(pid) = engine.child_pid() {
                    unsafe {
                        libc::kill(pid as i32, libc::SIGKILL);
                    }
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

fn run_magic(engine: &Engine, magic: Magic) {
    match magic {
        Magic::Help => {
            print!("{}", magics::TAPER_HELP);
            if let Ok(Ok(outputs)) = engine.execute(":help") {
                if let Some(text) = outputs.content_by_mime_type.get("text/plain") {
                    println!("{text}");
                }
            }
        }
        Magic::Inspect(item) => {
            let cursor = item.len();
            match engine.inspect(&item, cursor) {
                Ok(Some(text)) => println!("{text}"),
                _ => println!("No documentation found for `{item}`."),
            }
        }
        Magic::Memory => println!("{}", magics::cell_process_memory(engine.child_pid()).text()),
        Magic::Dist(args) => match magics::change_dist(engine, &args) {
            Ok(table) => println!("{}", table.text()),
            Err(why) => eprintln!("error: {why}"),
        },
    }
}

/// Draws live output as text: a display's frames replace each other in
/// place while nothing else was printed below them.
#[derive(Default)]
struct TerminalDisplay {
    /// The display id drawn last, its height in lines and the print count then.
    last: Mutex<Option<(String, usize, u64)>>,
}

impl DisplayHandler for TerminalDisplay {
    fn handle(&self, message: ChannelMessage) -> Ack {
        let (id, data) = match message {
            ChannelMessage::Display { display_id, data }
            | ChannelMessage::Update { display_id, data } => (display_id, data),
            ChannelMessage::Clear { .. } => return Ack::Ok { value: None },
            ChannelMessage::Input { prompt, .. } => {
                print!("{prompt}");
                let _ = std::io::stdout().flush();
                let mut line = String::new();
                return match std::io::stdin().read_line(&mut line) {
                    Ok(_) => Ack::Ok {
                        value: Some(line.trim_end_matches(['\r', '\n']).to_string()),
                    },
                    Err(e) => Ack::Error {
                        message: e.to_string(),
                    },
                };
            }
        };
        let text = data.text_plain().to_string();
        let mut last = self.last.lock().unwrap();
        let mut out = std::io::stdout().lock();
        if let Some((last_id, height, printed)) = last.as_ref() {
            if *last_id == id && *printed == PRINTED.load(Ordering::SeqCst) {
                // Up to the frame's first line, and clear to the end of the screen.
                let _ = write!(out, "\x1b[{height}F\x1b[J");
            }
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
        *last = Some((
            id,
            text.lines().count().max(1),
            PRINTED.load(Ordering::SeqCst),
        ));
        Ack::Ok { value: None }
    }
}
