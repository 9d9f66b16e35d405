//! Domain newtypes, parsed once where data enters (HTTP, WeChat, CSV), and the state machines
//! of orders and refunds. Every allowed transition is listed here and nowhere else.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {why}")]
pub struct ParseError {
    pub what: &'static str,
    pub why: &'static str,
}

macro_rules! ident {
    ($(#[$m:meta])* $name:ident, $what:literal, $min:expr, $max:expr, $ok:expr) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, ParseError> {
                let s = s.into();
                let ok: fn(u8) -> bool = $ok;
                if s.len() < $min || s.len() > $max {
                    return Err(ParseError { what: $what, why: "wrong length" });
                }
                if !s.bytes().all(ok) {
                    return Err(ParseError { what: $what, why: "unexpected character" });
                }
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn merchant_no_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*')
}

ident!(
    /// Our order number at WeChat: 1–32 of `[0-9A-Za-z_-|*]`, unique per merchant.
    OutTradeNo, "out_trade_no", 1, 32, merchant_no_char
);
ident!(
    /// Our refund number: 1–64 of `[0-9A-Za-z_-|*@]`.
    OutRefundNo, "out_refund_no", 1, 64, |b| merchant_no_char(b) || b == b'@'
);
ident!(
    /// A payout's merchant number (`partner_trade_no`), fixed when the request is created.
    PartnerTradeNo, "partner_trade_no", 1, 32, |b| b.is_ascii_alphanumeric() || b == b'_'
);
ident!(
    /// A red packet's merchant number (`mch_billno`), fixed when the request is created.
    MchBillNo, "mch_billno", 1, 28, |b| b.is_ascii_alphanumeric()
);
ident!(
    /// A mini-program / official-account appid (`wx` + 16 hex in production).
    AppId, "appid", 1, 32, |b| b.is_ascii_alphanumeric()
);
ident!(
    /// A merchant number (`mch_id`), digits.
    MchId, "mch_id", 1, 32, |b| b.is_ascii_digit()
);

/// A user's openid: identifies the user within one appid. Shown in logs only masked.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OpenId(String);

impl OpenId {
    pub fn parse(s: impl Into<String>) -> Result<OpenId, ParseError> {
        let s = s.into();
        if s.is_empty() || s.len() > 128 {
            return Err(ParseError { what: "openid", why: "wrong length" });
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(ParseError { what: "openid", why: "unexpected character" });
        }
        Ok(OpenId(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form that may appear in logs: first 4 and last 2 characters.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks an identifier for logs: keeps a short prefix and suffix.
pub fn mask(s: &str) -> String {
    let n = s.chars().count();
    if n <= 6 {
        return "***".into();
    }
    let head: String = s.chars().take(4).collect();
    let tail: String = s.chars().skip(n - 2).collect();
    format!("{head}***{tail}")
}

impl fmt::Debug for OpenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpenId({})", self.masked())
    }
}

impl TryFrom<String> for OpenId {
    type Error = ParseError;
    fn try_from(s: String) -> Result<OpenId, ParseError> {
        OpenId::parse(s)
    }
}

impl From<OpenId> for String {
    fn from(v: OpenId) -> String {
        v.0
    }
}

macro_rules! debug_as_display {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self.0)
            }
        }
    )*};
}
debug_as_display!(OutTradeNo, OutRefundNo, PartnerTradeNo, MchBillNo, AppId, MchId);

/// A state stored as text in Postgres, with the allowed transitions.
pub trait State: Copy + Eq + fmt::Debug + 'static {
    const ENTITY: &'static str;
    fn as_str(self) -> &'static str;
    fn parse(s: &str) -> Option<Self>;
    fn can_become(self, next: Self) -> bool;
}

/// An order's life. `Closed → Paid` is allowed on purpose: a genuine payment that arrives
/// after we closed the order locally wins (the user paid), and the order is flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Created,
    Prepaid,
    Paid,
    Closed,
    Failed,
}

impl State for OrderStatus {
    const ENTITY: &'static str = "order";

    fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::Prepaid => "prepaid",
            OrderStatus::Paid => "paid",
            OrderStatus::Closed => "closed",
            OrderStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<OrderStatus> {
        Some(match s {
            "created" => OrderStatus::Created,
            "prepaid" => OrderStatus::Prepaid,
            "paid" => OrderStatus::Paid,
            "closed" => OrderStatus::Closed,
            "failed" => OrderStatus::Failed,
            _ => return None,
        })
    }

    fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Created, Prepaid)
                | (Created, Paid)
                | (Created, Closed)
                | (Created, Failed)
                | (Prepaid, Prepaid)
                | (Prepaid, Paid)
                | (Prepaid, Closed)
                | (Prepaid, Failed)
                | (Closed, Paid)
                | (Failed, Paid)
        )
    }
}

/// A refund's life. `Pending`: committed, WeChat not yet asked; `Unknown`: the call may have
/// happened (retry with the same out_refund_no or query); `Abnormal`: WeChat's CHANGE (the
/// money could not reach the user's account; an operator must act).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Processing,
    Unknown,
    Succeeded,
    Failed,
    Closed,
    Abnormal,
}

impl State for RefundStatus {
    const ENTITY: &'static str = "refund";

    fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Processing => "processing",
            RefundStatus::Unknown => "unknown",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
            RefundStatus::Closed => "closed",
            RefundStatus::Abnormal => "abnormal",
        }
    }

    fn parse(s: &str) -> Option<RefundStatus> {
        Some(match s {
            "pending" => RefundStatus::Pending,
            "processing" => RefundStatus::Processing,
            "unknown" => RefundStatus::Unknown,
            "succeeded" => RefundStatus::Succeeded,
            "failed" => RefundStatus::Failed,
            "closed" => RefundStatus::Closed,
            "abnormal" => RefundStatus::Abnormal,
            _ => return None,
        })
    }

    fn can_become(self, next: RefundStatus) -> bool {
        use RefundStatus::*;
        match self {
            Pending | Unknown => matches!(next, Processing | Unknown | Succeeded | Failed | Closed | Abnormal),
            Processing => matches!(next, Processing | Succeeded | Closed | Abnormal),
            // CHANGE can later be resolved by an operator re-issuing through WeChat's console.
            Abnormal => matches!(next, Succeeded | Closed),
            Succeeded | Failed | Closed => false,
        }
    }
}

/// Checks a transition, turning a refusal into the store's error.
pub fn check_transition<S: State>(from: S, to: S) -> Result<(), crate::StoreError> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(crate::StoreError::InvalidTransition {
            entity: S::ENTITY,
            from: from.as_str().into(),
            to: to.as_str().into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_parse_at_the_edge() {
        assert!(OutTradeNo::parse("20261125-0001").is_ok());
        assert!(OutTradeNo::parse("").is_err());
        assert!(OutTradeNo::parse("a".repeat(33)).is_err());
        assert!(OutTradeNo::parse("bad no").is_err());
        assert!(MchBillNo::parse("1900000109202611250000000001").is_ok());
        assert!(OpenId::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").is_ok());
        assert!(OpenId::parse("o<script>").is_err());
    }

    #[test]
    fn openid_never_prints_in_full() {
        let o = OpenId::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").unwrap();
        assert_eq!(format!("{o:?}"), "OpenId(oUpF***6o)");
    }

    #[test]
    fn order_transitions() {
        use OrderStatus::*;
        assert!(Created.can_become(Prepaid));
        assert!(Closed.can_become(Paid), "a late genuine payment wins");
        assert!(!Paid.can_become(Closed));
        assert!(!Paid.can_become(Paid), "applying a payment twice is not a transition");
        for s in [Created, Prepaid, Paid, Closed, Failed] {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn refund_transitions() {
        use RefundStatus::*;
        assert!(Pending.can_become(Processing));
        assert!(Processing.can_become(Succeeded));
        assert!(!Succeeded.can_become(Closed));
        assert!(check_transition(Failed, Succeeded).is_err());
        for s in [Pending, Processing, Unknown, Succeeded, Failed, Closed, Abnormal] {
            assert_eq!(RefundStatus::parse(s.as_str()), Some(s));
        }
    }
}
