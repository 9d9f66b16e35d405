//! # Nightly reconciliation
//!
//! For each merchant and day (Asia/Shanghai): download WeChat's ALL trade bill (gzip) and the
//! Basic fund-flow bill, keep their raw bytes with a sha256, stream their rows into Postgres
//! with COPY, match them against our orders, refunds and ledger in SQL, repair what is safe,
//! check the totals, post the day's fee and store a report.
//!
//! - [`Reconciler::run`] is one run of one (merchant, date), whatever started it (schedule,
//!   `minipay reconcile`, tests). Runs are coordinated in Postgres
//!   ([`minipay_store::recon::try_start_run`]): any number of workers, one active run per
//!   (merchant, date), every run kept.
//! - [`Reconciler::try_execute_scheduled`] is the scheduled step: yesterday's run unless it
//!   already completed; `Bill Creating` leaves a `waiting` run and the retry job tries again
//!   every `retry_interval_secs` until the deadline, then raises the overdue alert.
//! - [`register`] puts both on a [`crate::Worker`].
//!
//! Categories: `missing_local` (WeChat has it, we don't: a missed notification),
//! `missing_remote` (we have it, WeChat doesn't), `amount_mismatch`, `status_mismatch`,
//! `fee_mismatch`, `cross_day` (a near-midnight item in the neighbouring day's bill: held up
//! to `hold_days` days before being called missing). Only `missing_local` payments are
//! repaired automatically: `orderquery`, then [`minipay_store::settle::apply_payment`] — the
//! same path as a notification (ledger, webhook, audit) — and the discrepancy is marked
//! repaired with an audit line. Everything else stays open for a person.

pub mod load;
pub mod metrics;
pub mod report;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use minipay_store::ledger::{self, Kind, Movement, Posting};
use minipay_store::recon::{self, BillKind, MatchParams, RunEnd, RunStatus, StartRun, Trigger};
use minipay_store::settle::{self, PaymentApplied, PaymentFacts, Source};
use minipay_store::{Fen, StoreError};
use serde_json::json;
use sqlx::PgPool;
use wxpay::Outcome;
use wxpay::api::{AccountType, BillType, DownloadBillRequest, DownloadFundFlowRequest};
use wxpay::bill::{BillError, BillSummary, MilliFen};
use wxpay::merchant::{ApiVersion, MerchantClient};
use wxpay::v3::api::{BillLink, FundAccountType, FundFlowBillRequest, TradeBillRequest, TradeBillType};

use self::load::{Body, Loaded, Raw};
use self::report::{FeeReport, Report, Totals};

/// Why a run could not complete. The run row records the message; the CLI exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("bill: {0}")]
    Bill(#[from] BillError),
    #[error("reading the bill: {0}")]
    Io(#[from] std::io::Error),
    #[error("the bill's rows disagree with its summary after loading: {0}")]
    Totals(String),
    #[error("WeChat refused the download: {0}")]
    Download(String),
    #[error("the download's outcome is unknown: {0}")]
    Unknown(String),
    #[error("orderquery not sent: {0}")]
    Query(String),
    #[error("merchant {0} has no WeChat Pay client configured")]
    NoClient(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Internal(String),
}

impl From<wxpay::CallError> for ReconcileError {
    fn from(e: wxpay::CallError) -> ReconcileError {
        ReconcileError::Download(e.to_string())
    }
}

impl From<wxpay::v3::client::CallError> for ReconcileError {
    fn from(e: wxpay::v3::client::CallError) -> ReconcileError {
        ReconcileError::Download(e.to_string())
    }
}

/// Per-merchant settings (from `[reconcile]` and `[[reconcile.merchants]]`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub enabled: bool,
    pub schedule: String,
    pub timezone: Tz,
    /// Fee rate in millionths (0.60 % = 6000); `None`: fees are not checked per row.
    pub fee_rate_ppm: Option<i64>,
    pub fund_flow: bool,
    pub cross_day_window_secs: i64,
    pub hold_days: i32,
    pub lease_secs: i64,
    pub retry_interval_secs: u64,
    pub deadline: NaiveTime,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            enabled: true,
            schedule: "0 30 10 * * *".into(),
            timezone: chrono_tz::Asia::Shanghai,
            fee_rate_ppm: None,
            fund_flow: true,
            cross_day_window_secs: 900,
            hold_days: 3,
            lease_secs: 1800,
            retry_interval_secs: 1800,
            deadline: NaiveTime::from_hms_opt(20, 0, 0).unwrap_or_default(),
        }
    }
}

/// Parses a percentage such as `0.60%` (or `0.6`) into millionths.
pub fn parse_rate_ppm(s: &str) -> Option<i64> {
    let t = s.trim().trim_end_matches('%').trim();
    // A percentage with up to 4 decimals is an exact count of millionths.
    wxpay::money::parse_decimal(t, 4).ok().filter(|v| (0..=1_000_000).contains(v))
}

impl Settings {
    /// The settings of one merchant from the configuration.
    pub fn for_merchant(c: &minipay_config::ReconcileConfig, mch_id: &str) -> Result<Settings, ReconcileError> {
        let m = c.merchants.iter().find(|m| m.mch_id == mch_id);
        let timezone: Tz =
            c.timezone.parse().map_err(|_| ReconcileError::Config(format!("reconcile.timezone {:?}", c.timezone)))?;
        let rate = m.and_then(|m| m.fee_rate.clone()).or_else(|| c.fee_rate.clone());
        let fee_rate_ppm = match rate {
            None => None,
            Some(r) => Some(parse_rate_ppm(&r).ok_or_else(|| ReconcileError::Config(format!("fee_rate {r:?}")))?),
        };
        let deadline = NaiveTime::parse_from_str(&c.deadline, "%H:%M")
            .map_err(|_| ReconcileError::Config(format!("reconcile.deadline {:?} (HH:MM)", c.deadline)))?;
        Ok(Settings {
            enabled: m.and_then(|m| m.enabled).unwrap_or(c.enabled),
            schedule: m.and_then(|m| m.schedule.clone()).unwrap_or_else(|| c.schedule.clone()),
            timezone,
            fee_rate_ppm,
            fund_flow: m.and_then(|m| m.fund_flow).unwrap_or(c.fund_flow),
            cross_day_window_secs: c.cross_day_window_secs as i64,
            hold_days: c.hold_days as i32,
            lease_secs: c.lease_secs as i64,
            retry_interval_secs: c.retry_interval_secs,
            deadline,
        })
    }
}

/// Where the bills of a run come from.
#[derive(Clone, Debug)]
pub enum BillSource {
    /// Downloaded in the merchant's protocol: v2 `downloadbill` (ALL, gzip) and, when
    /// enabled, `downloadfundflow` (Basic); v3 `/v3/bill/tradebill` (ALL, GZIP) and
    /// `/v3/bill/fundflowbill` (BASIC, GZIP), each file checked against its link's SHA1.
    Download,
    /// Bills downloaded by hand from the merchant platform (plain or gzip).
    Files { trade: PathBuf, fund_flow: Option<PathBuf> },
    /// Bills in memory (tests).
    Bytes { trade: Vec<u8>, fund_flow: Option<Vec<u8>> },
}

/// One run to do.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub mch_id: String,
    pub date: NaiveDate,
    pub source: BillSource,
    pub trigger: Trigger,
    /// Run even if a completed run exists (a manual re-run); the schedule passes false.
    pub rerun: bool,
}

/// How a [`Reconciler::run`] call ended (failures are `Err`).
#[derive(Clone, Debug)]
pub enum RunOutcome {
    Completed(Box<Report>),
    /// `Bill Creating`: a `waiting` run was recorded; try later.
    Waiting {
        run_id: i64,
    },
    /// Another worker is running this (merchant, date).
    Busy {
        run_id: i64,
    },
    /// Already reconciled (and no re-run asked for).
    AlreadyCompleted {
        run_id: i64,
    },
}

/// How many times a v3 bill is fetched (link, then download) when the download's outcome
/// is unknown — a SHA1 mismatch among them: a broken download is never loaded, and
/// fetching again is harmless (a read).
const V3_DOWNLOAD_ATTEMPTS: u32 = 3;

/// Which protocol fetched a run's bills (`recon_runs.protocol`, the report's `protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    V2,
    V3,
    /// Bills given by hand (`--bill-file`), by the benchmark or by tests.
    File,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V2 => "v2",
            Protocol::V3 => "v3",
            Protocol::File => "file",
        }
    }
}

/// Runs reconciliations: the pool, a WeChat client per merchant (in its protocol),
/// settings per merchant.
#[derive(Clone)]
pub struct Reconciler {
    pool: PgPool,
    worker_id: String,
    clients: HashMap<String, MerchantClient>,
    settings: HashMap<String, Settings>,
    default_settings: Settings,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("worker_id", &self.worker_id)
            .field("merchants", &self.clients.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// An identifier for this process in `recon_runs.worker`.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}:{}", std::process::id())
}

impl Reconciler {
    /// A reconciler with no WeChat clients (file/bytes sources only) and default settings.
    pub fn new(pool: PgPool) -> Reconciler {
        Reconciler {
            pool,
            worker_id: worker_id(),
            clients: HashMap::new(),
            settings: HashMap::new(),
            default_settings: Settings::default(),
        }
    }

    /// Every configured merchant with its client and settings.
    pub fn from_config(config: &minipay_config::Config, pool: PgPool) -> Result<Reconciler, ReconcileError> {
        let mut r = Reconciler::new(pool);
        r.default_settings = Settings::for_merchant(&config.reconcile, "")?;
        for m in &config.merchants {
            // The merchant's own protocol downloads its bills and asks orderquery: a v3
            // merchant's bills come over v3 even when it also has a v2 key.
            let appid = config.merchant_app(&m.mch_id).map(|a| a.appid.clone()).unwrap_or_default();
            let client =
                config.merchant_client_for(&m.mch_id, &appid).map_err(|e| ReconcileError::Config(e.to_string()))?;
            r.clients.insert(m.mch_id.clone(), client);
            r.settings.insert(m.mch_id.clone(), Settings::for_merchant(&config.reconcile, &m.mch_id)?);
        }
        Ok(r)
    }

    /// Uses `client` for a merchant's downloads and queries (its protocol is the client's).
    pub fn with_client(mut self, mch_id: &str, client: MerchantClient) -> Reconciler {
        self.clients.insert(mch_id.to_owned(), client);
        self
    }

    /// Overrides a merchant's settings.
    pub fn with_settings(mut self, mch_id: &str, settings: Settings) -> Reconciler {
        self.settings.insert(mch_id.to_owned(), settings);
        self
    }

    /// Names this reconciler in `recon_runs.worker` (tests start two "workers").
    pub fn with_worker_id(mut self, id: impl Into<String>) -> Reconciler {
        self.worker_id = id.into();
        self
    }

    /// This reconciler's name in `recon_runs.worker` / `recon_requests.worker`.
    pub fn id(&self) -> &str {
        &self.worker_id
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The configured merchants.
    pub fn merchants(&self) -> Vec<String> {
        let mut v: Vec<String> = self.settings.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn settings(&self, mch_id: &str) -> &Settings {
        self.settings.get(mch_id).unwrap_or(&self.default_settings)
    }

    /// Which protocol a run fetches its bills with: the merchant's for a download (`None`
    /// when the merchant has no client: the run fails), `file` otherwise.
    pub fn protocol(&self, req: &RunRequest) -> Option<Protocol> {
        match req.source {
            BillSource::Download => self.clients.get(&req.mch_id).map(|c| match c.version() {
                ApiVersion::V2 => Protocol::V2,
                ApiVersion::V3 => Protocol::V3,
            }),
            BillSource::Files { .. } | BillSource::Bytes { .. } => Some(Protocol::File),
        }
    }

    /// One run of one (merchant, date). `Err` means the run could not complete (recorded as
    /// `failed` when it had started); discrepancies, however many, are a completed run.
    pub async fn run(&self, req: &RunRequest) -> Result<RunOutcome, ReconcileError> {
        let s = self.settings(&req.mch_id).clone();
        let run_id = match recon::try_start_run(
            &self.pool,
            &req.mch_id,
            req.date,
            req.trigger,
            &self.worker_id,
            s.lease_secs,
            req.rerun,
        )
        .await?
        {
            StartRun::Started { run_id } => run_id,
            StartRun::Busy { run_id } => {
                metrics::outcome(&req.mch_id, "busy");
                return Ok(RunOutcome::Busy { run_id });
            }
            StartRun::AlreadyCompleted { run_id } => return Ok(RunOutcome::AlreadyCompleted { run_id }),
        };
        let protocol = self.protocol(req).map(Protocol::as_str);
        tracing::info!(mch_id = %req.mch_id, date = %req.date, run_id, protocol, "reconciliation started");
        match self.run_started(run_id, req, &s).await {
            Ok(Some(report)) => {
                metrics::completed(&report);
                tracing::info!(mch_id = %req.mch_id, date = %req.date, run_id, balanced = report.balanced(),
                    discrepancies = report.discrepancies.len(), "reconciliation completed");
                if !report.balanced() {
                    tracing::error!(mch_id = %req.mch_id, date = %req.date, run_id,
                        "bill and ledger totals differ by more than the discrepancies explain");
                }
                Ok(RunOutcome::Completed(Box::new(report)))
            }
            Ok(None) => {
                let mut conn = self.pool.acquire().await?;
                let end = RunEnd {
                    status: RunStatus::Waiting,
                    trade_file_id: None,
                    fund_file_id: None,
                    empty_day: false,
                    report: None,
                    summary_text: Some("WeChat is still creating the bill (v2 Bill Creating, v3 STATEMENT_CREATING)"),
                    error: None,
                    protocol,
                };
                recon::finish_run(&mut conn, run_id, &end).await?;
                metrics::outcome(&req.mch_id, "waiting");
                Ok(RunOutcome::Waiting { run_id })
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(mch_id = %req.mch_id, date = %req.date, run_id, error = %msg, "reconciliation failed");
                metrics::outcome(&req.mch_id, "failed");
                let end = RunEnd {
                    status: RunStatus::Failed,
                    trade_file_id: None,
                    fund_file_id: None,
                    empty_day: false,
                    report: None,
                    summary_text: None,
                    error: Some(&msg),
                    protocol,
                };
                if let Ok(mut conn) = self.pool.acquire().await {
                    let _ = recon::finish_run(&mut conn, run_id, &end).await;
                }
                Err(e)
            }
        }
    }

    /// The body of a run; `Ok(None)` when the bill is not ready yet.
    async fn run_started(&self, run_id: i64, req: &RunRequest, s: &Settings) -> Result<Option<Report>, ReconcileError> {
        let mch = req.mch_id.as_str();
        let mut timings = std::collections::BTreeMap::new();
        let mut clock = std::time::Instant::now();
        let mut lap = |name: &str, timings: &mut std::collections::BTreeMap<String, u64>| {
            timings.insert(name.to_owned(), clock.elapsed().as_millis() as u64);
            clock = std::time::Instant::now();
        };
        let (trade, fund) = match self.fetch(req, s).await? {
            Fetched::NotReady => return Ok(None),
            Fetched::Bills { trade, fund } => (trade, fund),
        };
        lap("fetch", &mut timings);
        let source = match req.source {
            BillSource::Download => "download",
            BillSource::Files { .. } | BillSource::Bytes { .. } if req.trigger == Trigger::Bench => "generated",
            _ => "file",
        };
        let trade_loaded = match &trade {
            Some(raw) => Some(load::load_bill(&self.pool, mch, req.date, BillKind::TradeAll, raw, source).await?),
            None => {
                // An empty day: rows of an earlier file for this day must not be matched.
                let mut tx = self.pool.begin().await?;
                recon::clear_rows(&mut tx, mch, req.date, BillKind::TradeAll).await?;
                tx.commit().await?;
                None
            }
        };
        lap("load_trade", &mut timings);
        self.renew(run_id, s).await?;
        let fund_loaded = match &fund {
            Some(Some(raw)) => {
                Some(load::load_bill(&self.pool, mch, req.date, BillKind::FundflowBasic, raw, source).await?)
            }
            Some(None) => {
                let mut tx = self.pool.begin().await?;
                recon::clear_rows(&mut tx, mch, req.date, BillKind::FundflowBasic).await?;
                tx.commit().await?;
                None
            }
            None => None,
        };
        let with_fund_flow = fund.is_some();
        lap("load_fund_flow", &mut timings);
        self.renew(run_id, s).await?;

        let mut tx = self.pool.begin().await?;
        recon::match_day(
            &mut tx,
            &MatchParams {
                run_id,
                mch_id: mch,
                bill_date: req.date,
                fee_rate_ppm: s.fee_rate_ppm,
                cross_day_window_secs: s.cross_day_window_secs,
                hold_days: s.hold_days,
                with_fund_flow,
            },
        )
        .await?;
        tx.commit().await?;
        lap("match", &mut timings);

        let repaired = self.repair(run_id, mch).await?;
        lap("repair", &mut timings);

        let mut tx = self.pool.begin().await?;
        let fee = match &trade_loaded {
            Some(l) => Some(post_fee(&mut tx, mch, req.date, l).await?),
            None => None,
        };
        let totals: Vec<Totals> = recon::kind_totals(&mut tx, run_id, mch, req.date, with_fund_flow)
            .await?
            .iter()
            .map(Totals::from)
            .collect();
        let categories = recon::category_totals(&mut tx, run_id).await?;
        let discrepancies = recon::discrepancies_first(&mut tx, run_id, report::MAX_LISTED + 1).await?;
        let truncated = discrepancies.len() as i64 > report::MAX_LISTED;
        let discrepancies: Vec<_> = discrepancies.into_iter().take(report::MAX_LISTED as usize).collect();
        lap("report", &mut timings);
        let protocol = self.protocol(req).map(Protocol::as_str);
        let report = Report {
            run_id,
            mch_id: mch.to_owned(),
            date: req.date,
            status: "completed".into(),
            protocol: protocol.unwrap_or_default().to_owned(),
            empty_day: trade.is_none(),
            categories: Report::summarise(&categories),
            trade_bill: trade_loaded.clone(),
            fund_flow_bill: fund_loaded.clone(),
            totals,
            fee,
            repaired,
            discrepancies,
            truncated,
            timings_ms: timings,
        };
        let json = serde_json::to_value(&report).map_err(|e| ReconcileError::Internal(e.to_string()))?;
        let text = report.human();
        let end = RunEnd {
            status: RunStatus::Completed,
            trade_file_id: trade_loaded.as_ref().map(|l| l.file_id),
            fund_file_id: fund_loaded.as_ref().map(|l| l.file_id),
            empty_day: trade.is_none(),
            report: Some(&json),
            summary_text: Some(&text),
            error: None,
            protocol,
        };
        if !recon::finish_run(&mut tx, run_id, &end).await? {
            return Err(ReconcileError::Internal(format!(
                "run {run_id} was taken over by another worker (lease expired) before it finished"
            )));
        }
        tx.commit().await?;
        Ok(Some(report))
    }

    async fn renew(&self, run_id: i64, s: &Settings) -> Result<(), ReconcileError> {
        let mut conn = self.pool.acquire().await?;
        recon::renew_lease(&mut conn, run_id, s.lease_secs).await?;
        Ok(())
    }

    /// Gets the bills. `fund`: `None` = not matched this run; `Some(None)` = WeChat has no
    /// fund-flow bill for the day (an empty day); `Some(Some(raw))` = a bill.
    async fn fetch(&self, req: &RunRequest, s: &Settings) -> Result<Fetched, ReconcileError> {
        match &req.source {
            BillSource::Bytes { trade, fund_flow } => {
                let trade = Raw::Bytes(Arc::from(trade.as_slice()));
                let fund = fund_flow.as_ref().map(|f| Raw::Bytes(Arc::from(f.as_slice())));
                classify_pair(trade, fund)
            }
            BillSource::Files { trade, fund_flow } => {
                classify_pair(Raw::File(trade.clone()), fund_flow.as_ref().map(|f| Raw::File(f.clone())))
            }
            BillSource::Download => {
                let client =
                    self.clients.get(&req.mch_id).ok_or_else(|| ReconcileError::NoClient(req.mch_id.clone()))?;
                match client {
                    MerchantClient::V2(client) => self.fetch_v2(client, req, s).await,
                    MerchantClient::V3(client) => fetch_v3(client, req, s).await,
                }
            }
        }
    }

    /// v2: `downloadbill` answers the bill, or an XML refusal the body classification reads.
    async fn fetch_v2(
        &self,
        client: &wxpay::Client,
        req: &RunRequest,
        s: &Settings,
    ) -> Result<Fetched, ReconcileError> {
        let body = download(
            client
                .download_bill(&DownloadBillRequest { bill_date: req.date, bill_type: BillType::All, gzip: true })
                .await?,
        )?;
        let trade = match classify(Raw::Bytes(Arc::from(body)))? {
            Classified::NotReady => return Ok(Fetched::NotReady),
            Classified::NoBill => None,
            Classified::Bill(r) => Some(r),
        };
        let fund = if s.fund_flow && client.has_identity() {
            let body = download(
                client
                    .download_fund_flow(&DownloadFundFlowRequest {
                        bill_date: req.date,
                        account_type: AccountType::Basic,
                        gzip: true,
                    })
                    .await?,
            )?;
            match classify(Raw::Bytes(Arc::from(body)))? {
                Classified::NotReady => return Ok(Fetched::NotReady),
                Classified::NoBill => Some(None),
                Classified::Bill(r) => Some(Some(r)),
            }
        } else {
            if s.fund_flow {
                tracing::warn!(mch_id = %req.mch_id, "no client certificate: fund-flow bill skipped");
            }
            None
        };
        Ok(Fetched::Bills { trade, fund })
    }

    /// Repairs the run's missing_local payments whose order exists: `orderquery`, and if
    /// WeChat says paid, [`settle::apply_payment`] exactly as a notification would.
    async fn repair(&self, run_id: i64, mch_id: &str) -> Result<i64, ReconcileError> {
        let Some(client) = self.clients.get(mch_id) else {
            return Ok(0);
        };
        let candidates = {
            let mut conn = self.pool.acquire().await?;
            recon::repair_candidates(&mut conn, run_id).await?
        };
        let mut repaired = 0;
        for c in candidates {
            let q = client.order_query(&c.out_trade_no).await.map_err(|e| ReconcileError::Query(e.to_string()))?;
            let r = match q {
                Outcome::Success(r) if r.trade_state.is_paid() => r,
                other => {
                    tracing::warn!(run_id, out_trade_no = %c.out_trade_no, outcome = ?other.map(|r| r.trade_state),
                        "missing_local payment not repaired: orderquery does not confirm it");
                    continue;
                }
            };
            let (Some(total_fee), Some(transaction_id), Some(paid_at), Some(openid)) =
                (r.total_fee, r.transaction_id.clone(), r.time_end, r.openid.clone())
            else {
                tracing::warn!(run_id, out_trade_no = %c.out_trade_no, "orderquery answer lacks payment details");
                continue;
            };
            let mut tx = self.pool.begin().await?;
            let (appid,): (String,) = sqlx::query_as("SELECT appid FROM orders WHERE out_trade_no = $1")
                .bind(&c.out_trade_no)
                .fetch_one(&mut *tx)
                .await?;
            let facts = PaymentFacts {
                out_trade_no: c.out_trade_no.clone(),
                mch_id: mch_id.to_owned(),
                // orderquery is asked with our merchant's credentials about our order; the
                // typed answer does not carry appid, so the order's own is the claim.
                appid,
                openid,
                total_fee,
                cash_fee: r.cash_fee,
                transaction_id: transaction_id.clone(),
                paid_at,
                bank_type: r.bank_type.clone(),
                source: Source::Reconciliation { run_id: Some(run_id) },
            };
            match settle::apply_payment(&mut tx, &facts).await? {
                PaymentApplied::Applied { late } => {
                    recon::mark_repaired(
                        &mut tx,
                        c.discrepancy_id,
                        json!({"via": "orderquery", "applied": true, "late": late, "transaction_id": transaction_id,
                               "total_fee": total_fee.get(), "run_id": run_id}),
                    )
                    .await?;
                    tx.commit().await?;
                    repaired += 1;
                }
                PaymentApplied::AlreadyApplied => {
                    recon::mark_repaired(
                        &mut tx,
                        c.discrepancy_id,
                        json!({"via": "orderquery", "applied": false, "already_applied": true, "run_id": run_id}),
                    )
                    .await?;
                    tx.commit().await?;
                    repaired += 1;
                }
                other => {
                    // An anomaly was recorded by settle; the discrepancy stays open for a person.
                    tx.commit().await?;
                    tracing::warn!(run_id, out_trade_no = %c.out_trade_no, result = ?other,
                        "missing_local payment not repaired: settlement refused the facts");
                }
            }
        }
        Ok(repaired)
    }

    /// The scheduled step for one merchant at `now`: reconcile yesterday (merchant's time
    /// zone) unless done. Before the scheduled time of day nothing happens; after the
    /// deadline with no completed run the overdue alert is raised.
    pub async fn try_execute_scheduled(
        &self,
        mch_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RunOutcome>, ReconcileError> {
        let s = self.settings(mch_id).clone();
        if !s.enabled {
            return Ok(None);
        }
        let local = now.with_timezone(&s.timezone);
        let date = local.date_naive() - ChronoDuration::days(1);
        let req = RunRequest {
            mch_id: mch_id.to_owned(),
            date,
            source: BillSource::Download,
            trigger: Trigger::Schedule,
            rerun: false,
        };
        let outcome = match self.run(&req).await {
            Ok(o) => o,
            Err(e) => {
                self.check_deadline(mch_id, &s, local.time());
                return Err(e);
            }
        };
        if matches!(outcome, RunOutcome::Waiting { .. }) {
            self.check_deadline(mch_id, &s, local.time());
        }
        Ok(Some(outcome))
    }

    fn check_deadline(&self, mch_id: &str, s: &Settings, local_time: NaiveTime) {
        if local_time >= s.deadline {
            metrics::OVERDUE.with_label_values(&[mch_id]).set(1);
            tracing::error!(mch_id, deadline = %s.deadline, "ALERT: yesterday's bill is still not reconciled after the deadline");
        }
    }

    /// The retry step: for each merchant whose scheduled time today has passed, run
    /// yesterday if no run completed yet (a `Bill Creating` day, a failed download).
    pub async fn try_execute_retries(
        &self,
        now: DateTime<Utc>,
    ) -> Vec<(String, Result<Option<RunOutcome>, ReconcileError>)> {
        let mut out = Vec::new();
        for mch in self.merchants() {
            let s = self.settings(&mch).clone();
            if !s.enabled || !scheduled_time_passed(&s, now) {
                continue;
            }
            let r = self.try_execute_scheduled(&mch, now).await;
            out.push((mch, r));
        }
        out
    }
}

/// Whether today's scheduled run time (merchant's zone) is behind us: the retry job must not
/// jump ahead of the schedule (the bill is generated from ~09:00 Beijing time).
fn scheduled_time_passed(s: &Settings, now: DateTime<Utc>) -> bool {
    let local = now.with_timezone(&s.timezone);
    let midnight = local.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default();
    let Some(start) = s.timezone.from_local_datetime(&midnight).earliest() else {
        return true;
    };
    // The first run of today per the cron expression, found with the parser (croner) and
    // settings tokio-cron-scheduler itself uses, so both agree on what the expression means.
    match croner_next(&s.schedule, start) {
        Some(first) => now >= first.with_timezone(&Utc),
        None => true,
    }
}

fn croner_next(expr: &str, after: DateTime<Tz>) -> Option<DateTime<Tz>> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .ok()?;
    cron.find_next_occurrence(&after, true).ok()
}

enum Fetched {
    NotReady,
    Bills { trade: Option<Raw>, fund: Option<Option<Raw>> },
}

enum Classified {
    NotReady,
    NoBill,
    Bill(Raw),
}

fn classify(raw: Raw) -> Result<Classified, ReconcileError> {
    match raw.classify()? {
        Body::Bill => Ok(Classified::Bill(raw)),
        Body::NoBill => Ok(Classified::NoBill),
        Body::NotReady => Ok(Classified::NotReady),
        Body::Failed(m) => Err(ReconcileError::Download(m)),
    }
}

fn classify_pair(trade: Raw, fund: Option<Raw>) -> Result<Fetched, ReconcileError> {
    let trade = match classify(trade)? {
        Classified::NotReady => return Ok(Fetched::NotReady),
        Classified::NoBill => None,
        Classified::Bill(r) => Some(r),
    };
    let fund = match fund {
        None => None,
        Some(f) => match classify(f)? {
            Classified::NotReady => return Ok(Fetched::NotReady),
            Classified::NoBill => Some(None),
            Classified::Bill(r) => Some(Some(r)),
        },
    };
    Ok(Fetched::Bills { trade, fund })
}

/// One v3 bill: the link, then the file, checked against the link's SHA1 by the client.
/// `STATEMENT_CREATING` is not ready and `NO_STATEMENT_EXIST` no bill, exactly as v2's
/// `Bill Creating` / `No Bill Exist` bodies; an unknown outcome (a SHA1 mismatch, a broken
/// transfer) fetches a fresh link and file again, up to [`V3_DOWNLOAD_ATTEMPTS`] times,
/// and is never loaded.
async fn fetch_v3_one(
    client: &wxpay::v3::Client,
    req: &RunRequest,
    kind: BillKind,
) -> Result<Classified, ReconcileError> {
    let mut last = String::new();
    for attempt in 1..=V3_DOWNLOAD_ATTEMPTS {
        let link: Outcome<BillLink> = match kind {
            BillKind::FundflowBasic => {
                client
                    .fund_flow_bill(&FundFlowBillRequest {
                        bill_date: req.date,
                        account_type: FundAccountType::Basic,
                        gzip: true,
                    })
                    .await?
            }
            BillKind::TradeAll => {
                client
                    .trade_bill(&TradeBillRequest { bill_date: req.date, bill_type: TradeBillType::All, gzip: true })
                    .await?
            }
        };
        let link = match link {
            Outcome::Success(l) => l,
            Outcome::Failed { code, .. } if code == "STATEMENT_CREATING" => return Ok(Classified::NotReady),
            Outcome::Failed { code, .. } if code == "NO_STATEMENT_EXIST" => return Ok(Classified::NoBill),
            Outcome::Failed { code, message } => return Err(ReconcileError::Download(format!("{code}: {message}"))),
            Outcome::Unknown { reason } => {
                tracing::warn!(mch_id = %req.mch_id, date = %req.date, ?kind, attempt, %reason, "v3 bill link unknown");
                last = reason;
                continue;
            }
        };
        match client.download_bill(&link, true).await? {
            // The file (gunzipped by the client) is the same backtick CSV as v2's: from here
            // on it is one path for both protocols.
            Outcome::Success(text) => return classify(Raw::Bytes(Arc::from(text))),
            Outcome::Failed { code, message } => {
                tracing::warn!(mch_id = %req.mch_id, date = %req.date, ?kind, attempt, %code, %message,
                    "v3 bill download refused");
                last = format!("{code}: {message}");
            }
            Outcome::Unknown { reason } => {
                tracing::warn!(mch_id = %req.mch_id, date = %req.date, ?kind, attempt, %reason,
                    "v3 bill download broken (not loaded); fetching again");
                last = reason;
            }
        }
    }
    Err(ReconcileError::Unknown(format!("v3 bill after {V3_DOWNLOAD_ATTEMPTS} attempts: {last}")))
}

/// v3: the trade bill and, when enabled, the Basic fund-flow bill (signed with the
/// merchant's RSA key: no client certificate needed).
async fn fetch_v3(client: &wxpay::v3::Client, req: &RunRequest, s: &Settings) -> Result<Fetched, ReconcileError> {
    let trade = match fetch_v3_one(client, req, BillKind::TradeAll).await? {
        Classified::NotReady => return Ok(Fetched::NotReady),
        Classified::NoBill => None,
        Classified::Bill(r) => Some(r),
    };
    let fund = if s.fund_flow {
        match fetch_v3_one(client, req, BillKind::FundflowBasic).await? {
            Classified::NotReady => return Ok(Fetched::NotReady),
            Classified::NoBill => Some(None),
            Classified::Bill(r) => Some(Some(r)),
        }
    } else {
        None
    };
    Ok(Fetched::Bills { trade, fund })
}

fn download(o: Outcome<Vec<u8>>) -> Result<Vec<u8>, ReconcileError> {
    match o {
        Outcome::Success(b) => Ok(b),
        Outcome::Failed { code, message } => Err(ReconcileError::Download(format!("{code}: {message}"))),
        Outcome::Unknown { reason } => Err(ReconcileError::Unknown(reason)),
    }
}

/// Posts the day's fee from the bill's summary (`Kind::Fee`, `fee:<mch>:<date>`), once.
async fn post_fee(
    conn: &mut sqlx::PgConnection,
    mch_id: &str,
    date: NaiveDate,
    trade: &Loaded,
) -> Result<FeeReport, ReconcileError> {
    let summary: BillSummary = serde_json::from_value(trade.summary.clone())
        .map_err(|e| ReconcileError::Internal(format!("stored bill summary: {e}")))?;
    let fee: MilliFen = summary.fee_total;
    let fen = fee.round_to_fen();
    let reference = format!("fee:{mch_id}:{date}");
    let posting = if fen.get() <= 0 {
        "nothing_to_post"
    } else {
        // The last second of the day (Beijing time), so the fee belongs to the day's ledger.
        let end = date.succ_opt().unwrap_or(date).and_hms_opt(0, 0, 0).unwrap_or_default();
        let at = wxpay::bill::shanghai_to_utc(end) - ChronoDuration::seconds(1);
        match ledger::post(conn, &Movement::standard(Kind::Fee, &reference, mch_id, Fen::new(fen.get()), at)).await? {
            Posting::Posted { .. } => "posted",
            Posting::AlreadyPosted => "already_posted",
        }
    };
    Ok(FeeReport { bill_fee_millifen: fee.get(), fen: fen.get(), posting: posting.into(), reference })
}

/// Registers the reconciliation jobs: one cron job per enabled merchant at its scheduled
/// time, and one retry job every `retry_interval_secs` (the smallest configured).
pub fn register(worker: &mut crate::Worker, reconciler: Reconciler) {
    let reconciler = Arc::new(reconciler);
    let mut retry = u64::MAX;
    for mch in reconciler.merchants() {
        let s = reconciler.settings(&mch).clone();
        if !s.enabled {
            continue;
        }
        retry = retry.min(s.retry_interval_secs.max(1));
        // Job names are &'static: one small string per configured merchant, made once at
        // start-up, so leaking them is bounded.
        let name: &'static str = Box::leak(format!("reconcile:{mch}").into_boxed_str());
        let r = reconciler.clone();
        worker.add_job(name, crate::Schedule::Cron { expr: s.schedule.clone(), tz: s.timezone }, move |_ctx| {
            let r = r.clone();
            let mch = mch.clone();
            async move {
                r.try_execute_scheduled(&mch, Utc::now()).await?;
                Ok(())
            }
        });
    }
    if retry != u64::MAX {
        let r = reconciler.clone();
        worker.add_job("reconcile:retry", crate::Schedule::Every(std::time::Duration::from_secs(retry)), move |_ctx| {
            let r = r.clone();
            async move {
                for (mch, res) in r.try_execute_retries(Utc::now()).await {
                    if let Err(e) = res {
                        tracing::warn!(mch_id = %mch, error = %e, "reconciliation retry failed");
                    }
                }
                Ok(())
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_rates_parse_to_millionths() {
        assert_eq!(parse_rate_ppm("0.60%"), Some(6000));
        assert_eq!(parse_rate_ppm("0.6"), Some(6000));
        assert_eq!(parse_rate_ppm("0.38%"), Some(3800));
        assert_eq!(parse_rate_ppm("1%"), Some(10000));
        assert_eq!(parse_rate_ppm("abc"), None);
        assert_eq!(parse_rate_ppm("0.00001%"), None);
    }

    #[test]
    fn retries_wait_for_the_scheduled_time() {
        let s = Settings::default();
        // 10:29 and 10:31 Beijing time are 02:29 and 02:31 UTC.
        let before = Utc.with_ymd_and_hms(2026, 11, 25, 2, 29, 0).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 11, 25, 2, 31, 0).unwrap();
        assert!(!scheduled_time_passed(&s, before));
        assert!(scheduled_time_passed(&s, after));
    }

    #[test]
    fn settings_take_merchant_overrides() {
        let mut c = minipay_config::ReconcileConfig { fee_rate: Some("0.60%".into()), ..Default::default() };
        c.merchants.push(minipay_config::MerchantReconcileConfig {
            mch_id: "1900000109".into(),
            schedule: Some("0 0 11 * * *".into()),
            fee_rate: Some("0.38%".into()),
            ..Default::default()
        });
        let s = Settings::for_merchant(&c, "1900000109").unwrap();
        assert_eq!(s.schedule, "0 0 11 * * *");
        assert_eq!(s.fee_rate_ppm, Some(3800));
        let d = Settings::for_merchant(&c, "1900000110").unwrap();
        assert_eq!(d.fee_rate_ppm, Some(6000));
        assert_eq!(d.timezone, chrono_tz::Asia::Shanghai);
    }
}
