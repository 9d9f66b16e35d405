//! Reconciliation end to end: a day of payments and refunds through the api, the notify
//! service and the sandbox (which writes WeChat's bills from its own records), with planted
//! discrepancies; the worker downloads both bills over HTTPS (gzip; fund flow with the client
//! certificate), finds them, repairs the unnotified payment through orderquery and the one
//! settlement path, and the report is served by `GET /v1/reconciliations/{date}`.
//! Each story runs for a v2 and for a v3 merchant ([`Protocol`]): v3 bills come as a link
//! (`/v3/bill/tradebill`, `/v3/bill/fundflowbill`) and a SHA1-checked download, and go
//! through the same loader and matching; the run records which protocol fetched them.
//! (Cross-day holds, amount/status/fee mismatches, legacy layout, payouts and red packets in
//! the fund flow are covered with writer-made bills in crates/worker/tests/reconcile.rs.)

use chrono::{Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use minipay_e2e::{DEMO_APPID, DEMO_MCH_ID, Options, Protocol, TestApp, both_protocols};
use minipay_sandbox::FaultKind;
use minipay_store::Fen;
use minipay_store::ledger::{self, Kind};
use minipay_store::recon::{self, Trigger};
use minipay_store::settle::{self, PaymentFacts, Source};
use minipay_worker::reconcile::report::Report;
use minipay_worker::reconcile::{BillSource, ReconcileError, Reconciler, RunOutcome, RunRequest};
use serde_json::json;
use wxpay::merchant::RefundCall;

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

fn download(date: NaiveDate, rerun: bool) -> RunRequest {
    RunRequest { mch_id: DEMO_MCH_ID.into(), date, source: BillSource::Download, trigger: Trigger::Test, rerun }
}

async fn run(r: &Reconciler, date: NaiveDate) -> Report {
    match r.run(&download(date, true)).await.expect("the run completes") {
        RunOutcome::Completed(rep) => *rep,
        other => panic!("expected a completed run, got {other:?}"),
    }
}

// Each story as `name::v2` and `name::v3`. For v3, `bill_creating_…` is
// `STATEMENT_CREATING` (a waiting run) and `NO_STATEMENT_EXIST` (an empty day).
both_protocols!(a_sandbox_day_is_reconciled_repaired_and_reported, bill_creating_waits_and_no_bill_is_an_empty_day);

async fn a_sandbox_day_is_reconciled_repaired_and_reported(p: Protocol) {
    let app = TestApp::spawn_with(Options::with_protocol(p)).await;
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

    // A refund of C made at WeChat behind our back (merchant platform), in the merchant's
    // protocol: we never heard of it.
    let client = app.config.merchant_client_for(DEMO_MCH_ID, DEMO_APPID).unwrap();
    let secret_refund = RefundCall {
        out_trade_no: c.clone(),
        out_refund_no: "PLATFORM1".into(),
        total: Fen::new(700),
        refund: Fen::new(100),
        reason: None,
        notify_url: None,
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
            appid: DEMO_APPID.into(),
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
    // v2 keeps the gzip file as downloaded; v3's client checks the SHA1 of the gunzipped
    // text, which is what is kept.
    let gzip = p == Protocol::V2;
    assert!(report.trade_bill.as_ref().is_some_and(|t| t.gzip == gzip && t.rows == 5), "{}", report.human());
    assert!(report.fund_flow_bill.is_some(), "the fund-flow bill is downloaded (v2: with the certificate)");
    assert_eq!(report.protocol, protocol_name(p), "{}", report.human());
    assert!(report.human().contains(&format!("downloaded over WeChat Pay {}", protocol_name(p))));
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
    assert_eq!(m["run"]["protocol"], protocol_name(p));
    assert_eq!(m["report"]["protocol"], protocol_name(p));
    assert_eq!(m["report"]["categories"]["missing_local"]["count"], 1);
    assert_eq!(m["history"].as_array().unwrap().len(), 2);
    assert_eq!(app.get_as(Some(&app.keys.finance), &path).await.status, 200);
    assert_eq!(app.get_as(Some(&app.keys.client), &path).await.status, 403);
    assert_eq!(app.get_as(Some(&app.keys.viewer), "/v1/reconciliations/2001-01-01").await.status, 404);
    assert_eq!(app.get_as(Some(&app.keys.viewer), "/v1/reconciliations/yesterday").await.status, 422);
    app.assert_ledger_balanced().await;
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::V2 => "v2",
        Protocol::V3 => "v3",
    }
}

async fn bill_creating_waits_and_no_bill_is_an_empty_day(p: Protocol) {
    let app = TestApp::spawn_with(Options::with_protocol(p)).await;
    let day = Utc::now().with_timezone(&beijing()).date_naive() - Duration::days(1);
    let r = Reconciler::from_config(&app.config, app.pool().clone()).unwrap();
    // 08:00 the next morning: WeChat is still creating the bill.
    set_clock(&app, bj(day + Duration::days(1), 8, 0, 0));
    let req = download(day, false);
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
    assert!(runs.iter().all(|r| r.protocol.as_deref() == Some(protocol_name(p))), "{runs:?}");
}

async fn bill_files(app: &TestApp, day: NaiveDate) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT bill_type, coalesce(row_count, -1) FROM recon_bill_files WHERE mch_id = $1 AND bill_date = $2
          ORDER BY id",
    )
    .bind(DEMO_MCH_ID)
    .bind(day)
    .fetch_all(app.pool())
    .await
    .unwrap()
}

/// A v3 bill whose file does not match its link's SHA1 is never stored or loaded: the link
/// and file are fetched again; when every attempt is broken the run fails (the retry job
/// tries later), and a later run with a good file completes.
#[tokio::test]
async fn a_v3_bill_failing_its_sha1_is_fetched_again_never_loaded() {
    let app = TestApp::spawn_with(Options::with_protocol(Protocol::V3)).await;
    let day = Utc::now().with_timezone(&beijing()).date_naive() - Duration::days(1);
    set_clock(&app, bj(day, 10, 0, 0));
    let openid = app.login("alice").await;
    let a = app.create_order_for(&openid, 1000).await.expect(201)["out_trade_no"].as_str().unwrap().to_owned();
    app.pay(&a);
    app.wait_for_order_status(&a, "paid").await;
    set_clock(&app, bj(day + Duration::days(1), 11, 0, 0));
    let r = Reconciler::from_config(&app.config, app.pool().clone()).unwrap();

    // Every attempt broken: the run fails, nothing of the broken files is kept.
    app.add_fault("/v3/billdownload/file", FaultKind::CorruptBill, 3);
    let err = r.run(&download(day, false)).await.expect_err("three broken downloads fail the run");
    assert!(matches!(&err, ReconcileError::Unknown(m) if m.contains("SHA1")), "{err}");
    assert!(bill_files(&app, day).await.is_empty(), "a file failing its SHA1 is not stored");
    let mut conn = app.pool().acquire().await.unwrap();
    let runs = recon::runs_for_date(&mut conn, day, Some(DEMO_MCH_ID)).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].status.as_str(), runs[0].protocol.as_deref()), ("failed", Some("v3")));
    assert!(runs[0].error.as_deref().is_some_and(|e| e.contains("SHA1")), "{:?}", runs[0].error);
    drop(conn);

    // One broken download: fetched again within the run, the good file is loaded.
    app.add_fault("/v3/billdownload/file", FaultKind::CorruptBill, 1);
    let RunOutcome::Completed(report) = r.run(&download(day, false)).await.unwrap() else {
        panic!("expected a completed run")
    };
    assert_eq!(report.protocol, "v3");
    assert!(report.discrepancies.is_empty(), "{}", report.human());
    assert!(report.balanced(), "{}", report.human());
    let files = bill_files(&app, day).await;
    let kinds: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(kinds, ["trade_all", "fundflow_basic"], "one file of each, the good ones");
    assert_eq!(files[0].1, 1, "the trade bill's one payment was loaded");
    app.assert_ledger_balanced().await;
}
