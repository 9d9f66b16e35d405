//! Cash red packets, for finance staff: normal, group and mini-program packets.
//!
//! - `POST /v1/redpacks` (finance): rules (1–200 yuan per packet unless a scene_id, group
//!   total_num 3–20, daily limits: all `[payouts] redpack_*`) checked in the request's
//!   transaction; the `mch_billno` (mch_id + yyyymmdd + 10 digits) is fixed here. Above
//!   `redpack_approval_threshold` it waits for `POST /v1/redpacks/{mch_billno}/approve` (or
//!   `/reject`) by an approver other than the creator.
//! - `GET /v1/redpacks/{mch_billno}` (finance, approver, viewer, and client — the
//!   mini-program backend needs it): the packet, its state as gethbinfo last said, and for
//!   a sent mini-program packet the `wx.sendBizRedPacket` parameters, signed here so the
//!   API key never leaves the server. A `client` key reads only the packets it owns:
//!   `owner_client_id`, given by finance at creation, names the client backend whose
//!   mini-program opens the packet (fixed for the packet's life). Any other packet — another
//!   client's, or one without an owner — is 404 to a client, exactly like a number that does
//!   not exist, so sequential numbers reveal nothing.
//! - `GET /v1/redpacks?status=&kind=&date=&openid=` (finance, approver, viewer).
//!
//! The worker sends packets and follows them (sent → received, or refunded after 24 h).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use minipay_config::PayoutsConfig;
use minipay_store::Fen;
use minipay_store::domain::{OpenId, State};
use minipay_store::payout_limits::Limits;
use minipay_store::redpacks::{self, ListFilter, NewRedpack, Redpack, RedpackKind, RedpackRules, RedpackStatus};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;
use wxpay::jsapi::{SendBizRedPacketParams, send_biz_red_packet_params};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::routes::common::{money_request, next_before_id, page_limit, query_filter};
use crate::routes::payouts::{Decision, payout_error};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/redpacks", web::post().to(create_redpack))
        .route("/v1/redpacks", web::get().to(list_redpacks))
        .route("/v1/redpacks/{mch_billno}", web::get().to(get_redpack))
        .route("/v1/redpacks/{mch_billno}/approve", web::post().to(approve_redpack))
        .route("/v1/redpacks/{mch_billno}/reject", web::post().to(reject_redpack));
}

#[derive(OpenApi)]
#[openapi(
    paths(create_redpack, approve_redpack, reject_redpack, get_redpack, list_redpacks),
    components(schemas(CreateRedpack, RedpackView, RedpackList, BizRedPacket))
)]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

/// The red-packet rules from `[payouts]`.
pub fn redpack_rules(c: &PayoutsConfig) -> RedpackRules {
    RedpackRules {
        limits: Limits {
            min_amount: Fen::new(c.redpack_min_amount),
            max_amount: Fen::new(c.redpack_max_amount),
            approval_threshold: Fen::new(c.redpack_approval_threshold),
            openid_daily_amount: Fen::new(c.redpack_openid_daily_amount),
            openid_daily_count: c.redpack_openid_daily_count,
            merchant_daily_amount: Fen::new(c.redpack_merchant_daily_amount),
            auto_approve_daily_per_maker: Fen::new(c.redpack_auto_approve_daily_per_maker),
        },
        min_per_packet: Fen::new(c.redpack_min_per_packet),
        max_per_packet: Fen::new(c.redpack_max_per_packet),
        group_min_num: c.redpack_group_min_num,
        group_max_num: c.redpack_group_max_num,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRedpack {
    pub appid: Option<String>,
    /// `normal`, `group` or `mini_program`.
    pub kind: String,
    /// The receiver (group: the user who gets the packet to share).
    pub openid: String,
    /// Total fen.
    pub amount: i64,
    /// Group packets: how many share it (3–20); others: 1 (default).
    pub total_num: Option<i32>,
    /// Sender name shown to the user; default `[payouts] redpack_send_name`.
    pub send_name: Option<String>,
    pub wishing: String,
    pub act_name: String,
    pub remark: String,
    /// `PRODUCT_1`…`PRODUCT_8`: needed above 200 yuan per packet.
    pub scene_id: Option<String>,
    /// The id of the `client` key (mini-program backend) that opens the packet in its
    /// mini-program: the only client key that may read it (422 `invalid_owner` unless an
    /// enabled client key). Absent: only staff keys read it.
    pub owner_client_id: Option<Uuid>,
}

/// `wx.sendBizRedPacket` parameters (camelCase, as the mini-program passes them).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BizRedPacket {
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: String,
    pub pay_sign: String,
}

impl From<SendBizRedPacketParams> for BizRedPacket {
    fn from(p: SendBizRedPacketParams) -> BizRedPacket {
        BizRedPacket {
            time_stamp: p.time_stamp,
            nonce_str: p.nonce_str,
            package: p.package,
            sign_type: p.sign_type.as_str().into(),
            pay_sign: p.pay_sign,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RedpackView {
    pub id: i64,
    pub mch_billno: String,
    pub mch_id: String,
    pub appid: String,
    pub kind: String,
    pub openid: String,
    /// Fen.
    pub amount: i64,
    pub total_num: i32,
    pub send_name: String,
    pub wishing: String,
    pub act_name: String,
    pub remark: String,
    pub scene_id: Option<String>,
    /// pending_approval, approved, rejected, sending, unknown, sent, received, refunded, failed.
    pub status: String,
    /// gethbinfo's last word (SENT, RECEIVED, RFUND_ING, REFUND, …).
    pub wechat_status: Option<String>,
    pub created_by: Uuid,
    /// The client key that may read this packet (see `CreateRedpack`).
    pub owner_client_id: Option<Uuid>,
    pub approved_by: Option<Uuid>,
    pub rejected_by: Option<Uuid>,
    pub reject_reason: Option<String>,
    pub send_attempts: i32,
    pub last_error: Option<String>,
    pub send_listid: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
    pub refund_amount: Option<i64>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Sent mini-program packets: what to pass to `wx.sendBizRedPacket`.
    pub send_biz_red_packet: Option<BizRedPacket>,
}

impl RedpackView {
    fn new(r: &Redpack, state: &AppState) -> RedpackView {
        let biz = match (&r.package, r.kind, r.status) {
            (Some(pkg), RedpackKind::MiniProgram, RedpackStatus::Sent) => state
                .config
                .merchant(&r.mch_id)
                .and_then(|m| m.api_key.as_ref())
                .map(|k| send_biz_red_packet_params(&r.appid, pkg, k).into()),
            _ => None,
        };
        RedpackView {
            id: r.id,
            mch_billno: r.mch_billno.clone(),
            mch_id: r.mch_id.clone(),
            appid: r.appid.clone(),
            kind: r.kind.as_str().into(),
            openid: r.re_openid.clone(),
            amount: r.total_amount.get(),
            total_num: r.total_num,
            send_name: r.send_name.clone(),
            wishing: r.wishing.clone(),
            act_name: r.act_name.clone(),
            remark: r.remark.clone(),
            scene_id: r.scene_id.clone(),
            status: r.status.as_str().into(),
            wechat_status: r.wechat_status.clone(),
            created_by: r.created_by,
            owner_client_id: r.owner_client_id,
            approved_by: r.approved_by,
            rejected_by: r.rejected_by,
            reject_reason: r.reject_reason.clone(),
            send_attempts: r.send_attempts,
            last_error: r.last_error.clone(),
            send_listid: r.send_listid.clone(),
            sent_at: r.sent_at,
            received_at: r.received_at,
            refunded_at: r.refunded_at,
            refund_amount: r.refund_amount.map(Fen::get),
            failure_code: r.failure_code.clone(),
            failure_message: r.failure_message.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            send_biz_red_packet: biz,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RedpackList {
    pub data: Vec<RedpackView>,
    pub next_before_id: Option<i64>,
}

/// Requests a red packet.
#[utoipa::path(post, path = "/v1/redpacks", tag = "payouts", request_body = CreateRedpack,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 201, body = RedpackView), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_redpack(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<CreateRedpack>,
) -> Result<HttpResponse, ApiError> {
    let (app, key) = money_request(&req, &caller, &state.config, body.appid.as_deref())?;
    let kind = RedpackKind::parse(&body.kind)
        .ok_or_else(|| ApiError::invalid("invalid_kind", "kind is normal, group or mini_program"))?;
    let openid = OpenId::parse(&body.openid).map_err(|e| ApiError::invalid("invalid_openid", e.to_string()))?;
    let cfg = &state.config.payouts;
    let send_name = body.send_name.clone().unwrap_or_else(|| cfg.redpack_send_name.clone());
    let new = NewRedpack {
        mch_id: &app.mch_id,
        appid: &app.appid,
        kind,
        re_openid: &openid,
        total_amount: Fen::new(body.amount),
        total_num: body.total_num.unwrap_or(1),
        send_name: &send_name,
        wishing: &body.wishing,
        act_name: &body.act_name,
        remark: &body.remark,
        scene_id: body.scene_id.as_deref(),
        client_ip: Some(&cfg.redpack_client_ip),
        created_by: caller.id,
        request_key: Some(&key),
        owner_client_id: body.owner_client_id,
    };
    let mut tx = state.pool.begin().await?;
    if let Some(owner) = body.owner_client_id {
        check_owner(&mut tx, owner).await?;
    }
    let r = redpacks::create(&mut tx, &new, &redpack_rules(cfg), Utc::now()).await.map_err(payout_error)?;
    tx.commit().await?;
    tracing::info!(mch_billno = %r.mch_billno, kind = r.kind.as_str(), amount = %r.total_amount, "red packet requested");
    Ok(HttpResponse::Created().json(RedpackView::new(&r, &state)))
}

/// Approves a pending red packet (approver; not its creator).
#[utoipa::path(post, path = "/v1/redpacks/{mch_billno}/approve", tag = "payouts", params(("mch_billno" = String, Path)),
    responses((status = 200, body = RedpackView), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn approve_redpack(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Approver])?;
    let mut tx = state.pool.begin().await?;
    let r = redpacks::approve(&mut tx, &path, caller.id, &redpack_rules(&state.config.payouts), Utc::now())
        .await
        .map_err(payout_error)?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(RedpackView::new(&r, &state)))
}

/// Rejects a pending red packet (approver; not its creator).
#[utoipa::path(post, path = "/v1/redpacks/{mch_billno}/reject", tag = "payouts", params(("mch_billno" = String, Path)),
    request_body = Decision,
    responses((status = 200, body = RedpackView), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn reject_redpack(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: Option<web::Json<Decision>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Approver])?;
    let reason = body.and_then(|b| b.into_inner().reason);
    let mut tx = state.pool.begin().await?;
    let r = redpacks::reject(&mut tx, &path, caller.id, reason.as_deref(), Utc::now()).await.map_err(payout_error)?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(RedpackView::new(&r, &state)))
}

/// One red packet; sent mini-program packets include the `wx.sendBizRedPacket` parameters.
#[utoipa::path(get, path = "/v1/redpacks/{mch_billno}", tag = "payouts", params(("mch_billno" = String, Path)),
    responses((status = 200, body = RedpackView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_redpack(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Finance, Role::Approver, Role::Viewer, Role::Client])?;
    let not_found = || ApiError::not_found("redpack_not_found", "no red packet with this mch_billno");
    let mut conn = state.pool.acquire().await?;
    let r = redpacks::get(&mut conn, &path).await?.ok_or_else(not_found)?;
    // Not 403: a client must not learn that someone else's packet exists.
    if caller.role == Role::Client && r.owner_client_id != Some(caller.id) {
        return Err(not_found());
    }
    Ok(HttpResponse::Ok().json(RedpackView::new(&r, &state)))
}

/// A packet's owner must be an enabled `client` key (422 `invalid_owner` otherwise).
async fn check_owner(conn: &mut sqlx::PgConnection, owner: Uuid) -> Result<(), ApiError> {
    match minipay_store::clients::get(conn, owner).await? {
        Some((c, false)) if c.role == Role::Client => Ok(()),
        Some((_, true)) => Err(ApiError::invalid("invalid_owner", "owner_client_id names a disabled client")),
        Some(_) => Err(ApiError::invalid("invalid_owner", "owner_client_id must name a key with the role client")),
        None => Err(ApiError::invalid("invalid_owner", "owner_client_id names no client")),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub kind: Option<String>,
    /// `YYYY-MM-DD`, the Asia/Shanghai day of creation.
    pub date: Option<NaiveDate>,
    pub openid: Option<String>,
    pub before_id: Option<i64>,
    pub limit: Option<i64>,
}

/// Red packets, newest first, filtered (staff only: a client reads its own packets one by one).
#[utoipa::path(get, path = "/v1/redpacks", tag = "payouts", params(ListQuery),
    responses((status = 200, body = RedpackList), (status = 422, body = crate::error::ErrorBody)))]
pub async fn list_redpacks(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Finance, Role::Approver, Role::Viewer])?;
    let status = query_filter(q.status.as_deref(), "invalid_status", "status", RedpackStatus::parse)?;
    let kind = query_filter(q.kind.as_deref(), "invalid_kind", "kind", RedpackKind::parse)?;
    let limit = page_limit(q.limit);
    let filter = ListFilter {
        status,
        kind,
        date: q.date,
        openid: q.openid.clone().filter(|o| !o.is_empty()),
        before_id: q.before_id,
        limit,
    };
    let mut conn = state.pool.acquire().await?;
    let rows = redpacks::list(&mut conn, &filter).await?;
    let next = next_before_id(rows.len(), limit, rows.last().map(|r| r.id));
    let data = rows.iter().map(|r| RedpackView::new(r, &state)).collect();
    Ok(HttpResponse::Ok().json(RedpackList { data, next_before_id: next }))
}
