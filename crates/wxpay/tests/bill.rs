//! Bill fixtures, one per layout WeChat serves, written by hand to look like real downloads
//! (BOM, `\r\n`, commas inside product names and attach, negative refund fees), plus the
//! failure modes reconciliation must see loudly: a summary that disagrees, a malformed
//! amount, a truncated file, and WeChat's XML answers.

use std::io::Write;
use std::path::PathBuf;

use flate2::Compression;
use flate2::write::GzEncoder;
use wxpay::Fen;
use wxpay::bill::{BillBody, BillError, BillReader, FlowDirection, FundFlowReader, MilliFen, TradeRow, decode_body};

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", "bills", name].iter().collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_all(bytes: &[u8]) -> (Vec<TradeRow>, wxpay::bill::BillSummary) {
    let mut reader = BillReader::new(bytes).expect("header");
    let rows: Vec<TradeRow> = reader.by_ref().collect::<Result<_, _>>().expect("rows");
    (rows, reader.finish().expect("summary"))
}

fn time(s: &str) -> chrono::NaiveDateTime {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

#[test]
fn all_27_columns_with_bom_crlf_commas_and_a_negative_refund_fee() {
    let (rows, summary) = read_all(&fixture("all.csv"));
    assert_eq!(rows.len(), 4);
    let first = &rows[0];
    assert_eq!(first.trade_time, time("2017-11-25 15:36:17"));
    assert_eq!(first.trade_time_utc().to_rfc3339(), "2017-11-25T07:36:17+00:00");
    assert_eq!(first.appid, "wx2421b1c4370ec43b");
    assert_eq!(first.mch_id, "10000100");
    assert_eq!(first.sub_mch_id, "0");
    assert_eq!(first.device_info, "1000");
    assert_eq!(first.transaction_id, "4006252001201711254174183744");
    assert_eq!(first.out_trade_no, "2017112510001");
    assert_eq!(first.openid, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    assert_eq!(first.trade_type, "JSAPI");
    assert_eq!(first.bank, "CFT");
    assert_eq!(first.currency, "CNY");
    assert_eq!(first.product_name, "测试商品,有逗号");
    assert_eq!(first.settlement_amount, Fen::new(1));
    assert_eq!(first.rate, "0.60%");
    assert_eq!(first.rate_remark.as_deref(), Some(""));
    assert_eq!(rows[1].attach, "uid=42,src=mini");
    assert_eq!(rows[2].product_name, "咖啡,大杯,加冰");
    assert_eq!(rows[2].coupon_amount, Fen::new(450));
    assert_eq!(rows[2].order_amount, Some(Fen::new(3000)));
    assert_eq!(rows[2].fee, MilliFen::new(15_300));

    let refund = &rows[3];
    assert!(refund.is_refund() && !first.is_refund());
    assert_eq!(refund.refund_id, "50000305292017112502968360001");
    assert_eq!(refund.out_refund_no, "R2017112510002");
    assert_eq!(refund.refund_amount, Fen::new(3000));
    assert_eq!(refund.requested_refund_amount, Some(Fen::new(3000)));
    assert_eq!(refund.refund_type, "ORIGINAL");
    assert_eq!(refund.refund_status, "SUCCESS");
    assert_eq!(refund.fee, MilliFen::new(-18_000));
    assert_eq!(refund.refund_apply_time, None);

    assert_eq!(summary.count, 4);
    assert_eq!(summary.settlement_total, Fen::new(12551));
    assert_eq!(summary.refund_total, Some(Fen::new(3000)));
    assert_eq!(summary.recharge_coupon_refund_total, Some(Fen::ZERO));
    assert_eq!(summary.fee_total, MilliFen::new(57_300));
    assert_eq!(summary.order_total, Some(Fen::new(13001)));
    assert_eq!(summary.requested_refund_total, Some(Fen::new(3000)));
}

#[test]
fn borrowed_records_carry_line_numbers() {
    let bytes = fixture("all.csv");
    let mut reader = BillReader::new(&bytes[..]).unwrap();
    let mut lines = Vec::new();
    while let Some(rec) = reader.next_record() {
        let rec = rec.unwrap();
        lines.push((rec.line, rec.out_trade_no.to_owned()));
    }
    assert_eq!(lines[0], (2, "2017112510001".to_owned()));
    assert_eq!(lines[3].0, 5);
    assert_eq!(reader.finish().unwrap().count, 4);
}

#[test]
fn legacy_24_columns_map_old_names_and_five_column_summary() {
    let bytes = fixture("legacy24.csv");
    let reader = BillReader::new(&bytes[..]).unwrap();
    assert!(!reader.has_order_amount_column());
    let (rows, summary) = read_all(&bytes);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].settlement_amount, Fen::new(1));
    assert_eq!(rows[0].attach, "订单额外描述");
    assert_eq!(rows[1].product_name, "测试,商品");
    assert_eq!(rows[1].attach, "a,b,c");
    assert_eq!(rows[0].order_amount, None);
    assert_eq!(rows[0].requested_refund_amount, None);
    assert_eq!(rows[0].rate_remark, None);
    assert_eq!(rows[2].fee, MilliFen::new(-6));
    assert_eq!(rows[2].refund_amount, Fen::new(1));
    assert_eq!(summary.count, 3);
    assert_eq!(summary.settlement_total, Fen::new(3));
    assert_eq!(summary.refund_total, Some(Fen::new(1)));
    assert_eq!(summary.recharge_coupon_refund_total, Some(Fen::ZERO));
    assert_eq!(summary.fee_total, MilliFen::new(12));
    assert_eq!(summary.order_total, None);
    assert_eq!(summary.requested_refund_total, None);
}

#[test]
fn success_20_columns_have_no_refund_fields() {
    let (rows, summary) = read_all(&fixture("success.csv"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].sub_mch_id, "176531292");
    assert_eq!(rows[0].product_name, "云托管支付测试,第一单");
    assert_eq!(rows[1].attach, "order=9,from=app");
    assert_eq!(rows[1].rate_remark.as_deref(), Some("活动费率"));
    assert_eq!(rows[1].refund_id, "");
    assert_eq!(rows[1].refund_amount, Fen::ZERO);
    assert_eq!(rows[1].requested_refund_amount, None);
    assert_eq!(summary.settlement_total, Fen::new(8881));
    assert_eq!(summary.fee_total, MilliFen::new(79_920));
    assert_eq!(summary.order_total, Some(Fen::new(10001)));
    assert_eq!(summary.refund_total, None);
}

#[test]
fn refund_29_columns_have_apply_and_success_times() {
    let (rows, summary) = read_all(&fixture("refund.csv"));
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(TradeRow::is_refund));
    assert_eq!(rows[0].refund_apply_time, Some(time("2021-03-22 10:00:01")));
    assert_eq!(rows[0].refund_success_time, Some(time("2021-03-22 10:00:09")));
    assert_eq!(rows[0].fee, MilliFen::new(-36_000));
    assert_eq!(rows[0].product_name, "会员,季卡");
    assert_eq!(rows[1].refund_status, "PROCESSING");
    assert_eq!(rows[1].refund_success_time, None, "an empty 退款成功时间 is a refund still running");
    assert_eq!(summary.refund_total, Some(Fen::new(4001)));
    assert_eq!(summary.fee_total, MilliFen::new(-36_000));
}

#[test]
fn recharge_refund_bill_reads_like_refund() {
    let (rows, summary) = read_all(&fixture("recharge_refund.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].refund_type, "BALANCE");
    assert_eq!(rows[0].recharge_coupon_refund, Fen::new(200));
    assert_eq!(rows[0].requested_refund_amount, Some(Fen::new(1200)));
    assert_eq!(summary.recharge_coupon_refund_total, Some(Fen::new(200)));
}

#[test]
fn fund_flow_bill_with_commas_in_applicant_and_remark() {
    let bytes = fixture("fundflow.csv");
    let mut reader = FundFlowReader::new(&bytes[..]).unwrap();
    let rows: Vec<_> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    let summary = reader.finish().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].direction, FlowDirection::Expense);
    assert_eq!(rows[0].business_name, "退款");
    assert_eq!(rows[0].amount, Fen::new(2));
    assert_eq!(rows[0].balance, Fen::new(17));
    assert_eq!(rows[1].direction, FlowDirection::Income);
    assert_eq!(rows[1].business_no, "4200000068201802010005743316");
    assert_eq!(rows[2].applicant, "api,运营");
    assert_eq!(rows[2].remark, "佣金,二月");
    assert_eq!(rows[3].voucher_no, "");
    assert_eq!(rows[3].booked_at_utc().to_rfc3339(), "2018-02-01T04:30:45+00:00");
    assert_eq!(summary.count, 4);
    assert_eq!(summary.income_count, 1);
    assert_eq!(summary.income_total, Fen::new(10000));
    assert_eq!(summary.expense_count, 3);
    assert_eq!(summary.expense_total, Fen::new(7002));
}

#[test]
fn a_summary_that_disagrees_with_the_rows_is_a_clear_error() {
    let bytes = fixture("all_summary_mismatch.csv");
    let mut reader = BillReader::new(&bytes[..]).unwrap();
    let rows: Vec<_> = reader.by_ref().collect();
    assert_eq!(rows.len(), 5, "four rows, then the mismatch");
    let err = rows.into_iter().last().unwrap().unwrap_err();
    assert_eq!(err.to_string(), "line 7: summary 应结订单总金额 is 125.52 but the rows add up to 125.51",);
    assert!(matches!(reader.finish(), Err(BillError::SummaryMismatch { line: 7, what: "应结订单总金额", .. })));
}

#[test]
fn a_malformed_amount_is_an_error_with_its_line_never_zero() {
    let bytes = fixture("all_bad_amount.csv");
    let err = BillReader::new(&bytes[..]).unwrap().finish().unwrap_err();
    assert!(
        matches!(&err, BillError::Amount { line: 3, column: "应结订单金额", value } if value == "100.0.0"),
        "{err}"
    );
    assert_eq!(err.line(), Some(3));
}

#[test]
fn a_truncated_bill_has_no_summary_and_fails() {
    let bytes = fixture("all.csv");
    let text = String::from_utf8(bytes).unwrap();
    let cut: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
    let err = BillReader::new(cut.as_bytes()).unwrap().finish().unwrap_err();
    assert!(matches!(err, BillError::MissingSummary { line: 5 }), "{err}");
    let half_line = &text[..text.find("`2017-11-25 18:10:03").unwrap() + 40];
    let err = BillReader::new(half_line.as_bytes()).unwrap().finish().unwrap_err();
    assert!(matches!(err, BillError::FieldCount { line: 4, expected: 27, .. }), "{err}");
}

#[test]
fn bills_of_the_wrong_kind_are_refused_at_the_header() {
    let fund = fixture("fundflow.csv");
    assert!(matches!(BillReader::new(&fund[..]), Err(BillError::WrongKind { line: 1, .. })));
    let trade = fixture("all.csv");
    assert!(matches!(FundFlowReader::new(&trade[..]), Err(BillError::WrongKind { line: 1, .. })));
}

#[test]
fn text_after_the_summary_is_refused() {
    let mut bytes = fixture("success.csv");
    bytes.extend_from_slice("`2,`88.81,`0.79920,`100.01\n".as_bytes());
    let err = BillReader::new(&bytes[..]).unwrap().finish().unwrap_err();
    assert!(matches!(err, BillError::TrailingData { line: 6 }), "{err}");
}

#[test]
fn gzip_body_is_decompressed_while_reading() {
    let plain = fixture("all.csv");
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    let BillBody::Bill(text) = decode_body(&gz).unwrap() else { panic!("a gzip bill is a bill") };
    assert!(text.was_gzip());
    let mut reader = BillReader::new(text).unwrap();
    let rows: Vec<_> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(rows, read_all(&plain).0);
    assert_eq!(reader.finish().unwrap().count, 4);
}

#[test]
fn plain_body_is_a_bill() {
    let plain = fixture("legacy24.csv");
    let BillBody::Bill(text) = decode_body(&plain).unwrap() else { panic!("a plain bill is a bill") };
    assert!(!text.was_gzip());
    assert_eq!(BillReader::new(text).unwrap().finish().unwrap().count, 3);
}

#[test]
fn no_bill_exist_is_an_empty_day_not_a_failure() {
    assert!(matches!(decode_body(&fixture("no_bill_exist.xml")).unwrap(), BillBody::NoBill));
}

#[test]
fn bill_creating_means_retry_later() {
    assert!(matches!(decode_body(&fixture("bill_creating.xml")).unwrap(), BillBody::NotReady));
}

#[test]
fn other_xml_errors_carry_code_and_message() {
    let BillBody::Failed(e) = decode_body(&fixture("invalid_bill_type.xml")).unwrap() else { panic!("an error") };
    assert_eq!(e.return_code, "FAIL");
    assert_eq!(e.return_msg, "invalid bill_type");
    assert_eq!(e.error_code.as_deref(), Some("20001"));
    let BillBody::Failed(e) = decode_body(&fixture("system_error.xml")).unwrap() else { panic!("an error") };
    assert_eq!(e.return_msg, "SYSTEMERROR");
    assert_eq!(e.error_code.as_deref(), Some("20007"));
}

#[test]
fn gzipped_xml_error_is_still_recognised() {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&fixture("no_bill_exist.xml")).unwrap();
    assert!(matches!(decode_body(&gz.finish().unwrap()).unwrap(), BillBody::NoBill));
}

#[test]
fn a_fund_flow_summary_that_disagrees_is_a_clear_error() {
    let text = String::from_utf8(fixture("fundflow.csv")).unwrap().replace("`3,`70.02", "`3,`70.20");
    let err = FundFlowReader::new(text.as_bytes()).unwrap().finish().unwrap_err();
    assert_eq!(err.to_string(), "line 7: summary 支出金额 is 70.20 but the rows add up to 70.02");
}

#[test]
fn an_unknown_fund_direction_is_an_error_not_a_guess() {
    let text = String::from_utf8(fixture("fundflow.csv")).unwrap().replacen("`收入,", "`冻结,", 1);
    let err = FundFlowReader::new(text.as_bytes()).unwrap().finish().unwrap_err();
    assert!(matches!(&err, BillError::Direction { line: 3, value, .. } if value == "冻结"), "{err}");
}

#[test]
fn written_fund_flow_bill_reads_back_identically() {
    let bytes = fixture("fundflow.csv");
    let rows: Vec<_> = FundFlowReader::new(&bytes[..]).unwrap().collect::<Result<_, _>>().unwrap();
    let written = wxpay::bill::write_fund_flow_bill(Vec::new(), &rows).unwrap();
    assert_eq!(written, bytes, "the writer reproduces the hand-written fixture byte for byte");
}

#[test]
fn written_trade_bill_reproduces_the_legacy_fixture() {
    let bytes = fixture("legacy24.csv");
    let rows: Vec<_> = BillReader::new(&bytes[..]).unwrap().collect::<Result<_, _>>().unwrap();
    let written = wxpay::bill::write_trade_bill(Vec::new(), wxpay::bill::TradeLayout::Legacy, &rows).unwrap();
    assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(bytes).unwrap());
}
