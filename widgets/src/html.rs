//! Small HTML helpers shared by the views.
//!
//! The views write plain HTML with inline styles only: no external CSS,
//! JavaScript or ipywidgets, so they render the same in JupyterLab, classic
//! Notebook, VS Code and an exported HTML file. Colours come from
//! `currentColor` and translucent fills, so light and dark themes both read
//! well.

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
///
/// ```
/// assert_eq!(taper_widgets::html::escape("a<b & 'c'"), "a&lt;b &amp; &#39;c&#39;");
/// ```
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML table: a header row and body rows, already formatted.
pub(crate) fn table(class: &str, header: &[String], rows: &[Vec<String>]) -> String {
    let mut html = format!(
        "<table class=\"taper-{class}\" style=\"border-collapse: collapse; margin: 4px 0;\">\n  <thead>\n    <tr style=\"text-align: left;\">"
    );
    for name in header {
        html.push_str(&format!(
            "<th style=\"{CELL} font-weight: 600;\">{}</th>",
            escape(name)
        ));
    }
    html.push_str("</tr>\n  </thead>\n  <tbody>\n");
    for row in rows {
        html.push_str("    <tr>");
        for value in row {
            html.push_str(&format!("<td style=\"{CELL}\">{}</td>", escape(value)));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("  </tbody>\n</table>");
    html
}

/// Cell padding and a border that follows the theme's text colour.
const CELL: &str = "padding: 2px 10px; border: 1px solid rgba(128, 128, 128, 0.45);";

/// Text columns padded to their widest value, for the `text/plain` twin.
pub(crate) fn text_table(header: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .chain(std::iter::once(&header[i]))
                .map(|v| v.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    std::iter::once(line(header))
        .chain(rows.iter().map(|r| line(r)))
        .collect::<Vec<_>>()
        .join("\n")
}
