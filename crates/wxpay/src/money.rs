//! Money as integer fen. WeChat's `total_fee`, `refund_fee`, `amount`, `total_amount` are
//! all fen; bills speak yuan with two decimals, which [`Fen::parse_yuan`] converts exactly.

use std::fmt;
use std::str::FromStr;

/// An amount of money in fen (1/100 yuan). May be negative (refunds, balances in reports);
/// request types that must be positive check that themselves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Fen(i64);

/// Why a money string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("not an amount: {0:?}")]
    Invalid(String),
    #[error("amount out of range: {0:?}")]
    Overflow(String),
}

impl Fen {
    pub const ZERO: Fen = Fen(0);

    pub const fn new(fen: i64) -> Fen {
        Fen(fen)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).map(Fen)
    }

    pub fn checked_sub(self, other: Fen) -> Option<Fen> {
        self.0.checked_sub(other.0).map(Fen)
    }

    /// Parses WeChat's fen field (`total_fee=100`): a plain non-negative integer.
    pub fn parse_fen(s: &str) -> Result<Fen, MoneyError> {
        let t = s.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::Invalid(s.to_owned()));
        }
        t.parse::<i64>().map(Fen).map_err(|_| MoneyError::Overflow(s.to_owned()))
    }

    /// Parses a yuan amount with at most two decimals (`12.30`, `-0.01`, `5`) exactly.
    pub fn parse_yuan(s: &str) -> Result<Fen, MoneyError> {
        parse_decimal(s, 2).map(Fen)
    }

    /// Formats as yuan with exactly two decimals, the way WeChat's bills write it.
    pub fn to_yuan_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// Parses a decimal string into an integer scaled by 10^`scale`, refusing more decimals than
/// `scale` (no rounding: an amount we cannot represent exactly is an error, not a guess).
pub fn parse_decimal(s: &str, scale: u32) -> Result<i64, MoneyError> {
    let bad = || MoneyError::Invalid(s.to_owned());
    let t = s.trim();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > scale as usize {
        return Err(bad());
    }
    let over = || MoneyError::Overflow(s.to_owned());
    let mut v: i64 = 0;
    for b in int.bytes() {
        v = v.checked_mul(10).and_then(|v| v.checked_add(i64::from(b - b'0'))).ok_or_else(over)?;
    }
    for i in 0..scale as usize {
        let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        v = v.checked_mul(10).and_then(|v| v.checked_add(d)).ok_or_else(over)?;
    }
    Ok(if neg { -v } else { v })
}

impl fmt::Display for Fen {
    /// Displays the plain fen integer: the form every WeChat request field uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Fen {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Fen, MoneyError> {
        Fen::parse_fen(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_is_exact() {
        assert_eq!(Fen::parse_yuan("0.01"), Ok(Fen(1)));
        assert_eq!(Fen::parse_yuan("12.3"), Ok(Fen(1230)));
        assert_eq!(Fen::parse_yuan("-0.06"), Ok(Fen(-6)));
        assert_eq!(Fen::parse_yuan("5"), Ok(Fen(500)));
        assert!(Fen::parse_yuan("0.001").is_err());
        assert!(Fen::parse_yuan("1e3").is_err());
        assert!(Fen::parse_yuan("").is_err());
        assert!(Fen::parse_yuan("99999999999999999999").is_err());
        assert_eq!(Fen(-6).to_yuan_string(), "-0.06");
        assert_eq!(Fen(123456).to_yuan_string(), "1234.56");
    }

    #[test]
    fn five_decimal_fees() {
        assert_eq!(parse_decimal("0.00600", 5), Ok(600));
        assert_eq!(parse_decimal("-0.00012", 5), Ok(-12));
    }

    #[test]
    fn fen_field() {
        assert_eq!(Fen::parse_fen("100"), Ok(Fen(100)));
        assert!(Fen::parse_fen("-1").is_err());
        assert!(Fen::parse_fen("1.0").is_err());
    }
}
