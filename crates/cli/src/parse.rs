//! Parsing of the CLI's human-friendly values: sizes (`256M`, `1GiB`), durations (`5s`,
//! `500ms`) and `@file` arguments.

use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Parses a byte size: a plain number of bytes, or a number with `K`, `M`, `G` (powers of 1024,
/// with an optional `i`/`B`: `256M`, `256MiB`, `1G`).
pub fn size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let num: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a size; use e.g. 256M or 1G"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}'; use K, M or G"
            ))
        }
    };
    num.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("size '{text}' is out of range"))
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
    fn sizes() {
        assert_eq!(size("256M").unwrap(), 256 << 20);
        assert_eq!(size("1GiB").unwrap(), 1 << 30);
        assert_eq!(size("4096").unwrap(), 4096);
        assert!(size("12X").unwrap_err().contains("unknown size unit"));
        assert!(size("M").is_err());
        assert!(size("0").is_err());
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
