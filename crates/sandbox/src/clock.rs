//! The sandbox clock: real time plus an offset that `/sandbox/clock` sets or advances.
//!
//! Everything WeChat decides by the time of day uses it: prepay_id and token expiry, payment
//! and refund times, the bill day (the Asia/Shanghai date) and the `Bill Creating` window,
//! red-packet expiry. Waiting (retries, refund processing) is real time times `time_scale`;
//! moving the clock does not fire waits early, but every time-dependent state is re-checked
//! against the clock whenever it is read.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;

/// Real time shifted by an offset.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset: Duration,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }

    /// Makes `now()` return `t` (and move on from there).
    pub fn set(&mut self, t: DateTime<Utc>) {
        self.offset = t - Utc::now();
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&mut self, d: Duration) {
        self.offset += d;
    }

    pub fn reset(&mut self) {
        self.offset = Duration::zero();
    }

    pub fn offset_secs(&self) -> i64 {
        self.offset.num_seconds()
    }
}

/// `yyyyMMddHHmmss` in Beijing time, WeChat's `time_end` / `time_start` format.
pub fn compact(t: DateTime<Utc>) -> String {
    t.with_timezone(&Shanghai).format("%Y%m%d%H%M%S").to_string()
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time, the format of payouts, refunds and bills.
pub fn dashed(t: DateTime<Utc>) -> String {
    t.with_timezone(&Shanghai).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The Beijing wall-clock time of an instant (bill rows are written in it).
pub fn local(t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&Shanghai).naive_local()
}

/// The bill day of an instant: its Asia/Shanghai date.
pub fn bill_day(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&Shanghai).date_naive()
}

/// Parses a Beijing wall-clock time in WeChat's compact format.
pub fn parse_compact(s: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S").ok()?;
    from_local(naive)
}

/// Converts a Beijing wall-clock time to an instant (China has no DST since 1991).
pub fn from_local(naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    Shanghai.from_local_datetime(&naive).earliest().map(|t| t.with_timezone(&Utc))
}

/// Parses a time given to the control API: RFC 3339 (`2026-11-24T23:59:59+08:00`), or a
/// Beijing wall-clock time as `yyyy-MM-dd HH:mm:ss` or `yyyyMMddHHmmss`.
pub fn parse_any(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(n) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
        return from_local(n);
    }
    parse_compact(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_beijing_time() {
        let t = parse_any("2026-11-24T15:59:59Z").unwrap();
        assert_eq!(compact(t), "20261124235959");
        assert_eq!(dashed(t), "2026-11-24 23:59:59");
        assert_eq!(bill_day(t).to_string(), "2026-11-24");
        assert_eq!(bill_day(t + Duration::seconds(1)).to_string(), "2026-11-25");
        assert_eq!(parse_any("2026-11-24 23:59:59"), Some(t));
        assert_eq!(parse_compact("20261124235959"), Some(t));
        assert_eq!(parse_any("yesterday"), None);
    }

    #[test]
    fn clock_moves() {
        let mut c = Clock::default();
        let target = parse_any("2030-01-01T00:00:00Z").unwrap();
        c.set(target);
        assert!((c.now() - target).num_seconds().abs() < 5);
        c.advance(Duration::hours(1));
        assert!((c.now() - target - Duration::hours(1)).num_seconds().abs() < 5);
        c.reset();
        assert_eq!(c.offset_secs(), 0);
    }
}
