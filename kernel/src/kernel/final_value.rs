//! Showing a cell's final value in one compile instead of two.
//!
//! evcxr shows a cell's last expression by first compiling
//! `(expr).evcxr_display();`, the hook rich-display types implement, and,
//! when that does not compile (a number, a `Vec`, almost everything),
//! compiling the cell again with a `Debug` print. Every `x + 1` therefore
//! paid for a failed build: 115-140 ms of a 300 ms cell on the development
//! machine (the kernel log shows it as evcxr's "Fallback" phase).
//!
//! The kernel defines, before the first cell, a trait that gives every
//! `Debug` type an `evcxr_display` printing what evcxr's fallback prints
//! (`{:?}` as `text/plain`). Inherent `evcxr_display` methods, which is how
//! rich-display types provide it, still win method resolution. The changes
//! `:fmt` and `:types` make only apply to the fallback, so after either the
//! kernel replaces the trait by an empty one and evcxr's two-step path is
//! back for the rest of the session.

/// The trait and its impl, one evcxr item (an impl joins the item before it).
pub const DEBUG_DISPLAY: &str = r#"
#[doc(hidden)]
pub trait __TaperDebugDisplay {
    fn evcxr_display(&self);
}
impl<T: ::std::fmt::Debug + ?Sized> __TaperDebugDisplay for T {
    fn evcxr_display(&self) {
        println!("EVCXR_BEGIN_CONTENT text/plain\n{:?}\nEVCXR_END_CONTENT", self);
    }
}
"#;

/// The same item without a method: evcxr's own display path again.
pub const DEBUG_DISPLAY_OFF: &str = "#[doc(hidden)]\npub trait __TaperDebugDisplay {}\n";

/// Whether `code` changes how evcxr formats final values (`:fmt`, `:types`).
pub fn changes_format(code: &str) -> bool {
    code.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with(":fmt") || line.starts_with(":types")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_commands_are_recognised() {
        assert!(changes_format(":fmt {:#?}"));
        assert!(changes_format("let a = 1;\n  :types"));
        assert!(!changes_format("let fmt = 1;\nfmt + 1"));
    }
}
