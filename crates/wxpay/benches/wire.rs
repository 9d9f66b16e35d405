//! The per-request wire costs: signing (MD5, HMAC-SHA256), verifying, XML decode/encode of a
//! typical payment notification, and "notification decode + verify" together (issue 2
//! target: ≤ 5 µs). Figures go to docs/PERFORMANCE.md ("Wire").

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wxpay::ApiKey;
use wxpay::sign::{SignType, sign, sign_params, verify};
use wxpay::xml::{self, Params};

/// A realistic JSAPI payment-result notification (field set as WeChat sends it).
fn notification(key: &ApiKey) -> Params {
    let mut p: Params = [
        ("appid", "wx2421b1c4370ec43b"),
        ("attach", "支付测试,order=MP20261125000001"),
        ("bank_type", "CFT"),
        ("cash_fee", "2500"),
        ("fee_type", "CNY"),
        ("is_subscribe", "Y"),
        ("mch_id", "10000100"),
        ("nonce_str", "5d2b6c2a8db53831f7eda20af46e531c"),
        ("openid", "oUpF8uMEb4qRXf22hE3X68TekukE"),
        ("out_trade_no", "MP20261125000001"),
        ("result_code", "SUCCESS"),
        ("return_code", "SUCCESS"),
        ("time_end", "20261125131540"),
        ("total_fee", "2500"),
        ("trade_type", "JSAPI"),
        ("transaction_id", "4200000015202611256947025404"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    sign_params(&mut p, key, SignType::Md5);
    p
}

fn wire(c: &mut Criterion) {
    let key = ApiKey::new("192006250b4c09247ec02edce69f6a2d");
    let params = notification(&key);
    let body = xml::encode(&params);
    let mut hmac_params = params.clone();
    sign_params(&mut hmac_params, &key, SignType::HmacSha256);

    c.bench_function("sign MD5 (16 fields)", |b| b.iter(|| sign(black_box(&params), &key, SignType::Md5)));
    c.bench_function("sign HMAC-SHA256 (16 fields)", |b| {
        b.iter(|| sign(black_box(&params), &key, SignType::HmacSha256))
    });
    c.bench_function("verify MD5", |b| b.iter(|| verify(black_box(&params), &key).unwrap()));
    c.bench_function("verify HMAC-SHA256", |b| b.iter(|| verify(black_box(&hmac_params), &key).unwrap()));
    c.bench_function("xml decode notification", |b| b.iter(|| xml::decode(black_box(body.as_bytes())).unwrap()));
    c.bench_function("xml encode notification", |b| b.iter(|| xml::encode(black_box(&params))));
    c.bench_function("notification decode + verify", |b| {
        b.iter(|| {
            let p = xml::decode(black_box(body.as_bytes())).unwrap();
            verify(&p, &key).unwrap()
        })
    });
}

criterion_group!(benches, wire);
criterion_main!(benches);
