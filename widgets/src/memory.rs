//! The memory table: what each device holds now and at its peak.

use crate::html;

/// One device's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryRow {
    /// `CPU (RSS)`, `GPU 0`, ...
    pub device: String,
    /// Bytes in use now.
    pub current: u64,
    /// The most bytes in use so far, when known.
    pub peak: Option<u64>,
    /// The device's capacity, when known.
    pub total: Option<u64>,
}

/// Memory of the process's devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryTable {
    /// One row per device.
    pub rows: Vec<MemoryRow>,
}

/// Bytes in binary units: `512 B`, `1.50 KiB`, `2.00 GiB`.
///
/// ```
/// assert_eq!(taper_widgets::format_bytes(3 * 1024 * 1024 / 2), "1.50 MiB");
/// ```
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

impl MemoryTable {
    /// The columns; `Total` only when some device knows its capacity.
    fn header(&self) -> Vec<String> {
        let mut header = vec!["Memory", "Current", "Peak"];
        if self.rows.iter().any(|r| r.total.is_some()) {
            header.push("Total");
        }
        header.into_iter().map(String::from).collect()
    }

    fn formatted_rows(&self) -> Vec<Vec<String>> {
        let with_total = self.rows.iter().any(|r| r.total.is_some());
        self.rows
            .iter()
            .map(|r| {
                let mut row = vec![
                    r.device.clone(),
                    format_bytes(r.current),
                    r.peak.map_or_else(String::new, format_bytes),
                ];
                if with_total {
                    row.push(r.total.map_or_else(String::new, format_bytes));
                }
                row
            })
            .collect()
    }

    /// The table as HTML.
    pub fn html(&self) -> String {
        html::table("memory", &self.header(), &self.formatted_rows())
    }

    /// The table as aligned text.
    pub fn text(&self) -> String {
        html::text_table(&self.header(), &self.formatted_rows())
    }
}
