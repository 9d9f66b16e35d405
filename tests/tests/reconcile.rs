//! Reconciliation end to end: a day of payments and refunds through the api, the notify
//! service and the sandbox (which writes WeChat's bills from its own records), with planted
//! discrepancies; the worker downloads both bills over HTTPS (gzip; fund flow with the client
//! certificate), finds them, repairs the unnotified payment through orderquery and the one
//! settlement path, and the report is served by `GET /v1/reconciliations/{date}`.
//! (Cross-day holds, amount/status/fee mismatches, legacy layout, payouts and red packets in
//! the fund flow are covered with writer-made bills in crates/worker/tests/reconcile.rs.)

use chrono::{Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use minipay_e2e::{DEMO_MCH_ID, TestApp};
use minipay_store::Fen;
use minipay_store::ledger::{self, Kind};
use minipay_store::recon::{self, Trigger};
use minipay_store::settle::{self, PaymentFacts, Source};
use minipay_worker::reconcile::report::Report;
use minipay_worker::reconcile::{BillSource, Reconciler, RunOutcome, RunRequest};
use serde_json::json;
use wxpay::api::{OrderRef, RefundRequest};

/// Beijing `date hh:mm:ss` as UTC.
fn bj(date: NaiveDate, h: u32, m: u32, s: u32) -> chrono::DateTime<Utc> {
    beijing().from_local_datetime(&date.and_hms_opt(h, m, s).unwrap()).unwrap().with_timezone(&Utc)
}

/// UTC+8: China has had no daylight saving since 1991.
fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

fn set_clock(app: &TestApp, t: chrono::DateTime<Utc>) {
    app.sandbox.set_clock(t);
}

type Found = Vec<(String, String, String, Option<i64>, Option<i64>, String)>;

fn found(r: &Report) -> Found {
    let mut v: Found = r
        .discrepancies
        .iter()
        .map(|d| {
            (d.category.clone(), d.kind.clone(), d.reference.clone(), d.our_amount, d.their_amount, d.status.clone())
        })
        .collect();
    v.sort();
    v
}

async fn run(r: &Reconciler, date: NaiveDate) -> Report {
    let req = RunRequest {
        mch_id: DEMO_MCH_ID.into(),
        date,
        source: BillSource::Download,
        trigger: Trigger::Test,
        rerun: true,
    };
    match r.run(&req).await.expect("the run completes") {
        RunOutcome::Completed(rep) => *rep,
        other => panic!("expected a completed run, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sandbox_day_is_reconciled_repaired_and_reported() {
    let app = TestApp::spawn().await;
    let day = Utc::now().with_timezone(&beijing()).date_naive() - Duration::days(1);
    set_clock(&app, bj(day, 9, 0, 0));
    let openid = app.login("alice").await;

    // A: paid and notified, partly refunded through the api.
    let a = app.create_order_for(&openid, 1000).await.expect(201)["out_trade_no"].as_str().unwrap().to_owned();
    set_clock(&app, bj(day, 10, 0, 0));
    app.pay(&a);
    app.wait_for_order_status(&a, "paid").await;
    set_clock(&app, bj(day, 15, 0, 0));
    let refund = app.refund(&a, &json!({"out_refund_no": "recon-a-1", "amount": 300})).await.body["out_refund_no"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_refund_status(&refund, "succeeded").await;

    // B: paid at WeChat, never notified: missing_local, repaired by the run.
    set_clock(&app, bj(day, 10, 30, 0));
    let b = app.create_order_for(&openid, 2000).await.expect(201)["out_trade_no"].as_str().unwrap().to_owned();
    app.pay_silently(&b);

    // C: paid at 23:59:59, notified: in the day's bill on both sides, nothing to report.
    set_clock(&app, bj(day, 23, 59, 0));
    let c = app.create_order_for(&openid, 700).await.expect(201)["out_trade_no"].as_str().unwrap().to_owned();
    set_clock(&app, bj(day, 23, 59, 59));
    app.pay(&c);
    app.wait_for_order_status(&c, "paid").await;

    // A refund of C made at WeChat behind our back (merchant platform): we never heard of it.
    let client = app.config.wxpay_client(DEMO_MCH_ID).unwrap();
    let secret_refund = RefundRequest {
        order: OrderRef::OutTradeNo(c.clone()),
        out_refund_no: "PLATFORM1".into(),
        total_fee: Fen::new(700),
        refund_fee: Fen::new(100),
        refund_desc: None,
        notify_url: None,
        refund_account: None,
    };
    assert!(client.refund(&secret_refund).await.unwrap().is_success());

    // D: paid in our books only (WeChat never had it): missing_remote.
    sqlx::query(
        "INSERT INTO orders (out_trade_no, appid, mch_id, openid, amount, description, status, expires_at)
         SELECT 'GHOST1', appid, mch_id, openid, 500, 'ghost', 'prepaid', now() + interval '1 hour'
           FROM orders WHERE out_trade_no = $1",
    )
    .bind(&a)
    .execute(app.pool())
    .await
    .unwrap();
    let mut tx = app.pool().begin().await.unwrap();
    settle::apply_payment(
        &mut tx,
        &PaymentFacts {
            out_trade_no: "GHOST1".into(),
            mch_id: DEMO_MCH_ID.into(),
            appid: minipay_e2e::DEMO_APPID.into(),
            openid: openid.clone(),
            total_fee: Fen::new(500),
            cash_fee: None,
            transaction_id: "4200000000GHOST1".into(),
            paid_at: bj(day, 12, 0, 0),
            bank_type: None,
            source: Source::Operator { actor: "test".into() },
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Next morning, after WeChat made the bills.
    set_clock(&app, bj(day + Duration::days(1), 11, 0, 0));
    let mut cfg = app.config.clone();
    cfg.reconcile.fee_rate = Some("0.60%".into());
    let r = Reconciler::from_config(&cfg, app.pool().clone()).unwrap();
    let report = run(&r, day).await;
    let want: Found = vec![
        ("missing_local".into(), "payment".into(), b.clone(), None, Some(2000), "repaired".into()),
        ("missing_local".into(), "refund".into(), "PLATFORM1".into(), None, Some(100), "open".into()),
        ("missing_remote".into(), "payment".into(), "GHOST1".into(), Some(500), None, "open".into()),
    ];
    assert_eq!(found(&report), want, "{}", report.human());
    assert!(report.trade_bill.as_ref().is_some_and(|t| t.gzip && t.rows == 5), "{}", report.human());
    assert!(report.fund_flow_bill.is_some(), "the fund-flow bill is downloaded with the certificate");
    assert_eq!(report.repaired, 1);
    assert!(report.balanced(), "{}", report.human());
    let fee = report.fee.as_ref().unwrap();
    assert_eq!(fee.posting, "posted");

    // The repair went through the one settlement path: paid, ledger posted once, audited.
    assert_eq!(app.order_status(&b).await, "paid");
    let mut conn = app.pool().acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, &b).await.unwrap(), 1);
    let (audits,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log WHERE action = 'reconciliation.repair'")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(audits, 1);

    // A second run of the day finds the same, minus what the first one repaired.
    let again = run(&r, day).await;
    let still: Found = want.iter().filter(|d| d.5 != "repaired").cloned().collect();
    assert_eq!(found(&again), still, "{}", again.human());
    assert_eq!(recon::runs_for_date(&mut conn, day, Some(DEMO_MCH_ID)).await.unwrap().len(), 2);
    assert!(ledger::unbalanced_transactions(&mut conn).await.unwrap().is_empty());
    drop(conn);

    // The report over HTTP: viewer and finance may read it, a shop's key may not.
    let path = format!("/v1/reconciliations/{day}");
    let got = app.get_as(Some(&app.keys.viewer), &path).await;
    let body = got.expect(200);
    let m = &body["merchants"][0];
    assert_eq!(m["mch_id"], DEMO_MCH_ID);
    assert_eq!(m["run"]["run_id"], again.run_id);
    assert_eq!(m["report"]["categories"]["missing_local"]["count"], 1);
    assert_eq!(m["history"].as_array().unwrap().len(), 2);
    assert_eq!(app.get_as(Some(&app.keys.finance), &path).await.status, 200);
    assert_eq!(app.get_as(Some(&app.keys.client), &path).await.status, 403);
    assert_eq!(app.get_as(Some(&app.keys.viewer), "/v1/reconciliations/2001-01-01").await.status, 404);
    assert_eq!(app.get_as(Some(&app.keys.viewer), "/v1/reconciliations/yesterday").await.status, 422);
}

#[tokio::test]
async fn bill_creating_waits_and_no_bill_is_an_empty_day() {
    let app = TestApp::spawn().await;
    let day = Utc::now().with_timezone(&beijing()).date_naive() - Duration::days(1);
    let r = Reconciler::from_config(&app.config, app.pool().clone()).unwrap();
    // 08:00 the next morning: WeChat is still creating the bill.
    set_clock(&app, bj(day + Duration::days(1), 8, 0, 0));
    let req = RunRequest {
        mch_id: DEMO_MCH_ID.into(),
        date: day,
        source: BillSource::Download,
        trigger: Trigger::Test,
        rerun: false,
    };
    assert!(matches!(r.run(&req).await.unwrap(), RunOutcome::Waiting { .. }));
    // Later, a day without trades: No Bill Exist is an empty day, nothing to report.
    set_clock(&app, bj(day + Duration::days(1), 11, 0, 0));
    let RunOutcome::Completed(report) = r.run(&req).await.unwrap() else { panic!("expected a completed run") };
    assert!(report.empty_day);
    assert!(report.discrepancies.is_empty(), "{}", report.human());
    let mut conn = app.pool().acquire().await.unwrap();
    let runs = recon::runs_for_date(&mut conn, day, Some(DEMO_MCH_ID)).await.unwrap();
    let statuses: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["completed", "waiting"]);
}
