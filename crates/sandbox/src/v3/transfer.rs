//! 商家转账 (transfer-bills) on APIv3: create → `WAIT_USER_CONFIRM` with `package_info`;
//! the user (the control endpoint `POST /sandbox/transfer-bills/{out_bill_no}/confirm`)
//! accepts → `SUCCESS` (money leaves the basic account, a fund-flow row) or refuses →
//! `FAIL`; cancel → `CANCELLED`; unconfirmed bills are `CANCELLED` after
//! `transfer_confirm_secs` on the sandbox clock. Every final state sends
//! `MCHTRANSFER.BILL.FINISHED` when the bill has a notify_url.
//!
//! Rules and guesses (WeChat documents codes, not every condition):
//! - scenes `1000` (现金营销: 活动名称 + 奖励说明) and `1005` (佣金报酬: 岗位类型 + 报酬说明,
//!   *unverified*) are open; another scene is 403 `NO_AUTH`; report infos must be exactly
//!   the scene's, else 400 `PARAM_ERROR`;
//! - amounts outside the merchant's `transfer_min_fen..=transfer_max_fen` are 400
//!   `PARAM_ERROR`; a balance short at creation is 403 `NOT_ENOUGH`, at confirmation the
//!   bill FAILs with `NOT_ENOUGH`;
//! - `user_name` is required from 2,000 yuan (400 `PARAM_ERROR`), OAEP-decrypted with the
//!   key named by `Wechatpay-Serial` (unknown serial or undecryptable: 400 `PARAM_ERROR`);
//!   a name that differs from the user's verified name FAILs the bill at confirmation with
//!   `REAL_NAME_CHECK_FAIL`;
//! - an openid unknown in the app is 400 `OPENID_MISMATCH`;
//! - the same out_bill_no with the same parameters answers the bill as it is now; with
//!   other parameters 400 `INVALID_REQUEST`;
//! - a user who refuses makes the bill FAIL with `fail_reason` (default
//!   `PAYEE_ACCOUNT_ABNORMAL`); an expired bill is CANCELLED without a fail_reason;
//! - cancel answers `CANCELING` and the bill is CANCELLED at once; a bill in a final state
//!   cannot be cancelled (400 `INVALID_REQUEST`); unknown numbers are 404 `NOT_FOUND`.

use actix_web::http::StatusCode;
use base64::Engine;
use chrono::Duration;
use serde_json::{Value, json};
use wxpay::Fen;
use wxpay::v3::EncryptedResource;
use wxpay::v3::api::format_v3_time;

use super::{V3Call, V3Reply};
use crate::state::{Key, State, TransferBill, gen_id, nonce};
use crate::{Effects, Shared};

/// 2,000 yuan: from here on WeChat requires the payee's real name.
const USER_NAME_REQUIRED_FROM_FEN: i64 = 200_000;

fn scene_infos(scene: &str) -> Option<[&'static str; 2]> {
    match scene {
        "1000" => Some(["活动名称", "奖励说明"]),
        "1005" => Some(["岗位类型", "报酬说明"]),
        _ => None,
    }
}

fn text<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k)?.as_str().filter(|s| !s.is_empty())
}

fn need<'a>(v: &'a Value, k: &str) -> Result<&'a str, V3Reply> {
    text(v, k).ok_or_else(|| V3Reply::param_error(&format!("缺少参数{k}")))
}

fn created_json(b: &TransferBill) -> Value {
    let mut v = json!({
        "out_bill_no": b.out_bill_no,
        "transfer_bill_no": b.transfer_bill_no,
        "create_time": format_v3_time(b.created_at),
        "state": b.state,
    });
    if b.state == "WAIT_USER_CONFIRM" {
        v["package_info"] = json!(b.package_info);
    }
    if let Some(r) = &b.fail_reason {
        v["fail_reason"] = json!(r);
    }
    v
}

/// The query answer (and, with `mchid`, the notification payload).
pub fn bill_json(b: &TransferBill) -> Value {
    let mut v = json!({
        "mch_id": b.mch_id,
        "out_bill_no": b.out_bill_no,
        "transfer_bill_no": b.transfer_bill_no,
        "appid": b.appid,
        "state": b.state,
        "transfer_amount": b.transfer_amount.get(),
        "transfer_remark": b.transfer_remark,
        "openid": b.openid,
        "create_time": format_v3_time(b.created_at),
        "update_time": format_v3_time(b.updated_at),
    });
    if let Some(r) = &b.fail_reason {
        v["fail_reason"] = json!(r);
    }
    if let Some(u) = &b.user_name {
        v["user_name"] = json!(u);
    }
    v
}

pub fn create(shared: &Shared, st: &mut State, fx: &mut Effects, call: &V3Call) -> V3Reply {
    expire_due(shared, st, fx);
    match create_inner(shared, st, call) {
        Ok(v) | Err(v) => v,
    }
}

fn create_inner(shared: &Shared, st: &mut State, call: &V3Call) -> Result<V3Reply, V3Reply> {
    let b = &call.body;
    let appid = need(b, "appid")?;
    let out_bill_no = need(b, "out_bill_no")?;
    let scene = need(b, "transfer_scene_id")?;
    let openid = need(b, "openid")?;
    let remark = need(b, "transfer_remark")?;
    let amount = b
        .get("transfer_amount")
        .and_then(Value::as_i64)
        .ok_or_else(|| V3Reply::param_error("缺少参数transfer_amount"))?;
    let content = json!({
        "appid": appid, "scene": scene, "openid": openid, "remark": remark, "amount": amount,
        "infos": b.get("transfer_scene_report_infos"), "perception": b.get("user_recv_perception"),
    });
    let key: Key = (call.mch_id().to_owned(), out_bill_no.to_owned());
    if let Some(existing) = st.transfer_bills.get(&key) {
        if existing.content != content {
            return Err(V3Reply::error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "商户单号重复，且与原单参数不一致"));
        }
        return Ok(V3Reply::ok(&created_json(existing)));
    }
    let cfg = &call.mch.cfg;
    if !cfg.appids.iter().any(|a| a == appid) {
        return Err(V3Reply::error(StatusCode::BAD_REQUEST, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配"));
    }
    if out_bill_no.len() > 32 || remark.chars().count() > 32 {
        return Err(V3Reply::param_error("out_bill_no或transfer_remark长度超过限制"));
    }
    let Some(wanted) = scene_infos(scene) else {
        return Err(V3Reply::error(StatusCode::FORBIDDEN, "NO_AUTH", "该转账场景未开通，请在商户平台开通"));
    };
    let mut types: Vec<&str> = b
        .get("transfer_scene_report_infos")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|i| text(i, "info_type")).collect())
        .unwrap_or_default();
    types.sort_unstable();
    let mut wanted = wanted.to_vec();
    wanted.sort_unstable();
    if types != wanted {
        return Err(V3Reply::param_error(&format!("转账场景{scene}需报备{}", wanted.join("、"))));
    }
    if amount < cfg.limits.transfer_min_fen || amount > cfg.limits.transfer_max_fen {
        return Err(V3Reply::param_error("转账金额超出限额"));
    }
    let user = shared.openids.get(openid).filter(|u| crate::openid_for(u, appid) == openid);
    if user.is_none() {
        return Err(V3Reply::error(StatusCode::BAD_REQUEST, "OPENID_MISMATCH", "openid与appid不匹配"));
    }
    let user_name = text(b, "user_name");
    if amount >= USER_NAME_REQUIRED_FROM_FEN && user_name.is_none() {
        return Err(V3Reply::param_error("转账金额大于等于2000元时，user_name必填"));
    }
    let user_name_plain = match user_name {
        None => None,
        Some(c) => {
            let key = call
                .wechatpay_serial
                .and_then(|s| call.mch.v3.decryption_key(s))
                .ok_or_else(|| V3Reply::param_error("Wechatpay-Serial对应的平台证书或公钥不存在"))?;
            Some(wxpay::v3::crypto::oaep_decrypt(&key, c).map_err(|_| V3Reply::param_error("user_name解密失败"))?)
        }
    };
    if st.balance(&key.0).get() < amount {
        return Err(V3Reply::error(StatusCode::FORBIDDEN, "NOT_ENOUGH", "商户运营账户资金不足"));
    }
    let now = st.clock.now();
    let seq = st.next_seq();
    let mut raw = [0u8; 48];
    rand::Rng::fill(&mut rand::rng(), &mut raw[..]);
    let confirm = Duration::seconds(i64::try_from(shared.cfg.transfer_confirm_secs).unwrap_or(i64::MAX / 2));
    let bill = TransferBill {
        mch_id: key.0.clone(),
        appid: appid.to_owned(),
        out_bill_no: key.1.clone(),
        transfer_bill_no: gen_id("1330000", now, seq, 32),
        transfer_scene_id: scene.to_owned(),
        openid: openid.to_owned(),
        transfer_amount: Fen::new(amount),
        transfer_remark: remark.to_owned(),
        notify_url: text(b, "notify_url").map(str::to_owned),
        user_name: user_name.map(str::to_owned),
        user_name_plain,
        state: "WAIT_USER_CONFIRM".into(),
        fail_reason: None,
        package_info: base64::engine::general_purpose::STANDARD.encode(raw),
        created_at: now,
        updated_at: now,
        confirm_by: now + confirm,
        content,
    };
    let answer = created_json(&bill);
    st.by_transfer_bill_no.insert(bill.transfer_bill_no.clone(), key.clone());
    st.transfer_bills.insert(key, bill);
    Ok(V3Reply::ok(&answer))
}

/// How a query names its bill.
pub enum BillRef<'a> {
    OutBillNo(&'a str),
    BillNo(&'a str),
}

fn find(st: &State, mch: &str, by: BillRef) -> Option<Key> {
    match by {
        BillRef::OutBillNo(no) => Some((mch.to_owned(), no.to_owned())).filter(|k| st.transfer_bills.contains_key(k)),
        BillRef::BillNo(no) => st.by_transfer_bill_no.get(no).filter(|k| k.0 == mch).cloned(),
    }
}

fn not_found() -> V3Reply {
    V3Reply::error(StatusCode::NOT_FOUND, "NOT_FOUND", "记录不存在")
}

pub fn query(shared: &Shared, st: &mut State, fx: &mut Effects, call: &V3Call, by: BillRef) -> V3Reply {
    expire_due(shared, st, fx);
    match find(st, call.mch_id(), by).and_then(|k| st.transfer_bills.get(&k)) {
        Some(b) => V3Reply::ok(&bill_json(b)),
        None => not_found(),
    }
}

pub fn cancel(shared: &Shared, st: &mut State, fx: &mut Effects, call: &V3Call, no: &str) -> V3Reply {
    expire_due(shared, st, fx);
    let Some(key) = find(st, call.mch_id(), BillRef::OutBillNo(no)) else {
        return not_found();
    };
    if st.transfer_bills[&key].state != "WAIT_USER_CONFIRM" {
        return V3Reply::error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "单据当前状态不允许撤销");
    }
    finish(shared, st, fx, &key, "CANCELLED", None);
    let b = &st.transfer_bills[&key];
    V3Reply::ok(&json!({
        "out_bill_no": b.out_bill_no,
        "transfer_bill_no": b.transfer_bill_no,
        "state": "CANCELING",
        "update_time": format_v3_time(b.updated_at),
    }))
}

/// Moves a waiting bill to a final state (booking the money on SUCCESS) and queues its
/// notification.
fn finish(shared: &Shared, st: &mut State, fx: &mut Effects, key: &Key, state: &str, fail_reason: Option<String>) {
    let now = st.clock.now();
    let Some(b) = st.transfer_bills.get_mut(key) else { return };
    b.state = state.to_owned();
    b.fail_reason = fail_reason;
    b.updated_at = now;
    let b = b.clone();
    if state == "SUCCESS" {
        st.book(&key.0, false, b.transfer_amount, &b.transfer_bill_no, "商家转账", "商家转账", &b.out_bill_no, now);
    }
    if let Some(id) = queue_finished(shared, st, &b) {
        fx.notifications.push(id);
    }
}

fn queue_finished(shared: &Shared, st: &mut State, b: &TransferBill) -> Option<u64> {
    let url = b.notify_url.clone()?;
    let mch = shared.merchants.get(&b.mch_id)?;
    let mut payload = json!({
        "mchid": b.mch_id,
        "out_bill_no": b.out_bill_no,
        "transfer_bill_no": b.transfer_bill_no,
        "state": b.state,
        "transfer_amount": b.transfer_amount.get(),
        "openid": b.openid,
        "create_time": format_v3_time(b.created_at),
        "update_time": format_v3_time(b.updated_at),
    });
    if let Some(r) = &b.fail_reason {
        payload["fail_reason"] = json!(r);
    }
    let resource = EncryptedResource::seal(
        &mch.cfg.api_v3_key,
        &payload.to_string(),
        &nonce()[..12],
        "mch_payment",
        Some("mch_payment"),
    )
    .ok()?;
    let body = super::notify::envelope_with(st, "MCHTRANSFER.BILL.FINISHED", "商家转账单据终态通知", &resource);
    Some(crate::notify::record(st, "transfer", true, &b.mch_id, &b.out_bill_no, None, &url, body))
}

/// CANCELs waiting bills whose confirmation time has passed on the sandbox clock.
pub fn expire_due(shared: &Shared, st: &mut State, fx: &mut Effects) {
    let now = st.clock.now();
    let due: Vec<Key> = st
        .transfer_bills
        .iter()
        .filter(|(_, b)| b.state == "WAIT_USER_CONFIRM" && b.confirm_by <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for k in due {
        finish(shared, st, fx, &k, "CANCELLED", None);
    }
}

/// What the user did with a bill (the control endpoint).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Confirm {
    pub accept: bool,
    pub mch_id: Option<String>,
    /// The FAIL reason when `accept` is false (default `PAYEE_ACCOUNT_ABNORMAL`).
    pub fail_reason: Option<String>,
}

/// Plays the user on `wx.requestMerchantTransfer`: accept (SUCCESS, or FAIL when the
/// balance is short or the real name does not match) or refuse (FAIL).
pub fn confirm(
    shared: &Shared,
    st: &mut State,
    fx: &mut Effects,
    out_bill_no: &str,
    req: &Confirm,
) -> Result<TransferBill, &'static str> {
    expire_due(shared, st, fx);
    let mch = req.mch_id.clone().unwrap_or_else(|| shared.cfg.merchants[0].mch_id.clone());
    let key = (mch, out_bill_no.to_owned());
    let b = st.transfer_bills.get(&key).ok_or("no such transfer bill")?;
    if b.state != "WAIT_USER_CONFIRM" {
        return Err("the transfer bill is not waiting for the user");
    }
    let real_name = shared.openids.get(&b.openid).and_then(|u| shared.users.get(u)).and_then(|u| u.real_name.clone());
    let name_ok = match (&b.user_name_plain, &real_name) {
        (Some(given), Some(real)) => given == real,
        (Some(_), None) => false,
        (None, _) => true,
    };
    let (state, reason) = if !req.accept {
        ("FAIL", Some(req.fail_reason.clone().unwrap_or_else(|| "PAYEE_ACCOUNT_ABNORMAL".into())))
    } else if !name_ok {
        ("FAIL", Some("REAL_NAME_CHECK_FAIL".into()))
    } else if st.balance(&key.0) < b.transfer_amount {
        ("FAIL", Some("NOT_ENOUGH".into()))
    } else {
        ("SUCCESS", None)
    };
    finish(shared, st, fx, &key, state, reason);
    Ok(st.transfer_bills[&key].clone())
}
