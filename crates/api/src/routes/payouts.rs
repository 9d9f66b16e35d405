//! Payouts to a user's WeChat balance, for finance staff.
//!
//! - `POST /v1/payouts` (finance): one payout. Amount rules and daily limits are checked in
//!   the request's transaction; at or below `payouts.approval_threshold` it is approved at
//!   once, above it waits for an approver. The `partner_trade_no` is fixed here.
//! - `POST /v1/payouts/{id}/approve`, `/reject` (approver; maker-checker: never the key that
//!   created it). Limits are checked again at approval.
//! - `GET /v1/payouts/{id}`, `GET /v1/payouts?status=&date=&openid=&batch_id=` (finance,
//!   approver, viewer).
//! - `POST /v1/payouts/batches?appid=` (finance): a CSV body (`text/csv`), one payout per
//!   line: `openid,amount,description[,real_name]`, amount in fen, an optional header
//!   line. All rows or none; every bad row is reported. `POST /v1/payouts/batches/{id}/approve`
//!   and `/reject` (approver) decide the whole batch; `GET /v1/payouts/batches/{id}`.
//!
//! Creating requests needs an `Idempotency-Key`: a client retrying a timed-out request must
//! get the first request back, not a second payout.
//!
//! Nothing here calls WeChat: the worker's sender does, with the number fixed at creation.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use minipay_config::PayoutsConfig;
use minipay_store::batches::{self, Batch, BatchError, BatchOwner, BatchRow, RowError};
use minipay_store::domain::{OpenId, State};
use minipay_store::payout_limits::Limits;
use minipay_store::payouts::{self, ListFilter, NewPayout, Payout, PayoutError, PayoutStatus};
use minipay_store::{Fen, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::routes::common::{money_request, next_before_id, page_limit, query_filter};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Batches first: `/v1/payouts/batches` must not be taken for a payout id.
    cfg.route("/v1/payouts/batches", web::post().to(create_batch))
        .route("/v1/payouts/batches/{id}", web::get().to(get_batch))
        .route("/v1/payouts/batches/{id}/approve", web::post().to(approve_batch))
        .route("/v1/payouts/batches/{id}/reject", web::post().to(reject_batch))
        .route("/v1/payouts", web::post().to(create_payout))
        .route("/v1/payouts", web::get().to(list_payouts))
        .route("/v1/payouts/{id}", web::get().to(get_payout))
        .route("/v1/payouts/{id}/approve", web::post().to(approve_payout))
        .route("/v1/payouts/{id}/reject", web::post().to(reject_payout));
}

#[derive(OpenApi)]
#[openapi(
    paths(
        create_payout,
        approve_payout,
        reject_payout,
        get_payout,
        list_payouts,
        create_batch,
        approve_batch,
        reject_batch,
        get_batch
    ),
    components(schemas(CreatePayout, Decision, PayoutView, PayoutList, BatchView, BatchRowError))
)]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

/// The amount and limit rules from `[payouts]`.
pub fn payout_limits(c: &PayoutsConfig) -> Limits {
    Limits {
        min_amount: Fen::new(c.min_amount),
        max_amount: Fen::new(c.max_amount),
        approval_threshold: Fen::new(c.approval_threshold),
        openid_daily_amount: Fen::new(c.openid_daily_amount),
        openid_daily_count: c.openid_daily_count,
        merchant_daily_amount: Fen::new(c.merchant_daily_amount),
        auto_approve_daily_per_maker: Fen::new(c.auto_approve_daily_per_maker),
    }
}

/// Maps the store's request errors to stable API errors.
pub fn payout_error(e: PayoutError) -> ApiError {
    match e {
        PayoutError::Rule(v) => ApiError::invalid(v.code, v.message),
        PayoutError::MakerChecker => ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "maker_checker",
            "maker-checker: a request cannot be approved or rejected by the key that created it",
        ),
        PayoutError::NotFound(what) => ApiError::not_found("not_found", format!("{what} not found")),
        PayoutError::WrongState { action, status } => {
            ApiError::conflict("invalid_state", format!("cannot {action} a request in state {status}"))
        }
        PayoutError::InBatch(b) => ApiError::conflict(
            "payout_in_batch",
            format!("this payout belongs to batch {b}: approve or reject the batch"),
        ),
        PayoutError::KeyReused(what) => ApiError::conflict(
            "idempotency_key_reused",
            format!("this Idempotency-Key created {what} with other parameters; use a new key"),
        ),
        PayoutError::Store(StoreError::InvalidTransition { entity, from, to }) => {
            ApiError::conflict("invalid_state", format!("{entity} cannot go from {from} to {to}"))
        }
        PayoutError::Store(s) => s.into(),
    }
}

fn parse_openid(s: &str) -> Result<OpenId, ApiError> {
    OpenId::parse(s).map_err(|e| ApiError::invalid("invalid_openid", e.to_string()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayout {
    /// The mini-program the user belongs to; default: the configured default app.
    pub appid: Option<String>,
    pub openid: String,
    /// Fen.
    pub amount: i64,
    /// Shown to the user (`desc`), 1–100 characters.
    pub description: String,
    /// The payee's real name: sends FORCE_CHECK (WeChat pays only if it matches).
    pub real_name: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why (rejections).
    pub reason: Option<String>,
}

/// A payout as finance sees it. The real name is never returned.
#[derive(Serialize, ToSchema)]
pub struct PayoutView {
    pub id: i64,
    pub partner_trade_no: String,
    pub mch_id: String,
    pub appid: String,
    pub openid: String,
    /// Fen.
    pub amount: i64,
    pub description: String,
    /// `NO_CHECK` or `FORCE_CHECK`.
    pub check_name: String,
    pub batch_id: Option<i64>,
    /// pending_approval, approved, rejected, sending, unknown, succeeded, failed.
    pub status: String,
    pub created_by: Uuid,
    pub approved_by: Option<Uuid>,
    pub approved_at: Option<DateTime<Utc>>,
    pub rejected_by: Option<Uuid>,
    pub rejected_at: Option<DateTime<Utc>>,
    pub reject_reason: Option<String>,
    pub send_attempts: i32,
    pub last_error: Option<String>,
    /// WeChat's payment number (succeeded).
    pub payment_no: Option<String>,
    pub payment_time: Option<DateTime<Utc>>,
    /// WeChat's err_code (failed). `SEND_FAILED` and similar: create a new request.
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Payout> for PayoutView {
    fn from(p: &Payout) -> PayoutView {
        PayoutView {
            id: p.id,
            partner_trade_no: p.partner_trade_no.clone(),
            mch_id: p.mch_id.clone(),
            appid: p.appid.clone(),
            openid: p.openid.clone(),
            amount: p.amount.get(),
            description: p.description.clone(),
            check_name: p.check_name.clone(),
            batch_id: p.batch_id,
            status: p.status.as_str().into(),
            created_by: p.created_by,
            approved_by: p.approved_by,
            approved_at: p.approved_at,
            rejected_by: p.rejected_by,
            rejected_at: p.rejected_at,
            reject_reason: p.reject_reason.clone(),
            send_attempts: p.send_attempts,
            last_error: p.last_error.clone(),
            payment_no: p.payment_no.clone(),
            payment_time: p.payment_time,
            failure_code: p.failure_code.clone(),
            failure_message: p.failure_message.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PayoutList {
    pub data: Vec<PayoutView>,
    /// Pass as `before_id` for the next page; absent on the last page.
    pub next_before_id: Option<i64>,
}

/// Requests a payout.
#[utoipa::path(post, path = "/v1/payouts", tag = "payouts", request_body = CreatePayout,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 201, body = PayoutView), (status = 422, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
pub async fn create_payout(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<CreatePayout>,
) -> Result<HttpResponse, ApiError> {
    let (app, key) = money_request(&req, &caller, &state.config, body.appid.as_deref())?;
    let openid = parse_openid(&body.openid)?;
    let new = NewPayout {
        mch_id: &app.mch_id,
        appid: &app.appid,
        openid: &openid,
        amount: Fen::new(body.amount),
        description: &body.description,
        real_name: body.real_name.as_deref(),
        spbill_create_ip: Some(&state.config.payouts.spbill_create_ip),
        created_by: caller.id,
        request_key: Some(&key),
    };
    let cfg = &state.config.payouts;
    let mut tx = state.pool.begin().await?;
    let p = payouts::create(&mut tx, &new, &payout_limits(cfg), cfg.require_real_name, None, Utc::now())
        .await
        .map_err(payout_error)?;
    tx.commit().await?;
    tracing::info!(payout = p.id, amount = %p.amount, status = p.status.as_str(), openid = %openid.masked(), "payout requested");
    Ok(HttpResponse::Created().json(PayoutView::from(&p)))
}

/// Approves a pending payout (approver; not the key that created it).
#[utoipa::path(post, path = "/v1/payouts/{id}/approve", tag = "payouts", params(("id" = i64, Path)),
    responses((status = 200, body = PayoutView), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn approve_payout(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Approver])?;
    let mut tx = state.pool.begin().await?;
    let p = payouts::approve(&mut tx, *path, caller.id, &payout_limits(&state.config.payouts), Utc::now())
        .await
        .map_err(payout_error)?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(PayoutView::from(&p)))
}

/// Rejects a pending payout (approver; not the key that created it).
#[utoipa::path(post, path = "/v1/payouts/{id}/reject", tag = "payouts", params(("id" = i64, Path)),
    request_body = Decision,
    responses((status = 200, body = PayoutView), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn reject_payout(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<i64>,
    body: Option<web::Json<Decision>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Approver])?;
    let reason = body.and_then(|b| b.into_inner().reason);
    let mut tx = state.pool.begin().await?;
    let p = payouts::reject(&mut tx, *path, caller.id, reason.as_deref(), Utc::now()).await.map_err(payout_error)?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(PayoutView::from(&p)))
}

/// One payout.
#[utoipa::path(get, path = "/v1/payouts/{id}", tag = "payouts", params(("id" = i64, Path)),
    responses((status = 200, body = PayoutView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_payout(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Finance, Role::Approver, Role::Viewer])?;
    let mut conn = state.pool.acquire().await?;
    let p = payouts::get(&mut conn, *path)
        .await?
        .ok_or_else(|| ApiError::not_found("payout_not_found", "no payout with this id"))?;
    Ok(HttpResponse::Ok().json(PayoutView::from(&p)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    /// `YYYY-MM-DD`, the Asia/Shanghai day the request was created.
    pub date: Option<NaiveDate>,
    pub openid: Option<String>,
    pub batch_id: Option<i64>,
    pub before_id: Option<i64>,
    /// 1–500, default 50.
    pub limit: Option<i64>,
}

/// Payouts, newest first, filtered.
#[utoipa::path(get, path = "/v1/payouts", tag = "payouts", params(ListQuery),
    responses((status = 200, body = PayoutList), (status = 422, body = crate::error::ErrorBody)))]
pub async fn list_payouts(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Finance, Role::Approver, Role::Viewer])?;
    let status = query_filter(q.status.as_deref(), "invalid_status", "status", PayoutStatus::parse)?;
    let limit = page_limit(q.limit);
    let filter = ListFilter {
        status,
        date: q.date,
        openid: q.openid.clone().filter(|o| !o.is_empty()),
        batch_id: q.batch_id,
        before_id: q.before_id,
        limit,
    };
    let mut conn = state.pool.acquire().await?;
    let rows = payouts::list(&mut conn, &filter).await?;
    let next = next_before_id(rows.len(), limit, rows.last().map(|p| p.id));
    Ok(HttpResponse::Ok().json(PayoutList { data: rows.iter().map(PayoutView::from).collect(), next_before_id: next }))
}

// ---------------------------------------------------------------------------------------
// Batches

#[derive(Serialize, ToSchema)]
pub struct BatchView {
    pub id: i64,
    pub appid: String,
    /// pending_approval, approved, rejected.
    pub status: String,
    pub row_count: i32,
    /// Fen.
    pub total_amount: i64,
    pub created_by: Uuid,
    pub approved_by: Option<Uuid>,
    pub approved_at: Option<DateTime<Utc>>,
    pub rejected_by: Option<Uuid>,
    pub rejected_at: Option<DateTime<Utc>>,
    pub reject_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub payouts: Vec<PayoutView>,
}

impl BatchView {
    fn new(b: &Batch, rows: &[Payout]) -> BatchView {
        BatchView {
            id: b.id,
            appid: b.appid.clone(),
            status: b.status.as_str().into(),
            row_count: b.row_count,
            total_amount: b.total_amount.get(),
            created_by: b.created_by,
            approved_by: b.approved_by,
            approved_at: b.approved_at,
            rejected_by: b.rejected_by,
            rejected_at: b.rejected_at,
            reject_reason: b.reject_reason.clone(),
            created_at: b.created_at,
            payouts: rows.iter().map(PayoutView::from).collect(),
        }
    }
}

/// One refused CSV row (1-based among the data rows, the header not counted).
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct BatchRowError {
    pub row: usize,
    pub code: String,
    pub message: String,
}

impl From<RowError> for BatchRowError {
    fn from(r: RowError) -> BatchRowError {
        BatchRowError { row: r.row, code: r.code, message: r.message }
    }
}

/// The 422 answer for a refused batch: the usual error shape plus every bad row.
fn rows_refused(rows: Vec<BatchRowError>) -> HttpResponse {
    HttpResponse::UnprocessableEntity().json(serde_json::json!({
        "error": {
            "code": "invalid_batch",
            "message": format!("{} row(s) refused; nothing was created", rows.len()),
            "rows": rows,
        }
    }))
}

fn batch_error(e: BatchError) -> Result<HttpResponse, ApiError> {
    match e {
        BatchError::Rows(rows) => Ok(rows_refused(rows.into_iter().map(BatchRowError::from).collect())),
        BatchError::Payout(p) => Err(payout_error(p)),
    }
}

/// A line of the CSV, parsed (or why not).
type ParsedRow = Result<BatchRow, BatchRowError>;

/// Splits CSV text into records: comma-separated, `"` quoting with `""` escapes, LF or
/// CRLF line ends, a UTF-8 BOM ignored, blank lines skipped.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, '"') => return Err(format!("line {line}: a quote inside an unquoted field")),
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                if !(record.len() == 1 && record[0].trim().is_empty()) {
                    records.push(std::mem::take(&mut record));
                }
                record.clear();
                line += 1;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {line}: an unterminated quoted field"));
    }
    record.push(field);
    if !(record.len() == 1 && record[0].trim().is_empty()) {
        records.push(record);
    }
    Ok(records)
}

/// Turns CSV records into payout rows; the first record is skipped when it is a header
/// (its first field is `openid`).
pub fn batch_rows(records: &[Vec<String>]) -> Vec<ParsedRow> {
    let data = match records.first() {
        Some(h) if h.first().is_some_and(|f| f.trim().eq_ignore_ascii_case("openid")) => &records[1..],
        _ => records,
    };
    data.iter()
        .enumerate()
        .map(|(i, rec)| {
            let row = i + 1;
            let bad = |code: &str, message: String| BatchRowError { row, code: code.into(), message };
            if rec.len() < 3 || rec.len() > 4 {
                return Err(bad(
                    "invalid_row",
                    format!("expected openid,amount,description[,real_name]; got {} fields", rec.len()),
                ));
            }
            let openid = OpenId::parse(rec[0].trim()).map_err(|e| bad("invalid_openid", e.to_string()))?;
            let amount: i64 = rec[1]
                .trim()
                .parse()
                .map_err(|_| bad("invalid_amount", format!("amount must be whole fen, got {:?}", rec[1].trim())))?;
            let real_name = rec.get(3).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
            Ok(BatchRow { openid, amount: Fen::new(amount), description: rec[2].trim().to_owned(), real_name })
        })
        .collect()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BatchQuery {
    pub appid: Option<String>,
}

/// Uploads a CSV of payouts (all rows or none).
#[utoipa::path(post, path = "/v1/payouts/batches", tag = "payouts", params(BatchQuery,
        ("Idempotency-Key" = String, Header, description = "required")),
    request_body(content = String, content_type = "text/csv",
        description = "openid,amount,description[,real_name] per line; amount in fen; optional header line"),
    responses((status = 201, body = BatchView),
              (status = 422, description = "invalid_batch: error.rows lists every refused row")))]
pub async fn create_batch(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<BatchQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (app, key) = money_request(&req, &caller, &state.config, q.appid.as_deref())?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("invalid_batch", "the CSV must be UTF-8"))?;
    let records = parse_csv(text).map_err(|m| ApiError::invalid("invalid_batch", m))?;
    let parsed = batch_rows(&records);
    let cfg = &state.config.payouts;
    if parsed.len() > cfg.batch_max_rows {
        return Err(ApiError::invalid("invalid_batch", format!("at most {} rows per batch", cfg.batch_max_rows)));
    }
    let mut errors: Vec<BatchRowError> = Vec::new();
    let mut good = Vec::new();
    let mut numbers = Vec::new();
    for (i, r) in parsed.into_iter().enumerate() {
        match r {
            Ok(row) => {
                good.push(row);
                numbers.push(i + 1);
            }
            Err(e) => errors.push(e),
        }
    }
    let owner = BatchOwner {
        mch_id: &app.mch_id,
        appid: &app.appid,
        created_by: caller.id,
        spbill_create_ip: Some(&cfg.spbill_create_ip),
        request_key: Some(&key),
    };
    let mut tx = state.pool.begin().await?;
    // The parseable rows go through every store rule even when others did not parse, so
    // one answer lists every problem; anything refused rolls the whole batch back.
    let created = if good.is_empty() && !errors.is_empty() {
        None
    } else {
        match batches::create(&mut tx, owner, &good, &payout_limits(cfg), cfg.require_real_name, Utc::now()).await {
            Ok(ok) => Some(ok),
            Err(BatchError::Rows(rows)) => {
                for r in rows {
                    let row = numbers.get(r.row.wrapping_sub(1)).copied().unwrap_or(r.row);
                    errors.push(BatchRowError { row, code: r.code, message: r.message });
                }
                None
            }
            Err(e) => return batch_error(e),
        }
    };
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.row);
        return Ok(rows_refused(errors));
    }
    let Some((batch, rows)) = created else {
        return Ok(rows_refused(vec![BatchRowError { row: 0, code: "empty_batch".into(), message: "no rows".into() }]));
    };
    tx.commit().await?;
    tracing::info!(batch = batch.id, rows = rows.len(), total = %batch.total_amount, "payout batch created");
    Ok(HttpResponse::Created().json(BatchView::new(&batch, &rows)))
}

/// Approves every payout of a batch (approver; not the key that uploaded it).
#[utoipa::path(post, path = "/v1/payouts/batches/{id}/approve", tag = "payouts", params(("id" = i64, Path)),
    responses((status = 200, body = BatchView), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody),
              (status = 422, description = "invalid_batch: rows that no longer fit the limits")))]
pub async fn approve_batch(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Approver])?;
    let mut tx = state.pool.begin().await?;
    match batches::approve(&mut tx, *path, caller.id, &payout_limits(&state.config.payouts), Utc::now()).await {
        Ok((b, rows)) => {
            tx.commit().await?;
            Ok(HttpResponse::Ok().json(BatchView::new(&b, &rows)))
        }
        Err(e) => batch_error(e),
    }
}

/// Rejects every payout of a batch.
#[utoipa::path(post, path = "/v1/payouts/batches/{id}/reject", tag = "payouts", params(("id" = i64, Path)),
    request_body = Decision,
    responses((status = 200, body = BatchView), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn reject_batch(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<i64>,
    body: Option<web::Json<Decision>>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Approver])?;
    let reason = body.and_then(|b| b.into_inner().reason);
    let mut tx = state.pool.begin().await?;
    match batches::reject(&mut tx, *path, caller.id, reason.as_deref(), Utc::now()).await {
        Ok(b) => {
            let rows =
                payouts::list(&mut tx, &ListFilter { batch_id: Some(b.id), limit: 500, ..ListFilter::default() })
                    .await?;
            tx.commit().await?;
            Ok(HttpResponse::Ok().json(BatchView::new(&b, &rows)))
        }
        Err(e) => batch_error(e),
    }
}

/// A batch and its payouts.
#[utoipa::path(get, path = "/v1/payouts/batches/{id}", tag = "payouts", params(("id" = i64, Path)),
    responses((status = 200, body = BatchView), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_batch(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Finance, Role::Approver, Role::Viewer])?;
    let mut conn = state.pool.acquire().await?;
    let b = batches::get(&mut conn, *path)
        .await?
        .ok_or_else(|| ApiError::not_found("batch_not_found", "no batch with this id"))?;
    let mut rows = Vec::new();
    let mut before = None;
    loop {
        let page = payouts::list(
            &mut conn,
            &ListFilter { batch_id: Some(b.id), before_id: before, limit: 500, ..ListFilter::default() },
        )
        .await?;
        let done = page.len() < 500;
        before = page.last().map(|p| p.id);
        rows.extend(page);
        if done {
            break;
        }
    }
    rows.reverse();
    Ok(HttpResponse::Ok().json(BatchView::new(&b, &rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_bom_and_crlf() {
        let r = parse_csv(
            "\u{feff}openid,amount,description\r\noA1,100,\"bonus, Nov\"\r\n\r\noB2,200,\"say \"\"hi\"\"\",张三\n",
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1], vec!["oA1", "100", "bonus, Nov"]);
        assert_eq!(r[2], vec!["oB2", "200", "say \"hi\"", "张三"]);
        assert!(parse_csv("a,\"b\n").is_err());
        assert!(parse_csv("a,b\"c\n").is_err());
    }

    #[test]
    fn rows_are_numbered_after_the_header() {
        let recs =
            parse_csv("openid,amount,description\noAAAA1,100,x\noAAAA2,1.5,x\nbad id,1,x\noAAAA3,100\n").unwrap();
        let rows = batch_rows(&recs);
        assert!(rows[0].is_ok());
        let codes: Vec<(usize, String)> =
            rows.iter().filter_map(|r| r.as_ref().err()).map(|e| (e.row, e.code.clone())).collect();
        assert_eq!(codes, vec![(2, "invalid_amount".into()), (3, "invalid_openid".into()), (4, "invalid_row".into())]);
        let no_header = batch_rows(&parse_csv("oAAAA1,100,x,张三").unwrap());
        assert_eq!(no_header[0].as_ref().unwrap().real_name.as_deref(), Some("张三"));
    }
}
