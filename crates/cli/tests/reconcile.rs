//! `minipay reconcile --bill-file` through the binary: the human summary and `--json`, exit 0
//! when the run completed whatever it found, 1 when it could not run, 2 on bad arguments.

use std::io::Write;
use std::process::Command;

use chrono::NaiveDateTime;
use minipay_testkit::TestDb;
use wxpay::Fen;
use wxpay::bill::{BillWriter, MilliFen, TradeLayout, TradeRow};

const MCH: &str = "1900000109";

fn minipay(db: &TestDb, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_minipay"))
        .args(args)
        .env("MINIPAY_DATABASE_URL", &db.url)
        .env_remove("MINIPAY_CONFIG")
        .output()
        .expect("run minipay")
}

fn row(no: &str, amount: i64) -> TradeRow {
    TradeRow {
        trade_time: NaiveDateTime::parse_from_str("2026-11-24 12:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        appid: "wxd930ea5d5a258f4f".into(),
        mch_id: MCH.into(),
        sub_mch_id: "0".into(),
        device_info: String::new(),
        transaction_id: format!("4200000{no}"),
        out_trade_no: no.into(),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
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
        product_name: "杯子,大号".into(),
        attach: String::new(),
        fee: MilliFen::new(amount * 6),
        rate: "0.60%".into(),
        order_amount: Some(Fen::new(amount)),
        requested_refund_amount: Some(Fen::new(0)),
        rate_remark: Some(String::new()),
        refund_apply_time: None,
        refund_success_time: None,
    }
}

#[tokio::test]
async fn reconcile_a_hand_downloaded_bill() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // gzip, as the merchant platform hands it out.
    let path = dir.path().join("bill.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::default());
    let mut w = BillWriter::new(Vec::new(), TradeLayout::All).unwrap();
    w.write_row(&row("X1", 1200)).unwrap();
    gz.write_all(&w.finish().unwrap()).unwrap();
    gz.finish().unwrap();
    let p = path.to_str().unwrap();

    // We have no such order: one missing_local payment, and the run completed (exit 0).
    let out = minipay(&db, &["reconcile", "--date", "2026-11-24", "--merchant", MCH, "--bill-file", p]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("missing_local") && stdout.contains("X1"), "{stdout}");

    let out = minipay(&db, &["reconcile", "--date", "2026-11-24", "--merchant", MCH, "--bill-file", p, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["categories"]["missing_local"]["count"], 1);
    assert_eq!(doc["categories"]["missing_local"]["their_amount"], 1200);
    assert_eq!(doc["discrepancies"][0]["reference"], "X1");
    assert_eq!(doc["trade_bill"]["gzip"], true);

    // A truncated bill (no summary line): the run could not complete — exit 1, reason given.
    let bad = dir.path().join("truncated.csv");
    let text = String::from_utf8(BillWriter::new(Vec::new(), TradeLayout::All).unwrap().finish().unwrap()).unwrap();
    let header = text.lines().next().unwrap();
    std::fs::write(&bad, format!("{header}\r\n`2026-11-24 12:00:00,`wx\r\n")).unwrap();
    let out =
        minipay(&db, &["reconcile", "--date", "2026-11-24", "--merchant", MCH, "--bill-file", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not run"));

    // Bad arguments.
    let out = minipay(&db, &["reconcile", "--date", "24/11/2026"]);
    assert_eq!(out.status.code(), Some(2));
}
