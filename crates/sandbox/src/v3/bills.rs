//! v3 bills: the link (`{hash_type, hash_value, download_url}`) and the download.
//!
//! The file is built when the link is asked for and kept behind a random token for five
//! sandbox minutes (WeChat: "download within 5 minutes"), so its SHA1 matches the link.
//!
//! Guesses: a bill not ready yet is 400 `STATEMENT_CREATING`, a day without rows 400
//! `NO_STATEMENT_EXIST`, a day older than three months 400 `INVALID_REQUEST`, a bad
//! parameter 400 `PARAM_ERROR`; an unknown token is 404 `RESOURCE_NOT_EXISTS` and an
//! expired one 400 `INVALID_REQUEST`; the file is served as `application/octet-stream`.

use actix_web::http::StatusCode;
use chrono::{Duration, NaiveDate};
use serde_json::json;

use super::{BILL_DOWNLOAD_PATH, V3Call, V3Reply};
use crate::bills::{BillProblem, check_ready, fund_flow_text, maybe_gzip, trade_bill_text};
use crate::state::{BillFile, State, nonce};

const LINK_LIFETIME_MINUTES: i64 = 5;

fn problem(p: BillProblem) -> V3Reply {
    match p {
        BillProblem::Creating => {
            V3Reply::error(StatusCode::BAD_REQUEST, "STATEMENT_CREATING", "账单生成中，请稍后再试")
        }
        BillProblem::NoBill => V3Reply::error(StatusCode::BAD_REQUEST, "NO_STATEMENT_EXIST", "该日期无账单"),
        BillProblem::TooOld => V3Reply::error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "只能下载三个月以内的账单"),
        BillProblem::System => V3Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "系统错误"),
    }
}

/// bill_date (`YYYY-MM-DD`) and tar_type (absent or `GZIP`).
fn day_and_gzip(call: &V3Call) -> Result<(NaiveDate, bool), V3Reply> {
    let day = call
        .query_param("bill_date")
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .ok_or_else(|| V3Reply::param_error("bill_date格式不正确，应为YYYY-MM-DD"))?;
    let gzip = match call.query_param("tar_type") {
        None => false,
        Some("GZIP") => true,
        Some(_) => return Err(V3Reply::param_error("tar_type仅支持GZIP")),
    };
    Ok((day, gzip))
}

/// Stores the file and answers its link.
fn link(st: &mut State, call: &V3Call, text: Vec<u8>, gzip: bool) -> V3Reply {
    let hash = hex::encode(openssl::sha::sha1(&text));
    let file = match maybe_gzip(text, gzip) {
        Ok(f) => f,
        Err(p) => return problem(p),
    };
    let token = nonce();
    let expires_at = st.clock.now() + Duration::minutes(LINK_LIFETIME_MINUTES);
    st.bill_files.insert(token.clone(), BillFile { mch_id: call.mch_id().to_owned(), file, expires_at });
    let url = format!("{}{BILL_DOWNLOAD_PATH}?token={token}", call.base_url);
    V3Reply::ok(&json!({ "hash_type": "SHA1", "hash_value": hash, "download_url": url }))
}

pub fn trade_bill(st: &mut State, call: &V3Call) -> V3Reply {
    let (day, gzip) = match day_and_gzip(call) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let bill_type = call.query_param("bill_type").unwrap_or("ALL");
    if !matches!(bill_type, "ALL" | "SUCCESS" | "REFUND") {
        return V3Reply::param_error("bill_type仅支持ALL、SUCCESS、REFUND");
    }
    match check_ready(st, day).and_then(|()| trade_bill_text(st, &call.mch.cfg, day, bill_type)) {
        Ok(text) => link(st, call, text, gzip),
        Err(p) => problem(p),
    }
}

pub fn fund_flow_bill(st: &mut State, call: &V3Call) -> V3Reply {
    let (day, gzip) = match day_and_gzip(call) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let account = match call.query_param("account_type").unwrap_or("BASIC") {
        "BASIC" => "Basic",
        "OPERATION" => "Operation",
        "FEES" => "Fees",
        _ => return V3Reply::param_error("account_type仅支持BASIC、OPERATION、FEES"),
    };
    match check_ready(st, day).and_then(|()| fund_flow_text(st, call.mch_id(), day, account)) {
        Ok(text) => link(st, call, text, gzip),
        Err(p) => problem(p),
    }
}

pub fn download(st: &mut State, call: &V3Call) -> V3Reply {
    let now = st.clock.now();
    let file = call.query_param("token").and_then(|t| st.bill_files.get(t)).filter(|f| f.mch_id == call.mch_id());
    match file {
        None => V3Reply::error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "账单文件不存在"),
        Some(f) if f.expires_at <= now => {
            V3Reply::error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "下载链接已过期，请重新申请")
        }
        Some(f) => V3Reply {
            status: StatusCode::OK,
            body: f.file.clone(),
            content_type: "application/octet-stream",
            signed: false,
        },
    }
}

/// The `corrupt_bill` fault: the file with one byte of its bill text changed (compressed
/// again when it was gzip), so the SHA1 of the text no longer matches the link.
pub fn corrupt(file: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let gzip = file.starts_with(&[0x1f, 0x8b]);
    let mut text = Vec::new();
    if gzip {
        if flate2::read::MultiGzDecoder::new(file).read_to_end(&mut text).is_err() {
            return file.to_vec();
        }
    } else {
        text = file.to_vec();
    }
    // The last byte before the final newline: a digit of the summary line, still a bill.
    if let Some(b) = text.iter().rposition(|b| b.is_ascii_digit()).and_then(|i| text.get_mut(i)) {
        *b = if *b == b'9' { b'8' } else { *b + 1 };
    }
    maybe_gzip(text, gzip).unwrap_or_else(|_| file.to_vec())
}
