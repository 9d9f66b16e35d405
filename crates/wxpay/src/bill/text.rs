//! Line reading and field splitting shared by every bill reader. This is the hot loop of a
//! million-row reconciliation, so it works on bytes in one reused buffer and hands out
//! `&str` slices and index ranges, never per-field allocations.

use std::io::{BufRead, Read};

use chrono::{NaiveDate, NaiveDateTime};

use super::BillError;
use crate::money::parse_decimal;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The longest line we accept. Real rows are well under 1 KiB (product names are at most 128
/// characters); the limit keeps a corrupt body without newlines from filling memory.
pub(crate) const MAX_LINE: u64 = 1 << 20;

/// Non-blank lines of a bill, numbered from 1 as a text editor would, terminators and the
/// UTF-8 BOM of the first line removed.
///
/// Reading is two steps, [`advance`](Self::advance) then [`current`](Self::current), so a
/// reader can return a record borrowed from the buffer on one path and read further lines on
/// another (the borrow checker refuses that when one call both reads and borrows).
pub(crate) struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    line: u64,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R) -> Lines<R> {
        Lines { reader, buf: Vec::with_capacity(1024), start: 0, end: 0, line: 0 }
    }

    /// The number of the last line read (0 before the first).
    pub(crate) fn line_no(&self) -> u64 {
        self.line
    }

    /// Moves to the next non-blank line; `false` at the end of the input.
    pub(crate) fn advance(&mut self) -> Result<bool, BillError> {
        loop {
            self.buf.clear();
            let n = (&mut self.reader).take(MAX_LINE).read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                self.start = 0;
                self.end = 0;
                return Ok(false);
            }
            self.line += 1;
            if n as u64 == MAX_LINE && self.buf.last() != Some(&b'\n') {
                return Err(BillError::LineTooLong { line: self.line });
            }
            let mut end = self.buf.len();
            if end > 0 && self.buf[end - 1] == b'\n' {
                end -= 1;
            }
            if end > 0 && self.buf[end - 1] == b'\r' {
                end -= 1;
            }
            let start = if self.line == 1 && self.buf.starts_with(BOM) { BOM.len() } else { 0 };
            let end = end.max(start);
            if !self.buf[start..end].iter().all(u8::is_ascii_whitespace) {
                self.start = start;
                self.end = end;
                return Ok(true);
            }
        }
    }

    /// Whether the current line starts with a backtick, i.e. is a record or summary values.
    pub(crate) fn is_record(&self) -> bool {
        self.buf.get(self.start) == Some(&b'`')
    }

    /// The current line with its number (validated as UTF-8 here, once).
    pub(crate) fn current(&self) -> Result<(u64, &str), BillError> {
        let line = self.line;
        std::str::from_utf8(&self.buf[self.start..self.end]).map(|t| (line, t)).map_err(|_| BillError::NotUtf8 { line })
    }

    /// [`advance`](Self::advance) and [`current`](Self::current) in one call, for the places
    /// that do not return the borrow.
    pub(crate) fn next_line(&mut self) -> Result<Option<(u64, &str)>, BillError> {
        if self.advance()? { self.current().map(Some) } else { Ok(None) }
    }
}

/// Splits a record line into field byte ranges on the `` ,` `` boundary (every field starts
/// with a backtick; a bare comma is part of the value: product names contain them).
pub(crate) fn split_record(text: &str, line: u64, out: &mut Vec<(usize, usize)>) -> Result<(), BillError> {
    out.clear();
    let b = text.as_bytes();
    if b.first() != Some(&b'`') {
        return Err(BillError::NoBacktick { line });
    }
    let mut start = 1;
    let mut i = 1;
    while let Some(off) = b[i..].iter().position(|&c| c == b'`') {
        let p = i + off;
        // `p > start`: a backtick right at a field's start is part of the value, not a
        // boundary (the byte before it is the boundary's own backtick).
        if p > start && b[p - 1] == b',' {
            out.push((start, p - 1));
            start = p + 1;
        }
        i = p + 1;
    }
    out.push((start, b.len()));
    Ok(())
}

/// Splits a header line (column names, no backticks) on commas, trimming each name.
pub(crate) fn header_names(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim)
}

/// Maps header names to field indices: `aliases` gives each accepted name its slot in `out`.
/// Unknown columns are ignored (WeChat adds columns for some accounts); the first of two
/// aliases of one slot wins; the very same name twice is an error. Returns the column count.
pub(crate) fn map_header(
    text: &str,
    line: u64,
    aliases: &[(&str, usize)],
    out: &mut [Option<usize>],
) -> Result<usize, BillError> {
    let mut n = 0;
    let mut seen: Vec<&str> = Vec::new();
    for (i, name) in header_names(text).enumerate() {
        n = i + 1;
        if seen.contains(&name) && !name.is_empty() {
            return Err(BillError::DuplicateColumn { line, column: name.to_owned() });
        }
        seen.push(name);
        if let Some(&(_, slot)) = aliases.iter().find(|(a, _)| *a == name) {
            if out[slot].is_none() {
                out[slot] = Some(i);
            }
        }
    }
    Ok(n)
}

/// Parses a decimal with at most `scale` decimals exactly. A fast path covers what WeChat
/// writes (`-12.30`); anything else goes through [`parse_decimal`], the crate's one definition
/// of an exact amount, so both paths accept and refuse the same strings.
pub(crate) fn parse_scaled(s: &str, scale: u32) -> Option<i64> {
    fast_scaled(s.as_bytes(), scale).or_else(|| parse_decimal(s, scale).ok())
}

fn fast_scaled(b: &[u8], scale: u32) -> Option<i64> {
    let (neg, b) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        _ => (false, b),
    };
    let mut v: i64 = 0;
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add(i64::from(b[i] - b'0'))?;
        i += 1;
    }
    let int_digits = i;
    let mut frac = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            if frac == scale {
                return None;
            }
            v = v.checked_mul(10)?.checked_add(i64::from(b[i] - b'0'))?;
            frac += 1;
            i += 1;
        }
    }
    if i != b.len() || (int_digits == 0 && frac == 0) {
        return None;
    }
    for _ in frac..scale {
        v = v.checked_mul(10)?;
    }
    Some(if neg { -v } else { v })
}

/// Parses `yyyy-MM-dd HH:mm:ss`, the only time format bills use, without chrono's format
/// interpreter (two of these per row in the hot loop).
pub(crate) fn parse_time(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, num(5..7)?, num(8..10)?)?.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)
}

/// Parses a non-negative count such as `总交易单数`.
pub(crate) fn parse_count(s: &str) -> Option<u64> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: &str) -> Vec<&str> {
        let mut r = Vec::new();
        split_record(s, 1, &mut r).unwrap();
        r.into_iter().map(|(a, b)| &s[a..b]).collect()
    }

    #[test]
    fn splits_on_comma_backtick_only() {
        assert_eq!(fields("`a,`b,c,`"), vec!["a", "b,c", ""]);
        assert_eq!(fields("`a,`,`b"), vec!["a", "", "b"]);
        assert_eq!(fields("`x"), vec!["x"]);
        assert_eq!(fields("`a,,`b"), vec!["a,", "b"]);
        assert_eq!(fields("``x,`y`"), vec!["`x", "y`"]);
        assert!(matches!(split_record("a,`b", 7, &mut Vec::new()), Err(BillError::NoBacktick { line: 7 })));
    }

    #[test]
    fn scaled_numbers_are_exact() {
        assert_eq!(parse_scaled("0.01", 2), Some(1));
        assert_eq!(parse_scaled("-0.00006", 5), Some(-6));
        assert_eq!(parse_scaled("12", 2), Some(1200));
        assert_eq!(parse_scaled("0.0", 2), Some(0));
        assert_eq!(parse_scaled(" 1.5 ", 2), Some(150));
        assert_eq!(parse_scaled("1.234", 2), None);
        assert_eq!(parse_scaled("", 2), None);
        assert_eq!(parse_scaled("-", 2), None);
        assert_eq!(parse_scaled(".", 2), None);
        assert_eq!(parse_scaled("1,00", 2), None);
        assert_eq!(parse_scaled("99999999999999999999", 2), None);
    }

    #[test]
    fn times_parse_strictly() {
        assert_eq!(
            parse_time("2017-11-25 15:36:17"),
            NaiveDateTime::parse_from_str("2017-11-25 15:36:17", "%Y-%m-%d %H:%M:%S").ok()
        );
        assert_eq!(parse_time("2017-02-30 15:36:17"), None);
        assert_eq!(parse_time("2017-11-25T15:36:17"), None);
        assert_eq!(parse_time("2017-11-25 15:36"), None);
    }

    #[test]
    fn lines_strip_bom_crlf_and_blank_lines() {
        let mut l = Lines::new(&b"\xEF\xBB\xBFa,b\r\n\r\n`1\n"[..]);
        assert_eq!(l.next_line().unwrap(), Some((1, "a,b")));
        assert_eq!(l.next_line().unwrap(), Some((3, "`1")));
        assert_eq!(l.next_line().unwrap(), None);
    }
}
