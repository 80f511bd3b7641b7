// taper patch (vendor/README.md): not part of upstream evcxr.

//! Whether a cell can define a variable, decided from its syntax alone.
//!
//! evcxr asks rust-analyzer for the type of every variable a cell defines,
//! and asks for every cell: about 20 ms of a warm `x + 1`, a seventh of it
//! (notes/kernel-latency.md). A variable that outlives its cell comes only
//! from a `let` at the top level of the cell, or from a macro that expands
//! to one. A cell with neither has nothing to ask about, and skips the
//! question. The test is conservative: a macro the list below does not know
//! counts as one that might bind.

use ra_ap_syntax::AstNode;
use ra_ap_syntax::SyntaxKind;
use ra_ap_syntax::SyntaxNode;
use ra_ap_syntax::ast;

/// Standard macros that never bind a name in the caller's scope.
const NON_BINDING_MACROS: &[&str] = &[
    "assert",
    "assert_eq",
    "assert_ne",
    "column",
    "concat",
    "dbg",
    "debug_assert",
    "debug_assert_eq",
    "debug_assert_ne",
    "env",
    "eprint",
    "eprintln",
    "file",
    "format",
    "format_args",
    "include_str",
    "line",
    "matches",
    "panic",
    "print",
    "println",
    "stringify",
    "todo",
    "unimplemented",
    "unreachable",
    "vec",
    "write",
    "writeln",
];

/// Whether the cell's top-level statements `nodes` may define a variable
/// that outlives the cell: a top-level `let`, or a macro call not known to
/// leave its caller's names alone (anywhere in the cell, since a statement
/// macro may expand to a `let`).
pub(crate) fn may_bind_variables(nodes: &[SyntaxNode]) -> bool {
    nodes.iter().any(|node| {
        node.kind() == SyntaxKind::LET_STMT
            || node
                .descendants()
                .filter_map(ast::MacroCall::cast)
                .any(|call| !is_non_binding(&call))
    })
}

fn is_non_binding(call: &ast::MacroCall) -> bool {
    let Some(path) = call.path() else {
        return false;
    };
    // `std::println!` and `println!` alike; a path with a qualifier other
    // than the standard library's could be anything.
    let text = path.syntax().text().to_string();
    let name = text
        .strip_prefix("std::")
        .or_else(|| text.strip_prefix("::std::"))
        .or_else(|| text.strip_prefix("core::"))
        .unwrap_or(&text);
    NON_BINDING_MACROS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::may_bind_variables;
    use crate::code_block::CodeBlock;

    fn binds(code: &str) -> bool {
        let (_, info) = CodeBlock::from_original_user_code(code);
        may_bind_variables(&info.nodes)
    }

    #[test]
    fn expressions_and_known_macros_bind_nothing() {
        assert!(!binds("x + 1"));
        assert!(!binds("println!(\"{}\", x); v.push(3);"));
        assert!(!binds("for i in 0..3 { let y = i; println!(\"{y}\"); }"));
        assert!(!binds("assert_eq!(vec![1], w); std::println!(\"ok\")"));
        assert!(!binds("fn helper() -> u32 { let a = 1; a }"));
        assert!(!binds(""));
    }

    #[test]
    fn lets_and_unknown_macros_may_bind() {
        assert!(binds("let x = 5;"));
        assert!(binds("println!(\"hi\"); let (a, b) = (1, 2);"));
        assert!(binds("make_var!(x, 5);"));
        assert!(binds("if ok { my_macro!() } else { 1 }"));
        assert!(binds("other::println!(\"hi\")"));
    }
}
