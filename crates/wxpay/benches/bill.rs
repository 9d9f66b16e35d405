//! Bill parsing throughput: a 100,000-row ALL bill generated with our own writer, read with
//! the borrowed-record fast path (what a COPY loader uses) and with the owned-row iterator.
//! Target from issue 2: ≥ 300 MB/s.

use std::hint::black_box;

use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wxpay::Fen;
use wxpay::bill::{BillReader, BillWriter, MilliFen, TradeLayout, TradeRow, decode_body};

const ROWS: u64 = 100_000;

fn rows() -> Vec<TradeRow> {
    let start = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap().and_hms_opt(0, 0, 0).unwrap();
    (0..ROWS)
        .map(|i| {
            let refund = i % 10 == 9;
            let amount = Fen::new(1 + (i as i64 * 7919) % 100_000);
            TradeRow {
                trade_time: start + chrono::Duration::seconds((i % 86_400) as i64),
                appid: "wx2421b1c4370ec43b".into(),
                mch_id: "10000100".into(),
                sub_mch_id: "0".into(),
                device_info: String::new(),
                transaction_id: format!("42000000432026112{i:011}"),
                out_trade_no: format!("MP2026112400{i:08}"),
                openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
                trade_type: "JSAPI".into(),
                trade_state: if refund { "REFUND" } else { "SUCCESS" }.into(),
                bank: "CMB_CREDIT".into(),
                currency: "CNY".into(),
                settlement_amount: if refund { Fen::ZERO } else { amount },
                coupon_amount: Fen::ZERO,
                refund_id: if refund { format!("5030020769202611{i:013}") } else { "0".into() },
                out_refund_no: if refund { format!("RF2026112400{i:08}") } else { "0".into() },
                refund_amount: if refund { amount } else { Fen::ZERO },
                recharge_coupon_refund: Fen::ZERO,
                refund_type: if refund { "ORIGINAL" } else { "" }.into(),
                refund_status: if refund { "SUCCESS" } else { "" }.into(),
                product_name: "年卡会员,自动续费".into(),
                attach: "uid=42,src=mini".into(),
                fee: MilliFen::new(if refund { -amount.get() * 6 } else { amount.get() * 6 }),
                rate: "0.60%".into(),
                order_amount: Some(if refund { Fen::ZERO } else { amount }),
                requested_refund_amount: Some(if refund { amount } else { Fen::ZERO }),
                rate_remark: Some(String::new()),
                refund_apply_time: None,
                refund_success_time: None,
            }
        })
        .collect()
}

fn write(rows: &[TradeRow]) -> Vec<u8> {
    let mut w = BillWriter::new(Vec::with_capacity(40 << 20), TradeLayout::All).unwrap();
    for row in rows {
        w.write_row(row).unwrap();
    }
    w.finish().unwrap()
}

fn parse(c: &mut Criterion) {
    let rows = rows();
    let bytes = write(&rows);
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, &bytes).unwrap();
        e.finish().unwrap()
    };
    let mut g = c.benchmark_group("bill_parse_all_100k");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.sample_size(10);
    g.bench_function("records_borrowed", |b| {
        b.iter(|| {
            let mut r = BillReader::new(black_box(&bytes[..])).unwrap();
            let mut n = 0u64;
            while let Some(rec) = r.next_record() {
                n += black_box(rec.unwrap()).settlement_amount.get() as u64 & 1;
            }
            black_box(n);
            r.finish().unwrap()
        })
    });
    g.bench_function("rows_owned", |b| {
        b.iter(|| {
            let mut r = BillReader::new(black_box(&bytes[..])).unwrap();
            let n = r.by_ref().map(|row| black_box(row.unwrap()).fee.get()).sum::<i64>();
            black_box(n);
            r.finish().unwrap()
        })
    });
    g.bench_function("records_via_decode_body_plain", |b| {
        b.iter(|| {
            let wxpay::bill::BillBody::Bill(text) = decode_body(black_box(&bytes[..])).unwrap() else { unreachable!() };
            let mut r = BillReader::new(text).unwrap();
            while let Some(rec) = r.next_record() {
                black_box(rec.unwrap());
            }
            r.finish().unwrap()
        })
    });
    g.bench_function("records_via_decode_body_gzip", |b| {
        b.iter(|| {
            let wxpay::bill::BillBody::Bill(text) = decode_body(black_box(&gz[..])).unwrap() else { unreachable!() };
            let mut r = BillReader::new(text).unwrap();
            while let Some(rec) = r.next_record() {
                black_box(rec.unwrap());
            }
            r.finish().unwrap()
        })
    });
    g.bench_function("write", |b| b.iter(|| black_box(write(black_box(&rows))).len()));
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
