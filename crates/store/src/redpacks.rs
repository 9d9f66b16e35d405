//! Cash red packets: normal (`sendredpack`), group (`sendgroupredpack`) and mini-program
//! (`sendminiprogramhb`, opened with `wx.sendBizRedPacket`).
//!
//! As with payouts, `mch_billno` — `mch_id` + `yyyymmdd` + 10 digits, WeChat's own format —
//! and every parameter sent are fixed at creation; `sending` is committed before each call.
//! Once WeChat has the packet its state follows `gethbinfo`: `sent` → `received`, or
//! `refunded` when nobody opened it within 24 h (the money returns to the merchant and is
//! posted back in the ledger).

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;
use wxpay::api::RedpackStatus as HbStatus;

use crate::domain::{OpenId, State, check_transition, mask};
use crate::ledger::{self, Kind, Movement};
use crate::payout_limits::{self, Holding, Limits, Product, RuleViolation, shanghai_day};
use crate::payouts::{PayoutError, Settled, client_actor};
use crate::sendable::{self, Table};
use crate::{Fen, StoreError, audit, webhooks};

/// Which WeChat call sends the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedpackKind {
    Normal,
    Group,
    MiniProgram,
}

impl RedpackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RedpackKind::Normal => "normal",
            RedpackKind::Group => "group",
            RedpackKind::MiniProgram => "mini_program",
        }
    }

    pub fn parse(s: &str) -> Option<RedpackKind> {
        Some(match s {
            "normal" => RedpackKind::Normal,
            "group" => RedpackKind::Group,
            "mini_program" => RedpackKind::MiniProgram,
            _ => return None,
        })
    }
}

/// A red packet's life: `PendingApproval → Approved | Rejected`, `Approved → Sending`,
/// `Sending | Unknown → Sending | Unknown | Sent | Received | Refunded | Failed`,
/// `Sent → Received | Refunded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedpackStatus {
    PendingApproval,
    Approved,
    Rejected,
    Sending,
    Unknown,
    Sent,
    Received,
    Refunded,
    Failed,
}

impl State for RedpackStatus {
    const ENTITY: &'static str = "redpack";

    fn as_str(self) -> &'static str {
        match self {
            RedpackStatus::PendingApproval => "pending_approval",
            RedpackStatus::Approved => "approved",
            RedpackStatus::Rejected => "rejected",
            RedpackStatus::Sending => "sending",
            RedpackStatus::Unknown => "unknown",
            RedpackStatus::Sent => "sent",
            RedpackStatus::Received => "received",
            RedpackStatus::Refunded => "refunded",
            RedpackStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<RedpackStatus> {
        Some(match s {
            "pending_approval" => RedpackStatus::PendingApproval,
            "approved" => RedpackStatus::Approved,
            "rejected" => RedpackStatus::Rejected,
            "sending" => RedpackStatus::Sending,
            "unknown" => RedpackStatus::Unknown,
            "sent" => RedpackStatus::Sent,
            "received" => RedpackStatus::Received,
            "refunded" => RedpackStatus::Refunded,
            "failed" => RedpackStatus::Failed,
            _ => return None,
        })
    }

    fn can_become(self, next: RedpackStatus) -> bool {
        use RedpackStatus::*;
        match self {
            PendingApproval => matches!(next, Approved | Rejected),
            Approved => matches!(next, Sending),
            Sending | Unknown => matches!(next, Sending | Unknown | Sent | Received | Refunded | Failed),
            Sent => matches!(next, Received | Refunded),
            Rejected | Received | Refunded | Failed => false,
        }
    }
}

impl RedpackStatus {
    /// WeChat holds the packet: the money has left the merchant balance.
    pub fn is_delivered(self) -> bool {
        matches!(self, RedpackStatus::Sent | RedpackStatus::Received | RedpackStatus::Refunded)
    }
}

/// Configured red-packet rules on top of the shared [`Limits`] (which apply to a packet's
/// total amount).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedpackRules {
    pub limits: Limits,
    /// Per packet (a group packet's average): WeChat's 1 yuan.
    pub min_per_packet: Fen,
    /// Per packet without a scene_id: WeChat's 200 yuan.
    pub max_per_packet: Fen,
    pub group_min_num: i32,
    pub group_max_num: i32,
}

/// A stored red packet. `Debug` masks the openid.
#[derive(Clone, Serialize)]
pub struct Redpack {
    pub id: i64,
    pub mch_billno: String,
    pub mch_id: String,
    pub appid: String,
    pub kind: RedpackKind,
    pub re_openid: String,
    pub total_amount: Fen,
    pub total_num: i32,
    pub send_name: String,
    pub wishing: String,
    pub act_name: String,
    pub remark: String,
    pub scene_id: Option<String>,
    #[serde(skip)]
    pub client_ip: Option<String>,
    pub status: RedpackStatus,
    pub limit_day: NaiveDate,
    pub created_by: Uuid,
    /// The client backend whose mini-program opens the packet: the only `client` key that
    /// may read it (staff read all). `None`: staff only.
    pub owner_client_id: Option<Uuid>,
    pub approved_by: Option<Uuid>,
    pub approved_at: Option<DateTime<Utc>>,
    pub rejected_by: Option<Uuid>,
    pub rejected_at: Option<DateTime<Utc>>,
    pub reject_reason: Option<String>,
    pub send_attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub send_listid: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    /// sendminiprogramhb's package; the API turns it into `wx.sendBizRedPacket` parameters.
    #[serde(skip)]
    pub package: Option<String>,
    pub received_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
    pub refund_amount: Option<Fen>,
    pub wechat_status: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for Redpack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redpack")
            .field("id", &self.id)
            .field("mch_billno", &self.mch_billno)
            .field("kind", &self.kind)
            .field("re_openid", &mask(&self.re_openid))
            .field("total_amount", &self.total_amount)
            .field("status", &self.status)
            .field("send_listid", &self.send_listid)
            .field("failure_code", &self.failure_code)
            .finish_non_exhaustive()
    }
}

impl Redpack {
    fn from_row(r: &PgRow) -> Result<Redpack, sqlx::Error> {
        let status: String = r.try_get("status")?;
        let kind: String = r.try_get("kind")?;
        let bad = |what: &str, v: &str| sqlx::Error::Decode(format!("unknown red packet {what} {v:?}").into());
        Ok(Redpack {
            id: r.try_get("id")?,
            mch_billno: r.try_get("mch_billno")?,
            mch_id: r.try_get("mch_id")?,
            appid: r.try_get("appid")?,
            kind: RedpackKind::parse(&kind).ok_or_else(|| bad("kind", &kind))?,
            re_openid: r.try_get("re_openid")?,
            total_amount: Fen::new(r.try_get("total_amount")?),
            total_num: r.try_get("total_num")?,
            send_name: r.try_get("send_name")?,
            wishing: r.try_get("wishing")?,
            act_name: r.try_get("act_name")?,
            remark: r.try_get("remark")?,
            scene_id: r.try_get("scene_id")?,
            client_ip: r.try_get("client_ip")?,
            status: RedpackStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
            limit_day: r.try_get("limit_day")?,
            created_by: r.try_get("created_by")?,
            owner_client_id: r.try_get("owner_client_id")?,
            approved_by: r.try_get("approved_by")?,
            approved_at: r.try_get("approved_at")?,
            rejected_by: r.try_get("rejected_by")?,
            rejected_at: r.try_get("rejected_at")?,
            reject_reason: r.try_get("reject_reason")?,
            send_attempts: r.try_get("send_attempts")?,
            next_attempt_at: r.try_get("next_attempt_at")?,
            last_error: r.try_get("last_error")?,
            send_listid: r.try_get("send_listid")?,
            sent_at: r.try_get("sent_at")?,
            package: r.try_get("package")?,
            received_at: r.try_get("received_at")?,
            refunded_at: r.try_get("refunded_at")?,
            refund_amount: r.try_get::<Option<i64>, _>("refund_amount")?.map(Fen::new),
            wechat_status: r.try_get("wechat_status")?,
            failure_code: r.try_get("failure_code")?,
            failure_message: r.try_get("failure_message")?,
            finished_at: r.try_get("finished_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }

    /// Whether `new` asks for exactly this packet (a retry of the request that created it).
    fn is_same_request(&self, new: &NewRedpack<'_>) -> bool {
        let client_ip = if new.kind == RedpackKind::Normal { new.client_ip } else { None };
        self.mch_id == new.mch_id
            && self.appid == new.appid
            && self.kind == new.kind
            && self.re_openid == new.re_openid.as_str()
            && self.total_amount == new.total_amount
            && self.total_num == new.total_num
            && self.send_name == new.send_name
            && self.wishing == new.wishing
            && self.act_name == new.act_name
            && self.remark == new.remark
            && self.scene_id.as_deref() == new.scene_id
            && self.client_ip.as_deref() == client_ip
            && self.owner_client_id == new.owner_client_id
    }

    pub fn holding(&self) -> Holding<'_> {
        Holding {
            product: Product::Redpack,
            mch_id: &self.mch_id,
            openid: &self.re_openid,
            day: self.limit_day,
            amount: self.total_amount,
        }
    }

    pub fn event_payload(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|_| json!({ "id": self.id }))
    }
}

/// A red packet as requested by finance.
#[derive(Clone)]
pub struct NewRedpack<'a> {
    pub mch_id: &'a str,
    pub appid: &'a str,
    pub kind: RedpackKind,
    pub re_openid: &'a OpenId,
    pub total_amount: Fen,
    /// 1 for normal and mini-program packets.
    pub total_num: i32,
    pub send_name: &'a str,
    pub wishing: &'a str,
    pub act_name: &'a str,
    pub remark: &'a str,
    /// `PRODUCT_1` … `PRODUCT_8`.
    pub scene_id: Option<&'a str>,
    /// Normal packets only: the calling machine's IP, as WeChat asks.
    pub client_ip: Option<&'a str>,
    pub created_by: Uuid,
    /// The request's `Idempotency-Key`: the packet it creates is the key's forever.
    pub request_key: Option<&'a str>,
    /// The client backend that may read the packet (see [`Redpack::owner_client_id`]);
    /// checked by the caller to be an enabled `client` key.
    pub owner_client_id: Option<Uuid>,
}

fn text_rule(field: &'static str, v: &str, max: usize) -> Result<(), RuleViolation> {
    if v.trim().is_empty() || v.chars().count() > max {
        return Err(RuleViolation::new("invalid_text", format!("{field} must be 1 to {max} characters")));
    }
    Ok(())
}

/// Rules that need no database: total range, WeChat's per-packet range (unless a scene_id
/// is given), group size, text lengths.
pub fn validate(new: &NewRedpack<'_>, rules: &RedpackRules) -> Result<(), RuleViolation> {
    payout_limits::check_amount(&rules.limits, new.total_amount)?;
    match new.kind {
        RedpackKind::Group if new.total_num < rules.group_min_num.max(3) || new.total_num > rules.group_max_num => {
            return Err(RuleViolation::new(
                "invalid_total_num",
                format!(
                    "a group red packet is shared by {} to {} people",
                    rules.group_min_num.max(3),
                    rules.group_max_num
                ),
            ));
        }
        RedpackKind::Normal | RedpackKind::MiniProgram if new.total_num != 1 => {
            return Err(RuleViolation::new(
                "invalid_total_num",
                "normal and mini-program red packets have total_num 1",
            ));
        }
        RedpackKind::Normal | RedpackKind::MiniProgram | RedpackKind::Group => {}
    }
    let n = i64::from(new.total_num);
    let total = new.total_amount.get();
    if total < rules.min_per_packet.get().saturating_mul(n) {
        return Err(RuleViolation::new(
            "redpack_amount_out_of_range",
            format!("each packet must hold at least {} fen", rules.min_per_packet),
        ));
    }
    if new.scene_id.is_none() && total > rules.max_per_packet.get().saturating_mul(n) {
        return Err(RuleViolation::new(
            "redpack_amount_out_of_range",
            format!("each packet may hold at most {} fen unless a scene_id is given", rules.max_per_packet),
        ));
    }
    if let Some(s) = new.scene_id {
        let ok = s.len() == 9 && s.starts_with("PRODUCT_") && matches!(s.as_bytes()[8], b'1'..=b'8');
        if !ok {
            return Err(RuleViolation::new("invalid_scene_id", "scene_id is PRODUCT_1 to PRODUCT_8"));
        }
    }
    text_rule("send_name", new.send_name, 32)?;
    text_rule("wishing", new.wishing, 128)?;
    text_rule("act_name", new.act_name, 32)?;
    text_rule("remark", new.remark, 256)?;
    if new.kind == RedpackKind::Normal && new.client_ip.is_none() {
        return Err(RuleViolation::new("client_ip_required", "a normal red packet needs client_ip"));
    }
    Ok(())
}

/// A fresh mch_billno in WeChat's format: mch_id + yyyymmdd (Asia/Shanghai) + 10 digits
/// from a database sequence (unique within a day, as WeChat requires).
pub async fn next_mch_billno(conn: &mut PgConnection, mch_id: &str, now: DateTime<Utc>) -> Result<String, StoreError> {
    let (seq,): (i64,) = sqlx::query_as("SELECT nextval('redpack_number_seq')").fetch_one(conn).await?;
    let no = format!("{mch_id}{}{:010}", shanghai_day(now).format("%Y%m%d"), seq % 10_000_000_000);
    if no.len() > 28 {
        return Err(StoreError::Conflict(format!("mch_id {mch_id} is too long for a 28-character mch_billno")));
    }
    Ok(no)
}

/// Creates a red packet request: rules, limit counters, row and audit line.
pub async fn create(
    conn: &mut PgConnection,
    new: &NewRedpack<'_>,
    rules: &RedpackRules,
    now: DateTime<Utc>,
) -> Result<Redpack, PayoutError> {
    validate(new, rules)?;
    if let Some(key) = new.request_key {
        if let Some(row) = sendable::find_by_request_key(conn, Table::Redpacks, new.created_by, key).await? {
            let r = Redpack::from_row(&row)?;
            return if r.is_same_request(new) {
                Ok(r)
            } else {
                Err(PayoutError::KeyReused(format!("red packet {}", r.mch_billno)))
            };
        }
    }
    let day = shanghai_day(now);
    let holding = Holding {
        product: Product::Redpack,
        mch_id: new.mch_id,
        openid: new.re_openid.as_str(),
        day,
        amount: new.total_amount,
    };
    payout_limits::reserve(conn, &holding, &rules.limits).await?;
    let auto = new.total_amount <= rules.limits.approval_threshold
        && sendable::within_auto_approval_ceiling(
            conn,
            Table::Redpacks,
            new.created_by,
            day,
            new.total_amount,
            rules.limits.auto_approve_daily_per_maker,
        )
        .await?;
    let status = if auto { RedpackStatus::Approved } else { RedpackStatus::PendingApproval };
    let billno = next_mch_billno(conn, new.mch_id, now).await?;
    let row = sqlx::query(
        "INSERT INTO redpacks (mch_billno, mch_id, appid, kind, re_openid, total_amount, total_num, send_name, wishing,
                               act_name, remark, scene_id, client_ip, status, limit_day, created_by, next_attempt_at,
                               request_key, owner_client_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                 CASE WHEN $14 = 'approved' THEN $17::timestamptz END, $18, $19)
         RETURNING *",
    )
    .bind(&billno)
    .bind(new.mch_id)
    .bind(new.appid)
    .bind(new.kind.as_str())
    .bind(new.re_openid.as_str())
    .bind(new.total_amount.get())
    .bind(new.total_num)
    .bind(new.send_name)
    .bind(new.wishing)
    .bind(new.act_name)
    .bind(new.remark)
    .bind(new.scene_id)
    .bind(if new.kind == RedpackKind::Normal { new.client_ip } else { None })
    .bind(status.as_str())
    .bind(day)
    .bind(new.created_by)
    .bind(now)
    .bind(new.request_key)
    .bind(new.owner_client_id)
    .fetch_one(&mut *conn)
    .await?;
    let r = Redpack::from_row(&row)?;
    audit::record(
        conn,
        &client_actor(new.created_by),
        "redpack.requested",
        "redpack",
        &r.mch_billno,
        json!({ "kind": r.kind, "total_amount": r.total_amount, "total_num": r.total_num,
                "re_openid": mask(&r.re_openid), "status": r.status, "owner_client_id": r.owner_client_id }),
    )
    .await?;
    Ok(r)
}

async fn lock(conn: &mut PgConnection, mch_billno: &str) -> Result<Redpack, PayoutError> {
    let row = sqlx::query("SELECT * FROM redpacks WHERE mch_billno = $1 FOR UPDATE")
        .bind(mch_billno)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| PayoutError::NotFound(format!("red packet {mch_billno}")))?;
    Ok(Redpack::from_row(&row)?)
}

async fn lock_id(conn: &mut PgConnection, id: i64) -> Result<Redpack, PayoutError> {
    Ok(Redpack::from_row(&sendable::lock(conn, Table::Redpacks, id).await?)?)
}

/// Approves a pending packet: another key than the creator's; limits checked again.
pub async fn approve(
    conn: &mut PgConnection,
    mch_billno: &str,
    approver: Uuid,
    rules: &RedpackRules,
    now: DateTime<Utc>,
) -> Result<Redpack, PayoutError> {
    let r = lock(conn, mch_billno).await?;
    sendable::check_decider(approver, r.created_by, r.status.as_str(), "approve")?;
    let row = sendable::approve(conn, Table::Redpacks, r.id, &r.holding(), approver, &rules.limits, now).await?;
    audit::record(conn, &client_actor(approver), "redpack.approved", "redpack", mch_billno, json!({})).await?;
    Ok(Redpack::from_row(&row)?)
}

/// Rejects a pending packet and gives its amount back to the counters.
pub async fn reject(
    conn: &mut PgConnection,
    mch_billno: &str,
    approver: Uuid,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Redpack, PayoutError> {
    let r = lock(conn, mch_billno).await?;
    sendable::check_decider(approver, r.created_by, r.status.as_str(), "reject")?;
    let row = sendable::reject(conn, Table::Redpacks, r.id, &r.holding(), approver, reason, now).await?;
    audit::record(
        conn,
        &client_actor(approver),
        "redpack.rejected",
        "redpack",
        mch_billno,
        json!({ "reason": reason }),
    )
    .await?;
    Ok(Redpack::from_row(&row)?)
}

pub async fn get(conn: &mut PgConnection, mch_billno: &str) -> Result<Option<Redpack>, StoreError> {
    let row = sqlx::query("SELECT * FROM redpacks WHERE mch_billno = $1").bind(mch_billno).fetch_optional(conn).await?;
    Ok(row.map(|r| Redpack::from_row(&r)).transpose()?)
}

/// Filters for finance's listing; `date` is the Asia/Shanghai day of creation.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub status: Option<RedpackStatus>,
    pub kind: Option<RedpackKind>,
    pub date: Option<NaiveDate>,
    pub openid: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Newest first.
pub async fn list(conn: &mut PgConnection, f: &ListFilter) -> Result<Vec<Redpack>, StoreError> {
    let rows = sqlx::query(
        "SELECT * FROM redpacks
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::date IS NULL OR (created_at AT TIME ZONE 'Asia/Shanghai')::date = $3)
           AND ($4::text IS NULL OR re_openid = $4)
           AND ($5::bigint IS NULL OR id < $5)
         ORDER BY id DESC LIMIT $6",
    )
    .bind(f.status.map(|s| s.as_str()))
    .bind(f.kind.map(|k| k.as_str()))
    .bind(f.date)
    .bind(f.openid.as_deref())
    .bind(f.before_id)
    .bind(f.limit.clamp(1, 500))
    .fetch_all(conn)
    .await?;
    Ok(rows.iter().map(Redpack::from_row).collect::<Result<_, _>>()?)
}

/// A packet claimed by a sender and the state it was claimed from (`Approved`: never
/// sent; `Unknown` / `Sending`: may have been sent).
#[derive(Debug)]
pub struct Claimed {
    pub redpack: Redpack,
    pub from: RedpackStatus,
}

/// Claims the next packet that needs a send or a resolution; see
/// [`crate::payouts::claim_next`].
pub async fn claim_next(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<Claimed>, StoreError> {
    let claimed = sendable::claim_next(conn, Table::Redpacks, RedpackStatus::Sending, now, lease_until).await?;
    let Some((row, from)) = claimed else { return Ok(None) };
    Ok(Some(Claimed { redpack: Redpack::from_row(&row)?, from }))
}

/// Claims the next `sent` packet whose follow-up query is due and pushes its next check to
/// `next_check` (which also keeps other workers off it meanwhile).
pub async fn claim_followup(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    next_check: DateTime<Utc>,
) -> Result<Option<Redpack>, StoreError> {
    let row = sqlx::query(
        "UPDATE redpacks SET next_attempt_at = $2
         WHERE id = (SELECT id FROM redpacks WHERE status = 'sent' AND next_attempt_at <= $1
                     ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING *",
    )
    .bind(now)
    .bind(next_check)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Redpack::from_row(&r)).transpose()?)
}

/// Stores the `package` of a mini-program packet WeChat holds (from a repeated send with
/// the same mch_billno, after a query proved the packet exists). The first one stays.
pub async fn store_package(conn: &mut PgConnection, id: i64, package: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE redpacks SET package = coalesce(package, $2) WHERE id = $1")
        .bind(id)
        .bind(package)
        .execute(conn)
        .await?;
    Ok(())
}

/// Asks about a sent packet again at `at` (sooner than its scheduled follow-up): a
/// mini-program packet whose package could not be fetched yet.
pub async fn followup_soon(conn: &mut PgConnection, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("UPDATE redpacks SET next_attempt_at = least(next_attempt_at, $2) WHERE id = $1 AND status = 'sent'")
        .bind(id)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// What WeChat says about a packet, from a send answer or from gethbinfo.
#[derive(Clone, Debug)]
pub struct HbFacts<'a> {
    pub status: HbStatus,
    pub send_listid: Option<&'a str>,
    /// Mini-program packets: the package from sendminiprogramhb.
    pub package: Option<&'a str>,
    pub received_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
    pub refund_amount: Option<Fen>,
    pub reason: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// When to ask gethbinfo next while the packet is still `sent`.
    pub next_check: DateTime<Utc>,
}

fn target(status: HbStatus) -> Option<RedpackStatus> {
    match status {
        // WeChat is still sending: the outcome is not known yet.
        HbStatus::Sending => None,
        // RFUND_ING: unclaimed, the return is under way; still WeChat's until REFUND.
        HbStatus::Sent | HbStatus::RfundIng => Some(RedpackStatus::Sent),
        HbStatus::Received => Some(RedpackStatus::Received),
        HbStatus::Refund => Some(RedpackStatus::Refunded),
        HbStatus::Failed => Some(RedpackStatus::Failed),
    }
}

/// Applies WeChat's word on a packet: state, ledger (sent once, refunded once), webhook and
/// audit, all in the caller's transaction. `HbStatus::Sending` parks it as `unknown` (if it
/// was being sent) until `next_check`.
pub async fn apply(conn: &mut PgConnection, id: i64, f: &HbFacts<'_>, actor: &str) -> Result<Settled, PayoutError> {
    let r = lock_id(conn, id).await?;
    let Some(next) = target(f.status) else {
        return mark_unknown(conn, id, "WeChat is still sending (SENDING)", f.next_check).await;
    };
    if r.status == next {
        // Same state again (a follow-up query saying SENT): remember when to ask next.
        sqlx::query("UPDATE redpacks SET wechat_status = $2, next_attempt_at = $3 WHERE id = $1 AND status = 'sent'")
            .bind(id)
            .bind(f.status.as_str())
            .bind(f.next_check)
            .execute(&mut *conn)
            .await?;
        return Ok(Settled::AlreadyFinal);
    }
    // WeChat holds a packet we recorded failed (a late answer, a query after a refused
    // re-send): the money left, so it is recorded — counters, ledger, webhook — never
    // dropped, and an operator is told through an anomaly.
    let late = r.status == RedpackStatus::Failed && next != RedpackStatus::Failed;
    if late {
        payout_limits::hold_again(conn, &r.holding()).await?;
        sendable::record_paid_after_failed(
            conn,
            &r.mch_billno,
            &r.mch_id,
            format!(
                "WeChat reports red packet {} ({} fen) {} after we had recorded it failed with {}",
                r.mch_billno,
                r.total_amount,
                f.status.as_str(),
                r.failure_code.as_deref().unwrap_or("?")
            ),
            json!({ "redpack_id": r.id, "total_amount": r.total_amount, "send_listid": f.send_listid,
                    "failure_code": r.failure_code, "failure_message": r.failure_message }),
        )
        .await?;
    } else if !r.status.can_become(next) {
        if matches!(r.status, RedpackStatus::Received | RedpackStatus::Refunded | RedpackStatus::Failed) {
            return Ok(Settled::AlreadyFinal);
        }
        check_transition(r.status, next)?;
    }
    if next == RedpackStatus::Failed {
        return fail(conn, &r, "FAILED", f.reason.unwrap_or("gethbinfo status FAILED"), actor).await;
    }
    let sent_at = r.sent_at.unwrap_or(f.now);
    let finished = matches!(next, RedpackStatus::Received | RedpackStatus::Refunded);
    let refund_amount =
        if next == RedpackStatus::Refunded { Some(f.refund_amount.unwrap_or(r.total_amount)) } else { None };
    let row = sqlx::query(
        "UPDATE redpacks SET status = $2, wechat_status = $3,
                send_listid = coalesce(send_listid, $4), package = coalesce(package, $5), sent_at = coalesce(sent_at, $6),
                received_at = coalesce(received_at, $7), refunded_at = coalesce(refunded_at, $8),
                refund_amount = coalesce(refund_amount, $9), lease_until = NULL, last_error = NULL,
                next_attempt_at = CASE WHEN $10 THEN NULL ELSE $11 END,
                finished_at = CASE WHEN $10 THEN now() END
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(next.as_str())
    .bind(f.status.as_str())
    .bind(f.send_listid)
    .bind(f.package)
    .bind(sent_at)
    .bind(if next == RedpackStatus::Received { Some(f.received_at.unwrap_or(f.now)) } else { None })
    .bind(if next == RedpackStatus::Refunded { Some(f.refunded_at.unwrap_or(f.now)) } else { None })
    .bind(refund_amount.map(Fen::get))
    .bind(finished)
    .bind(f.next_check)
    .fetch_one(&mut *conn)
    .await?;
    let done = Redpack::from_row(&row)?;
    // The money left the merchant balance when WeChat took the packet, whatever came after.
    ledger::post(
        conn,
        &Movement::standard(Kind::RedPacketSent, &done.mch_billno, &done.mch_id, done.total_amount, sent_at),
    )
    .await?;
    if !r.status.is_delivered() {
        webhooks::enqueue(conn, done.created_by, "redpack.sent", &done.mch_billno, done.event_payload()).await?;
    }
    match next {
        RedpackStatus::Received => {
            webhooks::enqueue(conn, done.created_by, "redpack.received", &done.mch_billno, done.event_payload())
                .await?;
        }
        RedpackStatus::Refunded => {
            let amount = refund_amount.unwrap_or(done.total_amount);
            let at = done.refunded_at.unwrap_or(f.now);
            ledger::post(conn, &Movement::standard(Kind::RedPacketRefund, &done.mch_billno, &done.mch_id, amount, at))
                .await?;
            webhooks::enqueue(conn, done.created_by, "redpack.refunded", &done.mch_billno, done.event_payload())
                .await?;
        }
        _ => {}
    }
    audit::record(
        conn,
        actor,
        &format!("redpack.{}", next.as_str()),
        "redpack",
        &done.mch_billno,
        json!({ "from": r.status, "wechat_status": f.status.as_str(), "send_listid": done.send_listid }),
    )
    .await?;
    Ok(Settled::Changed)
}

async fn fail(
    conn: &mut PgConnection,
    r: &Redpack,
    code: &str,
    message: &str,
    actor: &str,
) -> Result<Settled, PayoutError> {
    check_transition(r.status, RedpackStatus::Failed)?;
    let row = sendable::fail(conn, Table::Redpacks, r.id, &r.holding(), code, message).await?;
    let done = Redpack::from_row(&row)?;
    webhooks::enqueue(conn, done.created_by, "redpack.failed", &done.mch_billno, done.event_payload()).await?;
    audit::record(
        conn,
        actor,
        "redpack.failed",
        "redpack",
        &done.mch_billno,
        json!({ "code": code, "message": message }),
    )
    .await?;
    Ok(Settled::Changed)
}

/// WeChat refused the send, finally: failed, limits given back, webhook, audit.
pub async fn settle_failed(
    conn: &mut PgConnection,
    id: i64,
    code: &str,
    message: &str,
    actor: &str,
) -> Result<Settled, PayoutError> {
    let r = lock_id(conn, id).await?;
    if r.status == RedpackStatus::Failed {
        return Ok(Settled::AlreadyFinal);
    }
    fail(conn, &r, code, message, actor).await
}

/// The call may or may not have sent the packet: park it until `next_attempt_at`.
pub async fn mark_unknown(
    conn: &mut PgConnection,
    id: i64,
    reason: &str,
    next_attempt_at: DateTime<Utc>,
) -> Result<Settled, PayoutError> {
    let r = lock_id(conn, id).await?;
    if !r.status.can_become(RedpackStatus::Unknown) {
        return Ok(Settled::AlreadyFinal);
    }
    sendable::park_unknown(conn, Table::Redpacks, id, reason, next_attempt_at).await?;
    Ok(Settled::Changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RedpackRules {
        RedpackRules {
            limits: Limits {
                min_amount: Fen::new(100),
                max_amount: Fen::new(2_000_000),
                approval_threshold: Fen::new(10_000),
                auto_approve_daily_per_maker: Fen::new(i64::MAX),
                openid_daily_amount: Fen::new(1_000_000),
                openid_daily_count: 10,
                merchant_daily_amount: Fen::new(10_000_000),
            },
            min_per_packet: Fen::new(100),
            max_per_packet: Fen::new(20_000),
            group_min_num: 3,
            group_max_num: 20,
        }
    }

    #[test]
    fn redpack_rules() {
        let o = OpenId::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").unwrap();
        let base = NewRedpack {
            mch_id: "1900000109",
            appid: "wx1",
            kind: RedpackKind::Normal,
            re_openid: &o,
            total_amount: Fen::new(20_000),
            total_num: 1,
            send_name: "shop",
            wishing: "thanks",
            act_name: "act",
            remark: "r",
            scene_id: None,
            client_ip: Some("127.0.0.1"),
            created_by: Uuid::nil(),
            request_key: None,
            owner_client_id: None,
        };
        assert!(validate(&base, &rules()).is_ok());
        let big = NewRedpack { total_amount: Fen::new(20_001), ..base.clone() };
        assert_eq!(validate(&big, &rules()).unwrap_err().code, "redpack_amount_out_of_range");
        let big_scene = NewRedpack { scene_id: Some("PRODUCT_3"), ..big };
        assert!(validate(&big_scene, &rules()).is_ok(), "scene_id lifts the 200 yuan cap");
        let group2 = NewRedpack { kind: RedpackKind::Group, total_num: 2, client_ip: None, ..base.clone() };
        assert_eq!(validate(&group2, &rules()).unwrap_err().code, "invalid_total_num");
        let group3 = NewRedpack { total_num: 3, total_amount: Fen::new(300), ..group2.clone() };
        assert!(validate(&group3, &rules()).is_ok());
        let group_thin = NewRedpack { total_amount: Fen::new(299), ..group3 };
        assert_eq!(validate(&group_thin, &rules()).unwrap_err().code, "redpack_amount_out_of_range");
        let no_ip = NewRedpack { client_ip: None, ..base };
        assert_eq!(validate(&no_ip, &rules()).unwrap_err().code, "client_ip_required");
    }

    #[test]
    fn transitions() {
        use RedpackStatus::*;
        assert!(Sending.can_become(Sent));
        assert!(Sent.can_become(Received));
        assert!(Sent.can_become(Refunded));
        assert!(!Sent.can_become(Failed), "a packet WeChat holds never fails afterwards");
        assert!(!Received.can_become(Refunded));
        assert!(!Approved.can_become(Sent));
        for s in [PendingApproval, Approved, Rejected, Sending, Unknown, Sent, Received, Refunded, Failed] {
            assert_eq!(RedpackStatus::parse(s.as_str()), Some(s));
        }
        for s in [
            HbStatus::Sending,
            HbStatus::Sent,
            HbStatus::Failed,
            HbStatus::Received,
            HbStatus::RfundIng,
            HbStatus::Refund,
        ] {
            if let Some(t) = target(s) {
                assert!(Unknown.can_become(t), "{s:?}");
            }
        }
    }
}
