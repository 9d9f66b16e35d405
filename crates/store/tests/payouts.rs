//! Payouts, batches and red packets in the store: numbers fixed at creation, maker-checker,
//! daily limits that hold under concurrency, exactly-once settlement with its ledger
//! posting, and the ledger balanced after every scenario.

use chrono::{Duration, TimeZone, Utc};
use minipay_store::Fen;
use minipay_store::batches::{self, BatchError, BatchOwner, BatchRow};
use minipay_store::domain::OpenId;
use minipay_store::ledger::{self, Kind};
use minipay_store::payout_limits::{self, Limits, Product, shanghai_day};
use minipay_store::payouts::{self, NewPayout, PayoutError, PayoutStatus, Settled};
use minipay_store::redpacks::{self, HbFacts, NewRedpack, RedpackKind, RedpackRules, RedpackStatus};
use minipay_testkit::TestDb;
use sqlx::PgPool;
use uuid::Uuid;
use wxpay::api::RedpackStatus as Hb;

const MCH: &str = "1900000109";
const APPID: &str = "wx2421b1c4370ec43b";

fn openid(n: u32) -> OpenId {
    OpenId::parse(format!("oUpF8uMuAJO_M2pxb1Q9zNjWe{n:03}")).unwrap()
}

fn limits() -> Limits {
    Limits {
        min_amount: Fen::new(100),
        max_amount: Fen::new(100_000),
        approval_threshold: Fen::new(5_000),
        auto_approve_daily_per_maker: Fen::new(i64::MAX),
        openid_daily_amount: Fen::new(20_000),
        openid_daily_count: 3,
        merchant_daily_amount: Fen::new(50_000),
    }
}

async fn key(pool: &PgPool, role: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO api_clients (id, name, role, key_hash, key_prefix) VALUES ($1, $2, $2, $3, 'k')")
        .bind(id)
        .bind(role)
        .bind(id.simple().to_string())
        .execute(pool)
        .await
        .unwrap();
    id
}

async fn setup() -> (TestDb, Uuid, Uuid) {
    let db = TestDb::new().await;
    sqlx::query("INSERT INTO apps (appid, mch_id) VALUES ($1, $2)")
        .bind(APPID)
        .bind(MCH)
        .execute(&db.pool)
        .await
        .unwrap();
    let finance = key(&db.pool, "finance").await;
    let approver = key(&db.pool, "approver").await;
    (db, finance, approver)
}

fn new_payout<'a>(o: &'a OpenId, amount: i64, by: Uuid) -> NewPayout<'a> {
    NewPayout {
        mch_id: MCH,
        appid: APPID,
        openid: o,
        amount: Fen::new(amount),
        description: "prize",
        real_name: None,
        spbill_create_ip: Some("10.0.0.1"),
        created_by: by,
        request_key: None,
    }
}

async fn create(pool: &PgPool, o: &OpenId, amount: i64, by: Uuid) -> Result<payouts::Payout, PayoutError> {
    let mut tx = pool.begin().await.unwrap();
    let r = payouts::create(&mut tx, &new_payout(o, amount, by), &limits(), false, None, Utc::now()).await;
    if r.is_ok() {
        tx.commit().await.unwrap();
    }
    r
}

async fn assert_balanced(pool: &PgPool) {
    let mut c = pool.acquire().await.unwrap();
    assert_eq!(ledger::unbalanced_transactions(&mut c).await.unwrap(), Vec::<i64>::new());
}

#[tokio::test]
async fn small_payouts_are_approved_at_once_large_ones_wait_for_another_key() {
    let (db, finance, approver) = setup().await;
    let o = openid(1);
    let small = create(&db.pool, &o, 5_000, finance).await.unwrap();
    assert_eq!(small.status, PayoutStatus::Approved);
    assert_eq!(small.partner_trade_no.len(), 26);
    let big = create(&db.pool, &o, 5_001, finance).await.unwrap();
    assert_eq!(big.status, PayoutStatus::PendingApproval);
    assert_ne!(small.partner_trade_no, big.partner_trade_no);

    let mut c = db.pool.acquire().await.unwrap();
    let own = payouts::approve(&mut c, big.id, finance, &limits(), Utc::now()).await;
    assert!(matches!(own, Err(PayoutError::MakerChecker)), "{own:?}");
    let ok = payouts::approve(&mut c, big.id, approver, &limits(), Utc::now()).await.unwrap();
    assert_eq!(ok.status, PayoutStatus::Approved);
    assert_eq!(ok.approved_by, Some(approver));
    let again = payouts::approve(&mut c, big.id, approver, &limits(), Utc::now()).await;
    assert!(matches!(again, Err(PayoutError::WrongState { .. })), "{again:?}");

    // The database itself refuses a self-approval and any change of what is sent.
    let selfie =
        sqlx::query("UPDATE payouts SET approved_by = created_by WHERE id = $1").bind(big.id).execute(&db.pool).await;
    assert!(selfie.is_err());
    let changed =
        sqlx::query("UPDATE payouts SET amount = amount + 1 WHERE id = $1").bind(big.id).execute(&db.pool).await;
    assert!(changed.is_err(), "the amount sent to WeChat is fixed at creation");
    let renumbered =
        sqlx::query("UPDATE payouts SET partner_trade_no = 'X1' WHERE id = $1").bind(big.id).execute(&db.pool).await;
    assert!(renumbered.is_err(), "the merchant number is fixed at creation");

    let audit: Vec<(String, String)> = sqlx::query_as(
        "SELECT actor, action FROM audit_log WHERE subject_type = 'payout' AND subject_id = $1 ORDER BY id",
    )
    .bind(big.id.to_string())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        audit,
        vec![
            (format!("client:{finance}"), "payout.requested".into()),
            (format!("client:{approver}"), "payout.approved".into())
        ]
    );
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn rules_refuse_before_anything_is_written() {
    let (db, finance, _) = setup().await;
    let o = openid(2);
    let low = create(&db.pool, &o, 99, finance).await;
    assert!(matches!(low, Err(PayoutError::Rule(ref v)) if v.code == "amount_below_minimum"), "{low:?}");
    let mut tx = db.pool.begin().await.unwrap();
    let no_name = payouts::create(&mut tx, &new_payout(&o, 100, finance), &limits(), true, None, Utc::now()).await;
    assert!(matches!(no_name, Err(PayoutError::Rule(ref v)) if v.code == "real_name_required"), "{no_name:?}");
    let named = NewPayout { real_name: Some("张三"), ..new_payout(&o, 100, finance) };
    let p = payouts::create(&mut tx, &named, &limits(), true, None, Utc::now()).await.unwrap();
    assert_eq!(p.check_name, "FORCE_CHECK");
    assert!(!format!("{p:?}").contains("张三"), "Debug hides the real name");
    assert!(!serde_json::to_string(&p).unwrap().contains("张三"), "the API never shows the real name");
    assert!(!format!("{p:?}").contains(o.as_str()), "Debug masks the openid");
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn user_limits_count_amount_and_number_and_a_rejection_gives_back() {
    let (db, finance, approver) = setup().await;
    let o = openid(3);
    create(&db.pool, &o, 9_000, finance).await.unwrap();
    let pending = create(&db.pool, &o, 9_000, finance).await.unwrap();
    let over = create(&db.pool, &o, 2_001, finance).await;
    assert!(matches!(over, Err(PayoutError::Rule(ref v)) if v.code == "openid_daily_amount_exceeded"), "{over:?}");
    create(&db.pool, &o, 2_000, finance).await.unwrap();
    let fourth = create(&db.pool, &o, 100, finance).await;
    assert!(matches!(fourth, Err(PayoutError::Rule(ref v)) if v.code == "openid_daily_count_exceeded"), "{fourth:?}");

    let mut c = db.pool.acquire().await.unwrap();
    payouts::reject(&mut c, pending.id, approver, Some("duplicate"), Utc::now()).await.unwrap();
    let (_, amount, count) =
        payout_limits::totals(&mut c, Product::Payout, MCH, o.as_str(), shanghai_day(Utc::now())).await.unwrap();
    assert_eq!((amount, count), (Fen::new(11_000), 2));
    drop(c);
    create(&db.pool, &o, 100, finance).await.unwrap();
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn concurrent_requests_never_exceed_the_merchant_daily_total() {
    let (db, finance, _) = setup().await;
    // 40 requests of 5,000 fen from 20 users race for a 50,000 fen merchant day: exactly 10 win.
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let o = openid(100 + i % 20);
            create(&pool, &o, 5_000, finance).await.is_ok()
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 10);
    let (sum,): (i64,) = sqlx::query_as("SELECT sum(amount)::bigint FROM payouts").fetch_one(&db.pool).await.unwrap();
    assert_eq!(sum, 50_000);
    let (counter,): (i64,) = sqlx::query_as("SELECT amount FROM payout_merchant_daily WHERE product = 'payout'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(counter, 50_000);
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn concurrent_requests_for_one_user_never_exceed_the_user_limit() {
    let (db, finance, _) = setup().await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move { create(&pool, &openid(7), 4_000, finance).await.is_ok() }));
    }
    let mut won = 0;
    for t in tasks {
        won += i32::from(t.await.unwrap());
    }
    assert_eq!(won, 3, "count limit 3 (4,000 × 3 = 12,000 is under the 20,000 amount limit)");
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn concurrent_approvals_approve_once_and_recheck_limits() {
    let (db, finance, approver) = setup().await;
    let approver2 = key(&db.pool, "approver").await;
    let o = openid(8);
    let p = create(&db.pool, &o, 6_000, finance).await.unwrap();
    let mut tasks = Vec::new();
    for who in [approver, approver2, approver, approver2] {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let r = payouts::approve(&mut tx, p.id, who, &limits(), Utc::now()).await;
            if r.is_ok() {
                tx.commit().await.unwrap();
            }
            r.is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += i32::from(t.await.unwrap());
    }
    assert_eq!(ok, 1);
    let n: (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log WHERE action = 'payout.approved'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n.0, 1);

    // Limits lowered after the request: the approval re-checks and refuses.
    let q = create(&db.pool, &o, 6_000, finance).await.unwrap();
    let tighter = Limits { openid_daily_amount: Fen::new(10_000), ..limits() };
    let mut c = db.pool.acquire().await.unwrap();
    let r = payouts::approve(&mut c, q.id, approver, &tighter, Utc::now()).await;
    assert!(matches!(r, Err(PayoutError::Rule(ref v)) if v.code == "openid_daily_amount_exceeded"), "{r:?}");
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn approval_on_a_later_day_moves_the_amount_to_that_day() {
    let (db, finance, approver) = setup().await;
    let o = openid(9);
    let day1 = Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let p = payouts::create(&mut tx, &new_payout(&o, 6_000, finance), &limits(), false, None, day1).await.unwrap();
    let day2 = day1 + Duration::days(1);
    let a = payouts::approve(&mut tx, p.id, approver, &limits(), day2).await.unwrap();
    assert_eq!(a.limit_day, shanghai_day(day2));
    let (m1, u1, n1) =
        payout_limits::totals(&mut tx, Product::Payout, MCH, o.as_str(), shanghai_day(day1)).await.unwrap();
    let (m2, u2, n2) =
        payout_limits::totals(&mut tx, Product::Payout, MCH, o.as_str(), shanghai_day(day2)).await.unwrap();
    assert_eq!((m1, u1, n1), (Fen::ZERO, Fen::ZERO, 0));
    assert_eq!((m2, u2, n2), (Fen::new(6_000), Fen::new(6_000), 1));
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn settlement_is_exactly_once_with_ledger_webhook_and_audit() {
    let (db, finance, _) = setup().await;
    let o = openid(10);
    let p = create(&db.pool, &o, 1_000, finance).await.unwrap();
    let now = Utc::now();
    let mut tx = db.pool.begin().await.unwrap();
    let c = payouts::claim_next(&mut tx, now, now + Duration::seconds(60)).await.unwrap().unwrap();
    assert_eq!((c.payout.id, c.from, c.payout.status), (p.id, PayoutStatus::Approved, PayoutStatus::Sending));
    tx.commit().await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    assert!(payouts::claim_next(&mut tx, now, now).await.unwrap().is_none(), "leased");
    drop(tx);

    let mut tx = db.pool.begin().await.unwrap();
    payouts::mark_unknown(&mut tx, p.id, "timeout", now).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let again = payouts::claim_next(&mut tx, now, now + Duration::seconds(60)).await.unwrap().unwrap();
    assert_eq!(again.from, PayoutStatus::Unknown, "an unknown payout is resolved, not blindly re-sent");
    tx.commit().await.unwrap();

    for expected in [Settled::Changed, Settled::AlreadyFinal] {
        let mut tx = db.pool.begin().await.unwrap();
        let s = payouts::settle_success(&mut tx, p.id, Some("1000018301201505190181489473"), now, "system:test").await;
        assert_eq!(s.unwrap(), expected);
        tx.commit().await.unwrap();
    }
    let mut c = db.pool.acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut c, Kind::Payout, &p.partner_trade_no).await.unwrap(), 1);
    assert_eq!(ledger::balance(&mut c, &ledger::account::payouts(MCH)).await.unwrap(), Fen::new(1_000));
    let hooks: (i64,) = sqlx::query_as("SELECT count(*) FROM webhook_outbox WHERE event_type = 'payout.succeeded'")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(hooks.0, 1);
    let late_failure = payouts::settle_failed(&mut c, p.id, "SEND_FAILED", "x", "system:test").await;
    assert!(late_failure.is_err(), "a paid payout never becomes failed");
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn a_final_failure_gives_the_limits_back() {
    let (db, finance, _) = setup().await;
    let o = openid(11);
    let p = create(&db.pool, &o, 1_000, finance).await.unwrap();
    let now = Utc::now();
    let mut tx = db.pool.begin().await.unwrap();
    payouts::claim_next(&mut tx, now, now + Duration::seconds(60)).await.unwrap().unwrap();
    payouts::settle_failed(&mut tx, p.id, "SEND_FAILED", "付款失败", "system:test").await.unwrap();
    tx.commit().await.unwrap();
    let mut c = db.pool.acquire().await.unwrap();
    let (m, u, n) = payout_limits::totals(&mut c, Product::Payout, MCH, o.as_str(), shanghai_day(now)).await.unwrap();
    assert_eq!((m, u, n), (Fen::ZERO, Fen::ZERO, 0));
    let f = payouts::get(&mut c, p.id).await.unwrap().unwrap();
    assert_eq!((f.status, f.failure_code.as_deref()), (PayoutStatus::Failed, Some("SEND_FAILED")));
    assert_eq!(ledger::count_postings(&mut c, Kind::Payout, &p.partner_trade_no).await.unwrap(), 0);
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn batches_are_all_or_nothing_and_approved_as_one() {
    let (db, finance, approver) = setup().await;
    let row = |n: u32, amount: i64| BatchRow {
        openid: openid(n),
        amount: Fen::new(amount),
        description: "bonus".into(),
        real_name: None,
    };
    let owner =
        BatchOwner { mch_id: MCH, appid: APPID, created_by: finance, spbill_create_ip: None, request_key: None };
    // Row 2 is too small, row 4 breaks user 20's count of 3.
    let bad = vec![row(20, 1_000), row(21, 50), row(20, 1_000), row(20, 1_000), row(20, 1_000)];
    let mut tx = db.pool.begin().await.unwrap();
    let err = batches::create(&mut tx, owner, &bad, &limits(), false, Utc::now()).await.unwrap_err();
    drop(tx);
    let BatchError::Rows(rows) = err else { panic!("{err:?}") };
    let codes: Vec<(usize, &str)> = rows.iter().map(|r| (r.row, r.code.as_str())).collect();
    assert_eq!(codes, vec![(2, "amount_below_minimum"), (5, "openid_daily_count_exceeded")]);
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM payouts").fetch_one(&db.pool).await.unwrap();
    assert_eq!(n, 0, "nothing of a refused batch is kept");

    let good = vec![row(20, 1_000), row(21, 200), row(22, 6_000)];
    let mut tx = db.pool.begin().await.unwrap();
    let (batch, created) = batches::create(&mut tx, owner, &good, &limits(), false, Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(created.len(), 3);
    assert!(created.iter().all(|p| p.status == PayoutStatus::PendingApproval), "a batch always waits for approval");
    let mut c = db.pool.acquire().await.unwrap();
    let single = payouts::approve(&mut c, created[0].id, approver, &limits(), Utc::now()).await;
    assert!(matches!(single, Err(PayoutError::InBatch(_))), "{single:?}");
    let own = batches::approve(&mut c, batch.id, finance, &limits(), Utc::now()).await;
    assert!(matches!(own, Err(BatchError::Payout(PayoutError::MakerChecker))), "{own:?}");
    let (b, approved) = batches::approve(&mut c, batch.id, approver, &limits(), Utc::now()).await.unwrap();
    assert_eq!(b.total_amount, Fen::new(7_200));
    assert!(approved.iter().all(|p| p.status == PayoutStatus::Approved));
    assert_balanced(&db.pool).await;
}

fn rules() -> RedpackRules {
    RedpackRules {
        limits: Limits { max_amount: Fen::new(1_000_000), ..limits() },
        min_per_packet: Fen::new(100),
        max_per_packet: Fen::new(20_000),
        group_min_num: 3,
        group_max_num: 20,
    }
}

#[tokio::test]
async fn red_packet_follows_gethbinfo_to_refund_with_the_ledger() {
    let (db, finance, _) = setup().await;
    let o = openid(30);
    let now = Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap();
    let new = NewRedpack {
        mch_id: MCH,
        appid: APPID,
        kind: RedpackKind::Group,
        re_openid: &o,
        total_amount: Fen::new(900),
        total_num: 3,
        send_name: "shop",
        wishing: "恭喜发财",
        act_name: "launch",
        remark: "thanks",
        scene_id: None,
        client_ip: None,
        created_by: finance,
        request_key: None,
        owner_client_id: None,
    };
    let mut tx = db.pool.begin().await.unwrap();
    let r = redpacks::create(&mut tx, &new, &rules(), now).await.unwrap();
    assert_eq!(r.mch_billno, format!("{MCH}20261125{:010}", 1));
    assert_eq!(r.status, RedpackStatus::Approved);
    let c = redpacks::claim_next(&mut tx, now, now + Duration::seconds(60)).await.unwrap().unwrap();
    assert_eq!(c.from, RedpackStatus::Approved);
    let facts = |status, at| HbFacts {
        status,
        send_listid: Some("1000041701201411111234567890"),
        package: None,
        received_at: None,
        refunded_at: None,
        refund_amount: Some(Fen::new(600)),
        reason: None,
        now: at,
        next_check: at + Duration::hours(2),
    };
    assert_eq!(redpacks::apply(&mut tx, r.id, &facts(Hb::Sent, now), "system:test").await.unwrap(), Settled::Changed);
    assert_eq!(
        redpacks::apply(&mut tx, r.id, &facts(Hb::Sent, now), "system:test").await.unwrap(),
        Settled::AlreadyFinal
    );
    let later = now + Duration::hours(25);
    let due = redpacks::claim_followup(&mut tx, later, later + Duration::hours(2)).await.unwrap().unwrap();
    assert_eq!(due.id, r.id);
    redpacks::apply(&mut tx, r.id, &facts(Hb::Refund, later), "system:test").await.unwrap();
    let done = redpacks::get(&mut tx, &r.mch_billno).await.unwrap().unwrap();
    assert_eq!((done.status, done.refund_amount), (RedpackStatus::Refunded, Some(Fen::new(600))));
    assert_eq!(ledger::count_postings(&mut tx, Kind::RedPacketSent, &r.mch_billno).await.unwrap(), 1);
    assert_eq!(ledger::count_postings(&mut tx, Kind::RedPacketRefund, &r.mch_billno).await.unwrap(), 1);
    assert_eq!(ledger::balance(&mut tx, &ledger::account::redpacks(MCH)).await.unwrap(), Fen::new(300));
    tx.commit().await.unwrap();
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn concurrent_approvals_on_a_later_day_never_exceed_that_day_s_limit() {
    let (db, finance, approver) = setup().await;
    // Eight 6,000-fen requests (48,000 fen) fit on day 1's 50,000-fen merchant limit.
    let day1 = Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap();
    let mut ids = Vec::new();
    for i in 0..8u32 {
        let o = openid(200 + i);
        let mut tx = db.pool.begin().await.unwrap();
        let p = payouts::create(&mut tx, &new_payout(&o, 6_000, finance), &limits(), false, None, day1).await.unwrap();
        tx.commit().await.unwrap();
        ids.push(p.id);
    }
    // Day 2 already holds 20,000 fen of other payouts: only 5 of the 8 (30,000) still fit.
    let day2 = day1 + Duration::days(1);
    for i in 0..2u32 {
        let o = openid(300 + i);
        let mut tx = db.pool.begin().await.unwrap();
        payouts::create(&mut tx, &new_payout(&o, 5_000, finance), &limits(), false, None, day2).await.unwrap();
        payouts::create(&mut tx, &new_payout(&o, 5_000, finance), &limits(), false, None, day2).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut tasks = Vec::new();
    for id in ids {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let r = payouts::approve(&mut tx, id, approver, &limits(), day2).await;
            match r {
                Ok(_) => {
                    tx.commit().await.unwrap();
                    true
                }
                Err(PayoutError::Rule(v)) => {
                    assert_eq!(v.code, "merchant_daily_amount_exceeded");
                    false
                }
                Err(e) => panic!("{e:?}"),
            }
        }));
    }
    let mut approved = 0;
    for t in tasks {
        approved += i32::from(t.await.unwrap());
    }
    assert_eq!(approved, 5);
    let mut c = db.pool.acquire().await.unwrap();
    let (m2, _, _) = payout_limits::totals(&mut c, Product::Payout, MCH, "", shanghai_day(day2)).await.unwrap();
    assert_eq!(m2, Fen::new(50_000), "day 2 is exactly full");
    let (m1, _, _) = payout_limits::totals(&mut c, Product::Payout, MCH, "", shanghai_day(day1)).await.unwrap();
    assert_eq!(m1, Fen::new(3 * 6_000), "the three refused approvals still hold day 1");
    assert_balanced(&db.pool).await;
}
