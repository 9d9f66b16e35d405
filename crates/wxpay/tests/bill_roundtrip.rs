//! Property tests: whatever the writer produces, the reader gives back the same rows (as far
//! as the layout carries them) and a summary that checks; and no input makes the reader panic.

use chrono::{NaiveDate, NaiveDateTime};
use proptest::prelude::*;
use wxpay::Fen;
use wxpay::bill::{
    BillReader, BillWriter, FlowDirection, FundFlowReader, FundFlowRow, FundFlowWriter, LineEnding, MilliFen,
    TradeLayout, TradeRow, WriteOptions,
};

/// Text a bill can carry: commas, backticks, CJK and spaces, but never `,`` ` followed by a
/// backtick (the one sequence the format cannot represent) nor line breaks.
fn text() -> impl Strategy<Value = String> {
    "[a-z0-9,` 中文_%=.-]{0,12}".prop_filter("no field separator inside a value", |s| !s.contains(",`"))
}

fn fen() -> impl Strategy<Value = Fen> {
    (-10_000_000_000i64..10_000_000_000).prop_map(Fen::new)
}

fn time() -> impl Strategy<Value = NaiveDateTime> {
    (0i64..4_000_000_000).prop_map(|s| {
        NaiveDate::from_ymd_opt(2000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap() + chrono::Duration::seconds(s)
    })
}

prop_compose! {
    fn ids()(appid in text(), mch_id in text(), sub in text(), device in text(), tx in text(), otn in text(),
             openid in text(), ttype in text(), state in prop_oneof!["SUCCESS", "REFUND", "REVOKED"],
             bank in text(), currency in text())
        -> [String; 11] { [appid, mch_id, sub, device, tx, otn, openid, ttype, state, bank, currency] }
}

prop_compose! {
    fn row()(t in time(), ids in ids(), amounts in proptest::array::uniform6(fen()),
             refund_text in proptest::array::uniform4(text()), product in text(), attach in text(),
             fee in (-10_000_000_000i64..10_000_000_000), rate in text(), remark in text(),
             apply in proptest::option::of(time()), success in proptest::option::of(time()))
        -> TradeRow {
        let [appid, mch_id, sub_mch_id, device_info, transaction_id, out_trade_no, openid, trade_type, trade_state, bank, currency] = ids;
        let [refund_id, out_refund_no, refund_type, refund_status] = refund_text;
        TradeRow {
            trade_time: t, appid, mch_id, sub_mch_id, device_info, transaction_id, out_trade_no, openid,
            trade_type, trade_state, bank, currency,
            settlement_amount: amounts[0], coupon_amount: amounts[1], refund_id, out_refund_no,
            refund_amount: amounts[2], recharge_coupon_refund: amounts[3], refund_type, refund_status,
            product_name: product, attach, fee: MilliFen::new(fee), rate,
            order_amount: Some(amounts[4]), requested_refund_amount: Some(amounts[5]), rate_remark: Some(remark),
            refund_apply_time: apply, refund_success_time: success,
        }
    }
}

/// What a layout keeps of a row: the reader's view of absent columns.
fn project(mut r: TradeRow, layout: TradeLayout) -> TradeRow {
    let refund_columns = !matches!(layout, TradeLayout::Success);
    let times = matches!(layout, TradeLayout::Refund | TradeLayout::RechargeRefund);
    if !refund_columns {
        r.refund_id.clear();
        r.out_refund_no.clear();
        r.refund_type.clear();
        r.refund_status.clear();
        r.refund_amount = Fen::ZERO;
        r.recharge_coupon_refund = Fen::ZERO;
        r.requested_refund_amount = None;
    }
    if !times {
        r.refund_apply_time = None;
        r.refund_success_time = None;
    }
    if layout == TradeLayout::Legacy {
        r.order_amount = None;
        r.requested_refund_amount = None;
        r.rate_remark = None;
    }
    r
}

fn layout() -> impl Strategy<Value = TradeLayout> {
    prop_oneof![
        Just(TradeLayout::All),
        Just(TradeLayout::Success),
        Just(TradeLayout::Refund),
        Just(TradeLayout::RechargeRefund),
        Just(TradeLayout::Legacy),
    ]
}

proptest! {
    #[test]
    fn trade_bill_round_trips(rows in proptest::collection::vec(row(), 0..20), layout in layout(),
                              crlf in any::<bool>(), bom in any::<bool>()) {
        let opts = WriteOptions { line_ending: if crlf { LineEnding::CrLf } else { LineEnding::Lf }, bom };
        let mut w = BillWriter::with_options(Vec::new(), layout, opts).unwrap();
        for r in &rows {
            w.write_row(r).unwrap();
        }
        let bytes = w.finish().unwrap();
        let mut reader = BillReader::new(&bytes[..]).unwrap();
        let back: Vec<TradeRow> = reader.by_ref().collect::<Result<_, _>>().unwrap();
        let summary = reader.finish().unwrap();
        let expected: Vec<TradeRow> = rows.iter().cloned().map(|r| project(r, layout)).collect();
        prop_assert_eq!(back, expected);
        prop_assert_eq!(summary.count, rows.len() as u64);
        let fee: i64 = rows.iter().map(|r| r.fee.get()).sum();
        prop_assert_eq!(summary.fee_total, MilliFen::new(fee));
        let settlement: i64 = rows.iter().map(|r| r.settlement_amount.get()).sum();
        prop_assert_eq!(summary.settlement_total, Fen::new(settlement));
    }

    #[test]
    fn fund_flow_bill_round_trips(rows in proptest::collection::vec(
        (time(), proptest::array::uniform8(text()), any::<bool>(), fen(), fen()), 0..20)) {
        let rows: Vec<FundFlowRow> = rows.into_iter().map(|(t, s, income, amount, balance)| {
            let [business_no, flow_no, business_name, business_type, applicant, remark, voucher_no, _] = s;
            FundFlowRow {
                booked_at: t, business_no, flow_no, business_name, business_type,
                direction: if income { FlowDirection::Income } else { FlowDirection::Expense },
                amount, balance, applicant, remark, voucher_no,
            }
        }).collect();
        let mut w = FundFlowWriter::new(Vec::new()).unwrap();
        for r in &rows {
            w.write_row(r).unwrap();
        }
        let bytes = w.finish().unwrap();
        let mut reader = FundFlowReader::new(&bytes[..]).unwrap();
        let back: Vec<FundFlowRow> = reader.by_ref().collect::<Result<_, _>>().unwrap();
        let summary = reader.finish().unwrap();
        prop_assert_eq!(&back, &rows);
        prop_assert_eq!(summary.count, rows.len() as u64);
        prop_assert_eq!(summary.income_count, rows.iter().filter(|r| r.direction == FlowDirection::Income).count() as u64);
    }

    #[test]
    fn a_changed_amount_in_a_written_bill_is_caught(rows in proptest::collection::vec(row(), 1..10), pick in any::<prop::sample::Index>()) {
        let mut w = BillWriter::new(Vec::new(), TradeLayout::All).unwrap();
        for r in &rows {
            w.write_row(r).unwrap();
        }
        // Rewrite one row with one fen more after the summary was computed from the originals.
        let i = pick.index(rows.len());
        let mut tampered = rows.clone();
        tampered[i].fee = MilliFen::new(tampered[i].fee.get() + 1);
        let original = w.finish().unwrap();
        let mut w2 = BillWriter::new(Vec::new(), TradeLayout::All).unwrap();
        for r in &tampered {
            w2.write_row(r).unwrap();
        }
        let forged = w2.finish().unwrap();
        let needle = "总交易单数".as_bytes();
        let summary_start = original.windows(needle.len()).rposition(|w| w == needle).unwrap();
        let forged_rows_end = forged.windows(needle.len()).rposition(|w| w == needle).unwrap();
        let mut bytes = forged[..forged_rows_end].to_vec();
        bytes.extend_from_slice(&original[summary_start..]);
        let err = BillReader::new(&bytes[..]).unwrap().finish().unwrap_err();
        prop_assert!(matches!(err, wxpay::bill::BillError::SummaryMismatch { what: "手续费总金额", .. }), "{}", err);
    }

    #[test]
    fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), prefix in 0usize..3) {
        let heads: [&[u8]; 3] = [b"", "交易时间,微信订单号,商户订单号,交易状态,应结订单金额,手续费\n".as_bytes(),
            "记账时间,收支类型,收支金额（元）\n".as_bytes()];
        let mut input = heads[prefix].to_vec();
        input.extend_from_slice(&bytes);
        // Whatever the bytes, a reader that accepts them must agree with itself: a summary it
        // returns counts exactly the rows it yielded.
        if let Ok(mut r) = BillReader::new(&input[..]) {
            let n = r.by_ref().take_while(Result::is_ok).count() as u64;
            if let Ok(s) = r.finish() {
                prop_assert_eq!(s.count, n);
            }
        }
        if let Ok(mut r) = FundFlowReader::new(&input[..]) {
            let n = r.by_ref().take_while(Result::is_ok).count() as u64;
            if let Ok(s) = r.finish() {
                prop_assert_eq!(s.count, n);
            }
        }
        if let Ok(wxpay::bill::BillBody::Bill(text)) = wxpay::bill::decode_body(&input) {
            prop_assert!(!text.was_gzip() || input.starts_with(&[0x1f, 0x8b]));
        }
    }
}
