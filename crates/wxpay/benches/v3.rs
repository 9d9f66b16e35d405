//! The per-request APIv3 costs: signing a request (SHA256withRSA-2048 with the merchant
//! key), verifying an answer (RSA verify over the raw body), and a payment notification
//! end to end (verify + parse + AES-256-GCM decrypt + typed payload). Figures go to
//! docs/PERFORMANCE.md ("Wire, v3").

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wxpay::ApiV3Key;
use wxpay::v3::crypto::EncryptedResource;
use wxpay::v3::verify::AnswerSigner;
use wxpay::v3::{KeySet, MerchantSigner, Method, Mode, Verifier, keygen, parse_notification};

const MCHID: &str = "1900000001";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0117000800002025045698789500001779";

/// The decrypted payload of a typical `TRANSACTION.SUCCESS` notification.
const PAYMENT: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"MP20261125000001","transaction_id":"4200000015202611256947025404","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"CMC","attach":"order=MP20261125000001","success_time":"2026-11-25T13:15:40+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":2500,"payer_total":2500,"currency":"CNY","payer_currency":"CNY"}}"#;

fn v3(c: &mut Criterion) {
    let merchant = MerchantSigner::new(MCHID, "3775B6A45ACD588826D15E583A95F5DD2B3B2C6F", keygen::rsa_2048().unwrap());
    let wechat = keygen::rsa_2048().unwrap();
    let mut ks = KeySet::new();
    ks.add_public_key_pem(PUB_KEY_ID, &wechat.public_key_to_pem().unwrap()).unwrap();
    let verifier = Verifier::new(Mode::PublicKey, ks);
    let answer_signer = AnswerSigner::new(PUB_KEY_ID, wechat);
    let key = ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();

    let prepay_body = r#"{"appid":"wxd678efh567hg6787","mchid":"1900000001","description":"咖啡, 大杯","out_trade_no":"MP20261125000001","notify_url":"https://pay.example.com/notify/wxpay/v3","amount":{"total":2500,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;
    c.bench_function("v3 request sign (JSAPI prepay)", |b| {
        b.iter(|| {
            merchant.authorization_at(
                Method::Post,
                "/v3/pay/transactions/jsapi",
                black_box(prepay_body),
                1_764_660_000,
                "593BEC0C930BF1AFEB40B4A08C8FB242",
            )
        })
    });

    let now = chrono::Utc::now().timestamp();
    let answer = br#"{"appid":"wxd678efh567hg6787","mchid":"1900000001","out_trade_no":"MP20261125000001","transaction_id":"4200000015202611256947025404","trade_state":"SUCCESS","amount":{"total":2500,"payer_total":2500}}"#;
    let h = answer_signer.sign(answer, now, "c5ac7061fccab6bf3e254dcf98995b8c");
    c.bench_function("v3 answer verify (query answer)", |b| {
        b.iter(|| verifier.verify_at(black_box(&h), black_box(answer), now).unwrap())
    });

    let resource = EncryptedResource::seal(&key, PAYMENT, "fdasflkja484", "transaction", Some("transaction")).unwrap();
    let body = serde_json::json!({
        "id": "EV-2018022511223320873", "create_time": "2026-11-25T13:15:41+08:00",
        "event_type": "TRANSACTION.SUCCESS", "resource_type": "encrypt-resource", "summary": "支付成功",
        "resource": resource,
    })
    .to_string();
    let nh = answer_signer.sign(body.as_bytes(), now, "n0t1f1cat10n");
    let pairs = nh.pairs();
    let lookup = |name: &str| pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
    c.bench_function("v3 notification verify + decrypt (payment)", |b| {
        b.iter(|| parse_notification(&verifier, lookup, black_box(body.as_bytes()), &key, now).unwrap())
    });
}

criterion_group!(benches, v3);
criterion_main!(benches);
