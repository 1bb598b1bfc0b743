//! The small text helpers every screen shares: aligned tables, ages like kubectl's,
//! binary byte sizes and percentages.

use k8s_openapi::jiff::Timestamp;

/// Rows under a header, each column as wide as its widest cell, two spaces apart, no
/// trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count()) + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How long ago `then` was at `now`, in kubectl's style: 45s, 3m12s, 2h5m, 3d4h.
pub fn age(now: Timestamp, then: Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(then.as_second()).max(0);
    duration(u64::try_from(seconds).unwrap_or(0))
}

/// `seconds` in kubectl's style.
pub fn duration(seconds: u64) -> String {
    let (m, s) = (seconds / 60, seconds % 60);
    let (h, m) = (m / 60, m % 60);
    let (d, h) = (h / 24, h % 24);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) if m == 0 => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

/// `n` bytes in binary units with one decimal: 512 B, 1.5 KiB, 48.0 MiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Tenths of the unit, in integers: exact for every size a node can hold.
    let mut unit = 0;
    let mut scaled = u128::from(n) * 10 / 1024;
    while scaled >= 10 * 1024 && unit + 1 < UNITS.len() {
        scaled /= 1024;
        unit += 1;
    }
    format!("{}.{} {}", scaled / 10, scaled % 10, UNITS[unit])
}

/// `part` of `whole` as a whole percentage, rounded down; 100% of nothing.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "100%".to_owned();
    }
    format!("{}%", u128::from(part) * 100 / u128::from(whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (60, "1m"),
            (192, "3m12s"),
            (7200, "2h"),
            (7500, "2h5m"),
            (86_400, "1d"),
            (273_600, "3d4h"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(duration(seconds), expected, "{seconds}");
        }
        let now = Timestamp::from_second(1_000).expect("time");
        let future = Timestamp::from_second(2_000).expect("time");
        assert_eq!(age(now, future), "0s", "a clock skew never shows negative");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(48 * 1024 * 1024), "48.0 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }

    #[test]
    fn percentages_round_down_and_nothing_is_done() {
        assert_eq!(percent(41, 108), "37%");
        assert_eq!(percent(108, 108), "100%");
        assert_eq!(percent(0, 0), "100%");
    }

    #[test]
    fn tables_align_and_trim() {
        let rows = vec![
            vec!["a".to_owned(), "long cell".to_owned(), String::new()],
            vec!["bbb".to_owned(), "x".to_owned(), "z".to_owned()],
        ];
        assert_eq!(
            table(&["A", "B", "C"], &rows),
            "A    B          C\na    long cell\nbbb  x          z\n"
        );
    }
}
