//! Reconciliations asked for over the API (`POST /v1/reconciliations`): every tick claims
//! one pending request (see [`minipay_store::recon::claim_request`]) and runs it as
//! `minipay reconcile` would — bills downloaded now, a re-run even if the day was reconciled
//! before — recording the run it started, or why it could not, on the request.

use std::sync::Arc;
use std::time::Duration;

use minipay_store::recon::{self, ReconRequest, Trigger};

use crate::reconcile::{BillSource, ReconcileError, Reconciler, RunOutcome, RunRequest};

/// How a claimed request ended.
#[derive(Debug)]
pub struct Served {
    pub request: ReconRequest,
    pub completed: bool,
    pub run_id: Option<i64>,
    pub error: Option<String>,
}

/// Claims and runs one pending request; `None` when the queue is empty.
pub async fn try_execute_request(r: &Reconciler) -> Result<Option<Served>, ReconcileError> {
    let Some(req) = recon::claim_request(r.pool(), r.id(), r.settings("").lease_secs).await? else {
        return Ok(None);
    };
    tracing::info!(request = req.id, mch_id = %req.mch_id, date = %req.bill_date, "reconciliation request claimed");
    let run = RunRequest {
        mch_id: req.mch_id.clone(),
        date: req.bill_date,
        source: BillSource::Download,
        trigger: Trigger::Api,
        rerun: true,
    };
    let (completed, run_id, error) = match r.run(&run).await {
        Ok(RunOutcome::Completed(report)) => (true, Some(report.run_id), None),
        Ok(RunOutcome::AlreadyCompleted { run_id }) => (true, Some(run_id), None),
        Ok(RunOutcome::Waiting { run_id }) => {
            (false, Some(run_id), Some("WeChat is still creating the bill; the retry job runs it later".to_owned()))
        }
        Ok(RunOutcome::Busy { run_id }) => {
            (false, Some(run_id), Some(format!("run {run_id} of this day is in progress on another worker")))
        }
        Err(e) => (false, None, Some(e.to_string())),
    };
    if !recon::finish_request(r.pool(), req.id, r.id(), completed, run_id, error.as_deref()).await? {
        tracing::warn!(request = req.id, "reconciliation request was taken over before it finished");
    }
    Ok(Some(Served { request: req, completed, run_id, error }))
}

/// Registers the queue job: one request per tick, every `every`.
pub fn register(worker: &mut crate::Worker, reconciler: Arc<Reconciler>, every: Duration) {
    worker.add_job("reconcile:requests", crate::Schedule::Every(every), move |_ctx| {
        let r = reconciler.clone();
        async move {
            while let Some(s) = try_execute_request(&r).await? {
                tracing::info!(request = s.request.id, completed = s.completed, run_id = ?s.run_id,
                               error = ?s.error, "reconciliation request served");
            }
            Ok(())
        }
    });
}
