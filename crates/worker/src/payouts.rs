//! The payout and red-packet sender and resolver: exactly-once sending to WeChat.
//!
//! One step ([`PayoutSender::try_execute_payout`], [`PayoutSender::try_execute_redpack`],
//! [`PayoutSender::try_execute_followup`]) handles one request:
//!
//! 1. **Claim** in a transaction with `FOR UPDATE SKIP LOCKED`: an approved request, an
//!    `unknown` one whose retry is due, or one left in `sending` after its lease ran out (a
//!    sender that crashed or was killed mid-call). It becomes `sending` with a lease, and an
//!    attempt row holding the exact business parameters is written; **this commits before
//!    WeChat is called**, so a crash can never lose the fact that a call may have happened.
//! 2. **Call** with the number fixed at creation and parameters rebuilt from columns that
//!    the database refuses to change: every call for a request is the same request.
//! 3. **Store the answer** ([`wxpay::Outcome`]) in one transaction with its consequences:
//!    `Success` → succeeded / sent (ledger, webhook, audit); `Unknown` → `unknown` with
//!    exponential backoff; `Failed` → `unknown` too, with WeChat's code on the attempt row:
//!    **a send's refusal is final only once a query agrees** (below). A refusal made before
//!    anything reached WeChat (a request it would refuse, `INVALID_REQUEST`) is final at once.
//!
//! Anything that may have been sent (`unknown`, or `sending` found after a crash) is
//! resolved by **querying first** (`gettransferinfo` / `gethbinfo`), for every kind of red
//! packet too: a final answer settles it. `NOT_FOUND` proves WeChat holds nothing under the
//! number; then, if the latest send was refused, that refusal is final (`failed`, limits
//! given back); otherwise the request is sent again — with the same number and parameters,
//! which WeChat treats as the same request anyway, and only after the sender renewed its
//! lease (a sender whose claim was lost never calls).
//!
//! Why a refusal waits for a query: a code on a re-send after an unclear first send
//! (FREQ_LIMIT, SENDNUM_LIMIT, NOTENOUGH, SEND_FAILED…) describes the re-send, not the first
//! call, which WeChat may still complete. WeChat's documentation tells to use the original
//! number for SYSTEMERROR and lists SEND_FAILED as "use a new number" without promising that
//! nothing was paid; we do not take that as proof (guess, kept conservative: one extra query
//! per refused send). A success that arrives for something we hold `failed` is recorded
//! (ledger, counters, webhook) and raised as a `paid_after_failed` anomaly, never dropped.
//!
//! Mini-program red packets: only a send's answer carries the `package` the user needs to
//! open the packet. When a query proves a packet exists but we have no package, the sender
//! repeats the send with the same mch_billno to get it (guess, from WeChat's "retry with the
//! same mch_billno" guidance: a repeated send of a packet it holds answers with that packet
//! rather than sending a second one); a refusal of that repeat changes nothing, and the
//! follow-up tries again.
//!
//! Sent red packets are followed with `gethbinfo` until received, or refunded after 24 h
//! unclaimed (posted back to the ledger).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use minipay_store::StoreError;
use minipay_store::payout_attempts::{self, Action, AttemptOutcome, NewAttempt, SubjectType};
use minipay_store::payouts::{self, Payout, PayoutError, PayoutStatus};
use minipay_store::redpacks::{self, HbFacts, Redpack, RedpackKind, RedpackStatus};
use prometheus::{IntCounterVec, register_int_counter_vec};
use sqlx::PgPool;
use wxpay::api::{
    CheckName, Encode, GetHbInfoRequest, GetHbInfoResponse, GetTransferInfoRequest, RedpackStatus as HbStatus, SceneId,
    SendGroupRedpackRequest, SendMiniProgramHbRequest, SendRedpackRequest, TransferRequest, TransferStatus,
    parse_wechat_time,
};
use wxpay::{CallError, Client, Outcome};

use crate::{Schedule, Worker};

/// The actor written to the audit log for what the sender does.
pub const ACTOR: &str = "system:payout-sender";

/// Timing of the sender.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// How long a claimed request stays ours. Must exceed the WeChat client's timeout: a
    /// request still `sending` after its lease is treated as abandoned and resolved.
    pub lease: Duration,
    /// First retry of an `unknown` request; doubles per attempt up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How often a sent red packet is asked about (received? refunded?).
    pub redpack_followup: Duration,
}

impl Default for SenderConfig {
    fn default() -> SenderConfig {
        SenderConfig {
            lease: Duration::from_secs(60),
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            redpack_followup: Duration::from_secs(2 * 3600),
        }
    }
}

/// Why a step could not be completed. The request stays claimed until its lease ends and
/// is then resolved by query, so an error never loses or repeats a payment.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Payout(#[from] PayoutError),
}

impl From<sqlx::Error> for SendError {
    fn from(e: sqlx::Error) -> SendError {
        SendError::Store(StoreError::Db(e))
    }
}

/// What one step did, for logs and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub subject: SubjectType,
    pub id: i64,
    pub merchant_no: String,
    /// The state the request is in after the step.
    pub status: String,
}

/// The sender: a pool and a WeChat client per appid.
#[derive(Clone, Debug)]
pub struct PayoutSender {
    pool: PgPool,
    clients: HashMap<String, Client>,
    cfg: SenderConfig,
}

fn delay(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Exponential backoff for the n-th attempt (1-based).
pub fn backoff(cfg: &SenderConfig, attempt: i32) -> Duration {
    let shift = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(20);
    cfg.retry_initial.saturating_mul(1u32 << shift).min(cfg.retry_max)
}

/// The transfer exactly as it is sent, every time: built only from fixed columns.
pub fn transfer_request(p: &Payout) -> TransferRequest {
    TransferRequest {
        partner_trade_no: p.partner_trade_no.clone(),
        openid: p.openid.clone(),
        check_name: match &p.re_user_name {
            Some(name) if p.check_name == "FORCE_CHECK" => CheckName::ForceCheck { re_user_name: name.clone() },
            _ => CheckName::NoCheck,
        },
        amount: p.amount,
        desc: p.description.clone(),
        spbill_create_ip: p.spbill_create_ip.clone(),
        device_info: None,
    }
}

fn scene(s: Option<&str>) -> Option<SceneId> {
    Some(match s? {
        "PRODUCT_1" => SceneId::Product1,
        "PRODUCT_2" => SceneId::Product2,
        "PRODUCT_3" => SceneId::Product3,
        "PRODUCT_4" => SceneId::Product4,
        "PRODUCT_5" => SceneId::Product5,
        "PRODUCT_6" => SceneId::Product6,
        "PRODUCT_7" => SceneId::Product7,
        "PRODUCT_8" => SceneId::Product8,
        _ => return None,
    })
}

/// A red packet's send call, exactly as sent every time.
pub enum RedpackCall {
    Normal(SendRedpackRequest),
    Group(SendGroupRedpackRequest),
    MiniProgram(SendMiniProgramHbRequest),
}

impl RedpackCall {
    pub fn for_packet(r: &Redpack) -> RedpackCall {
        let scene_id = scene(r.scene_id.as_deref());
        match r.kind {
            RedpackKind::Normal => RedpackCall::Normal(SendRedpackRequest {
                mch_billno: r.mch_billno.clone(),
                send_name: r.send_name.clone(),
                re_openid: r.re_openid.clone(),
                total_amount: r.total_amount,
                wishing: r.wishing.clone(),
                client_ip: r.client_ip.clone().unwrap_or_default(),
                act_name: r.act_name.clone(),
                remark: r.remark.clone(),
                scene_id,
                risk_info: None,
            }),
            RedpackKind::Group => RedpackCall::Group(SendGroupRedpackRequest {
                mch_billno: r.mch_billno.clone(),
                send_name: r.send_name.clone(),
                re_openid: r.re_openid.clone(),
                total_amount: r.total_amount,
                total_num: u32::try_from(r.total_num).unwrap_or(0),
                wishing: r.wishing.clone(),
                act_name: r.act_name.clone(),
                remark: r.remark.clone(),
                scene_id,
                risk_info: None,
            }),
            RedpackKind::MiniProgram => RedpackCall::MiniProgram(SendMiniProgramHbRequest {
                mch_billno: r.mch_billno.clone(),
                send_name: r.send_name.clone(),
                re_openid: r.re_openid.clone(),
                total_amount: r.total_amount,
                wishing: r.wishing.clone(),
                act_name: r.act_name.clone(),
                remark: r.remark.clone(),
                scene_id,
            }),
        }
    }

    fn endpoint(&self) -> &'static str {
        match self {
            RedpackCall::Normal(_) => SendRedpackRequest::ENDPOINT.path(),
            RedpackCall::Group(_) => SendGroupRedpackRequest::ENDPOINT.path(),
            RedpackCall::MiniProgram(_) => SendMiniProgramHbRequest::ENDPOINT.path(),
        }
    }

    fn params(&self) -> wxpay::Params {
        match self {
            RedpackCall::Normal(r) => r.to_params(),
            RedpackCall::Group(r) => r.to_params(),
            RedpackCall::MiniProgram(r) => r.to_params(),
        }
    }
}

/// A send answer reduced to what the store needs: (send_listid, package).
type SendAnswer = Outcome<(String, Option<String>)>;

/// A call's answer, and whether the request may have reached WeChat (`false`: refused or
/// held back by us before sending, so a `Failed` needs no query to be final).
struct Answer<T> {
    outcome: Outcome<T>,
    reached_wechat: bool,
}

impl<T> Answer<T> {
    fn of(r: Result<Outcome<T>, CallError>) -> Answer<T> {
        match r {
            Ok(outcome) => Answer { outcome, reached_wechat: true },
            Err(e) => Answer { outcome: call_error_outcome(e), reached_wechat: false },
        }
    }
}

/// Why a refused send is parked as `unknown` until a query agrees.
fn refusal_reason(code: &str, message: &str) -> String {
    format!("send refused with {code}: {message}; querying before taking it as final")
}

/// What a `NOT_FOUND` from a query means, given the latest finished send of the request.
enum NotFound {
    /// The latest send was refused and WeChat holds nothing: the refusal is final.
    RefusalFinal { code: String, message: String },
    /// Never taken by WeChat: send (again) with the same number.
    SendAgain,
}

fn not_found(last_send: Option<(String, Option<String>, Option<String>)>) -> NotFound {
    match last_send {
        Some((outcome, code, message)) if outcome == AttemptOutcome::Failed.as_str() => NotFound::RefusalFinal {
            code: code.unwrap_or_else(|| "FAILED".into()),
            message: message.unwrap_or_default(),
        },
        _ => NotFound::SendAgain,
    }
}

fn call_error_outcome<T>(e: CallError) -> Outcome<T> {
    match e {
        // A request WeChat would refuse: nothing was sent, and it never could be.
        CallError::InvalidRequest(m) => Outcome::failed("INVALID_REQUEST", m),
        // No client certificate configured: nothing was sent; retried once configured.
        CallError::NoIdentity(_) => Outcome::unknown(e.to_string()),
    }
}

static CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "minipay_payout_calls_total",
        "WeChat calls made by the payout and red-packet sender, by endpoint and outcome",
        &["endpoint", "outcome"]
    )
    .expect("register minipay_payout_calls_total")
});

/// The attempt row's outcome fields for an answer; counts the call in the metrics.
fn outcome_parts<'a, T>(endpoint: &str, o: &'a Outcome<T>) -> (AttemptOutcome, Option<&'a str>, Option<&'a str>) {
    let parts: (AttemptOutcome, Option<&str>, Option<&str>) = match o {
        Outcome::Success(_) => (AttemptOutcome::Success, None, None),
        Outcome::Failed { code, message } => (AttemptOutcome::Failed, Some(code), Some(message)),
        Outcome::Unknown { reason } => (AttemptOutcome::Unknown, None, Some(reason)),
    };
    CALLS.with_label_values(&[endpoint, parts.0.as_str()]).inc();
    parts
}

/// The sender's timing from `[payouts]`. The lease is at least twice the WeChat timeout:
/// a live call must never look abandoned.
pub fn sender_config(cfg: &minipay_config::Config) -> SenderConfig {
    let p = &cfg.payouts;
    SenderConfig {
        lease: Duration::from_millis(p.lease_ms).max(cfg.wechat.timeout.saturating_mul(2)),
        retry_initial: Duration::from_millis(p.retry_initial_ms),
        retry_max: Duration::from_millis(p.retry_max_ms),
        redpack_followup: Duration::from_millis(p.redpack_followup_ms),
    }
}

impl PayoutSender {
    /// `clients`: one WeChat client per appid (payouts and packets name their appid).
    pub fn new(pool: PgPool, clients: HashMap<String, Client>, cfg: SenderConfig) -> PayoutSender {
        PayoutSender { pool, clients, cfg }
    }

    /// A sender with one client per configured app and the `[payouts]` timing.
    pub fn from_config(
        config: &minipay_config::Config,
        pool: PgPool,
    ) -> Result<PayoutSender, minipay_config::ConfigError> {
        let mut clients = HashMap::new();
        // v2 transfers and red packets need the merchant's v2 key; a v3 merchant without one
        // has no v2 payouts (its requests wait with "merchant not configured").
        let v2 = |mch_id: &str| config.merchant(mch_id).is_some_and(|m| m.api_key.is_some());
        for app in config.apps.iter().filter(|a| v2(&a.mch_id)) {
            clients.insert(app.appid.clone(), config.wxpay_client_for(&app.mch_id, &app.appid)?);
        }
        Ok(PayoutSender::new(pool, clients, sender_config(config)))
    }

    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    fn client(&self, appid: &str) -> Result<&Client, CallError> {
        // Reported like a missing certificate: nothing is sent, the request waits for a fix.
        self.clients.get(appid).ok_or(CallError::NoIdentity(wxpay::Endpoint::Transfers))
    }

    fn retry_at(&self, attempts: i32) -> DateTime<Utc> {
        Utc::now() + delay(backoff(&self.cfg, attempts))
    }

    /// Sends or resolves one payout. `Ok(None)`: nothing was due.
    pub async fn try_execute_payout(&self) -> Result<Option<Step>, SendError> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let Some(claimed) = payouts::claim_next(&mut tx, now, now + delay(self.cfg.lease)).await? else {
            return Ok(None);
        };
        let p = claimed.payout;
        let action = if claimed.from == PayoutStatus::Approved { Action::Send } else { Action::Query };
        let attempt = self.begin_payout_attempt(&mut tx, &p, action).await?;
        tx.commit().await?;
        tracing::info!(payout = p.id, partner_trade_no = %p.partner_trade_no, from = ?claimed.from, action = action.as_str(), "payout claimed");
        match action {
            Action::Send => self.send_transfer(&p, attempt).await?,
            Action::Query => self.resolve_transfer(&p, attempt).await?,
        }
        let status = payouts::get(&mut *self.pool.acquire().await?, p.id).await?.map(|x| x.status);
        Ok(Some(Step {
            subject: SubjectType::Payout,
            id: p.id,
            merchant_no: p.partner_trade_no.clone(),
            status: status.map(|s| minipay_store::domain::State::as_str(s).to_owned()).unwrap_or_default(),
        }))
    }

    async fn begin_payout_attempt(
        &self,
        conn: &mut sqlx::PgConnection,
        p: &Payout,
        action: Action,
    ) -> Result<i64, SendError> {
        let (endpoint, params) = match action {
            Action::Send => (TransferRequest::ENDPOINT.path(), transfer_request(p).to_params()),
            Action::Query => {
                let q = GetTransferInfoRequest { partner_trade_no: p.partner_trade_no.clone() };
                (GetTransferInfoRequest::ENDPOINT.path(), q.to_params())
            }
        };
        let a = NewAttempt {
            subject_type: SubjectType::Payout,
            subject_id: p.id,
            merchant_no: &p.partner_trade_no,
            action,
            endpoint,
            params: &params,
            actor: ACTOR,
        };
        Ok(payout_attempts::begin(conn, &a).await?)
    }

    async fn send_transfer(&self, p: &Payout, attempt: i64) -> Result<(), SendError> {
        let req = transfer_request(p);
        let answer = match self.client(&p.appid) {
            Ok(c) => Answer::of(c.transfer(&req).await),
            Err(e) => Answer::of(Err(e)),
        };
        let out = &answer.outcome;
        let mut tx = self.pool.begin().await?;
        let (kind, code, msg) = outcome_parts(TransferRequest::ENDPOINT.path(), out);
        payout_attempts::finish(&mut tx, attempt, kind, code, msg).await?;
        match out {
            Outcome::Success(r) => {
                payouts::settle_success(&mut tx, p.id, Some(&r.payment_no), r.payment_time, ACTOR).await?;
            }
            Outcome::Failed { code, message } if !answer.reached_wechat => {
                payouts::settle_failed(&mut tx, p.id, code, message, ACTOR).await?;
            }
            Outcome::Failed { code, message } => {
                let reason = refusal_reason(code, message);
                payouts::mark_unknown(&mut tx, p.id, &reason, self.retry_at(p.send_attempts)).await?;
            }
            Outcome::Unknown { reason } => {
                payouts::mark_unknown(&mut tx, p.id, reason, self.retry_at(p.send_attempts)).await?;
            }
        }
        tx.commit().await?;
        log_outcome("transfer", p.id, out);
        Ok(())
    }

    async fn resolve_transfer(&self, p: &Payout, attempt: i64) -> Result<(), SendError> {
        let q = GetTransferInfoRequest { partner_trade_no: p.partner_trade_no.clone() };
        let out = match self.client(&p.appid) {
            Ok(c) => c.get_transfer_info(&q).await.unwrap_or_else(call_error_outcome),
            Err(e) => call_error_outcome(e),
        };
        let mut tx = self.pool.begin().await?;
        let (kind, code, msg) = outcome_parts(GetTransferInfoRequest::ENDPOINT.path(), &out);
        payout_attempts::finish(&mut tx, attempt, kind, code, msg).await?;
        match out {
            Outcome::Success(info) if info.payment_amount != p.amount => {
                // Our number came back with another amount: never settle on it; a person looks.
                tracing::error!(payout = p.id, expected = %p.amount, got = %info.payment_amount, "gettransferinfo amount differs");
                let reason =
                    format!("gettransferinfo reports amount {} fen, ours is {} fen", info.payment_amount, p.amount);
                payouts::mark_unknown(&mut tx, p.id, &reason, self.retry_at(p.send_attempts)).await?;
            }
            Outcome::Success(info) => match info.status {
                TransferStatus::Success => {
                    let at = info.payment_time.or(info.transfer_time).unwrap_or_else(Utc::now);
                    payouts::settle_success(&mut tx, p.id, info.detail_id.as_deref(), at, ACTOR).await?;
                }
                TransferStatus::Failed => {
                    let reason = info.reason.as_deref().unwrap_or("gettransferinfo status FAILED");
                    payouts::settle_failed(&mut tx, p.id, "FAILED", reason, ACTOR).await?;
                }
                TransferStatus::Processing => {
                    payouts::mark_unknown(&mut tx, p.id, "WeChat is processing", self.retry_at(p.send_attempts))
                        .await?;
                }
            },
            Outcome::Failed { code, .. } if code == "NOT_FOUND" => {
                match not_found(payout_attempts::last_send(&mut tx, SubjectType::Payout, p.id).await?) {
                    NotFound::RefusalFinal { code, message } => {
                        payouts::settle_failed(&mut tx, p.id, &code, &message, ACTOR).await?;
                    }
                    NotFound::SendAgain => {
                        // WeChat never took this number: sending it now is the first transfer —
                        // if this sender still holds the request.
                        let now = Utc::now();
                        let lease = now + delay(self.cfg.lease);
                        if !payout_attempts::renew_lease(
                            &mut tx,
                            SubjectType::Payout,
                            p.id,
                            p.send_attempts,
                            now,
                            lease,
                        )
                        .await?
                        {
                            tx.commit().await?;
                            tracing::warn!(payout = p.id, "claim lost before the re-send; another sender resolves it");
                            return Ok(());
                        }
                        let send = self.begin_payout_attempt(&mut tx, p, Action::Send).await?;
                        tx.commit().await?;
                        tracing::info!(payout = p.id, "not found at WeChat; sending with the same number");
                        return self.send_transfer(p, send).await;
                    }
                }
            }
            Outcome::Failed { code, message } => {
                let reason = format!("gettransferinfo refused: {code}: {message}");
                payouts::mark_unknown(&mut tx, p.id, &reason, self.retry_at(p.send_attempts)).await?;
            }
            Outcome::Unknown { reason } => {
                payouts::mark_unknown(&mut tx, p.id, &reason, self.retry_at(p.send_attempts)).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sends or resolves one red packet. `Ok(None)`: nothing was due.
    pub async fn try_execute_redpack(&self) -> Result<Option<Step>, SendError> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let Some(claimed) = redpacks::claim_next(&mut tx, now, now + delay(self.cfg.lease)).await? else {
            return Ok(None);
        };
        let r = claimed.redpack;
        let action = if claimed.from == RedpackStatus::Approved { Action::Send } else { Action::Query };
        let attempt = self.begin_redpack_attempt(&mut tx, &r, action).await?;
        tx.commit().await?;
        tracing::info!(redpack = r.id, mch_billno = %r.mch_billno, from = ?claimed.from, action = action.as_str(), "red packet claimed");
        match action {
            Action::Send => self.send_redpack(&r, attempt).await?,
            Action::Query => self.query_redpack(&r, attempt, true, Utc::now()).await?,
        }
        Ok(Some(self.redpack_step(&r).await?))
    }

    /// Asks about one sent packet whose follow-up is due. `Ok(None)`: nothing was due.
    pub async fn try_execute_followup(&self) -> Result<Option<Step>, SendError> {
        let now = Utc::now();
        self.followup_at(now).await
    }

    /// As [`Self::try_execute_followup`] as if it were `now` (tests jump a day ahead).
    pub async fn followup_at(&self, now: DateTime<Utc>) -> Result<Option<Step>, SendError> {
        let mut tx = self.pool.begin().await?;
        let Some(r) = redpacks::claim_followup(&mut tx, now, now + delay(self.cfg.redpack_followup)).await? else {
            return Ok(None);
        };
        let attempt = self.begin_redpack_attempt(&mut tx, &r, Action::Query).await?;
        tx.commit().await?;
        self.query_redpack(&r, attempt, false, now).await?;
        Ok(Some(self.redpack_step(&r).await?))
    }

    async fn redpack_step(&self, r: &Redpack) -> Result<Step, SendError> {
        let now = redpacks::get(&mut *self.pool.acquire().await?, &r.mch_billno).await?;
        Ok(Step {
            subject: SubjectType::Redpack,
            id: r.id,
            merchant_no: r.mch_billno.clone(),
            status: now.map(|x| minipay_store::domain::State::as_str(x.status).to_owned()).unwrap_or_default(),
        })
    }

    async fn begin_redpack_attempt(
        &self,
        conn: &mut sqlx::PgConnection,
        r: &Redpack,
        action: Action,
    ) -> Result<i64, SendError> {
        let (endpoint, params) = match action {
            Action::Send => {
                let call = RedpackCall::for_packet(r);
                (call.endpoint(), call.params())
            }
            Action::Query => {
                let q = GetHbInfoRequest { mch_billno: r.mch_billno.clone() };
                (GetHbInfoRequest::ENDPOINT.path(), q.to_params())
            }
        };
        let a = NewAttempt {
            subject_type: SubjectType::Redpack,
            subject_id: r.id,
            merchant_no: &r.mch_billno,
            action,
            endpoint,
            params: &params,
            actor: ACTOR,
        };
        Ok(payout_attempts::begin(conn, &a).await?)
    }

    async fn call_send(&self, r: &Redpack) -> Answer<(String, Option<String>)> {
        let client = match self.client(&r.appid) {
            Ok(c) => c,
            Err(e) => return Answer::of(Err(e)),
        };
        Answer::of(match RedpackCall::for_packet(r) {
            RedpackCall::Normal(req) => client.send_redpack(&req).await.map(|o| o.map(|a| (a.send_listid, None))),
            RedpackCall::Group(req) => client.send_group_redpack(&req).await.map(|o| o.map(|a| (a.send_listid, None))),
            RedpackCall::MiniProgram(req) => {
                client.send_mini_program_hb(&req).await.map(|o| o.map(|a| (a.send_listid, Some(a.package))))
            }
        })
    }

    async fn send_redpack(&self, r: &Redpack, attempt: i64) -> Result<(), SendError> {
        let answer = self.call_send(r).await;
        let out: &SendAnswer = &answer.outcome;
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let (kind, code, msg) = outcome_parts(RedpackCall::for_packet(r).endpoint(), out);
        payout_attempts::finish(&mut tx, attempt, kind, code, msg).await?;
        match out {
            Outcome::Success((listid, package)) => {
                let facts = HbFacts {
                    status: HbStatus::Sent,
                    send_listid: Some(listid),
                    package: package.as_deref(),
                    received_at: None,
                    refunded_at: None,
                    refund_amount: None,
                    reason: None,
                    now,
                    next_check: now + delay(self.cfg.redpack_followup),
                };
                redpacks::apply(&mut tx, r.id, &facts, ACTOR).await?;
            }
            Outcome::Failed { code, message } if !answer.reached_wechat => {
                redpacks::settle_failed(&mut tx, r.id, code, message, ACTOR).await?;
            }
            Outcome::Failed { code, message } => {
                let reason = refusal_reason(code, message);
                redpacks::mark_unknown(&mut tx, r.id, &reason, self.retry_at(r.send_attempts)).await?;
            }
            Outcome::Unknown { reason } => {
                redpacks::mark_unknown(&mut tx, r.id, reason, self.retry_at(r.send_attempts)).await?;
            }
        }
        tx.commit().await?;
        log_outcome("redpack send", r.id, out);
        Ok(())
    }

    /// Repeats the send of a mini-program packet that a query proved WeChat holds, to get
    /// the `package` only a send's answer carries (see the module docs). Whatever the
    /// answer, the packet's state does not change: WeChat's query already decided it; a
    /// refusal or no answer leaves the package for the next follow-up, asked sooner.
    async fn fetch_package(&self, r: &Redpack) -> Result<(), SendError> {
        let mut tx = self.pool.begin().await?;
        let attempt = self.begin_redpack_attempt(&mut tx, r, Action::Send).await?;
        tx.commit().await?;
        let answer = self.call_send(r).await;
        let out = &answer.outcome;
        let mut tx = self.pool.begin().await?;
        let (kind, code, msg) = outcome_parts(RedpackCall::for_packet(r).endpoint(), out);
        payout_attempts::finish(&mut tx, attempt, kind, code, msg).await?;
        match out {
            Outcome::Success((_, Some(package))) => redpacks::store_package(&mut tx, r.id, package).await?,
            _ => {
                tracing::warn!(redpack = r.id, "no package from the repeated send; the follow-up asks again");
                redpacks::followup_soon(&mut tx, r.id, self.retry_at(r.send_attempts)).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// `resolving`: the packet may not have been sent (claimed from unknown / stale
    /// sending); otherwise it is a follow-up of a sent packet.
    /// `now`: the time the next follow-up is counted from (tests pass a future time).
    async fn query_redpack(
        &self,
        r: &Redpack,
        attempt: i64,
        resolving: bool,
        now: DateTime<Utc>,
    ) -> Result<(), SendError> {
        let q = GetHbInfoRequest { mch_billno: r.mch_billno.clone() };
        let out = match self.client(&r.appid) {
            Ok(c) => c.get_hb_info(&q).await.unwrap_or_else(call_error_outcome),
            Err(e) => call_error_outcome(e),
        };
        let mut tx = self.pool.begin().await?;
        let (kind, code, msg) = outcome_parts(GetHbInfoRequest::ENDPOINT.path(), &out);
        payout_attempts::finish(&mut tx, attempt, kind, code, msg).await?;
        let mut needs_package = false;
        match out {
            Outcome::Success(info) if info.total_amount != r.total_amount => {
                tracing::error!(redpack = r.id, expected = %r.total_amount, got = %info.total_amount, "gethbinfo amount differs");
                if resolving {
                    let reason =
                        format!("gethbinfo reports amount {} fen, ours is {} fen", info.total_amount, r.total_amount);
                    redpacks::mark_unknown(&mut tx, r.id, &reason, self.retry_at(r.send_attempts)).await?;
                }
            }
            Outcome::Success(info) => {
                let facts = hb_facts(&info, now, now + delay(self.cfg.redpack_followup));
                let facts = HbFacts {
                    // Still SENDING at WeChat: ask again on the retry schedule.
                    next_check: if info.status == HbStatus::Sending {
                        self.retry_at(r.send_attempts)
                    } else {
                        facts.next_check
                    },
                    ..facts
                };
                redpacks::apply(&mut tx, r.id, &facts, ACTOR).await?;
                needs_package = r.kind == RedpackKind::MiniProgram
                    && matches!(info.status, HbStatus::Sent)
                    && redpacks::get(&mut tx, &r.mch_billno).await?.is_some_and(|x| x.package.is_none());
            }
            Outcome::Failed { code, .. } if code == "NOT_FOUND" && resolving => {
                match not_found(payout_attempts::last_send(&mut tx, SubjectType::Redpack, r.id).await?) {
                    NotFound::RefusalFinal { code, message } => {
                        redpacks::settle_failed(&mut tx, r.id, &code, &message, ACTOR).await?;
                    }
                    NotFound::SendAgain => {
                        let now = Utc::now();
                        let lease = now + delay(self.cfg.lease);
                        if !payout_attempts::renew_lease(
                            &mut tx,
                            SubjectType::Redpack,
                            r.id,
                            r.send_attempts,
                            now,
                            lease,
                        )
                        .await?
                        {
                            tx.commit().await?;
                            tracing::warn!(redpack = r.id, "claim lost before the re-send; another sender resolves it");
                            return Ok(());
                        }
                        let send = self.begin_redpack_attempt(&mut tx, r, Action::Send).await?;
                        tx.commit().await?;
                        tracing::info!(redpack = r.id, "not found at WeChat; sending with the same number");
                        return self.send_redpack(r, send).await;
                    }
                }
            }
            Outcome::Failed { code, message } if resolving => {
                let reason = format!("gethbinfo refused: {code}: {message}");
                redpacks::mark_unknown(&mut tx, r.id, &reason, self.retry_at(r.send_attempts)).await?;
            }
            Outcome::Unknown { reason } if resolving => {
                redpacks::mark_unknown(&mut tx, r.id, &reason, self.retry_at(r.send_attempts)).await?;
            }
            // A follow-up that got no answer: the next check is already scheduled.
            Outcome::Failed { .. } | Outcome::Unknown { .. } => {}
        }
        tx.commit().await?;
        if needs_package {
            self.fetch_package(r).await?;
        }
        Ok(())
    }

    /// Runs steps until nothing is due (or `max_steps`): payouts, then red packets, then
    /// red-packet follow-ups. Returns every step taken.
    pub async fn run_until_idle(&self, max_steps: usize) -> Result<Vec<Step>, SendError> {
        let mut steps = Vec::new();
        while steps.len() < max_steps {
            if let Some(s) = self.try_execute_payout().await? {
                steps.push(s);
                continue;
            }
            if let Some(s) = self.try_execute_redpack().await? {
                steps.push(s);
                continue;
            }
            if let Some(s) = self.try_execute_followup().await? {
                steps.push(s);
                continue;
            }
            break;
        }
        Ok(steps)
    }

    /// Registers the sender on the worker: every `every`, run until idle.
    pub fn register(self, worker: &mut Worker, every: Duration) {
        let sender = std::sync::Arc::new(self);
        worker.add_job("payouts", Schedule::Every(every), move |_ctx| {
            let sender = sender.clone();
            async move {
                sender.run_until_idle(500).await?;
                Ok(())
            }
        });
    }
}

/// The store's facts from a gethbinfo answer.
fn hb_facts(info: &GetHbInfoResponse, now: DateTime<Utc>, next_check: DateTime<Utc>) -> HbFacts<'_> {
    let received_at = info.hblist.iter().filter_map(|h| h.rcv_time.as_deref().and_then(parse_wechat_time)).max();
    HbFacts {
        status: info.status,
        send_listid: info.detail_id.as_deref(),
        package: None,
        received_at,
        refunded_at: info.refund_time.as_deref().and_then(parse_wechat_time),
        refund_amount: info.refund_amount.filter(|a| a.is_positive()),
        reason: info.reason.as_deref(),
        now,
        next_check,
    }
}

fn log_outcome<T>(what: &str, id: i64, o: &Outcome<T>) {
    match o {
        Outcome::Success(_) => tracing::info!(id, "{what}: success"),
        Outcome::Failed { code, message } => tracing::warn!(id, code = %code, message = %message, "{what}: failed"),
        Outcome::Unknown { reason } => tracing::warn!(id, reason = %reason, "{what}: outcome unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cfg = SenderConfig {
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(60),
            ..SenderConfig::default()
        };
        assert_eq!(backoff(&cfg, 1), Duration::from_secs(5));
        assert_eq!(backoff(&cfg, 2), Duration::from_secs(10));
        assert_eq!(backoff(&cfg, 4), Duration::from_secs(40));
        assert_eq!(backoff(&cfg, 5), Duration::from_secs(60));
        assert_eq!(backoff(&cfg, 500), Duration::from_secs(60));
    }

    #[test]
    fn call_errors_never_claim_a_send() {
        let o: Outcome<()> = call_error_outcome(CallError::InvalidRequest("x".into()));
        assert_eq!(o.failed_code(), Some("INVALID_REQUEST"));
        let o: Outcome<()> = call_error_outcome(CallError::NoIdentity(wxpay::Endpoint::Transfers));
        assert!(o.is_unknown());
    }

    #[test]
    fn every_scene_id_maps() {
        for n in 1..=8 {
            assert!(scene(Some(&format!("PRODUCT_{n}"))).is_some());
        }
        assert!(scene(Some("PRODUCT_9")).is_none());
        assert!(scene(None).is_none());
    }
}
