//! Reading Rust source as text: is a cell complete, where do cursors fall.
//!
//! `is_complete` needs no compiler: open brackets, strings and block
//! comments make a cell incomplete; a closing bracket that matches nothing
//! makes it invalid.

/// The answer to an `is_complete_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// Ready to run.
    Complete,
    /// Needs more lines (open bracket, string or comment).
    Incomplete,
    /// Cannot become valid by adding lines (an unmatched closing bracket).
    Invalid,
}

/// Whether `code` is complete.
pub fn completeness(code: &str) -> Completeness {
    let chars: Vec<char> = code.chars().collect();
    let mut stack = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 1;
                i += 2;
                while depth > 0 {
                    match (chars.get(i), chars.get(i + 1)) {
                        (None, _) => return Completeness::Incomplete,
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            i += 1;
                        }
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            i += 1;
                        }
                        _ => {}
                    }
                    i += 1;
                }
                continue;
            }
            'r' if matches!(next, Some('"') | Some('#')) && (i == 0 || !is_ident(chars[i - 1])) => {
                let mut hashes = 0;
                let mut j = i + 1;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                match find(&chars, j + 1, &close) {
                    Some(end) => i = end + close.len(),
                    None => return Completeness::Incomplete,
                }
                continue;
            }
            '"' => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Completeness::Incomplete,
                        Some('\\') => i += 2,
                        Some('"') => break,
                        Some(_) => i += 1,
                    }
                }
            }
            '\'' => {
                // A char literal ('a', '\n'); a lifetime ('a) has no closing quote.
                if next == Some('\\') {
                    if let Some(end) = chars[i + 2..].iter().position(|&c| c == '\'') {
                        i += end + 2;
                    }
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 2;
                }
            }
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(open) {
                    return Completeness::Invalid;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if stack.is_empty() {
        Completeness::Complete
    } else {
        Completeness::Incomplete
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn find(chars: &[char], from: usize, needle: &[char]) -> Option<usize> {
    (from..chars.len()).find(|&k| chars[k..].starts_with(needle))
}

/// The byte offset of code-point offset `cursor` (the spec counts cursors in code points).
pub fn byte_offset(code: &str, cursor: usize) -> usize {
    code.char_indices()
        .nth(cursor)
        .map_or(code.len(), |(b, _)| b)
}

/// The code-point offset of byte offset `byte`.
pub fn char_offset(code: &str, byte: usize) -> usize {
    code[..byte.min(code.len())].chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_strings_and_comments_decide_completeness() {
        assert_eq!(completeness("let x = 1;"), Completeness::Complete);
        assert_eq!(completeness("fn f() {"), Completeness::Incomplete);
        assert_eq!(completeness("let s = \"abc"), Completeness::Incomplete);
        assert_eq!(completeness("let s = \"a}\";"), Completeness::Complete);
        assert_eq!(completeness("let s = r#\"a\"b\"#;"), Completeness::Complete);
        assert_eq!(completeness("/* open"), Completeness::Incomplete);
        assert_eq!(completeness("// {"), Completeness::Complete);
        assert_eq!(completeness("let c = '{';"), Completeness::Complete);
        assert_eq!(
            completeness("fn f<'a>(x: &'a str) {}"),
            Completeness::Complete
        );
        assert_eq!(completeness("let x = 1; }"), Completeness::Invalid);
        assert_eq!(completeness("(]"), Completeness::Invalid);
    }

    #[test]
    fn cursor_offsets_count_code_points() {
        let code = "let é = 1;";
        assert_eq!(byte_offset(code, 5), 6);
        assert_eq!(char_offset(code, 6), 5);
    }
}
