// taper patch (vendor/README.md): not part of upstream evcxr.

//! The types of a cell's new variables, asked of rustc.
//!
//! evcxr must name the type of every variable a cell defines, to store it
//! for the next cells, and asks rust-analyzer. That is quick once
//! rust-analyzer has resolved the dependency graph, but resolving it is
//! most of a first cell's time: the standard library when the kernel starts
//! and taper's graph after `:dep taper`, about 8 s of CPU on two cores
//! (notes/kernel-latency.md). Until rust-analyzer is ready, the cell is
//! compiled once with a probe per variable: a call that needs a trait the
//! variable's type lacks. rustc's error names the type in full (the compile
//! runs with `-Z trim-diagnostic-paths=false`, which needs
//! `RUSTC_BOOTSTRAP=1`: the probe compile only, never the cell's build):
//!
//! ```text
//! the trait bound `taper::Trainer<Mlp>: EvcxrTypeProbe` is not satisfied
//! ```
//!
//! The probe is a fast path, not a second source of truth: if its compile
//! reports anything else (an error in the cell), or leaves a variable
//! untyped, evcxr asks rust-analyzer as it always did.

use crate::code_block::CodeBlock;
use crate::code_block::CodeKind;
use crate::errors::CompilationError;
use crate::rust_analyzer::TypeName;
use ra_ap_syntax::AstNode;
use ra_ap_syntax::ast;
use ra_ap_syntax::ast::HasName;
use std::collections::HashMap;

/// Set by evcxr on the cargo command of a probe compile: the rustc wrapper
/// then adds [`add_rustc_flags`]' flags to the cell crate's command.
pub(crate) const ENV: &str = "EVCXR_TYPE_PROBE";

/// What a probe compile adds to the cell crate's rustc command: full paths
/// in type names, and no long type written to a file instead of the message.
const RUSTC_ARGS: &[&str] = &[
    "-Ztrim-diagnostic-paths=false",
    "-Zwrite-long-types-to-disk=no",
];

/// Makes the cell crate's rustc `command` a probe compile: [`RUSTC_ARGS`],
/// which are unstable flags, so with `RUSTC_BOOTSTRAP=1` (this command
/// only, never the cell's build).
pub(crate) fn add_rustc_flags(command: &mut std::process::Command) {
    command.args(RUSTC_ARGS).env("RUSTC_BOOTSTRAP", "1");
}

/// Whether probes are used: yes unless `TAPER_TYPE_PROBE=0` (which keeps
/// evcxr's rust-analyzer questions, for comparison).
pub(crate) fn enabled() -> bool {
    std::env::var("TAPER_TYPE_PROBE").map_or(true, |v| v.trim() != "0")
}

/// The probe items, placed in the analysed function after the cell's code.
pub(crate) const ITEMS: &str = "trait EvcxrTypeProbe {} \
     fn evcxr_type_probe<T: EvcxrTypeProbe + ?Sized>(_: &T) {}";

/// The probe statement for `variable`.
pub(crate) fn statement(variable: &str) -> String {
    format!("evcxr_type_probe(&{variable});")
}

/// A variable a cell defines at its top level.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NewVariable {
    pub(crate) name: String,
    pub(crate) is_mutable: bool,
    /// The type the cell wrote for it, when it wrote one.
    pub(crate) explicit_type: Option<String>,
}

/// The variables bound by the `let` statements at the top level of
/// `function_name` in `source`, read from the syntax alone. This is the
/// set rust-analyzer's answer covers (`RustAnalyzer::top_level_variables`):
/// a later `let` of the same name replaces an earlier one, and a pattern's
/// written type applies to a plain name only, not to names inside a
/// destructuring pattern.
pub(crate) fn top_level_variables(source: &str, function_name: &str) -> Vec<NewVariable> {
    use ra_ap_syntax::ast::HasModuleItem;
    let parsed = ast::SourceFile::parse(source, crate::rust_analyzer::EDITION).tree();
    let mut found: Vec<NewVariable> = Vec::new();
    let mut add = |pat: &ast::IdentPat, explicit_type: Option<ast::Type>| {
        let Some(name) = pat.name() else { return };
        let variable = NewVariable {
            name: name.text().to_string(),
            is_mutable: pat.mut_token().is_some(),
            explicit_type: explicit_type
                .map(|ty| ty.syntax().text().to_string())
                .filter(|ty| crate::rust_analyzer::is_type_valid(ty)),
        };
        found.retain(|v| v.name != variable.name);
        found.push(variable);
    };
    for item in parsed.items() {
        let ast::Item::Fn(function) = item else {
            continue;
        };
        if function.name().is_none_or(|n| n.text() != function_name) {
            continue;
        }
        let Some(body) = function.body() else {
            continue;
        };
        for statement in body.statements() {
            let ast::Stmt::LetStmt(let_stmt) = statement else {
                continue;
            };
            match let_stmt.pat() {
                Some(ast::Pat::IdentPat(pat)) => add(&pat, let_stmt.ty()),
                Some(pat) => {
                    for sub in pat.syntax().descendants().filter_map(ast::IdentPat::cast) {
                        add(&sub, None);
                    }
                }
                None => {}
            }
        }
    }
    found
}

/// Reads the variables' types from a probe compile's `errors`. Returns
/// `None` when the compile reported anything but probes, or did not type
/// every variable in `probed`: the caller then asks rust-analyzer.
pub(crate) fn types_from_errors(
    errors: &[CompilationError],
    probed: &[&str],
) -> Option<HashMap<String, TypeName>> {
    let mut types = HashMap::new();
    // As rustc reported them: evcxr shows a note instead of an error whose
    // note points into the user's code (here: at a type the cell defines).
    for error in errors
        .iter()
        .filter(|e| e.reported_json["level"] == "error")
    {
        let variable = error
            .reported_origins
            .iter()
            .find_map(|origin| match origin {
                CodeKind::PackVariable { variable_name } => Some(variable_name),
                _ => None,
            })?;
        if error.reported_json["code"]["code"] != "E0277" {
            return None;
        }
        let type_name = type_in_message(error.reported_json["message"].as_str()?)?;
        types.insert(variable.clone(), type_name);
    }
    probed
        .iter()
        .all(|name| types.contains_key(*name))
        .then_some(types)
}

/// The type named by a probe's error message, as code that names it. The
/// message is "the trait bound `TYPE: PATH` is not satisfied", where PATH,
/// the probe trait's path (inside the analysed function), has no spaces.
fn type_in_message(message: &str) -> Option<TypeName> {
    let bound = message
        .strip_prefix("the trait bound `")?
        .strip_suffix("EvcxrTypeProbe` is not satisfied")?;
    let (rustc_type, _trait_path) = bound.rsplit_once(": ")?;
    Some(type_name(rustc_type))
}

/// rustc's name of a type as code: integer and float literals take the
/// types Rust falls back to (rustc reports the probe before it applies
/// them), and what has no name in code (closures, async blocks) is said so.
fn type_name(rustc_type: &str) -> TypeName {
    if rustc_type.starts_with("{closure@") {
        return TypeName::Closure;
    }
    let named = rustc_type
        .replace("{integer}", "i32")
        .replace("{float}", "f64");
    if named.contains('{') || !crate::rust_analyzer::is_type_valid(&named) {
        return TypeName::Unknown;
    }
    TypeName::Named(named)
}

/// Appends the probe items and one probe per variable in `names` to `code`.
pub(crate) fn add_probes(mut code: CodeBlock, names: &[&str]) -> CodeBlock {
    code = code.generated(ITEMS);
    for name in names {
        code.pack_variable(name.to_string(), statement(name));
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(body: &str) -> String {
        format!("fn other() {{ let z = 1; }}\nasync fn wrapper(a: i32) {{ {body} }}")
    }

    #[test]
    fn finds_the_variables_rust_analyzer_would_type() {
        let found = top_level_variables(
            &wrapped(
                "let x = 1; let mut y: Vec<u8> = vec![]; let (a, mut b) = (1, 2); { let hidden = 3; } let x: Vec<_> = vec![1];",
            ),
            "wrapper",
        );
        let summary: Vec<_> = found
            .iter()
            .map(|v| (v.name.as_str(), v.is_mutable, v.explicit_type.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("y", true, Some("Vec<u8>")),
                ("a", false, None),
                ("b", true, None),
                // The later `let x` wins; `Vec<_>` is no type to write.
                ("x", false, None),
            ]
        );
    }

    #[test]
    fn reads_types_from_probe_messages() {
        let named = |message: &str| type_in_message(message);
        assert_eq!(
            named("the trait bound `taper::Trainer<Mlp>: EvcxrTypeProbe` is not satisfied"),
            Some(TypeName::Named("taper::Trainer<Mlp>".into()))
        );
        assert_eq!(
            named(
                "the trait bound `std::vec::Vec<({integer}, {float})>: EvcxrTypeProbe` is not satisfied"
            ),
            Some(TypeName::Named("std::vec::Vec<(i32, f64)>".into()))
        );
        assert_eq!(
            named(
                "the trait bound `{closure@src/lib.rs:3:9: 3:12}: evcxr_analysis_wrapper::{closure#0}::EvcxrTypeProbe` is not satisfied"
            ),
            Some(TypeName::Closure)
        );
        assert_eq!(
            named(
                "the trait bound `{async block@src/lib.rs:3:9: 3:20}: EvcxrTypeProbe` is not satisfied"
            ),
            Some(TypeName::Unknown)
        );
        assert_eq!(
            named("the trait bound `std::vec::Vec<_>: EvcxrTypeProbe` is not satisfied"),
            Some(TypeName::Unknown)
        );
        assert_eq!(named("mismatched types"), None);
    }
}
