//! Settlement applies each payment or refund result exactly once, refuses facts that
//! disagree with our records (recording an anomaly instead), and lets a late payment win.

use chrono::{Duration, Utc};
use minipay_store::domain::RefundStatus;
use minipay_store::ledger::{self, Kind};
use minipay_store::settle::{
    self, PaymentApplied, PaymentFacts, RefundApplied, RefundFacts, RefundResult, Source, apply_payment,
    apply_refund_result,
};
use minipay_store::{Fen, anomalies};
use minipay_testkit::TestDb;
use sqlx::PgPool;
use uuid::Uuid;

const MCH: &str = "1900000109";
const APPID: &str = "wx2421b1c4370ec43b";
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

async fn client(pool: &PgPool) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO api_clients (id, name, role, key_hash, key_prefix) VALUES ($1, 'shop', 'client', $2, 'k')",
    )
    .bind(id)
    .bind(id.simple().to_string())
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn order(pool: &PgPool, no: &str, amount: i64, status: &str, client: Option<Uuid>) {
    sqlx::query("INSERT INTO apps (appid, mch_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(APPID)
        .bind(MCH)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO orders (out_trade_no, appid, mch_id, client_id, openid, amount, description, status, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'test', $7, now() + interval '2 hours')",
    )
    .bind(no)
    .bind(APPID)
    .bind(MCH)
    .bind(client)
    .bind(OPENID)
    .bind(amount)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
}

fn facts(no: &str, amount: i64) -> PaymentFacts {
    PaymentFacts {
        out_trade_no: no.into(),
        mch_id: MCH.into(),
        appid: APPID.into(),
        openid: OPENID.into(),
        total_fee: Fen::new(amount),
        cash_fee: Some(Fen::new(amount)),
        transaction_id: format!("4200{no}"),
        paid_at: Utc::now() - Duration::seconds(3),
        bank_type: Some("CMC".into()),
        source: Source::OrderQuery,
    }
}

async fn apply(pool: &PgPool, f: &PaymentFacts) -> PaymentApplied {
    let mut tx = pool.begin().await.unwrap();
    let r = apply_payment(&mut tx, f).await.unwrap();
    tx.commit().await.unwrap();
    r
}

async fn status_of(pool: &PgPool, no: &str) -> (String, bool, Option<String>) {
    sqlx::query_as("SELECT status, paid_after_close, transaction_id FROM orders WHERE out_trade_no = $1")
        .bind(no)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn count(pool: &PgPool, sql: &'static str, arg: &str) -> i64 {
    sqlx::query_as::<_, (i64,)>(sql).bind(arg).fetch_one(pool).await.unwrap().0
}

async fn assert_balanced(pool: &PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    assert!(ledger::unbalanced_transactions(&mut conn).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_payment_applies_once_with_ledger_webhook_and_audit() {
    let db = TestDb::new().await;
    let c = client(&db.pool).await;
    order(&db.pool, "o-1", 888, "prepaid", Some(c)).await;
    let f = facts("o-1", 888);
    assert_eq!(apply(&db.pool, &f).await, PaymentApplied::Applied { late: false });
    assert_eq!(apply(&db.pool, &f).await, PaymentApplied::AlreadyApplied);

    assert_eq!(status_of(&db.pool, "o-1").await, ("paid".into(), false, Some("4200o-1".into())));
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, "o-1").await.unwrap(), 1);
    assert_eq!(
        ledger::balance(&mut conn, &ledger::account::wechat(MCH)).await.unwrap(),
        Fen::new(888),
        "the merchant balance grew by the order amount"
    );
    let webhooks = count(
        &db.pool,
        "SELECT count(*) FROM webhook_outbox WHERE subject = $1 AND event_type = 'payment.succeeded'",
        "o-1",
    )
    .await;
    assert_eq!(webhooks, 1);
    let audits =
        count(&db.pool, "SELECT count(*) FROM audit_log WHERE subject_id = $1 AND action = 'order.paid'", "o-1").await;
    assert_eq!(audits, 1);
    assert!(anomalies::open_anomalies(&mut conn, 10).await.unwrap().is_empty());
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn mismatched_facts_change_nothing_and_open_an_anomaly() {
    let db = TestDb::new().await;
    order(&db.pool, "o-2", 500, "prepaid", None).await;
    let mut f = facts("o-2", 1);
    let PaymentApplied::Mismatch { anomaly_id, reason } = apply(&db.pool, &f).await else {
        panic!("expected mismatch")
    };
    assert!(reason.contains("total_fee"), "{reason}");
    // The same mismatch again is the same anomaly, counted twice.
    assert!(
        matches!(apply(&db.pool, &f).await, PaymentApplied::Mismatch { anomaly_id: again, .. } if again == anomaly_id)
    );
    f.total_fee = Fen::new(500);
    f.openid = "oSomebodyElse_123456".into();
    let PaymentApplied::Mismatch { reason, .. } = apply(&db.pool, &f).await else { panic!("expected mismatch") };
    assert!(reason.contains("openid"), "{reason}");

    assert_eq!(status_of(&db.pool, "o-2").await.0, "prepaid");
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, "o-2").await.unwrap(), 0);
    let anomalies = anomalies::anomalies_for(&mut conn, "o-2").await.unwrap();
    assert_eq!(anomalies.len(), 1, "one anomaly per distinct (order, transaction)");
    assert_eq!(anomalies[0].kind, "order_mismatch");
    assert_eq!(anomalies[0].occurrences, 3);
    assert!(!anomalies[0].details.to_string().contains(OPENID), "openids are stored masked");
}

#[tokio::test]
async fn an_unknown_order_is_an_anomaly() {
    let db = TestDb::new().await;
    let f = facts("nobody", 100);
    let PaymentApplied::UnknownOrder { anomaly_id } = apply(&db.pool, &f).await else { panic!("expected unknown") };
    let mut conn = db.pool.acquire().await.unwrap();
    let open = anomalies::open_anomalies(&mut conn, 10).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].id, open[0].kind.as_str()), (anomaly_id, "unknown_order"));
    assert!(anomalies::resolve_anomaly(&mut conn, anomaly_id, "ops", "other system's order").await.unwrap());
    assert!(anomalies::open_anomalies(&mut conn, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_payment_after_a_local_close_wins_and_is_flagged() {
    let db = TestDb::new().await;
    order(&db.pool, "o-3", 300, "closed", None).await;
    assert_eq!(apply(&db.pool, &facts("o-3", 300)).await, PaymentApplied::Applied { late: true });
    assert_eq!(status_of(&db.pool, "o-3").await, ("paid".into(), true, Some("4200o-3".into())));
    let mut conn = db.pool.acquire().await.unwrap();
    let a = anomalies::anomalies_for(&mut conn, "o-3").await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].kind, "paid_after_close");
    assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, "o-3").await.unwrap(), 1);

    // A second, different transaction for the now-paid order is not applied.
    let mut other = facts("o-3", 300);
    other.transaction_id = "4200another".into();
    assert!(matches!(apply(&db.pool, &other).await, PaymentApplied::Mismatch { .. }));
    assert_eq!(status_of(&db.pool, "o-3").await.2.as_deref(), Some("4200o-3"));
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn twenty_concurrent_applications_post_once() {
    let db = TestDb::new().await;
    let c = client(&db.pool).await;
    order(&db.pool, "o-4", 4200, "prepaid", Some(c)).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move { apply(&pool, &facts("o-4", 4200)).await }));
    }
    let mut applied = 0;
    for t in tasks {
        match t.await.unwrap() {
            PaymentApplied::Applied { late: false } => applied += 1,
            PaymentApplied::AlreadyApplied => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(applied, 1);
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, "o-4").await.unwrap(), 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM webhook_outbox WHERE subject = $1", "o-4").await, 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM audit_log WHERE subject_id = $1", "o-4").await, 1);
    assert_balanced(&db.pool).await;
}

async fn paid_order_with_refund(pool: &PgPool, no: &str, refund_no: &str, amount: i64, refund: i64) {
    order(pool, no, amount, "prepaid", None).await;
    assert_eq!(apply(pool, &facts(no, amount)).await, PaymentApplied::Applied { late: false });
    // What the refund-creation path does: reserve the amount and insert the refund.
    sqlx::query("UPDATE orders SET refunded_amount = refunded_amount + $2 WHERE out_trade_no = $1")
        .bind(no)
        .bind(refund)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO refunds (out_refund_no, order_id, amount, status)
         SELECT $1, id, $2, 'processing' FROM orders WHERE out_trade_no = $3",
    )
    .bind(refund_no)
    .bind(refund)
    .bind(no)
    .execute(pool)
    .await
    .unwrap();
}

fn refund_facts(refund_no: &str, fee: i64, status: RefundResult) -> RefundFacts {
    RefundFacts {
        out_refund_no: refund_no.into(),
        refund_id: format!("5030{refund_no}"),
        mch_id: MCH.into(),
        out_trade_no: None,
        status,
        refund_fee: Fen::new(fee),
        success_time: Some(Utc::now()),
        recv_account: Some("支付用户零钱".into()),
        source: Source::RefundQuery,
    }
}

async fn apply_refund(pool: &PgPool, f: &RefundFacts) -> RefundApplied {
    let mut tx = pool.begin().await.unwrap();
    let r = apply_refund_result(&mut tx, f).await.unwrap();
    tx.commit().await.unwrap();
    r
}

async fn reserved(pool: &PgPool, no: &str) -> i64 {
    count(pool, "SELECT refunded_amount FROM orders WHERE out_trade_no = $1", no).await
}

#[tokio::test]
async fn a_refund_success_posts_once_and_keeps_the_reservation() {
    let db = TestDb::new().await;
    paid_order_with_refund(&db.pool, "o-5", "r-5", 1000, 400).await;
    let mut f = refund_facts("r-5", 400, RefundResult::Succeeded);
    f.out_trade_no = Some("o-5".into());
    assert_eq!(apply_refund(&db.pool, &f).await, RefundApplied::Applied { status: RefundStatus::Succeeded });
    assert_eq!(apply_refund(&db.pool, &f).await, RefundApplied::AlreadyApplied);
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut conn, Kind::Refund, "r-5").await.unwrap(), 1);
    assert_eq!(ledger::balance(&mut conn, &ledger::account::wechat(MCH)).await.unwrap(), Fen::new(600));
    assert_eq!(reserved(&db.pool, "o-5").await, 400);

    // A later contradicting result is an anomaly, not a change.
    let closed = refund_facts("r-5", 400, RefundResult::Closed);
    assert!(matches!(apply_refund(&db.pool, &closed).await, RefundApplied::Mismatch { .. }));
    assert_eq!(reserved(&db.pool, "o-5").await, 400);
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn a_closed_refund_releases_its_reservation_once() {
    let db = TestDb::new().await;
    paid_order_with_refund(&db.pool, "o-6", "r-6", 1000, 250).await;
    let f = refund_facts("r-6", 250, RefundResult::Closed);
    assert_eq!(apply_refund(&db.pool, &f).await, RefundApplied::Applied { status: RefundStatus::Closed });
    assert_eq!(apply_refund(&db.pool, &f).await, RefundApplied::AlreadyApplied);
    assert_eq!(reserved(&db.pool, "o-6").await, 0);
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut conn, Kind::Refund, "r-6").await.unwrap(), 0);
}

#[tokio::test]
async fn refund_mismatches_and_unknown_refunds_are_anomalies() {
    let db = TestDb::new().await;
    paid_order_with_refund(&db.pool, "o-7", "r-7", 1000, 100).await;
    let wrong = refund_facts("r-7", 999, RefundResult::Succeeded);
    assert!(matches!(apply_refund(&db.pool, &wrong).await, RefundApplied::Mismatch { .. }));
    let unknown = refund_facts("r-none", 1, RefundResult::Succeeded);
    assert!(matches!(apply_refund(&db.pool, &unknown).await, RefundApplied::UnknownRefund { .. }));
    // CHANGE: abnormal keeps the reservation and opens an anomaly; SUCCESS may still follow.
    let change = refund_facts("r-7", 100, RefundResult::Abnormal);
    assert_eq!(apply_refund(&db.pool, &change).await, RefundApplied::Applied { status: RefundStatus::Abnormal });
    assert_eq!(reserved(&db.pool, "o-7").await, 100);
    let ok = refund_facts("r-7", 100, RefundResult::Succeeded);
    assert_eq!(apply_refund(&db.pool, &ok).await, RefundApplied::Applied { status: RefundStatus::Succeeded });
    let mut conn = db.pool.acquire().await.unwrap();
    let kinds: Vec<String> =
        anomalies::open_anomalies(&mut conn, 10).await.unwrap().into_iter().map(|a| a.kind).collect();
    assert_eq!(kinds, ["refund_mismatch", "unknown_refund", "refund_abnormal"]);
    assert_balanced(&db.pool).await;
}

#[tokio::test]
async fn the_one_statement_path_and_the_locked_path_write_the_same_records() {
    let db = TestDb::new().await;
    let c = client(&db.pool).await;
    // prepaid and matching: the one-statement path; closed: the locked path (late payment).
    order(&db.pool, "o-fast", 700, "prepaid", Some(c)).await;
    order(&db.pool, "o-slow", 700, "closed", Some(c)).await;
    assert_eq!(apply(&db.pool, &facts("o-fast", 700)).await, PaymentApplied::Applied { late: false });
    assert_eq!(apply(&db.pool, &facts("o-slow", 700)).await, PaymentApplied::Applied { late: true });

    let entries = |no: &'static str| {
        let pool = db.pool.clone();
        async move {
            let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
                "SELECT t.kind, replace(e.account, t.reference, '*'), e.amount, t.mch_id
                   FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
                  WHERE t.reference = $1 ORDER BY e.amount",
            )
            .bind(no)
            .fetch_all(&pool)
            .await
            .unwrap();
            rows
        }
    };
    assert_eq!(entries("o-fast").await, entries("o-slow").await);
    let keys = |sql: &'static str, no: &'static str| {
        let pool = db.pool.clone();
        async move {
            let (v,): (serde_json::Value,) = sqlx::query_as(sql).bind(no).fetch_one(&pool).await.unwrap();
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        }
    };
    let audit = "SELECT details FROM audit_log WHERE subject_id = $1 AND action = 'order.paid'";
    let hook = "SELECT payload FROM webhook_outbox WHERE subject = $1";
    assert_eq!(keys(audit, "o-fast").await, keys(audit, "o-slow").await);
    assert_eq!(keys(hook, "o-fast").await, keys(hook, "o-slow").await);
    let (from,): (String,) = sqlx::query_as("SELECT details->>'from' FROM audit_log WHERE subject_id = 'o-fast'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(from, "prepaid");
    assert_balanced(&db.pool).await;
}

fn notified(no: &str, amount: i64) -> settle::NotifiedPayment {
    settle::NotifiedPayment {
        facts: PaymentFacts { source: Source::Notification { notification_id: 0 }, ..facts(no, amount) },
        body: format!("<xml><out_trade_no>{no}</out_trade_no><total_fee>{amount}</total_fee></xml>"),
    }
}

#[tokio::test]
async fn a_group_applies_only_the_common_cases_and_leaves_the_rest_to_the_single_path() {
    let db = TestDb::new().await;
    let c = client(&db.pool).await;
    order(&db.pool, "g-1", 100, "prepaid", Some(c)).await;
    order(&db.pool, "g-2", 200, "created", None).await;
    order(&db.pool, "g-amount", 300, "prepaid", Some(c)).await;
    order(&db.pool, "g-closed", 400, "closed", Some(c)).await;
    order(&db.pool, "g-paid", 500, "prepaid", Some(c)).await;
    assert_eq!(apply(&db.pool, &facts("g-paid", 500)).await, PaymentApplied::Applied { late: false });

    let mut copy = notified("g-1", 100);
    copy.body.push(' '); // a redelivery with another body: same order, same transaction
    let group = vec![
        notified("g-1", 100),
        notified("g-2", 200),
        notified("g-amount", 301), // disagrees: the single path records the anomaly
        notified("g-closed", 400), // late payment: the single path flags it
        notified("g-paid", 500),   // a repeat: the single path says already applied
        notified("g-unknown", 1),  // no such order
        copy,                      // second copy within the group
    ];
    let mut conn = db.pool.acquire().await.unwrap();
    let applied = settle::apply_notified_payments(&mut conn, &group).await.unwrap();
    use settle::GroupAnswer::{Applied, NotHandled, Repeat};
    // g-paid was paid by another body (`apply` above stores none): not a repeat of this one.
    assert_eq!(applied, vec![Applied, Applied, NotHandled, NotHandled, NotHandled, NotHandled, NotHandled]);

    for (no, status) in [("g-1", "paid"), ("g-2", "paid"), ("g-amount", "prepaid"), ("g-closed", "closed")] {
        assert_eq!(status_of(&db.pool, no).await.0, status, "{no}");
    }
    for no in ["g-1", "g-2"] {
        assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, no).await.unwrap(), 1, "{no}");
        let kept = count(&db.pool, "SELECT count(*) FROM wxpay_notifications WHERE reference = $1", no).await;
        assert_eq!(kept, 1, "{no}: the raw notification is kept with its effect");
        let (details,): (serde_json::Value,) =
            sqlx::query_as("SELECT details FROM audit_log WHERE subject_id = $1 AND action = 'order.paid'")
                .bind(no)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let (nid,): (i64,) = sqlx::query_as("SELECT id FROM wxpay_notifications WHERE reference = $1")
            .bind(no)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(details["notification_id"], serde_json::json!(nid), "{no}: audit names its notification");
        assert_eq!(details["source"], "notification");
    }
    // g-1 has a client: its webhook is queued; g-2 has none.
    let hooks = |no: &'static str| count(&db.pool, "SELECT count(*) FROM webhook_outbox WHERE subject = $1", no);
    assert_eq!(hooks("g-1").await, 1);
    assert_eq!(hooks("g-2").await, 0);
    for no in ["g-amount", "g-closed", "g-unknown"] {
        assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, no).await.unwrap(), 0, "{no}");
    }

    // The group again (WeChat redelivers everything): the two applied bodies are counted as
    // repeats, nothing else is applied or written.
    let again = settle::apply_notified_payments(&mut conn, &group).await.unwrap();
    assert_eq!(again, vec![Repeat, Repeat, NotHandled, NotHandled, NotHandled, NotHandled, NotHandled]);
    for no in ["g-1", "g-2"] {
        let deliveries =
            count(&db.pool, "SELECT deliveries::bigint FROM wxpay_notifications WHERE reference = $1", no).await;
        assert_eq!(deliveries, 2, "{no}");
    }
    assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, "g-1").await.unwrap(), 1);
    assert_eq!(apply(&db.pool, &group[0].facts).await, PaymentApplied::AlreadyApplied);
    assert_balanced(&db.pool).await;
}

/// The group statement has no `ON CONFLICT` on the ledger: a payment already posted for an
/// open order (a broken invariant) fails the whole group instead of being skipped silently,
/// and the single path then decides each member on its own.
#[tokio::test]
async fn a_group_that_meets_an_existing_posting_writes_nothing_and_the_single_path_decides() {
    let db = TestDb::new().await;
    let c = client(&db.pool).await;
    order(&db.pool, "x-1", 100, "prepaid", Some(c)).await;
    order(&db.pool, "x-2", 200, "prepaid", Some(c)).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let f = facts("x-2", 200);
    let m = ledger::Movement::standard(Kind::Payment, "x-2", &f.mch_id, Fen::new(200), f.paid_at);
    ledger::post(&mut conn, &m).await.unwrap();

    let group = vec![notified("x-1", 100), notified("x-2", 200)];
    assert!(settle::apply_notified_payments(&mut conn, &group).await.is_err());
    for no in ["x-1", "x-2"] {
        assert_eq!(status_of(&db.pool, no).await.0, "prepaid", "{no}: all or nothing");
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM wxpay_notifications WHERE reference LIKE $1", "x-%").await, 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM webhook_outbox WHERE subject LIKE $1", "x-%").await, 0);

    // The single path: x-1 applies; x-2 is paid without a second posting.
    assert_eq!(apply(&db.pool, &group[0].facts).await, PaymentApplied::Applied { late: false });
    let second = apply(&db.pool, &group[1].facts).await;
    for no in ["x-1", "x-2"] {
        assert_eq!(status_of(&db.pool, no).await.0, "paid", "{no}: {second:?}");
        assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, no).await.unwrap(), 1, "{no}");
    }
    assert_balanced(&db.pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_groups_over_the_same_orders_post_each_payment_once() {
    let db = TestDb::new().await;
    let c = client(&db.pool).await;
    let numbers: Vec<String> = (0..40).map(|i| format!("cg-{i}")).collect();
    for no in &numbers {
        order(&db.pool, no, 100, "prepaid", Some(c)).await;
    }
    // Eight groups, each over all forty orders in a different order: row locks are taken in
    // id order, so they neither deadlock nor apply anything twice.
    let tasks: Vec<_> = (0..8)
        .map(|k| {
            let pool = db.pool.clone();
            let mut group: Vec<_> = numbers.iter().map(|no| notified(no, 100)).collect();
            group.rotate_left(k * 5);
            if k % 2 == 1 {
                group.reverse();
            }
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                settle::apply_notified_payments(&mut conn, &group)
                    .await
                    .unwrap()
                    .iter()
                    .filter(|a| **a == settle::GroupAnswer::Applied)
                    .count()
            })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap();
    }
    assert_eq!(applied, 40, "each order applied by exactly one group");
    let (postings,): (i64,) = sqlx::query_as("SELECT count(*) FROM ledger_transactions WHERE kind = 'payment'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(postings, 40);
    assert_balanced(&db.pool).await;
}

/// Only a body whose first delivery was applied counts as a plain repeat; one that was a
/// mismatch (or anything else) must take the full path again, which counts its anomaly.
#[tokio::test]
async fn only_an_applied_body_is_counted_as_a_plain_repeat() {
    use minipay_store::notifications::{self, NewNotification, NotificationKind};
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    for (body, outcome) in [("<xml>a</xml>", "applied"), ("<xml>m</xml>", "mismatch")] {
        let n = NewNotification {
            kind: NotificationKind::Payment,
            mch_id: MCH,
            appid: None,
            reference: outcome,
            body,
            fields: None,
            expected_outcome: outcome,
        };
        notifications::record(&mut conn, &n).await.unwrap();
    }
    assert!(notifications::count_applied_repeat(&mut conn, NotificationKind::Payment, "<xml>a</xml>").await.unwrap());
    for body in ["<xml>m</xml>", "<xml>never seen</xml>"] {
        assert!(
            !notifications::count_applied_repeat(&mut conn, NotificationKind::Payment, body).await.unwrap(),
            "{body}"
        );
    }
    assert!(!notifications::count_applied_repeat(&mut conn, NotificationKind::Refund, "<xml>a</xml>").await.unwrap());
    let deliveries =
        |r: &'static str| count(&db.pool, "SELECT deliveries::bigint FROM wxpay_notifications WHERE reference = $1", r);
    assert_eq!(deliveries("applied").await, 2);
    assert_eq!(deliveries("mismatch").await, 1);
}
