//! The metrics table: one row per log or evaluation, as Hugging Face's
//! notebook tracker writes it.

use crate::html;

/// A value in a table cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A whole number (steps, epochs).
    Int(i64),
    /// A measurement, shown with six decimals as HF does.
    Float(f64),
    /// Text, such as HF's `No log`.
    Text(String),
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Int(v) => write!(f, "{v}"),
            Cell::Float(v) => write!(f, "{v:.6}"),
            Cell::Text(v) => f.write_str(v),
        }
    }
}

/// Rows of named values. The first column identifies a row (`Step` or
/// `Epoch`): a write with the same first value updates the last row instead
/// of adding one, and new names add columns, as in HF's `write_line`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsTable {
    columns: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl MetricsTable {
    /// An empty table with these columns.
    pub fn new(columns: &[&str]) -> Self {
        Self {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// The column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The rows, in column order.
    pub fn rows(&self) -> &[Vec<Cell>] {
        &self.rows
    }

    /// Adds a row (or updates the last one; see the type's docs).
    ///
    /// ```
    /// use taper_widgets::{Cell, MetricsTable};
    /// let mut t = MetricsTable::new(&["Step", "Training Loss"]);
    /// t.write_line(&[("Step", Cell::Int(10)), ("Training Loss", Cell::Float(0.5))]);
    /// t.write_line(&[("Step", Cell::Int(10)), ("Accuracy", Cell::Float(0.75))]);
    /// assert_eq!(t.columns(), ["Step", "Training Loss", "Accuracy"]);
    /// assert_eq!(t.rows().len(), 1);
    /// ```
    pub fn write_line(&mut self, values: &[(&str, Cell)]) {
        for (name, _) in values {
            if !self.columns.iter().any(|c| c == name) {
                self.columns.push(name.to_string());
            }
        }
        let lookup = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
        let same_row = match (self.rows.last(), self.columns.first()) {
            (Some(last), Some(first)) => lookup(first).is_some_and(|v| last.first() == Some(v)),
            _ => false,
        };
        if same_row {
            let last = self.rows.last_mut().expect("checked above");
            last.resize(self.columns.len(), Cell::Text("No log".into()));
            for (i, column) in self.columns.iter().enumerate() {
                if let Some(value) = lookup(column) {
                    last[i] = value.clone();
                }
            }
        } else {
            let row = self
                .columns
                .iter()
                .map(|c| lookup(c).cloned().unwrap_or(Cell::Text("No log".into())))
                .collect();
            self.rows.push(row);
        }
    }

    fn formatted_rows(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|row| {
                (0..self.columns.len())
                    .map(|i| row.get(i).map_or_else(String::new, Cell::to_string))
                    .collect()
            })
            .collect()
    }

    /// The table as HTML.
    pub fn html(&self) -> String {
        html::table("metrics", &self.columns, &self.formatted_rows())
    }

    /// The table as aligned text.
    pub fn text(&self) -> String {
        html::text_table(&self.columns, &self.formatted_rows())
    }
}
