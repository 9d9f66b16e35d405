//! The `/sandbox/` control API (JSON): the payer, the clock, faults, login codes, tokens,
//! red packets, refunds, balances, and read-only views of everything the sandbox holds.
//! Errors are `{"error": {"code", "message"}}` with a 4xx status. The full list is in the
//! crate documentation and the README.

use std::sync::Arc;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::web::{self, Data, Json, Query};
use serde::Deserialize;
use serde_json::json;
use wxpay::Fen;

use crate::clock::{dashed, parse_any};
use crate::faults::Fault;
use crate::pay::PayOrder;
use crate::state::{LoginCode, RefundStatus};
use crate::{Effects, Shared, apply, openid_for, unionid_for};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/sandbox")
            .route("", web::get().to(index))
            .route("/", web::get().to(index))
            .route("/pay", web::post().to(pay))
            .route("/fail", web::post().to(fail))
            .route("/clock", web::get().to(clock_get))
            .route("/clock", web::post().to(clock_set))
            .route("/faults", web::get().to(faults_get))
            .route("/faults", web::post().to(faults_add))
            .route("/faults", web::delete().to(faults_clear))
            .route("/jscode", web::post().to(jscode))
            .route("/openid", web::get().to(openid))
            .route("/tokens/invalidate", web::post().to(tokens_invalidate))
            .route("/redpacks/open", web::post().to(redpack_open))
            .route("/redpacks/expire", web::post().to(redpack_expire))
            .route("/refunds/settle", web::post().to(refund_settle))
            .route("/balance", web::get().to(balance_get))
            .route("/balance", web::post().to(balance_set))
            .route("/orders", web::get().to(list_orders))
            .route("/refunds", web::get().to(list_refunds))
            .route("/transfers", web::get().to(list_transfers))
            .route("/redpacks", web::get().to(list_redpacks))
            .route("/notifications", web::get().to(list_notifications))
            .route("/messages", web::get().to(list_messages))
            .route("/fundflow", web::get().to(list_fundflow))
            .route("/transfer-bills", web::get().to(list_transfer_bills))
            .route("/transfer-bills/{out_bill_no}/confirm", web::post().to(transfer_bill_confirm))
            .route("/v3/certificates/rotate", web::post().to(rotate_certificate)),
    );
}

type S = Data<Arc<Shared>>;

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message.to_string()}}))
}

fn bad_request(code: &str, message: impl std::fmt::Display) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, code, message)
}

fn default_mch(shared: &Shared, mch: Option<&String>) -> String {
    mch.cloned().unwrap_or_else(|| shared.cfg.merchants[0].mch_id.clone())
}

async fn index(shared: S) -> HttpResponse {
    let now = shared.lock().clock.now();
    HttpResponse::Ok().json(json!({
        "service": "minipay sandbox: WeChat Pay v2 + WeChat API",
        "now": now,
        "now_beijing": dashed(now),
        "merchants": shared.cfg.merchants.iter().map(|m| json!({"mch_id": m.mch_id, "appids": m.appids})).collect::<Vec<_>>(),
        "apps": shared.apps.keys().collect::<Vec<_>>(),
        "users": shared.users.keys().collect::<Vec<_>>(),
        "control": [
            "POST /sandbox/pay", "POST /sandbox/fail", "GET|POST /sandbox/clock",
            "GET|POST|DELETE /sandbox/faults", "POST /sandbox/jscode", "GET /sandbox/openid",
            "POST /sandbox/tokens/invalidate", "POST /sandbox/redpacks/open",
            "POST /sandbox/redpacks/expire", "POST /sandbox/refunds/settle",
            "POST /sandbox/transfer-bills/{out_bill_no}/confirm", "GET /sandbox/transfer-bills",
            "GET|POST /sandbox/balance", "GET /sandbox/orders", "GET /sandbox/refunds",
            "GET /sandbox/transfers", "GET /sandbox/redpacks", "GET /sandbox/notifications",
            "GET /sandbox/messages", "GET /sandbox/fundflow"
        ],
    }))
}

async fn pay(shared: S, req: Json<PayOrder>) -> HttpResponse {
    let mut fx = Effects::default();
    let r = crate::pay::pay(&shared, &mut shared.lock(), &mut fx, &req);
    apply(&shared, fx);
    match r {
        Ok(o) => HttpResponse::Ok().json(o),
        Err(e @ crate::pay::PayError::NotFound) => error(StatusCode::NOT_FOUND, "order_not_found", e),
        Err(e) => error(StatusCode::CONFLICT, "cannot_pay", e),
    }
}

async fn fail(shared: S, req: Json<PayOrder>) -> HttpResponse {
    match crate::pay::fail(&shared, &mut shared.lock(), &req) {
        Ok(o) => HttpResponse::Ok().json(o),
        Err(e @ crate::pay::PayError::NotFound) => error(StatusCode::NOT_FOUND, "order_not_found", e),
        Err(e) => error(StatusCode::CONFLICT, "cannot_fail", e),
    }
}

fn clock_json(shared: &Shared) -> HttpResponse {
    let st = shared.lock();
    let now = st.clock.now();
    HttpResponse::Ok().json(json!({"now": now, "now_beijing": dashed(now), "offset_secs": st.clock.offset_secs()}))
}

async fn clock_get(shared: S) -> HttpResponse {
    clock_json(&shared)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockReq {
    set: Option<String>,
    advance_secs: Option<i64>,
    reset: Option<bool>,
}

async fn clock_set(shared: S, req: Json<ClockReq>) -> HttpResponse {
    {
        let mut st = shared.lock();
        if req.reset == Some(true) {
            st.clock.reset();
        }
        if let Some(t) = &req.set {
            match parse_any(t) {
                Some(t) => st.clock.set(t),
                None => return bad_request("bad_time", format!("unreadable time {t:?}")),
            }
        }
        if let Some(s) = req.advance_secs {
            st.clock.advance(chrono::Duration::seconds(s));
        }
    }
    // Moving the clock can make refunds due: settle them now rather than at the next query.
    let mut fx = Effects::default();
    crate::pay::settle_refunds(&shared, &mut shared.lock(), &mut fx);
    apply(&shared, fx);
    clock_json(&shared)
}

async fn faults_get(shared: S) -> HttpResponse {
    HttpResponse::Ok().json(shared.lock().faults.list())
}

async fn faults_add(shared: S, req: Json<Fault>) -> HttpResponse {
    let mut st = shared.lock();
    match st.faults.add(req.into_inner(), crate::api::known_path) {
        Ok(()) => HttpResponse::Ok().json(st.faults.list()),
        Err(e) => bad_request("bad_fault", e),
    }
}

#[derive(Deserialize)]
struct PathQuery {
    path: Option<String>,
}

async fn faults_clear(shared: S, q: Query<PathQuery>) -> HttpResponse {
    let mut st = shared.lock();
    st.faults.clear(q.path.as_deref());
    HttpResponse::Ok().json(st.faults.list())
}

#[derive(Deserialize)]
struct UserApp {
    user: String,
    appid: Option<String>,
}

fn default_app(shared: &Shared, appid: Option<&String>) -> String {
    appid.cloned().unwrap_or_else(|| shared.cfg.apps.first().map(|a| a.appid.clone()).unwrap_or_default())
}

/// Mints a one-time login code for `user` in `appid`; `None` for an unknown app.
pub fn mint_code(shared: &Shared, user: &str, appid: &str) -> Option<String> {
    shared.apps.get(appid)?;
    let code = crate::state::nonce();
    let mut st = shared.lock();
    let now = st.clock.now();
    let login = LoginCode { user: user.to_owned(), appid: appid.to_owned(), created_at: now, used: false };
    st.codes.insert(code.clone(), login);
    st.known_openids.insert(openid_for(user, appid), (user.to_owned(), appid.to_owned()));
    Some(code)
}

async fn jscode(shared: S, req: Json<UserApp>) -> HttpResponse {
    let appid = default_app(&shared, req.appid.as_ref());
    let Some(code) = mint_code(&shared, &req.user, &appid) else {
        return bad_request("unknown_app", format!("appid {appid} is not configured"));
    };
    let unionid = shared.apps[&appid].unionid.then(|| unionid_for(&req.user));
    HttpResponse::Ok().json(json!({
        "code": code, "appid": appid, "openid": openid_for(&req.user, &appid), "unionid": unionid,
    }))
}

async fn openid(shared: S, q: Query<UserApp>) -> HttpResponse {
    let appid = default_app(&shared, q.appid.as_ref());
    HttpResponse::Ok().json(json!({"user": q.user, "appid": appid, "openid": openid_for(&q.user, &appid)}))
}

#[derive(Deserialize, Default)]
struct AppOnly {
    appid: Option<String>,
}

async fn tokens_invalidate(shared: S, req: Option<Json<AppOnly>>) -> HttpResponse {
    let appid = req.and_then(|r| r.into_inner().appid);
    let mut st = shared.lock();
    let mut n = 0;
    for t in st.tokens.values_mut() {
        if appid.as_ref().is_none_or(|a| *a == t.appid) && !t.invalidated {
            t.invalidated = true;
            n += 1;
        }
    }
    HttpResponse::Ok().json(json!({"invalidated": n}))
}

#[derive(Deserialize)]
struct BillNo {
    mch_billno: String,
    mch_id: Option<String>,
    openid: Option<String>,
}

async fn redpack_open(shared: S, req: Json<BillNo>) -> HttpResponse {
    let key = (default_mch(&shared, req.mch_id.as_ref()), req.mch_billno.clone());
    match crate::mkt::open_redpack(&mut shared.lock(), &key, req.openid.as_deref()) {
        Ok(r) => HttpResponse::Ok().json(r),
        Err(e) => error(StatusCode::CONFLICT, "cannot_open", e),
    }
}

async fn redpack_expire(shared: S, req: Json<BillNo>) -> HttpResponse {
    let key = (default_mch(&shared, req.mch_id.as_ref()), req.mch_billno.clone());
    match crate::mkt::expire_redpack(&mut shared.lock(), &key, true) {
        Ok(r) => HttpResponse::Ok().json(r),
        Err(e) => error(StatusCode::CONFLICT, "cannot_expire", e),
    }
}

#[derive(Deserialize)]
struct SettleReq {
    out_refund_no: String,
    mch_id: Option<String>,
    status: Option<RefundStatus>,
}

async fn refund_settle(shared: S, req: Json<SettleReq>) -> HttpResponse {
    let key = (default_mch(&shared, req.mch_id.as_ref()), req.out_refund_no.clone());
    let status = req.status.unwrap_or(RefundStatus::Success);
    if status == RefundStatus::Processing {
        return bad_request("bad_status", "status must be SUCCESS, CHANGE or REFUNDCLOSE");
    }
    let mut fx = Effects::default();
    let r = crate::pay::force_refund(&shared, &mut shared.lock(), &mut fx, &key, status);
    apply(&shared, fx);
    match r {
        Ok(r) => HttpResponse::Ok().json(r),
        Err(e) => error(StatusCode::CONFLICT, "cannot_settle", e),
    }
}

#[derive(Deserialize)]
struct MchQuery {
    mch_id: Option<String>,
}

async fn balance_get(shared: S, q: Query<MchQuery>) -> HttpResponse {
    let mch = default_mch(&shared, q.mch_id.as_ref());
    let bal = shared.lock().balance(&mch);
    HttpResponse::Ok().json(json!({"mch_id": mch, "balance_fen": bal}))
}

#[derive(Deserialize)]
struct BalanceReq {
    mch_id: Option<String>,
    balance_fen: i64,
}

async fn balance_set(shared: S, req: Json<BalanceReq>) -> HttpResponse {
    let mch = default_mch(&shared, req.mch_id.as_ref());
    if !shared.merchants.contains_key(&mch) {
        return bad_request("unknown_merchant", format!("mch_id {mch} is not configured"));
    }
    if req.balance_fen < 0 {
        return bad_request("bad_amount", "balance_fen must not be negative");
    }
    shared.lock().balances.insert(mch.clone(), Fen::new(req.balance_fen));
    HttpResponse::Ok().json(json!({"mch_id": mch, "balance_fen": req.balance_fen}))
}

fn keep(q: &MchQuery, mch: &str) -> bool {
    q.mch_id.as_deref().is_none_or(|m| m == mch)
}

async fn list_orders(shared: S, q: Query<MchQuery>) -> HttpResponse {
    let st = shared.lock();
    HttpResponse::Ok().json(st.orders.values().filter(|o| keep(&q, &o.mch_id)).collect::<Vec<_>>())
}

async fn list_refunds(shared: S, q: Query<MchQuery>) -> HttpResponse {
    let mut fx = Effects::default();
    crate::pay::settle_refunds(&shared, &mut shared.lock(), &mut fx);
    apply(&shared, fx);
    let st = shared.lock();
    HttpResponse::Ok().json(st.refunds.values().filter(|r| keep(&q, &r.mch_id)).collect::<Vec<_>>())
}

async fn list_transfers(shared: S, q: Query<MchQuery>) -> HttpResponse {
    let st = shared.lock();
    HttpResponse::Ok().json(st.transfers.values().filter(|t| keep(&q, &t.mch_id)).collect::<Vec<_>>())
}

async fn list_redpacks(shared: S, q: Query<MchQuery>) -> HttpResponse {
    let mut st = shared.lock();
    crate::mkt::expire_due(&mut st);
    HttpResponse::Ok().json(st.redpacks.values().filter(|r| keep(&q, &r.mch_id)).collect::<Vec<_>>())
}

async fn list_notifications(shared: S, q: Query<MchQuery>) -> HttpResponse {
    let st = shared.lock();
    HttpResponse::Ok().json(st.notifications.iter().filter(|n| keep(&q, &n.mch_id)).collect::<Vec<_>>())
}

async fn list_messages(shared: S) -> HttpResponse {
    HttpResponse::Ok().json(&shared.lock().messages)
}

async fn list_fundflow(shared: S, q: Query<MchQuery>) -> HttpResponse {
    let st = shared.lock();
    HttpResponse::Ok().json(st.fund.iter().filter(|f| keep(&q, &f.mch_id)).collect::<Vec<_>>())
}

/// Plays the user on a v3 transfer bill: `{"accept": bool, "mch_id"?, "fail_reason"?}`.
async fn transfer_bill_confirm(
    shared: S,
    path: web::Path<String>,
    req: Json<crate::v3::transfer::Confirm>,
) -> HttpResponse {
    let mut fx = Effects::default();
    let r = crate::v3::transfer::confirm(&shared, &mut shared.lock(), &mut fx, &path, &req);
    apply(&shared, fx);
    match r {
        Ok(b) => HttpResponse::Ok().json(b),
        Err(e) => error(StatusCode::CONFLICT, "cannot_confirm", e),
    }
}

async fn list_transfer_bills(shared: S, q: Query<MchQuery>) -> HttpResponse {
    let mut fx = Effects::default();
    crate::v3::transfer::expire_due(&shared, &mut shared.lock(), &mut fx);
    apply(&shared, fx);
    let st = shared.lock();
    HttpResponse::Ok().json(st.transfer_bills.values().filter(|b| keep(&q, &b.mch_id)).collect::<Vec<_>>())
}

#[derive(serde::Deserialize)]
struct RotateRequest {
    mch_id: String,
}

/// `POST /sandbox/v3/certificates/rotate {"mch_id"}`: WeChat's platform certificate
/// rotation for a merchant in certificate or switching mode — a new certificate signs from
/// now on, the old one stays listed by `/v3/certificates` until it expires.
async fn rotate_certificate(shared: S, req: Json<RotateRequest>) -> HttpResponse {
    match shared.merchants.get(&req.mch_id) {
        None => bad_request("unknown_merchant", &req.mch_id),
        Some(m) if m.v3.mode == crate::config::V3Mode::PublicKey => {
            bad_request("no_certificates", "a public-key merchant has no platform certificates")
        }
        Some(m) => match m.v3.rotate_platform_certificate() {
            Ok(serial) => HttpResponse::Ok().json(json!({"serial_no": serial})),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "keygen", e),
        },
    }
}
