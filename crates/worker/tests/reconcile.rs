//! Reconciliation against a throwaway database, with bills written by `wxpay::bill`'s writer
//! (27-column ALL with commas in product names, the legacy 24-column layout, gzip, fund
//! flow). Every planted discrepancy must be found with its category and amounts, and nothing
//! else; re-runs give the same result; two workers at once produce one run.

use std::io::Write;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use minipay_store::Fen;
use minipay_store::ledger::{self, Kind, Movement};
use minipay_store::recon::{self, Trigger};
use minipay_store::settle::{self, PaymentApplied, PaymentFacts, RefundFacts, RefundResult, Source};
use minipay_testkit::TestDb;
use minipay_worker::reconcile::report::Report;
use minipay_worker::reconcile::{BillSource, Reconciler, RunOutcome, RunRequest, Settings};
use sqlx::PgPool;
use wxpay::bill::{BillWriter, FlowDirection, FundFlowRow, FundFlowWriter, MilliFen, TradeLayout, TradeRow};

const MCH: &str = "1900000109";
const APPID: &str = "wxd930ea5d5a258f4f";
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
}

fn bj(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    wxpay::bill::shanghai_to_utc(bj(s))
}

fn tx_id(no: &str) -> String {
    format!("4200000{no}")
}

/// A successful payment row; the fee is 0.60 % of the amount unless given.
fn pay_row(time: &str, no: &str, amount: i64, fee: Option<i64>, product: &str) -> TradeRow {
    TradeRow {
        trade_time: bj(time),
        appid: APPID.into(),
        mch_id: MCH.into(),
        sub_mch_id: "0".into(),
        device_info: String::new(),
        transaction_id: tx_id(no),
        out_trade_no: no.into(),
        openid: OPENID.into(),
        trade_type: "JSAPI".into(),
        trade_state: "SUCCESS".into(),
        bank: "CFT".into(),
        currency: "CNY".into(),
        settlement_amount: Fen::new(amount),
        coupon_amount: Fen::new(0),
        refund_id: "0".into(),
        out_refund_no: "0".into(),
        refund_amount: Fen::new(0),
        recharge_coupon_refund: Fen::new(0),
        refund_type: String::new(),
        refund_status: String::new(),
        product_name: product.into(),
        attach: "a,b".into(),
        fee: MilliFen::new(fee.unwrap_or(amount * 6)),
        rate: "0.60%".into(),
        order_amount: Some(Fen::new(amount)),
        requested_refund_amount: Some(Fen::new(0)),
        rate_remark: Some(String::new()),
        refund_apply_time: None,
        refund_success_time: None,
    }
}

/// A successful refund row of order `no`.
fn refund_row(time: &str, no: &str, order_amount: i64, refund_no: &str, amount: i64) -> TradeRow {
    TradeRow {
        trade_state: "REFUND".into(),
        refund_id: format!("5030{refund_no}"),
        out_refund_no: refund_no.into(),
        refund_amount: Fen::new(amount),
        refund_type: "ORIGINAL".into(),
        refund_status: "SUCCESS".into(),
        fee: MilliFen::new(-amount * 6),
        requested_refund_amount: Some(Fen::new(amount)),
        ..pay_row(time, no, order_amount, Some(0), "退款,商品")
    }
}

fn trade_bill(layout: TradeLayout, rows: &[TradeRow]) -> Vec<u8> {
    let mut w = BillWriter::new(Vec::new(), layout).unwrap();
    for r in rows {
        w.write_row(r).unwrap();
    }
    w.finish().unwrap()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn fund_row(time: &str, name: &str, kind: &str, income: bool, amount: i64, voucher: &str) -> FundFlowRow {
    FundFlowRow {
        booked_at: bj(time),
        business_no: format!("1000018{voucher}"),
        flow_no: format!("F{voucher}"),
        business_name: name.into(),
        business_type: kind.into(),
        direction: if income { FlowDirection::Income } else { FlowDirection::Expense },
        amount: Fen::new(amount),
        balance: Fen::new(100_000),
        applicant: "system".into(),
        remark: String::new(),
        voucher_no: voucher.into(),
    }
}

fn fund_bill(rows: &[FundFlowRow]) -> Vec<u8> {
    let mut w = FundFlowWriter::new(Vec::new()).unwrap();
    for r in rows {
        w.write_row(r).unwrap();
    }
    w.finish().unwrap()
}

async fn setup_app(pool: &PgPool) {
    sqlx::query("INSERT INTO apps (appid, mch_id, name) VALUES ($1, $2, 'demo')")
        .bind(APPID)
        .bind(MCH)
        .execute(pool)
        .await
        .unwrap();
}

async fn order(pool: &PgPool, no: &str, amount: i64) {
    sqlx::query(
        "INSERT INTO orders (out_trade_no, appid, mch_id, openid, amount, description, status, expires_at)
         VALUES ($1, $2, $3, $4, $5, 'test', 'prepaid', now() + interval '1 hour')",
    )
    .bind(no)
    .bind(APPID)
    .bind(MCH)
    .bind(OPENID)
    .bind(amount)
    .execute(pool)
    .await
    .unwrap();
}

/// An order paid through the one settlement path (ledger posted), as a notification would.
async fn paid(pool: &PgPool, no: &str, amount: i64, at: &str, tx: Option<&str>) {
    order(pool, no, amount).await;
    let mut c = pool.begin().await.unwrap();
    let applied = settle::apply_payment(
        &mut c,
        &PaymentFacts {
            out_trade_no: no.into(),
            mch_id: MCH.into(),
            appid: APPID.into(),
            openid: OPENID.into(),
            total_fee: Fen::new(amount),
            cash_fee: Some(Fen::new(amount)),
            transaction_id: tx.map(str::to_owned).unwrap_or_else(|| tx_id(no)),
            paid_at: utc(at),
            bank_type: Some("CFT".into()),
            source: Source::OrderQuery,
        },
    )
    .await
    .unwrap();
    assert_eq!(applied, PaymentApplied::Applied { late: false });
    c.commit().await.unwrap();
}

/// A refund of a paid order that succeeded at `at` (ledger posted).
async fn refunded(pool: &PgPool, order_no: &str, refund_no: &str, amount: i64, at: &str) {
    let mut c = pool.begin().await.unwrap();
    let order = minipay_store::orders::find(&mut *c, order_no).await.unwrap().unwrap();
    minipay_store::refunds::create_pending(&mut c, &order, refund_no, Fen::new(amount), None, None).await.unwrap();
    settle::apply_refund_result(
        &mut c,
        &RefundFacts {
            out_refund_no: refund_no.into(),
            refund_id: format!("5030{refund_no}"),
            mch_id: MCH.into(),
            out_trade_no: Some(order_no.into()),
            status: RefundResult::Succeeded,
            refund_fee: Fen::new(amount),
            success_time: Some(utc(at)),
            recv_account: None,
            source: Source::RefundQuery,
        },
    )
    .await
    .unwrap();
    c.commit().await.unwrap();
}

async fn post(pool: &PgPool, kind: Kind, reference: &str, amount: i64, at: &str) {
    let mut c = pool.begin().await.unwrap();
    ledger::post(&mut c, &Movement::standard(kind, reference, MCH, Fen::new(amount), utc(at))).await.unwrap();
    c.commit().await.unwrap();
}

/// The day of the scenario, ours and WeChat's, with one planted discrepancy per category.
async fn plant(pool: &PgPool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    setup_app(pool).await;
    paid(pool, "P1", 100, "2026-11-24 10:00:00", None).await;
    paid(pool, "P2", 200, "2026-11-24 11:00:00", None).await;
    order(pool, "P3", 300).await; // paid at WeChat, notification dropped
    paid(pool, "P4", 400, "2026-11-24 12:00:00", None).await;
    paid(pool, "P5", 500, "2026-11-24 23:59:59", None).await; // lands in the next day's bill
    paid(pool, "P6", 600, "2026-11-24 13:00:00", Some("4200000OTHER")).await;
    paid(pool, "P7", 1000, "2026-11-24 14:00:00", None).await;
    paid(pool, "P8", 800, "2026-11-25 10:00:00", None).await;
    refunded(pool, "P1", "R1", 50, "2026-11-24 15:00:00").await;
    refunded(pool, "P6", "R3", 30, "2026-11-24 16:00:00").await;
    post(pool, Kind::Payout, "T1", 1000, "2026-11-24 09:00:00").await;
    post(pool, Kind::Payout, "T2", 2000, "2026-11-24 09:30:00").await;
    post(pool, Kind::RedPacketSent, "B1", 500, "2026-11-24 09:40:00").await;

    let d = trade_bill(
        TradeLayout::All,
        &[
            pay_row("2026-11-24 10:00:00", "P1", 100, None, "会员,月卡"),
            pay_row("2026-11-24 11:00:00", "P2", 250, Some(1500), "商品,A,B"),
            pay_row("2026-11-24 11:30:00", "P3", 300, None, "商品"),
            pay_row("2026-11-24 13:00:00", "P6", 600, None, "商品"),
            pay_row("2026-11-24 14:00:00", "P7", 1000, Some(7000), "商品"),
            refund_row("2026-11-24 15:00:00", "P1", 100, "R1", 50),
            refund_row("2026-11-24 15:30:00", "P2", 250, "R2", 20),
            refund_row("2026-11-24 16:00:00", "P6", 600, "R3", 40),
        ],
    );
    let fund = fund_bill(&[
        fund_row("2026-11-24 09:00:00", "企业付款", "企业付款", false, 1000, "T1"),
        fund_row("2026-11-24 09:40:00", "现金红包", "红包", false, 500, "B1"),
        fund_row("2026-11-24 09:50:00", "现金红包", "红包", false, 700, "B2"),
        fund_row("2026-11-24 10:00:00", "交易", "交易", true, 100, "4200000P1"),
    ]);
    let next = gzip(&trade_bill(
        TradeLayout::Legacy,
        &[
            pay_row("2026-11-25 00:00:01", "P5", 500, None, "跨日,商品"),
            pay_row("2026-11-25 10:00:00", "P8", 800, None, "商品"),
        ],
    ));
    (d, fund, next)
}

fn reconciler(pool: &PgPool) -> Reconciler {
    let s = Settings { fee_rate_ppm: Some(6000), ..Settings::default() };
    Reconciler::new(pool.clone()).with_settings(MCH, s)
}

async fn run(r: &Reconciler, date: NaiveDate, source: BillSource, rerun: bool) -> Report {
    let req = RunRequest { mch_id: MCH.into(), date, source, trigger: Trigger::Test, rerun };
    match r.run(&req).await.unwrap() {
        RunOutcome::Completed(report) => *report,
        other => panic!("expected a completed run, got {other:?}"),
    }
}

/// (category, kind, reference, ours, theirs, status), sorted.
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

fn row(c: &str, k: &str, r: &str, ours: Option<i64>, theirs: Option<i64>, s: &str) -> Found {
    vec![(c.into(), k.into(), r.into(), ours, theirs, s.into())]
}

async fn assert_ledger_balanced(pool: &PgPool) {
    let mut c = pool.acquire().await.unwrap();
    assert!(ledger::unbalanced_transactions(&mut c).await.unwrap().is_empty());
}

#[tokio::test]
async fn every_planted_discrepancy_is_found_and_nothing_else() {
    let db = TestDb::new().await;
    let (d, fund, next) = plant(&db.pool).await;
    let r = reconciler(&db.pool);

    let report = run(&r, day(), BillSource::Bytes { trade: d.clone(), fund_flow: Some(fund.clone()) }, false).await;
    let mut want: Found = [
        row("amount_mismatch", "payment", "P2", Some(200), Some(250), "open"),
        row("amount_mismatch", "refund", "R3", Some(30), Some(40), "open"),
        row("cross_day", "payment", "P5", Some(500), None, "held"),
        row("fee_mismatch", "payment", "P7", Some(1000), Some(1000), "open"),
        row("missing_local", "payment", "P3", None, Some(300), "open"),
        row("missing_local", "redpack_sent", "B2", None, Some(700), "open"),
        row("missing_local", "refund", "R2", None, Some(20), "open"),
        row("missing_remote", "payment", "P4", Some(400), None, "open"),
        row("missing_remote", "payout", "T2", Some(2000), None, "open"),
        row("status_mismatch", "payment", "P6", Some(600), Some(600), "open"),
    ]
    .concat();
    want.sort();
    assert_eq!(found(&report), want, "{}", report.human());

    let fee = report.discrepancies.iter().find(|d| d.category == "fee_mismatch").unwrap();
    assert_eq!((fee.our_fee_millifen, fee.their_fee_millifen), (Some(6000), Some(7000)));
    assert!(report.balanced(), "totals must be explained by the discrepancies:\n{}", report.human());
    let pay = report.totals.iter().find(|t| t.kind == "payment").unwrap();
    assert_eq!((pay.bill, pay.ledger), (2250, 2800));
    let fee = report.fee.as_ref().unwrap();
    // 600 + 1500 + 1800 + 3600 + 7000 − 300 − 120 − 240 millifen = 13.84 fen → 14 fen.
    assert_eq!((fee.bill_fee_millifen, fee.fen, fee.posting.as_str()), (13840, 14, "posted"));
    assert_eq!(report.categories["missing_local"].count, 3);
    assert!(report.trade_bill.as_ref().is_some_and(|b| b.rows == 8 && !b.gzip && !b.reused));

    // The raw bytes are kept exactly, with their checksum; rows carry the bill's times.
    let mut c = db.pool.acquire().await.unwrap();
    let (t,): (DateTime<Utc>,) =
        sqlx::query_as("SELECT trade_time FROM recon_trade_rows WHERE out_trade_no = 'P2' AND NOT is_refund")
            .fetch_one(&mut *c)
            .await
            .unwrap();
    assert_eq!(t, utc("2026-11-24 11:00:00"));
    let tb = report.trade_bill.as_ref().unwrap();
    assert_eq!(recon::file_chunks(&mut c, tb.file_id).await.unwrap().concat(), d);

    // A second run of the same date: the same result (the stored rows are reused).
    let again = run(&r, day(), BillSource::Bytes { trade: d.clone(), fund_flow: Some(fund.clone()) }, true).await;
    assert_eq!(found(&again), want);
    assert!(again.trade_bill.as_ref().is_some_and(|b| b.reused));
    assert_eq!(again.fee.as_ref().unwrap().posting, "already_posted");
    let runs = recon::runs_for_date(&mut c, day(), Some(MCH)).await.unwrap();
    assert_eq!(runs.len(), 2, "every run is kept");

    // The next day (legacy layout, gzip): the midnight payment is found there.
    let next_day = day().succ_opt().unwrap();
    let report2 = run(&r, next_day, BillSource::Bytes { trade: next, fund_flow: None }, false).await;
    assert_eq!(found(&report2), row("cross_day", "payment", "P5", None, Some(500), "resolved"));
    assert!(report2.trade_bill.as_ref().is_some_and(|b| b.gzip));
    assert!(report2.balanced(), "{}", report2.human());
    // …which resolves the hold of the first day's run.
    let first = recon::discrepancies(&mut c, again.run_id).await.unwrap();
    let p5 = first.iter().find(|d| d.reference == "P5").unwrap();
    assert_eq!(p5.status, "resolved");

    // Prometheus: last success per merchant, discrepancies by category.
    let families = prometheus::gather();
    let family = |name: &str| families.iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("{name}"));
    assert!(
        family("minipay_reconcile_last_success_timestamp_seconds").get_metric().iter().any(|m| m
            .get_label()
            .iter()
            .any(|l| l.value() == MCH)
            && m.get_gauge().value() > 0.0)
    );
    assert!(!family("minipay_reconcile_discrepancies").get_metric().is_empty());

    // Stored report = returned report.
    let stored = recon::get_run(&mut c, report.run_id).await.unwrap().unwrap();
    assert_eq!(stored.status, "completed");
    assert!(stored.summary_text.unwrap().contains("missing_local"));
    drop(c);
    assert_ledger_balanced(&db.pool).await;
}

#[tokio::test]
async fn two_workers_started_together_make_one_run() {
    let db = TestDb::new().await;
    let (d, fund, _) = plant(&db.pool).await;
    let a = reconciler(&db.pool).with_worker_id("worker-a");
    let b = reconciler(&db.pool).with_worker_id("worker-b");
    let req = RunRequest {
        mch_id: MCH.into(),
        date: day(),
        source: BillSource::Bytes { trade: d, fund_flow: Some(fund) },
        trigger: Trigger::Schedule,
        rerun: false,
    };
    let (ra, rb) = tokio::join!(a.run(&req), b.run(&req));
    let outcomes = [ra.unwrap(), rb.unwrap()];
    let completed = outcomes.iter().filter(|o| matches!(o, RunOutcome::Completed(_))).count();
    assert_eq!(completed, 1, "{outcomes:?}");
    assert!(
        outcomes.iter().any(|o| matches!(o, RunOutcome::Busy { .. } | RunOutcome::AlreadyCompleted { .. })),
        "{outcomes:?}"
    );
    let mut c = db.pool.acquire().await.unwrap();
    assert_eq!(recon::runs_for_date(&mut c, day(), Some(MCH)).await.unwrap().len(), 1);
    // A third scheduled attempt later sees the completed run and does nothing.
    assert!(matches!(a.run(&req).await.unwrap(), RunOutcome::AlreadyCompleted { .. }));
    drop(c);
    assert_ledger_balanced(&db.pool).await;
}

#[tokio::test]
async fn no_bill_exist_is_an_empty_day_and_a_truncated_bill_fails_loudly() {
    let db = TestDb::new().await;
    setup_app(&db.pool).await;
    paid(&db.pool, "E1", 100, "2026-11-24 12:00:00", None).await;
    let r = reconciler(&db.pool);
    let no_bill =
        b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[No Bill Exist]]></return_msg></xml>";
    let report = run(&r, day(), BillSource::Bytes { trade: no_bill.to_vec(), fund_flow: None }, false).await;
    assert!(report.empty_day);
    assert_eq!(found(&report), row("missing_remote", "payment", "E1", Some(100), None, "open"));

    let creating = b"<xml><return_code>FAIL</return_code><return_msg>Bill Creating</return_msg></xml>";
    let req = RunRequest {
        mch_id: MCH.into(),
        date: day().succ_opt().unwrap(),
        source: BillSource::Bytes { trade: creating.to_vec(), fund_flow: None },
        trigger: Trigger::Test,
        rerun: false,
    };
    assert!(matches!(r.run(&req).await.unwrap(), RunOutcome::Waiting { .. }));

    // A bill whose summary disagrees with its rows: the run fails and says why.
    let mut bill = trade_bill(TradeLayout::All, &[pay_row("2026-11-24 12:00:00", "E1", 100, None, "x")]);
    let text = String::from_utf8(bill.clone()).unwrap().replace("`1,`1.00", "`1,`1.01");
    bill = text.into_bytes();
    let req = RunRequest {
        mch_id: MCH.into(),
        date: day(),
        source: BillSource::Bytes { trade: bill, fund_flow: None },
        trigger: Trigger::Test,
        rerun: true,
    };
    let err = r.run(&req).await.unwrap_err();
    assert!(err.to_string().contains("总交易单数") || err.to_string().contains("summary"), "{err}");
    let mut c = db.pool.acquire().await.unwrap();
    let runs = recon::runs_for_date(&mut c, day(), Some(MCH)).await.unwrap();
    assert_eq!(runs[0].status, "failed");
    assert!(runs[0].error.as_deref().is_some_and(|e| !e.is_empty()));
}
