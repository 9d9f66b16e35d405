//! Red packets end to end against the sandbox: normal, group and mini-program packets sent
//! exactly once through lost answers, SYSTEMERROR and HTTP 500; then followed with gethbinfo
//! to received, or refunded after 24 h unclaimed (posted back in the ledger).

use std::time::Duration;

use chrono::Utc;
use minipay_e2e::{DEMO_API_KEY, DEMO_APPID, DEMO_MCH_ID, Options, TestApp};
use minipay_sandbox::FaultKind;
use minipay_store::ledger::{self, Kind, account};
use minipay_worker::payouts::PayoutSender;
use serde_json::{Value, json};
use wxpay::sign::{SignType, sign};
use wxpay::{ApiKey, Params};

fn opts() -> Options {
    Options {
        configure: Box::new(|c| {
            c.payouts.redpack_approval_threshold = 10_000;
            c.payouts.retry_initial_ms = 1;
            c.payouts.retry_max_ms = 20;
        }),
        ..Options::default()
    }
}

fn user(n: usize) -> String {
    format!("oRedPacketUser{n:014}")
}

fn packet(kind: &str, openid: &str, amount: i64) -> Value {
    let num = if kind == "group" { 3 } else { 1 };
    json!({
        "kind": kind, "openid": openid, "amount": amount, "total_num": num,
        "wishing": "恭喜发财", "act_name": "launch", "remark": "thanks for joining",
    })
}

async fn create(app: &TestApp, body: &Value) -> Value {
    app.create_redpack(&app.keys.finance, body, &uuid::Uuid::new_v4().to_string()).await.expect(201).clone()
}

fn billno(v: &Value) -> String {
    v["mch_billno"].as_str().expect("mch_billno").to_owned()
}

fn packets_for(app: &TestApp, no: &str) -> usize {
    app.sandbox.redpacks().iter().filter(|r| r.mch_billno == no).count()
}

async fn settle(app: &TestApp, sender: &PayoutSender) {
    assert!(app.settle_payouts_with(sender, Duration::from_secs(15)).await, "did not settle");
}

async fn sandbox_control(app: &TestApp, path: &str, body: &Value) {
    let r = app.http.post(format!("{}/sandbox/{path}", app.sandbox.http_url())).json(body).send().await.unwrap();
    assert!(r.status().is_success(), "sandbox {path}: {}", r.text().await.unwrap_or_default());
}

#[tokio::test]
async fn normal_packets_are_sent_exactly_once_through_faults() {
    sent_exactly_once_through_faults("normal", "/mmpaymkttransfers/sendredpack", 1_000).await;
}

#[tokio::test]
async fn group_packets_are_sent_exactly_once_through_faults() {
    sent_exactly_once_through_faults("group", "/mmpaymkttransfers/sendgroupredpack", 900).await;
}

#[tokio::test]
async fn mini_program_packets_are_sent_exactly_once_through_faults() {
    sent_exactly_once_through_faults("mini_program", "/mmpaymkttransfers/sendminiprogramhb", 1_000).await;
}

async fn sent_exactly_once_through_faults(kind: &str, path: &str, amount: i64) {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    let faults = [
        ("lost answer", FaultKind::LostAnswer),
        ("SYSTEMERROR", FaultKind::Error { err_code: "SYSTEMERROR".into(), err_code_des: None }),
        ("HTTP 500", FaultKind::Http500),
        ("busy return_code FAIL", FaultKind::ReturnFail { return_msg: "系统繁忙,请稍后再试.".into() }),
        ("signature refused", FaultKind::ReturnFail { return_msg: "签名错误".into() }),
    ];
    let mut n = 0;
    let mut total = 0;
    for (what, fault) in faults {
        // A bare return_code FAIL that is not "busy" is a final refusal: nothing was sent.
        let final_refusal = what == "signature refused";
        n += 1;
        app.add_fault(path, fault, 1);
        let r = create(&app, &packet(kind, &user(n), amount)).await;
        assert_eq!(r["status"], "approved");
        assert_eq!(billno(&r).len(), 28, "mch_id + yyyymmdd + 10 digits");
        assert!(billno(&r).starts_with(DEMO_MCH_ID));
        settle(&app, &sender).await;
        let got = app.get_redpack(&app.keys.finance, &billno(&r)).await.expect(200).clone();
        if final_refusal {
            assert_eq!(
                (got["status"].as_str(), got["failure_code"].as_str()),
                (Some("failed"), Some("RETURN_FAIL")),
                "{kind} {what}: {got}"
            );
            assert_eq!(packets_for(&app, &billno(&r)), 0, "{kind} {what}");
            continue;
        }
        assert_eq!(got["status"], "sent", "{kind} {what}: {got}");
        assert_eq!(packets_for(&app, &billno(&r)), 1, "{kind} {what}: exactly one packet");
        total += amount;
        let mut c = app.pool().acquire().await.unwrap();
        assert_eq!(ledger::count_postings(&mut c, Kind::RedPacketSent, &billno(&r)).await.unwrap(), 1);
        if kind == "mini_program" {
            check_biz_params(&got);
        } else {
            assert!(got["send_biz_red_packet"].is_null());
        }
    }
    let mut c = app.pool().acquire().await.unwrap();
    assert_eq!(ledger::balance(&mut c, &account::redpacks(DEMO_MCH_ID)).await.unwrap().get(), total);
    app.assert_ledger_balanced().await;
}

/// The `wx.sendBizRedPacket` parameters are MD5-signed over appId, timeStamp, nonceStr and
/// the URL-encoded package, with the merchant key.
fn check_biz_params(got: &Value) {
    let p = &got["send_biz_red_packet"];
    assert_eq!(p["signType"], "MD5", "{got}");
    let package = p["package"].as_str().unwrap();
    assert!(package.contains("sendid%3D"), "the package is URL-encoded: {package}");
    let fields: Params = [
        ("appId", DEMO_APPID),
        ("timeStamp", p["timeStamp"].as_str().unwrap()),
        ("nonceStr", p["nonceStr"].as_str().unwrap()),
        ("package", package),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(p["paySign"].as_str().unwrap(), sign(&fields, &ApiKey::new(DEMO_API_KEY), SignType::Md5));
}

#[tokio::test]
async fn packets_follow_gethbinfo_to_received_and_to_refunded() {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    let single = create(&app, &packet("normal", &user(1), 1_200)).await;
    let group = create(&app, &packet("group", &user(2), 900)).await;
    settle(&app, &sender).await;

    // The receiver opens the single packet; one of three shares of the group packet is taken.
    sandbox_control(&app, "redpacks/open", &json!({"mch_billno": billno(&single)})).await;
    sandbox_control(&app, "redpacks/open", &json!({"mch_billno": billno(&group)})).await;
    let soon = Utc::now() + chrono::Duration::hours(3);
    while sender.followup_at(soon).await.unwrap().is_some() {}
    let got = app.get_redpack(&app.keys.viewer, &billno(&single)).await.expect(200).clone();
    assert_eq!((got["status"].as_str(), got["wechat_status"].as_str()), (Some("received"), Some("RECEIVED")));
    assert!(got["received_at"].is_string());
    assert_eq!(app.get_redpack(&app.keys.viewer, &billno(&group)).await.expect(200)["status"], "sent");

    // A day later nobody took the other shares: WeChat returns them to the merchant.
    app.sandbox.advance_clock(chrono::Duration::hours(25));
    let later = Utc::now() + chrono::Duration::hours(6);
    while sender.followup_at(later).await.unwrap().is_some() {}
    let g = app.get_redpack(&app.keys.viewer, &billno(&group)).await.expect(200).clone();
    assert_eq!(g["status"], "refunded", "{g}");
    let refund = g["refund_amount"].as_i64().unwrap();
    assert!(refund > 0 && refund < 900, "two of three shares came back: {refund}");

    let mut c = app.pool().acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut c, Kind::RedPacketRefund, &billno(&group)).await.unwrap(), 1);
    assert_eq!(ledger::count_postings(&mut c, Kind::RedPacketRefund, &billno(&single)).await.unwrap(), 0);
    assert_eq!(ledger::balance(&mut c, &account::redpacks(DEMO_MCH_ID)).await.unwrap().get(), 1_200 + 900 - refund);
    let events: Vec<(String,)> =
        sqlx::query_as("SELECT event_type FROM webhook_outbox ORDER BY id").fetch_all(&mut *c).await.unwrap();
    let events: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(events, ["redpack.sent", "redpack.sent", "redpack.received", "redpack.refunded"]);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn red_packet_rules_and_approval() {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    let two = app
        .create_redpack(
            &app.keys.finance,
            &json!({
        "kind": "group", "openid": user(1), "amount": 900, "total_num": 2,
        "wishing": "w", "act_name": "a", "remark": "r"}),
            "g2",
        )
        .await;
    assert_eq!(two.expect(422)["error"]["code"], "invalid_total_num");
    let big = app.create_redpack(&app.keys.finance, &packet("normal", &user(1), 20_001), "big").await;
    assert_eq!(big.expect(422)["error"]["code"], "redpack_amount_out_of_range");
    let small = app.create_redpack(&app.keys.finance, &packet("normal", &user(1), 99), "small").await;
    assert_eq!(small.status, 422);

    let mut scene = packet("normal", &user(1), 30_000);
    scene["scene_id"] = json!("PRODUCT_4");
    let r = create(&app, &scene).await;
    assert_eq!(r["status"], "pending_approval", "above the red-packet approval threshold");
    assert_eq!(app.approve_redpack(&app.keys.finance, &billno(&r)).await.status, 403);
    assert_eq!(app.approve_redpack(&app.keys.approver, &billno(&r)).await.expect(200)["status"], "approved");
    settle(&app, &sender).await;
    assert_eq!(app.get_redpack(&app.keys.finance, &billno(&r)).await.expect(200)["status"], "sent");

    app.add_fault(
        "/mmpaymkttransfers/sendredpack",
        FaultKind::Error { err_code: "SEND_FAILED".into(), err_code_des: None },
        1,
    );
    let failing = create(&app, &packet("normal", &user(2), 500)).await;
    settle(&app, &sender).await;
    let f = app.get_redpack(&app.keys.finance, &billno(&failing)).await.expect(200).clone();
    assert_eq!((f["status"].as_str(), f["failure_code"].as_str()), (Some("failed"), Some("SEND_FAILED")));
    assert_eq!(packets_for(&app, &billno(&failing)), 0);
    let listed = app.list_redpacks(&app.keys.viewer, "status=sent&kind=normal").await.expect(200).clone();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    app.assert_ledger_balanced().await;
}
