//! The paths that could pay a user twice (issue 22), each reproduced through the sandbox's
//! faults or the crash it stands for, and each ending with the sandbox holding exactly one
//! transfer or packet and the ledger balanced:
//!
//! - an Idempotency-Key whose response was never stored (a crash after the commit), retried
//!   after the key's takeover window, or released by a 5xx: the same payout, packet or batch
//!   comes back, never a second one;
//! - a transfer whose answer is lost, then `gettransferinfo` says NOT_FOUND, then the re-send
//!   is refused with FREQ_LIMIT: not failed — a query finds it paid;
//! - a mini-program packet whose answer is lost, then the re-send is refused with FREQ_LIMIT:
//!   resolved by gethbinfo (sent), its package fetched later, never failed;
//! - a success for something we hold failed is recorded and raised, never dropped;
//! - one finance key's auto-approved payouts stop at its daily ceiling.

use std::time::Duration;

use chrono::Utc;
use minipay_e2e::{DEMO_APPID, DEMO_MCH_ID, Options, TestApp};
use minipay_sandbox::FaultKind;
use minipay_store::ledger::{self, Kind, account};
use minipay_store::payouts::{self, PayoutStatus, Settled};
use minipay_store::redpacks::{self, HbFacts, RedpackStatus};
use minipay_worker::payouts::PayoutSender;
use serde_json::{Value, json};
use wxpay::api::RedpackStatus as HbStatus;

const TRANSFERS: &str = "/mmpaymkttransfers/promotion/transfers";
const TRANSFER_INFO: &str = "/mmpaymkttransfers/gettransferinfo";
const MINI_HB: &str = "/mmpaymkttransfers/sendminiprogramhb";

fn opts() -> Options {
    Options::fast_payouts()
}

fn openid(app: &TestApp) -> String {
    app.sandbox.openid("demo-user", DEMO_APPID)
}

fn payout_body(app: &TestApp, amount: i64) -> Value {
    json!({"openid": openid(app), "amount": amount, "description": "issue 22"})
}

fn packet_body(app: &TestApp, amount: i64) -> Value {
    json!({
        "kind": "mini_program", "openid": openid(app), "amount": amount,
        "wishing": "恭喜发财", "act_name": "launch", "remark": "thanks",
    })
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(app.pool()).await.unwrap();
    n
}

/// What a process killed after the handler's commit and before the response was stored
/// leaves behind: a claimed key with no response, last touched `age` ago.
async fn forget_response(app: &TestApp, key: &str, age_secs: i64) {
    let mut tx = app.pool().begin().await.unwrap();
    // The row's touch trigger would stamp `updated_at` with now(): age it past the takeover
    // window as time would.
    sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = NULL, response_body = NULL,
                updated_at = now() - make_interval(secs => $2)
          WHERE key = $1",
    )
    .bind(key)
    .bind(age_secs as f64)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// What a 5xx leaves behind: the key released.
async fn release_key(app: &TestApp, key: &str) {
    sqlx::query("DELETE FROM idempotency_keys WHERE key = $1").bind(key).execute(app.pool()).await.unwrap();
}

async fn settle(app: &TestApp, sender: &PayoutSender) {
    assert!(app.settle_payouts_with(sender, Duration::from_secs(15)).await, "did not settle");
}

#[tokio::test]
async fn a_payout_key_without_a_stored_response_returns_the_same_payout_after_the_takeover_window() {
    let app = TestApp::spawn_with(opts()).await;
    let body = payout_body(&app, 1_200);
    let first = app.create_payout(&app.keys.finance, &body, "payout-key-1").await.expect(201).clone();
    forget_response(&app, "payout-key-1", 3_600).await;

    let again = app.create_payout(&app.keys.finance, &body, "payout-key-1").await.expect(201).clone();
    assert_eq!(again["id"], first["id"], "the key names the same payout forever");
    assert_eq!(again["partner_trade_no"], first["partner_trade_no"]);
    release_key(&app, "payout-key-1").await;
    let third = app.create_payout(&app.keys.finance, &body, "payout-key-1").await.expect(201).clone();
    assert_eq!(third["id"], first["id"], "a released key (5xx) also finds its payout");
    assert_eq!(count(&app, "SELECT count(*) FROM payouts").await, 1);

    // The key's object is fixed: the same key with another request is refused, not a
    // second payout.
    release_key(&app, "payout-key-1").await;
    let other = app.create_payout(&app.keys.finance, &payout_body(&app, 1_300), "payout-key-1").await;
    assert_eq!((other.status, other.code()), (409, "idempotency_key_reused"), "{:?}", other.body);
    assert_eq!(count(&app, "SELECT count(*) FROM payouts").await, 1);

    settle(&app, &app.payout_sender()).await;
    let ptn = first["partner_trade_no"].as_str().unwrap();
    assert_eq!(app.sandbox.transfers().len(), 1, "exactly one transfer at WeChat");
    assert_eq!(app.sandbox.transfers()[0].partner_trade_no, ptn);
    let mut c = app.pool().acquire().await.unwrap();
    assert_eq!(ledger::balance(&mut c, &account::payouts(DEMO_MCH_ID)).await.unwrap().get(), 1_200);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn red_packet_and_batch_keys_return_the_same_objects_after_a_crash_or_a_5xx() {
    let app = TestApp::spawn_with(opts()).await;
    let body = packet_body(&app, 1_000);
    let first = app.create_redpack(&app.keys.finance, &body, "packet-key").await.expect(201).clone();
    forget_response(&app, "packet-key", 3_600).await;
    let again = app.create_redpack(&app.keys.finance, &body, "packet-key").await.expect(201).clone();
    assert_eq!(again["mch_billno"], first["mch_billno"]);
    release_key(&app, "packet-key").await;
    let third = app.create_redpack(&app.keys.finance, &body, "packet-key").await.expect(201).clone();
    assert_eq!(third["mch_billno"], first["mch_billno"]);
    assert_eq!(count(&app, "SELECT count(*) FROM redpacks").await, 1);

    let csv = format!("openid,amount,description\n{o},1000,row one\n{o},1100,row two\n", o = openid(&app));
    let batch = app.create_payout_batch(&app.keys.finance, &csv, "batch-key").await.expect(201).clone();
    forget_response(&app, "batch-key", 3_600).await;
    let batch_again = app.create_payout_batch(&app.keys.finance, &csv, "batch-key").await.expect(201).clone();
    assert_eq!(batch_again["id"], batch["id"]);
    release_key(&app, "batch-key").await;
    let changed = csv.replace("1100", "1200");
    let refused = app.create_payout_batch(&app.keys.finance, &changed, "batch-key").await;
    assert_eq!((refused.status, refused.code()), (409, "idempotency_key_reused"));
    assert_eq!(count(&app, "SELECT count(*) FROM payout_batches").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM payouts").await, 2);

    settle(&app, &app.payout_sender()).await;
    let no = first["mch_billno"].as_str().unwrap();
    assert_eq!(app.sandbox.redpacks().iter().filter(|r| r.mch_billno == no).count(), 1);
    assert_eq!(app.sandbox.redpacks().len(), 1, "exactly one packet at WeChat");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_transfer_refused_on_its_resend_after_a_lost_answer_is_paid_once_not_failed() {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    // The first call pays and its answer is lost; the query is (wrongly, as WeChat can be
    // while it catches up) NOT_FOUND; the re-send is refused with FREQ_LIMIT.
    app.add_fault(TRANSFERS, FaultKind::LostAnswer, 1);
    app.add_fault(TRANSFER_INFO, FaultKind::Error { err_code: "NOT_FOUND".into(), err_code_des: None }, 1);
    app.add_fault(TRANSFERS, FaultKind::Error { err_code: "FREQ_LIMIT".into(), err_code_des: None }, 1);
    let p = app.request_payout(&openid(&app), 2_000).await;
    settle(&app, &sender).await;

    let id = p["id"].as_i64().unwrap();
    let got = app.get_payout(&app.keys.finance, id).await.expect(200).clone();
    assert_eq!(got["status"], "succeeded", "{got}");
    let ptn = p["partner_trade_no"].as_str().unwrap();
    let sent: Vec<_> = app.sandbox.transfers().into_iter().filter(|t| t.partner_trade_no == ptn).collect();
    assert_eq!(sent.len(), 1, "exactly one transfer");
    assert_eq!(got["payment_no"].as_str(), Some(sent[0].payment_no.as_str()));
    let mut c = app.pool().acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut c, Kind::Payout, ptn).await.unwrap(), 1);
    // The refused re-send is on record, and it was followed by a query, not taken as final.
    let attempts =
        minipay_store::payout_attempts::list(&mut c, minipay_store::payout_attempts::SubjectType::Payout, id)
            .await
            .unwrap();
    let trail: Vec<(String, Option<String>)> = attempts.iter().map(|a| (a.action.clone(), a.code.clone())).collect();
    let refused = trail.iter().position(|t| t == &("send".to_owned(), Some("FREQ_LIMIT".to_owned()))).expect("refused");
    assert_eq!(trail[refused + 1].0, "query", "{trail:?}");
    let (held,): (i64,) = sqlx::query_as("SELECT coalesce(sum(amount), 0)::bigint FROM payout_openid_daily")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(held, 2_000, "the paid amount stays in the daily limits");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_mini_program_packet_refused_on_its_resend_after_a_lost_answer_is_sent_once() {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    app.add_fault(MINI_HB, FaultKind::LostAnswer, 1);
    app.add_fault(MINI_HB, FaultKind::Error { err_code: "FREQ_LIMIT".into(), err_code_des: None }, 1);
    let r = app.create_redpack(&app.keys.finance, &packet_body(&app, 1_000), "mini-1").await.expect(201).clone();
    settle(&app, &sender).await;
    let no = r["mch_billno"].as_str().unwrap().to_owned();
    let got = app.get_redpack(&app.keys.finance, &no).await.expect(200).clone();
    assert_eq!(got["status"], "sent", "resolved by gethbinfo, never failed: {got}");

    // The package comes from a repeated send of the packet WeChat holds; the first repeat
    // was refused (FREQ_LIMIT), the follow-up asks again.
    let has_package = minipay_e2e::poll(Duration::from_secs(15), || async {
        sender.run_until_idle(10).await.unwrap();
        !app.get_redpack(&app.keys.finance, &no).await.body["send_biz_red_packet"].is_null()
    })
    .await;
    assert!(has_package, "the package was fetched");
    assert_eq!(app.sandbox.redpacks().iter().filter(|p| p.mch_billno == no).count(), 1, "exactly one packet");
    let mut c = app.pool().acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut c, Kind::RedPacketSent, &no).await.unwrap(), 1);
    let (held,): (i64,) = sqlx::query_as("SELECT coalesce(sum(amount), 0)::bigint FROM payout_openid_daily")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(held, 1_000, "limits are not given back for a packet WeChat holds");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_refused_send_becomes_final_only_after_a_query_finds_nothing() {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    app.add_fault(TRANSFERS, FaultKind::Error { err_code: "NOTENOUGH".into(), err_code_des: None }, 1);
    let p = app.request_payout(&openid(&app), 1_500).await;
    let id = p["id"].as_i64().unwrap();
    sender.try_execute_payout().await.unwrap().expect("a step");
    let mut c = app.pool().acquire().await.unwrap();
    assert_eq!(payouts::get(&mut c, id).await.unwrap().unwrap().status, PayoutStatus::Unknown, "not final yet");
    settle(&app, &sender).await;
    let got = app.get_payout(&app.keys.finance, id).await.expect(200).clone();
    assert_eq!((got["status"].as_str(), got["failure_code"].as_str()), (Some("failed"), Some("NOTENOUGH")));
    assert!(app.sandbox.transfers().is_empty());
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_success_for_what_we_hold_failed_is_recorded_and_raised() {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    app.add_fault(TRANSFERS, FaultKind::Error { err_code: "SEND_FAILED".into(), err_code_des: None }, 1);
    app.add_fault(MINI_HB, FaultKind::Error { err_code: "SEND_FAILED".into(), err_code_des: None }, 1);
    let p = app.request_payout(&openid(&app), 1_500).await;
    let r = app.create_redpack(&app.keys.finance, &packet_body(&app, 1_000), "late-packet").await.expect(201).clone();
    settle(&app, &sender).await;
    let id = p["id"].as_i64().unwrap();
    let no = r["mch_billno"].as_str().unwrap();
    let mut c = app.pool().acquire().await.unwrap();
    assert_eq!(payouts::get(&mut c, id).await.unwrap().unwrap().status, PayoutStatus::Failed);
    assert_eq!(redpacks::get(&mut c, no).await.unwrap().unwrap().status, RedpackStatus::Failed);

    // A late answer says both were paid after all (the answer of a call whose lease ran
    // out, arriving after another sender settled them).
    let now = Utc::now();
    let mut tx = app.pool().begin().await.unwrap();
    let settled = payouts::settle_success(&mut tx, id, Some("10000late"), now, "test").await.unwrap();
    assert_eq!(settled, Settled::Changed, "recorded, not dropped");
    let facts = HbFacts {
        status: HbStatus::Sent,
        send_listid: Some("listid-late"),
        package: None,
        received_at: None,
        refunded_at: None,
        refund_amount: None,
        reason: None,
        now,
        next_check: now,
    };
    let packet_id = r["id"].as_i64().unwrap();
    assert_eq!(redpacks::apply(&mut tx, packet_id, &facts, "test").await.unwrap(), Settled::Changed);
    tx.commit().await.unwrap();

    assert_eq!(payouts::get(&mut c, id).await.unwrap().unwrap().status, PayoutStatus::Succeeded);
    assert_eq!(redpacks::get(&mut c, no).await.unwrap().unwrap().status, RedpackStatus::Sent);
    let ptn = p["partner_trade_no"].as_str().unwrap();
    assert_eq!(ledger::count_postings(&mut c, Kind::Payout, ptn).await.unwrap(), 1);
    assert_eq!(ledger::count_postings(&mut c, Kind::RedPacketSent, no).await.unwrap(), 1);
    let raised: Vec<(String,)> = sqlx::query_as(
        "SELECT reference FROM settlement_anomalies WHERE kind = 'paid_after_failed' ORDER BY reference",
    )
    .fetch_all(&mut *c)
    .await
    .unwrap();
    let mut expected = vec![(ptn.to_owned(),), (no.to_owned(),)];
    expected.sort();
    assert_eq!(raised, expected);
    let (held,): (i64,) = sqlx::query_as("SELECT coalesce(sum(amount), 0)::bigint FROM payout_openid_daily")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(held, 2_500, "what was paid counts in the daily limits again");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn auto_approval_stops_at_the_makers_daily_ceiling() {
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|c| {
            c.payouts.approval_threshold = 10_000;
            c.payouts.auto_approve_daily_per_maker = 2_500;
            c.payouts.redpack_approval_threshold = 10_000;
            c.payouts.redpack_auto_approve_daily_per_maker = 1_500;
        }),
        ..Options::default()
    })
    .await;
    let o = openid(&app);
    assert_eq!(app.request_payout(&o, 1_000).await["status"], "approved");
    assert_eq!(app.request_payout(&o, 1_000).await["status"], "approved");
    let third = app.request_payout(&o, 1_000).await;
    assert_eq!(third["status"], "pending_approval", "2,000 + 1,000 passes the key's 2,500 ceiling");
    let ok = app.approve_payout(&app.keys.approver, third["id"].as_i64().unwrap()).await;
    assert_eq!(ok.expect(200)["status"], "approved", "an approver still decides");
    assert_eq!(app.request_payout(&o, 500).await["status"], "approved", "500 more fits exactly");
    assert_eq!(app.request_payout(&o, 100).await["status"], "pending_approval");

    let first = app.create_redpack(&app.keys.finance, &packet_body(&app, 1_000), "rp-1").await.expect(201).clone();
    assert_eq!(first["status"], "approved");
    let second = app.create_redpack(&app.keys.finance, &packet_body(&app, 1_000), "rp-2").await.expect(201).clone();
    assert_eq!(second["status"], "pending_approval");
    app.assert_ledger_balanced().await;
}
