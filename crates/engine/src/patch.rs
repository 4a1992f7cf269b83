//! Unified diffs: parsing (several files per patch) and strict application.
//!
//! A hunk applies only where its context and removed lines match the file exactly, at the line
//! its header names (shifted by what earlier hunks added or removed). It is never moved to
//! another place that happens to look similar, and when any hunk fails nothing is written.
//! Written here rather than with `diffy::apply`, which handles one file per patch and may place a
//! hunk elsewhere; `diffy` still creates the diffs of the `diff` command.
//!
//! Line numbers in hunk headers are bounded by the caller (no file here can have more lines than
//! it has bytes), and every position is computed with checked arithmetic: a header naming line
//! 18446744073709551615 is an out-of-range error, never an overflow.

use std::fmt;

/// Why a patch cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// Not a unified diff, or a broken one; the message says where.
    Malformed(String),
    /// A hunk header names a line or a length past the bound; the message says which and the
    /// bound.
    OutOfRange(String),
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::Malformed(m) | PatchError::OutOfRange(m) => f.write_str(m),
        }
    }
}

/// One file's part of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePatch {
    /// The path the patch names (after stripping), relative as written.
    pub path: String,
    /// The original is `/dev/null`: the file is created.
    pub creates: bool,
    /// The result is `/dev/null`: the file is deleted.
    pub deletes: bool,
    pub hunks: Vec<Hunk>,
}

/// One `@@` hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    pub old_start: usize,
    pub old_len: usize,
    pub lines: Vec<HunkLine>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HunkLine {
    /// ' ', '-' or '+'.
    pub kind: char,
    pub text: String,
    /// False when followed by `\ No newline at end of file`.
    pub newline: bool,
}

fn header_path(raw: &str, strip: Option<u32>) -> Option<String> {
    let raw = raw.split('\t').next().unwrap_or(raw).trim_end();
    if raw == "/dev/null" {
        return None;
    }
    let stripped = match strip {
        Some(n) => raw
            .splitn(n as usize + 1, '/')
            .nth(n as usize)
            .unwrap_or("")
            .to_string(),
        None => raw
            .strip_prefix("a/")
            .or_else(|| raw.strip_prefix("b/"))
            .unwrap_or(raw)
            .to_string(),
    };
    Some(stripped)
}

fn parse_range(s: &str) -> Option<(usize, usize)> {
    let (start, len) = match s.split_once(',') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => (s.parse().ok()?, 1),
    };
    Some((start, len))
}

/// Parses a unified diff that may cover several files. Hunk headers may name lines and lengths
/// up to `max_line`.
pub fn parse(
    text: &str,
    strip: Option<u32>,
    max_line: usize,
) -> Result<Vec<FilePatch>, PatchError> {
    parse_text(text, strip).map_err(PatchError::Malformed).and_then(|files| {
        for file in &files {
            for hunk in &file.hunks {
                if hunk.old_start > max_line || hunk.old_len > max_line {
                    return Err(PatchError::OutOfRange(format!(
                        "a hunk for {} names line {} (length {}), past the last line a file here can have ({max_line})",
                        file.path, hunk.old_start, hunk.old_len
                    )));
                }
            }
        }
        Ok(files)
    })
}

fn parse_text(text: &str, strip: Option<u32>) -> Result<Vec<FilePatch>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut files = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(old) = lines[i].strip_prefix("--- ") else {
            i += 1;
            continue;
        };
        let new = lines
            .get(i + 1)
            .and_then(|l| l.strip_prefix("+++ "))
            .ok_or_else(|| format!("line {}: '---' header without a '+++' line", i + 1))?;
        let (old_path, new_path) = (header_path(old, strip), header_path(new, strip));
        let path = new_path
            .clone()
            .or_else(|| old_path.clone())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("line {}: the patch names no file", i + 1))?;
        let mut file = FilePatch {
            path,
            creates: old_path.is_none(),
            deletes: new_path.is_none(),
            hunks: Vec::new(),
        };
        i += 2;
        while i < lines.len() && lines[i].starts_with("@@") {
            let header = lines[i];
            let ranges: Vec<&str> = header.trim_start_matches('@').split_whitespace().collect();
            let old = ranges
                .first()
                .and_then(|r| r.strip_prefix('-'))
                .and_then(parse_range)
                .ok_or_else(|| format!("line {}: malformed hunk header {header:?}", i + 1))?;
            let new = ranges
                .get(1)
                .and_then(|r| r.strip_prefix('+'))
                .and_then(parse_range)
                .ok_or_else(|| format!("line {}: malformed hunk header {header:?}", i + 1))?;
            i += 1;
            let mut hunk = Hunk {
                old_start: old.0,
                old_len: old.1,
                lines: Vec::new(),
            };
            let (mut seen_old, mut seen_new) = (0, 0);
            while i < lines.len()
                && (seen_old < old.1 || seen_new < new.1 || lines[i].starts_with('\\'))
            {
                let line = lines[i];
                if line.starts_with('\\') {
                    if let Some(last) = hunk.lines.last_mut() {
                        last.newline = false;
                    }
                    i += 1;
                    continue;
                }
                let (kind, body) = match line.chars().next() {
                    Some(k @ (' ' | '-' | '+')) => (k, &line[1..]),
                    None => (' ', ""),
                    Some(_) => {
                        return Err(format!("line {}: unexpected line in hunk: {line:?}", i + 1))
                    }
                };
                if kind != '+' {
                    seen_old += 1;
                }
                if kind != '-' {
                    seen_new += 1;
                }
                hunk.lines.push(HunkLine {
                    kind,
                    text: body.to_string(),
                    newline: true,
                });
                i += 1;
            }
            if seen_old != old.1 || seen_new != new.1 {
                return Err(format!(
                    "hunk at {header:?} is shorter than its header says"
                ));
            }
            file.hunks.push(hunk);
        }
        if file.hunks.is_empty() {
            return Err(format!("the patch for {} has no hunks", file.path));
        }
        files.push(file);
    }
    if files.is_empty() {
        return Err("not a unified diff: no '---'/'+++' file headers found".into());
    }
    Ok(files)
}

/// What applying one file's hunks gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub text: String,
    pub applied: u32,
    /// 1-based hunk number and why it failed.
    pub failures: Vec<(u32, String)>,
}

/// Applies hunks strictly (see the module doc).
pub fn apply(original: &str, hunks: &[Hunk]) -> Applied {
    let orig: Vec<(&str, bool)> = original
        .split_inclusive('\n')
        .map(|l| match l.strip_suffix('\n') {
            Some(t) => (t, true),
            None => (l, false),
        })
        .collect();
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut pos = 0usize;
    let mut result = Applied {
        text: String::new(),
        applied: 0,
        failures: Vec::new(),
    };
    for (n, hunk) in hunks.iter().enumerate() {
        let number = n as u32 + 1;
        let start = if hunk.old_len == 0 {
            hunk.old_start
        } else {
            hunk.old_start.saturating_sub(1)
        };
        let pre: Vec<&HunkLine> = hunk.lines.iter().filter(|l| l.kind != '+').collect();
        let fits = start
            .checked_add(pre.len())
            .is_some_and(|end| end <= orig.len());
        if start < pos || !fits {
            result.failures.push((
                number,
                format!(
                    "expected at line {} but the file has {} lines",
                    hunk.old_start,
                    orig.len()
                ),
            ));
            continue;
        }
        if let Some(k) = pre
            .iter()
            .zip(&orig[start..])
            .position(|(want, have)| want.text != have.0)
        {
            result.failures.push((
                number,
                format!(
                    "context does not match at line {}: expected {:?}, found {:?}",
                    start + k + 1,
                    pre[k].text,
                    orig[start + k].0
                ),
            ));
            continue;
        }
        out.extend(orig[pos..start].iter().map(|(t, nl)| (t.to_string(), *nl)));
        for line in hunk.lines.iter().filter(|l| l.kind != '-') {
            out.push((line.text.clone(), line.newline));
        }
        pos = start + pre.len();
        result.applied += 1;
    }
    out.extend(orig[pos..].iter().map(|(t, nl)| (t.to_string(), *nl)));
    for (text, newline) in out {
        result.text.push_str(&text);
        if newline {
            result.text.push('\n');
        }
    }
    result
}

/// Whether the line diff of `a` and `b` can be found within `budget` steps: the greedy forward
/// pass of Myers' algorithm (a step per diagonal tried and per matching line followed), stopped
/// as soon as the budget is spent. Myers costs about (lines of both) × (lines that differ), so two
/// large unrelated texts are the worst case; what `diffy` then does costs about the same as this
/// pass, so this bounds the whole `diff`.
pub fn diff_within(a: &str, b: &str, budget: u64) -> bool {
    let mut ids = std::collections::HashMap::new();
    let mut intern = |text: &str| -> Vec<u32> {
        text.split_inclusive('\n')
            .map(|line| {
                let next = ids.len() as u32;
                *ids.entry(line.to_string()).or_insert(next)
            })
            .collect()
    };
    let (a, b) = (intern(a), intern(b));
    // Common ends cost one step a line and never widen the search.
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a, b) = (&a[..a.len() - suffix], &b[..b.len() - suffix]);
    let mut spent = (prefix + suffix) as u64;
    let (n, m) = (a.len() as isize, b.len() as isize);
    let most = (n + m) as usize;
    if most == 0 {
        return spent <= budget;
    }
    // v[k + offset]: the furthest x reached on diagonal k.
    let offset = most as isize + 1;
    let mut v = vec![0isize; 2 * most + 3];
    for d in 0..=most as isize {
        let mut k = -d;
        while k <= d {
            let i = (k + offset) as usize;
            let mut x = if k == -d || (k != d && v[i - 1] < v[i + 1]) {
                v[i + 1]
            } else {
                v[i - 1] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
                spent += 1;
            }
            spent += 1;
            if spent > budget {
                return false;
            }
            v[i] = x;
            if x >= n && y >= m {
                return true;
            }
            k += 2;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ORIGINAL: &str = "one\ntwo\nthree\nfour\nfive\n";
    const BIG: usize = 1 << 24;

    fn make_patch(a: &str, b: &str) -> String {
        diffy::create_patch(a, b).to_string()
    }

    #[test]
    fn applies_a_diff_made_by_diffy() {
        let modified = "one\n2\nthree\nfour\nfive\nsix\n";
        let files = parse(&make_patch(ORIGINAL, modified), None, BIG).unwrap();
        assert_eq!(files.len(), 1);
        let applied = apply(ORIGINAL, &files[0].hunks);
        assert!(applied.failures.is_empty(), "{:?}", applied.failures);
        assert_eq!(applied.text, modified);
    }

    #[test]
    fn a_hunk_whose_context_differs_fails_and_is_not_moved() {
        let patch = make_patch(ORIGINAL, "one\nTWO\nthree\nfour\nfive\n");
        let files = parse(&patch, None, BIG).unwrap();
        // The same lines exist, but one line further down: strict application refuses.
        let shifted = "zero\none\ntwo\nthree\nfour\nfive\n";
        let applied = apply(shifted, &files[0].hunks);
        assert_eq!(applied.applied, 0);
        assert_eq!(applied.failures.len(), 1);
        assert!(applied.failures[0].1.contains("context does not match"));
    }

    #[test]
    fn multi_file_patches_creation_deletion_and_strip() {
        let patch = "diff --git a/x.txt b/x.txt\n--- a/x.txt\n+++ b/x.txt\n@@ -1 +1 @@\n-a\n+b\n\
                     --- /dev/null\n+++ b/new.txt\n@@ -0,0 +1,2 @@\n+hello\n+world\n\
                     --- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n";
        let files = parse(patch, None, BIG).unwrap();
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["x.txt", "new.txt", "old.txt"]
        );
        assert!(files[1].creates && files[2].deletes);
        assert_eq!(apply("", &files[1].hunks).text, "hello\nworld\n");
        let p1 = parse(
            "--- src/dir/f\n+++ src/dir/f\n@@ -1 +1 @@\n-a\n+b\n",
            Some(1),
            BIG,
        )
        .unwrap();
        assert_eq!(p1[0].path, "dir/f");
    }

    #[test]
    fn no_newline_markers_round_trip() {
        let a = "x\ny";
        let b = "x\nz";
        let files = parse(&make_patch(a, b), None, BIG).unwrap();
        assert_eq!(apply(a, &files[0].hunks).text, b);
    }

    #[test]
    fn malformed_patches_are_errors() {
        assert!(parse("hello", None, BIG).is_err());
        assert!(parse("--- a\n", None, BIG).is_err());
        assert!(parse("--- a\n+++ b\n@@ bogus @@\n", None, BIG).is_err());
        assert!(parse("--- a\n+++ b\n@@ -1,3 +1,3 @@\n a\n", None, BIG).is_err());
    }

    #[test]
    fn the_diff_cost_bound_tells_similar_texts_from_unrelated_ones() {
        let a: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        let mut b = a.replace("line 2500\n", "changed\n");
        b.push_str("one more\n");
        // Two changes in 5000 lines: about the length of the texts.
        assert!(diff_within(&a, &b, 20_000));
        assert!(diff_within(&a, &a, 10_000));
        assert!(diff_within("", "x\n", 10));
        // Unrelated texts: about the product of their lengths.
        let c: String = (0..5000).map(|i| format!("other {i}\n")).collect();
        assert!(!diff_within(&a, &c, 1_000_000));
        assert!(diff_within(&a, &c, 200_000_000));
    }

    #[test]
    fn a_huge_hunk_start_is_out_of_range_and_never_overflows() {
        let patch = format!("--- a/f\n+++ b/f\n@@ -{},1 +1,1 @@\n-a\n+b\n", usize::MAX);
        match parse(&patch, None, 1000) {
            Err(PatchError::OutOfRange(m)) => assert!(m.contains("1000"), "{m}"),
            other => panic!("expected out of range, got {other:?}"),
        }
        // Unbounded parsing (the bound is the caller's) still cannot make `apply` overflow.
        let files = parse(&patch, None, usize::MAX).expect("parses");
        let applied = apply("a\n", &files[0].hunks);
        assert_eq!(applied.applied, 0);
        assert_eq!(applied.failures.len(), 1);
    }

    proptest! {
        /// Any diff diffy makes between two texts applies back exactly.
        #[test]
        fn diffs_apply_exactly(a in proptest::collection::vec("[abc]{0,3}", 0..12), b in proptest::collection::vec("[abc]{0,3}", 0..12), end_a in any::<bool>(), end_b in any::<bool>()) {
            let mut a = a.join("\n");
            let mut b = b.join("\n");
            if end_a { a.push('\n'); }
            if end_b { b.push('\n'); }
            if a != b {
                let files = parse(&make_patch(&a, &b), None, BIG).unwrap();
                let applied = apply(&a, &files[0].hunks);
                prop_assert!(applied.failures.is_empty(), "{:?}", applied.failures);
                prop_assert_eq!(applied.text, b);
            }
        }

        /// Parsing never panics, whatever the text.
        #[test]
        fn parse_never_panics(text in ".{0,200}") {
            let _ = parse(&text, None, BIG);
            let _ = parse(&format!("--- a\n+++ b\n@@ -1 +1 @@\n{text}"), Some(3), BIG);
        }
    }
}
