//! Partial lines from the cell process: `print!` progress reaches the
//! notebook without waiting for a newline.
//!
//! evcxr reads the cell process's stdout line by line, because its own
//! control messages (`EVCXR_EXECUTION_COMPLETE`, MIME content blocks, input
//! requests) share that pipe with the user's output. A flushed
//! `print!("\rstep {i}")` therefore stayed invisible until the next newline,
//! which for a progress counter is the end of the cell.
//!
//! This module runs in the cell process (the `taper` binary started by evcxr
//! as its runtime), before evcxr's runtime loop: it puts a pipe in place of
//! fd 1 and copies everything to the real stdout on a thread. Whole lines go
//! through unchanged, so evcxr's protocol is untouched. Text that has waited
//! [`PARTIAL_AFTER`] without its newline goes out as a line of its own behind
//! [`PARTIAL_LINE_PREFIX`]; the kernel's relay strips the prefix and
//! publishes the text without a newline. Never inside a MIME content block,
//! whose lines evcxr reassembles itself.
//!
//! Not covered: output the Rust code holds in its own buffer. Rust's stdout
//! is line-buffered, so `print!` without a newline needs
//! `std::io::stdout().flush()`, in a notebook as in a terminal.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Marks a line that carries the start of an unfinished line (no newline
/// is to be added). An escape character first, so ordinary text never
/// starts with it by chance.
pub const PARTIAL_LINE_PREFIX: &str = "\u{1b}[taper-partial]";

/// How long text waits for its newline before it goes out as a partial line.
pub const PARTIAL_AFTER: Duration = Duration::from_millis(50);

/// evcxr's control lines all start with this.
const EVCXR_MARKER: &str = "EVCXR_";

/// The text of a line from the cell process and whether a newline ends it.
pub fn split_partial(line: &str) -> (&str, bool) {
    match line.strip_prefix(PARTIAL_LINE_PREFIX) {
        Some(text) => (text, false),
        None => (line, true),
    }
}

/// Puts the forwarder in place of fd 1 when this process is evcxr's cell
/// runtime (evcxr sets `EVCXR_IS_RUNTIME`); does nothing otherwise. If the
/// pipe cannot be made, stdout stays as it is (lines only).
pub fn install_in_cell_process() {
    if std::env::var_os("EVCXR_IS_RUNTIME").is_none() {
        return;
    }
    let Some((read_end, real_stdout)) = redirect_stdout() else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("taper-stdout".into())
        .spawn(move || forward(read_end, real_stdout));
}

/// fd 1 becomes a new pipe's write end; returns the pipe's read end and the
/// original stdout. Both are close-on-exec, so programs a cell starts
/// inherit only fd 1 (and their output takes the same path).
fn redirect_stdout() -> Option<(OwnedFd, OwnedFd)> {
    // SAFETY: plain descriptor calls on descriptors this function owns; fd 1
    // is replaced atomically by dup2 before any cell runs.
    unsafe {
        let real = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if real < 0 {
            return None;
        }
        let mut fds: [RawFd; 2] = [0; 2];
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            libc::close(real);
            return None;
        }
        if libc::dup2(fds[1], 1) < 0 {
            libc::close(fds[0]);
            libc::close(fds[1]);
            libc::close(real);
            return None;
        }
        libc::close(fds[1]);
        Some((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(real)))
    }
}

/// Copies the pipe to the real stdout until the pipe closes.
fn forward(read_end: OwnedFd, real_stdout: OwnedFd) {
    let mut out = std::fs::File::from(real_stdout);
    let mut splitter = LineSplitter::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let timeout = if splitter.can_go_out_partly() {
            PARTIAL_AFTER
        } else {
            Duration::from_secs(3600)
        };
        let bytes = match wait_readable(&read_end, timeout) {
            Readable::Yes => match read(&read_end, &mut buffer) {
                0 => return,
                n if n < 0 => match std::io::Error::last_os_error().kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    _ => return,
                },
                n => &buffer[..n as usize],
            },
            Readable::TimedOut => {
                let partial = splitter.take_partial();
                if !partial.is_empty() && out.write_all(&partial).is_err() {
                    return;
                }
                continue;
            }
            Readable::Closed => return,
        };
        let lines = splitter.push(bytes);
        if !lines.is_empty() && out.write_all(&lines).is_err() {
            return;
        }
    }
}

enum Readable {
    Yes,
    TimedOut,
    Closed,
}

fn wait_readable(fd: &OwnedFd, timeout: Duration) -> Readable {
    use std::os::fd::AsRawFd;
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call's duration.
    match unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as i32) } {
        0 => Readable::TimedOut,
        n if n > 0 && poll.revents & libc::POLLIN != 0 => Readable::Yes,
        n if n > 0 => Readable::Closed,
        _ => Readable::Yes, // EINTR: the read decides
    }
}

fn read(fd: &OwnedFd, buffer: &mut [u8]) -> isize {
    use std::os::fd::AsRawFd;
    // SAFETY: `buffer` is valid for `buffer.len()` bytes.
    unsafe { libc::read(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) }
}

/// Cuts the byte stream into what may go out now and what waits.
#[derive(Default)]
pub struct LineSplitter {
    /// Bytes after the last newline.
    pending: Vec<u8>,
    /// Inside an `EVCXR_BEGIN_CONTENT` ... `EVCXR_END_CONTENT` block, whose
    /// lines must reach evcxr whole.
    in_content: bool,
}

impl LineSplitter {
    /// Whether waiting text could go out as a partial line (not inside a
    /// content block).
    pub fn can_go_out_partly(&self) -> bool {
        !self.in_content && !self.pending.is_empty()
    }

    /// Takes `bytes` in; returns the whole lines now complete. A line that
    /// has an evcxr control marker after some text (a cell's last `print!`
    /// had no newline) is cut in two, so the marker stands on its own line
    /// where evcxr looks for it.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(bytes);
        let Some(last_newline) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.pending.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        let mut out = Vec::with_capacity(complete.len() + 32);
        for line in complete.split_inclusive(|b| *b == b'\n') {
            self.copy_line(line, &mut out);
        }
        out
    }

    fn copy_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let text = &line[..line.len() - 1];
        if self.in_content {
            self.in_content = text != b"EVCXR_END_CONTENT";
            out.extend_from_slice(line);
            return;
        }
        let marker_at = find(text, EVCXR_MARKER.as_bytes());
        if let Some(at) = marker_at.filter(|at| *at > 0) {
            push_partial(&text[..at], out);
            return self.copy_line(&line[at..], out);
        }
        if marker_at == Some(0) && text.starts_with(b"EVCXR_BEGIN_CONTENT") {
            self.in_content = true;
        }
        out.extend_from_slice(line);
    }

    /// The waiting text as a partial line, up to its last whole character;
    /// empty inside a content block or when nothing waits.
    pub fn take_partial(&mut self) -> Vec<u8> {
        if self.in_content || self.pending.is_empty() {
            return Vec::new();
        }
        let whole = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(), // not UTF-8 at all: pass it on as it is
        };
        let rest = self.pending.split_off(whole);
        let text = std::mem::replace(&mut self.pending, rest);
        let mut out = Vec::new();
        push_partial(&text, &mut out);
        out
    }
}

fn push_partial(text: &[u8], out: &mut Vec<u8>) {
    if text.is_empty() {
        return;
    }
    out.extend_from_slice(PARTIAL_LINE_PREFIX.as_bytes());
    // A newline inside would end the line early; partial text has none.
    out.extend_from_slice(text);
    out.push(b'\n');
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn whole_lines_pass_unchanged_and_the_rest_waits() {
        let mut s = LineSplitter::default();
        assert_eq!(text(s.push(b"one\ntwo\nthr")), "one\ntwo\n");
        assert!(s.can_go_out_partly());
        assert_eq!(text(s.push(b"ee\n")), "three\n");
        assert!(!s.can_go_out_partly());
    }

    #[test]
    fn waiting_text_goes_out_as_a_partial_line() {
        let mut s = LineSplitter::default();
        assert_eq!(text(s.push(b"\rstep 1")), "");
        let partial = text(s.take_partial());
        assert_eq!(partial, format!("{PARTIAL_LINE_PREFIX}\rstep 1\n"));
        assert_eq!(
            split_partial(partial.trim_end_matches('\n')),
            ("\rstep 1", false)
        );
        assert_eq!(split_partial("plain"), ("plain", true));
        assert!(s.take_partial().is_empty());
    }

    #[test]
    fn a_marker_after_unfinished_text_gets_its_own_line() {
        let mut s = LineSplitter::default();
        let out = text(s.push(b"done: 3EVCXR_EXECUTION_COMPLETE\n"));
        assert_eq!(
            out,
            format!("{PARTIAL_LINE_PREFIX}done: 3\nEVCXR_EXECUTION_COMPLETE\n")
        );
    }

    #[test]
    fn content_blocks_are_never_cut() {
        let mut s = LineSplitter::default();
        assert_eq!(
            text(s.push(b"EVCXR_BEGIN_CONTENT text/html\n<b>ha")),
            "EVCXR_BEGIN_CONTENT text/html\n"
        );
        assert!(s.take_partial().is_empty(), "inside a content block");
        assert_eq!(
            text(s.push(b"lf</b>\nEVCXR_END_CONTENT\n")),
            "<b>half</b>\nEVCXR_END_CONTENT\n"
        );
        s.push(b"after");
        assert!(!s.take_partial().is_empty(), "after the block again");
    }

    #[test]
    fn a_character_cut_by_the_pipe_waits_for_its_other_bytes() {
        let mut s = LineSplitter::default();
        let euro = "€".as_bytes();
        s.push(&[b'a', euro[0], euro[1]]);
        assert_eq!(text(s.take_partial()), format!("{PARTIAL_LINE_PREFIX}a\n"));
        assert_eq!(text(s.push(&[euro[2], b'\n'])), "€\n");
    }
}
