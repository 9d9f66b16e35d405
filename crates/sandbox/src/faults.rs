//! Faults injected through `/sandbox/faults`: per WeChat endpoint path (an error code, a
//! `return_code` FAIL, HTTP 500, a delay, a dropped connection, or "done but the answer is
//! lost") and per notification kind (drop, duplicate, reorder, delay). APIv3 paths are
//! named by their template (`/v3/pay/transactions/out-trade-no/{out_trade_no}`); there the
//! error fault answers WeChat's JSON error with a matching HTTP status, and two kinds exist
//! only for v3: an unsigned answer and a `WECHATPAY/SIGNTEST/` probe notification. Each fault fires for
//! `times` calls, or until cleared when `times` is absent.

use serde::{Deserialize, Serialize};

/// What happens to a call or a notification attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer `result_code` FAIL with this `err_code` (signed like WeChat's answer); nothing
    /// happens. `SYSTEMERROR` is the usual choice.
    Error { err_code: String, err_code_des: Option<String> },
    /// Answer `return_code` FAIL with this `return_msg` (e.g. 系统繁忙); nothing happens.
    ReturnFail { return_msg: String },
    /// Answer HTTP 500 with no XML; nothing happens.
    Http500,
    /// Wait this many real milliseconds before handling the call normally (or before a
    /// notification attempt). Longer than the client's timeout, the client gives up but the
    /// action still happens, as with WeChat.
    Delay { delay_ms: u64 },
    /// Close the connection without an answer; nothing happens. For notifications: the
    /// attempt is not sent (it still counts, and the schedule goes on).
    Drop,
    /// Do the action, then close the connection without an answer.
    LostAnswer,
    /// Notifications only: send the attempt twice.
    Duplicate,
    /// Notifications only: hold the attempt until another notification has been sent (or
    /// `hold_ms` real milliseconds have passed, default 2000), so they arrive out of order.
    Reorder { hold_ms: Option<u64> },
    /// APIv3 calls only: do the action and answer normally, but without the
    /// `Wechatpay-*` signature headers (what a forged or tampered answer looks like).
    Unsigned,
    /// APIv3 notifications only: before the attempt, send WeChat's probe — the same body
    /// with a `WECHATPAY/SIGNTEST/` signature — which the receiver must refuse (non-2xx).
    /// The probe is recorded as its own attempt; the real attempt follows as usual.
    SignTest,
    /// APIv3 bill downloads only (`/v3/billdownload/file`): serve the file with one byte of
    /// the bill changed (compressed again when the file is gzip), so its SHA1 no longer
    /// matches the link's `hash_value` (a download broken on the way).
    CorruptBill,
}

/// One configured fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// A WeChat path (`/pay/unifiedorder`, `/secapi/pay/refund`, `/sns/jscode2session`...)
    /// or a notification target: `notify` (all), `notify/pay`, `notify/refund`.
    pub path: String,
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many calls it applies to; absent = until cleared.
    pub times: Option<u32>,
}

/// Why a fault was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("fault kind {0} only applies to notifications (path notify, notify/pay, notify/refund)")]
    NotifyOnly(&'static str),
    #[error("fault kind {0} does not apply to notifications")]
    CallOnly(&'static str),
    #[error("unknown path {0:?}")]
    UnknownPath(String),
    #[error("fault kind {0} only applies to APIv3 paths (/v3/...)")]
    V3Only(&'static str),
    #[error("fault kind {0} does not apply to APIv3 paths")]
    V2Only(&'static str),
    #[error("times must be at least 1")]
    ZeroTimes,
    #[error("fault kind corrupt_bill only applies to the v3 bill download ({0})")]
    BillDownloadOnly(&'static str),
}

impl FaultKind {
    fn name(&self) -> &'static str {
        match self {
            FaultKind::Error { .. } => "error",
            FaultKind::ReturnFail { .. } => "return_fail",
            FaultKind::Http500 => "http500",
            FaultKind::Delay { .. } => "delay",
            FaultKind::Drop => "drop",
            FaultKind::LostAnswer => "lost_answer",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder { .. } => "reorder",
            FaultKind::Unsigned => "unsigned",
            FaultKind::SignTest => "signtest",
            FaultKind::CorruptBill => "corrupt_bill",
        }
    }
}

pub fn is_notify_path(path: &str) -> bool {
    matches!(path, "notify" | "notify/pay" | "notify/refund" | "notify/transfer")
}

/// The faults in force, in the order they were added.
#[derive(Debug, Default)]
pub struct Faults {
    list: Vec<Fault>,
}

impl Faults {
    /// Adds a fault after checking that its kind fits its path.
    pub fn add(&mut self, mut fault: Fault, known_path: impl Fn(&str) -> bool) -> Result<(), FaultError> {
        if fault.times == Some(0) {
            return Err(FaultError::ZeroTimes);
        }
        if !fault.path.starts_with('/') && !is_notify_path(&fault.path) {
            fault.path.insert(0, '/');
        }
        let notify = is_notify_path(&fault.path);
        let v3 = fault.path.starts_with("/v3/");
        if fault.kind == FaultKind::CorruptBill && fault.path != crate::v3::BILL_DOWNLOAD_PATH {
            return Err(FaultError::BillDownloadOnly(crate::v3::BILL_DOWNLOAD_PATH));
        }
        match (&fault.kind, notify) {
            (FaultKind::Unsigned, false) if !v3 => return Err(FaultError::V3Only("unsigned")),
            (FaultKind::ReturnFail { .. }, false) if v3 => return Err(FaultError::V2Only("return_fail")),
            (FaultKind::Duplicate | FaultKind::Reorder { .. } | FaultKind::SignTest, false) => {
                return Err(FaultError::NotifyOnly(fault.kind.name()));
            }
            (
                FaultKind::Error { .. }
                | FaultKind::ReturnFail { .. }
                | FaultKind::Http500
                | FaultKind::LostAnswer
                | FaultKind::Unsigned,
                true,
            ) => {
                return Err(FaultError::CallOnly(fault.kind.name()));
            }
            _ => {}
        }
        if !notify && !known_path(&fault.path) {
            return Err(FaultError::UnknownPath(fault.path));
        }
        self.list.push(fault);
        Ok(())
    }

    /// Takes the first fault for a call path, counting one use.
    pub fn take(&mut self, path: &str) -> Option<FaultKind> {
        self.take_where(|p| p == path)
    }

    /// Takes the first fault for a notification of `kind` (`pay` or `refund`).
    pub fn take_notify(&mut self, kind: &str) -> Option<FaultKind> {
        self.take_where(|p| p == "notify" || p.strip_prefix("notify/") == Some(kind))
    }

    fn take_where(&mut self, matches: impl Fn(&str) -> bool) -> Option<FaultKind> {
        let i = self.list.iter().position(|f| matches(&f.path))?;
        let f = &mut self.list[i];
        let kind = f.kind.clone();
        if let Some(t) = f.times.as_mut() {
            *t -= 1;
            if *t == 0 {
                self.list.remove(i);
            }
        }
        Some(kind)
    }

    /// Removes every fault, or those of one path.
    pub fn clear(&mut self, path: Option<&str>) {
        match path {
            Some(p) => self.list.retain(|f| f.path != p && f.path.trim_start_matches('/') != p.trim_start_matches('/')),
            None => self.list.clear(),
        }
    }

    pub fn list(&self) -> &[Fault] {
        &self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, kind: FaultKind, times: Option<u32>) -> Fault {
        Fault { path: path.into(), kind, times }
    }

    #[test]
    fn counts_down_and_checks_kinds() {
        let mut fs = Faults::default();
        let known = |p: &str| p == "/pay/unifiedorder";
        fs.add(f("pay/unifiedorder", FaultKind::Http500, Some(2)), known).unwrap();
        assert_eq!(fs.take("/pay/orderquery"), None);
        assert_eq!(fs.take("/pay/unifiedorder"), Some(FaultKind::Http500));
        assert_eq!(fs.take("/pay/unifiedorder"), Some(FaultKind::Http500));
        assert_eq!(fs.take("/pay/unifiedorder"), None);
        assert!(fs.add(f("/pay/unifiedorder", FaultKind::Duplicate, None), known).is_err());
        assert!(fs.add(f("notify", FaultKind::Http500, None), known).is_err());
        assert!(fs.add(f("/nope", FaultKind::Drop, None), known).is_err());
        assert!(fs.add(f("/pay/unifiedorder", FaultKind::Drop, Some(0)), known).is_err());
        fs.add(f("notify/pay", FaultKind::Drop, None), known).unwrap();
        assert_eq!(fs.take_notify("refund"), None);
        assert_eq!(fs.take_notify("pay"), Some(FaultKind::Drop));
        assert_eq!(fs.take_notify("pay"), Some(FaultKind::Drop));
        fs.clear(Some("notify/pay"));
        assert_eq!(fs.take_notify("pay"), None);
        assert!(fs.add(f("/pay/unifiedorder", FaultKind::CorruptBill, None), known).is_err());
        fs.add(f(crate::v3::BILL_DOWNLOAD_PATH, FaultKind::CorruptBill, Some(1)), |_| true).unwrap();
        assert_eq!(fs.take(crate::v3::BILL_DOWNLOAD_PATH), Some(FaultKind::CorruptBill));
    }

    #[test]
    fn v3_kinds_fit_v3_paths_only() {
        let mut fs = Faults::default();
        let known = |p: &str| p == "/pay/unifiedorder" || p == "/v3/pay/transactions/jsapi";
        assert_eq!(
            fs.add(f("/pay/unifiedorder", FaultKind::Unsigned, None), known),
            Err(FaultError::V3Only("unsigned"))
        );
        let rf = FaultKind::ReturnFail { return_msg: "x".into() };
        assert_eq!(fs.add(f("/v3/pay/transactions/jsapi", rf, None), known), Err(FaultError::V2Only("return_fail")));
        assert_eq!(
            fs.add(f("/v3/pay/transactions/jsapi", FaultKind::SignTest, None), known),
            Err(FaultError::NotifyOnly("signtest"))
        );
        assert_eq!(fs.add(f("notify", FaultKind::Unsigned, None), known), Err(FaultError::CallOnly("unsigned")));
        fs.add(f("/v3/pay/transactions/jsapi", FaultKind::Unsigned, Some(1)), known).unwrap();
        fs.add(f("notify/transfer", FaultKind::SignTest, Some(1)), known).unwrap();
        assert_eq!(fs.take("/v3/pay/transactions/jsapi"), Some(FaultKind::Unsigned));
        assert_eq!(fs.take_notify("transfer"), Some(FaultKind::SignTest));
        assert_eq!(fs.take_notify("transfer"), None);
    }

    #[test]
    fn parses_json_shapes() {
        let x: Fault =
            serde_json::from_str(r#"{"path":"/pay/unifiedorder","kind":"error","err_code":"SYSTEMERROR","times":1}"#)
                .unwrap();
        assert_eq!(x.kind, FaultKind::Error { err_code: "SYSTEMERROR".into(), err_code_des: None });
        let y: Fault = serde_json::from_str(r#"{"path":"notify","kind":"delay","delay_ms":5}"#).unwrap();
        assert_eq!(y.kind, FaultKind::Delay { delay_ms: 5 });
        assert_eq!(y.times, None);
    }
}
