//! Durations as people write them in playbooks: `"2s"`, `"500ms"`, `"1m30s"`, `"1h"`.
//!
//! One parser for `delay`, the connection timeouts and `Duration` module arguments, so
//! every place accepts the same spellings and the docs can list them once.

use std::time::Duration;

/// Parses `"2s"`, `"500ms"`, `"1m30s"`, `"1h"`, `"1d"`, or a bare number of seconds
/// (`"10"`). Units: `ms`, `s`, `m`, `h`, `d`; parts are whole numbers, largest unit
/// first, each unit at most once. Returns `None` for anything else (including overflow).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().ok().map(Duration::from_secs);
    }
    let mut rest = s;
    let mut total = Duration::ZERO;
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = rest.split_at(unit_len);
        rest = tail;
        // rank orders units so that "30s1m" and "1s1s" are rejected
        let (rank, part) = match unit {
            "d" => (4, Duration::from_secs(n.checked_mul(86_400)?)),
            "h" => (3, Duration::from_secs(n.checked_mul(3_600)?)),
            "m" => (2, Duration::from_secs(n.checked_mul(60)?)),
            "s" => (1, Duration::from_secs(n)),
            "ms" => (0, Duration::from_millis(n)),
            _ => return None,
        };
        if rank >= last_rank {
            return None;
        }
        last_rank = rank;
        total = total.checked_add(part)?;
    }
    Some(total)
}

/// The shortest spelling [`parse_duration`] reads back as `d`, largest unit first:
/// `"30s"`, `"1m30s"`, `"30d"`, `"0s"`. Used to show typed defaults in the docs.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_durations_read_back() {
        for (ms, text) in [
            (0, "0s"),
            (500, "500ms"),
            (30_000, "30s"),
            (90_000, "1m30s"),
            (60_000, "1m"),
            (30 * 86_400_000, "30d"),
            (93_600_000, "1d2h"),
            (1_250, "1s250ms"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Some(d), "{text}");
        }
    }

    #[test]
    fn spellings() {
        let ok = [
            ("2s", 2_000),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
            ("1d2h", 93_600_000),
            ("10", 10_000),
            (" 3s ", 3_000),
            ("0s", 0),
            ("1s250ms", 1_250),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Some(Duration::from_millis(ms)), "{s}");
        }
        for s in [
            "",
            "s",
            "2x",
            "1.5s",
            "30s1m",
            "1s1s",
            "-1s",
            "2 s",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(s), None, "{s:?}");
        }
    }
}
