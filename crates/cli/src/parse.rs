//! Parsing of the CLI's human-friendly values: sizes (`256M`, `1GiB`), durations (`5s`,
//! `500ms`) and `@file` arguments.

use anyhow::{bail, Context, Result};
use std::time::Duration;

/// The smallest memory limit a box takes (the API's `memoryLimit` has the same bound).
pub const MIN_MEMORY: u64 = 16 << 20;

/// Parses a memory limit: a number with a unit (`K`, `M`, `G`, `T`: powers of 1024, with an
/// optional `i`/`B`, e.g. `256M`, `1.5GiB`), or a bare number of MiB as the API's `memoryLimit`
/// (`512` is 512 MiB). The limit must lie between 16 MiB and this host's memory.
pub fn memory(text: &str) -> Result<u64, String> {
    let bytes = size_with_default_unit(text, 1 << 20)?;
    let most = host_memory();
    let range = || {
        format!(
            "a memory limit is between 16M and {} (this host's memory)",
            human(most)
        )
    };
    if bytes < MIN_MEMORY || bytes > most {
        return Err(format!("'{text}' is out of range: {}", range()));
    }
    Ok(bytes)
}

/// A size in bytes: `number[unit]`, fractions allowed, a bare number counting `default_unit`s.
fn size_with_default_unit(text: &str, default_unit: u64) -> Result<u64, String> {
    let t = text.trim();
    let number_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(number_end);
    let number: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .ok_or_else(|| format!("'{text}' is not a size; use e.g. 256M, 1.5G or 512 (MiB)"))?;
    let unit: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" => default_unit,
        "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}'; use K, M, G or T"
            ))
        }
    };
    let bytes = number * unit as f64;
    if bytes >= u64::MAX as f64 {
        return Err(format!("size '{text}' is out of range"));
    }
    Ok(bytes as u64)
}

/// This host's memory (`MemTotal`), or no bound when it cannot be read.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        })
        .unwrap_or(u64::MAX)
}

/// Bytes in the largest unit that keeps one decimal, e.g. `23.4G`.
fn human(bytes: u64) -> String {
    let units = [
        (1u64 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (size, name) in units {
        if bytes >= size {
            return format!("{:.1}{name}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes}B")
}

/// Parses a duration such as `5s`, `500ms` or `2m`; a bare number means seconds.
pub fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let d = if let Ok(secs) = t.parse::<f64>() {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(format!("duration '{text}' must be positive"));
        }
        Duration::from_secs_f64(secs)
    } else {
        humantime::parse_duration(t)
            .map_err(|e| format!("'{text}' is not a duration ({e}); use e.g. 5s or 500ms"))?
    };
    if d.is_zero() {
        return Err(format!("duration '{text}' must be positive"));
    }
    Ok(d)
}

/// Reads `@path` as the file's bytes, `-` as standard input, anything else as the text itself.
pub fn text_or_file(arg: &str) -> Result<Vec<u8>> {
    if let Some(path) = arg.strip_prefix('@') {
        return std::fs::read(path).with_context(|| format!("reading {path}"));
    }
    if arg == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("reading standard input")?;
        return Ok(buf);
    }
    if arg.is_empty() {
        bail!("empty argument; give text, @file or -");
    }
    Ok(arg.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits() {
        assert_eq!(memory("256M").unwrap(), 256 << 20);
        assert_eq!(memory("1GiB").unwrap(), 1 << 30);
        assert_eq!(memory("1.5G").unwrap(), 3 << 29);
        // A bare number is MiB, as in the API.
        assert_eq!(memory("512").unwrap(), 512 << 20);
        assert!(memory("12X").unwrap_err().contains("unknown size unit"));
        assert!(memory("M").unwrap_err().contains("not a size"));
        for too_small in ["0", "4k", "15M", "0.001"] {
            let error = memory(too_small).unwrap_err();
            assert!(error.contains("between 16M and"), "{too_small}: {error}");
        }
        let error = memory("1000T").unwrap_err();
        assert!(error.contains("this host's memory"), "{error}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("2").unwrap(), Duration::from_secs(2));
        assert!(duration("-1").is_err());
        assert!(duration("soon").unwrap_err().contains("not a duration"));
    }
}
