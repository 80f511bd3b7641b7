//! Numbers and durations as people expect to read them in training logs.

/// A float the way Python's `repr` prints it: shortest round-trip digits,
/// scientific notation with a two-digit exponent below 1e-4 or from 1e16.
///
/// ```
/// use taper_widgets::format_value;
/// assert_eq!(format_value(0.6931), "0.6931");
/// assert_eq!(format_value(4.5e-05), "4.5e-05");
/// assert_eq!(format_value(3.0), "3.0");
/// ```
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let text = format!("{value:e}");
        let (mantissa, exponent) = text.split_once('e').expect("`{:e}` always has an exponent");
        let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let text = format!("{value}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// A log entry as Python prints a dict: `{'loss': 0.6931, 'epoch': 0.5}`.
pub fn format_logs<'a>(entries: impl IntoIterator<Item = (&'a str, f64)>) -> String {
    let body: Vec<String> = entries
        .into_iter()
        .map(|(key, value)| format!("'{key}': {}", format_value(value)))
        .collect();
    format!("{{{}}}", body.join(", "))
}

/// Seconds as `mm:ss`, or `h:mm:ss` from an hour on (HF's `format_time`).
///
/// ```
/// assert_eq!(taper_widgets::format_duration(75.4), "01:15");
/// assert_eq!(taper_widgets::format_duration(3725.0), "1:02:05");
/// ```
pub fn format_duration(seconds: f64) -> String {
    let total = seconds.max(0.0) as u64;
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}
