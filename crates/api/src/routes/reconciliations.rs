//! Reconciliation reports: `GET /v1/reconciliations/{date}` (roles viewer and finance).
//!
//! For each merchant reconciled on that day (Beijing time), the report of its latest
//! completed run (or, when none completed, its latest run with the error), plus the history
//! of every run of the day. Reports are the JSON documents the worker stored on each run;
//! the API only reads them, so what it serves is exactly what `minipay reconcile --json`
//! printed and what the nightly job found.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use minipay_store::recon::{self, RunRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/reconciliations/{date}", web::get().to(get_reconciliation));
}

#[derive(OpenApi)]
#[openapi(paths(get_reconciliation), components(schemas(ReconciliationDay, MerchantReconciliation, RunSummary)))]
struct Doc;

pub fn openapi() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(Deserialize, IntoParams)]
pub struct Filter {
    /// Only this merchant.
    pub merchant: Option<String>,
}

/// One run, without its report.
#[derive(Serialize, ToSchema)]
pub struct RunSummary {
    pub run_id: i64,
    /// running, completed, failed, waiting (WeChat still creating the bill), abandoned
    pub status: String,
    /// schedule, cli, api, bench, test
    pub trigger: String,
    /// Which protocol fetched the bills: v2, v3 (the merchant's protocol for a download) or
    /// file (bills given by hand); absent on runs from before it was recorded.
    pub protocol: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// A merchant's reconciliation of the day.
#[derive(Serialize, ToSchema)]
pub struct MerchantReconciliation {
    pub mch_id: String,
    /// The run the report belongs to: the latest completed one, else the latest.
    pub run: RunSummary,
    /// Counts and amounts (fen) per category, bill vs ledger totals, the fee posting and the
    /// list of discrepancies; absent when no run completed.
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
    /// The same report as text, as `minipay reconcile` prints it.
    pub summary_text: Option<String>,
    /// Every run of the day, newest first.
    pub history: Vec<RunSummary>,
}

#[derive(Serialize, ToSchema)]
pub struct ReconciliationDay {
    pub date: NaiveDate,
    pub merchants: Vec<MerchantReconciliation>,
}

fn summary(r: &RunRow) -> RunSummary {
    RunSummary {
        run_id: r.id,
        status: r.status.clone(),
        trigger: r.trigger.clone(),
        protocol: r.protocol.clone(),
        started_at: r.started_at,
        finished_at: r.finished_at,
        error: r.error.clone(),
    }
}

/// The reconciliation of one day: per merchant, the latest completed run's report and the
/// run history. 404 when the day was never reconciled.
#[utoipa::path(get, path = "/v1/reconciliations/{date}", tag = "reconciliation",
    params(("date" = String, Path, description = "YYYY-MM-DD, Beijing time"), Filter),
    responses((status = 200, body = ReconciliationDay), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn get_reconciliation(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    filter: web::Query<Filter>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Viewer, Role::Finance])?;
    let date = NaiveDate::parse_from_str(&path, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid("invalid_date", "the date must be YYYY-MM-DD"))?;
    let mut conn = state.pool.acquire().await?;
    let runs = recon::runs_for_date(&mut conn, date, filter.merchant.as_deref()).await?;
    if runs.is_empty() {
        return Err(ApiError::not_found("reconciliation_not_found", format!("no reconciliation run for {date}")));
    }
    let mut by_mch: BTreeMap<String, Vec<RunRow>> = BTreeMap::new();
    for r in runs {
        by_mch.entry(r.mch_id.clone()).or_default().push(r);
    }
    let merchants = by_mch
        .into_iter()
        .map(|(mch_id, runs)| {
            let chosen = runs.iter().find(|r| r.status == "completed").unwrap_or(&runs[0]);
            MerchantReconciliation {
                mch_id,
                run: summary(chosen),
                report: chosen.report.clone(),
                summary_text: chosen.summary_text.clone(),
                history: runs.iter().map(summary).collect(),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(ReconciliationDay { date, merchants }))
}
