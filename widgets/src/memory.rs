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
    fn header() -> Vec<String> {
        ["Memory", "Current", "Peak", "Total"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn formatted_rows(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|r| {
                vec![
                    r.device.clone(),
                    format_bytes(r.current),
                    r.peak.map_or_else(String::new, format_bytes),
                    r.total.map_or_else(|| "".into(), format_bytes),
                ]
            })
            .collect()
    }

    /// The table as HTML.
    pub fn html(&self) -> String {
        html::table("memory", &Self::header(), &self.formatted_rows())
    }

    /// The table as aligned text.
    pub fn text(&self) -> String {
        html::text_table(&Self::header(), &self.formatted_rows())
    }
}
