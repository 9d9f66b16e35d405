//! Payouts end to end, against the sandbox: request → (approval) → sender → WeChat, with
//! the faults WeChat produces on bad days. Whatever happens on the wire, the sandbox ends
//! with exactly one transfer per request and ours with the right final state; the ledger
//! balances after every test.

use std::time::Duration;

use minipay_e2e::{DEMO_APPID, Options, TestApp};
use minipay_sandbox::FaultKind;
use minipay_store::ledger::{self, Kind, account};
use minipay_worker::payouts::PayoutSender;
use serde_json::{Value, json};

const TRANSFERS: &str = "/mmpaymkttransfers/promotion/transfers";

fn opts() -> Options {
    Options::fast_payouts()
}

fn openid(app: &TestApp) -> String {
    app.sandbox.openid("demo-user", DEMO_APPID)
}

fn transfers_for(app: &TestApp, ptn: &str) -> Vec<minipay_sandbox::Transfer> {
    app.sandbox.transfers().into_iter().filter(|t| t.partner_trade_no == ptn).collect()
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().expect("id")
}

fn ptn(v: &Value) -> String {
    v["partner_trade_no"].as_str().expect("partner_trade_no").to_owned()
}

async fn settle(app: &TestApp, sender: &PayoutSender) {
    assert!(app.settle_payouts_with(sender, Duration::from_secs(15)).await, "did not settle");
}

#[tokio::test]
async fn a_small_payout_is_sent_once_with_ledger_webhook_and_audit() {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    let p = app.request_payout(&openid(&app), 1_000).await;
    assert_eq!(p["status"], "approved", "at or below the threshold: no approval needed");
    assert_eq!(p["amount"], 1_000);
    assert!(p.get("real_name").is_none());
    settle(&app, &sender).await;

    let got = app.get_payout(&app.keys.viewer, id(&p)).await.expect(200).clone();
    assert_eq!(got["status"], "succeeded");
    let sent = transfers_for(&app, &ptn(&p));
    assert_eq!(sent.len(), 1);
    assert_eq!(got["payment_no"].as_str(), Some(sent[0].payment_no.as_str()));

    let mut c = app.pool().acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut c, Kind::Payout, &ptn(&p)).await.unwrap(), 1);
    assert_eq!(ledger::balance(&mut c, &account::payouts(minipay_e2e::DEMO_MCH_ID)).await.unwrap().get(), 1_000);
    let (hooks,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM webhook_outbox WHERE event_type = 'payout.succeeded' AND subject = $1")
            .bind(ptn(&p))
            .fetch_one(&mut *c)
            .await
            .unwrap();
    assert_eq!(hooks, 1);
    let actions: Vec<(String, String)> = sqlx::query_as(
        "SELECT actor, action FROM audit_log WHERE subject_type = 'payout' AND subject_id = $1 ORDER BY id",
    )
    .bind(id(&p).to_string())
    .fetch_all(&mut *c)
    .await
    .unwrap();
    let names: Vec<&str> = actions.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(names, ["payout.requested", "payout.send_attempt", "payout.succeeded"]);
    assert!(actions[0].0.starts_with("client:"), "the request is audited with the acting key");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn transfer_faults_end_with_exactly_one_transfer_each() {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    let faults = [
        ("done but the answer is lost", FaultKind::LostAnswer),
        ("SYSTEMERROR", FaultKind::Error { err_code: "SYSTEMERROR".into(), err_code_des: None }),
        ("HTTP 500", FaultKind::Http500),
        ("connection dropped", FaultKind::Drop),
        ("numeric err_code (busy)", FaultKind::Error { err_code: "268".into(), err_code_des: Some("系统繁忙".into()) }),
    ];
    for (what, fault) in faults {
        app.add_fault(TRANSFERS, fault, 1);
        let p = app.request_payout(&openid(&app), 1_500).await;
        settle(&app, &sender).await;
        let got = app.get_payout(&app.keys.finance, id(&p)).await.expect(200).clone();
        assert_eq!(got["status"], "succeeded", "{what}: {got}");
        assert_eq!(transfers_for(&app, &ptn(&p)).len(), 1, "{what}: exactly one transfer");
        let (sends,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM payout_attempts WHERE subject_id = $1 AND subject_type = 'payout' AND action = 'send'")
                .bind(id(&p))
                .fetch_one(app.pool())
                .await
                .unwrap();
        assert!(sends >= 1, "{what}");
        let (params,): (i64,) = sqlx::query_as(
            "SELECT count(DISTINCT request_params) FROM payout_attempts WHERE subject_id = $1 AND subject_type = 'payout' AND action = 'send'",
        )
        .bind(id(&p))
        .fetch_one(app.pool())
        .await
        .unwrap();
        assert_eq!(params, 1, "{what}: every send carried the same parameters");
    }
    let mut c = app.pool().acquire().await.unwrap();
    assert_eq!(ledger::balance(&mut c, &account::payouts(minipay_e2e::DEMO_MCH_ID)).await.unwrap().get(), 5 * 1_500);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_timed_out_transfer_is_resolved_without_a_second_transfer() {
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|c| {
            c.wechat.timeout = Duration::from_millis(800);
            c.payouts.retry_initial_ms = 1;
            c.payouts.retry_max_ms = 20;
        }),
        ..Options::default()
    })
    .await;
    let sender = app.payout_sender();
    // WeChat takes 1.5 s; we give up after 0.8 s. The transfer may still happen. (Through the
    // sandbox's HTTP fault API, as an operator would.)
    let fault = json!({"path": TRANSFERS, "kind": "delay", "delay_ms": 1_500, "times": 1});
    let r = app.http.post(format!("{}/sandbox/faults", app.sandbox.http_url())).json(&fault).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    let p = app.request_payout(&openid(&app), 2_000).await;
    let step = sender.try_execute_payout().await.unwrap().unwrap();
    assert_eq!(step.status, "unknown", "a timeout is an unknown outcome, never a failure");
    settle(&app, &sender).await;
    // Let the held call finish at the sandbox before counting: a late duplicate would show now.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(transfers_for(&app, &ptn(&p)).len(), 1);
    assert_eq!(app.get_payout(&app.keys.finance, id(&p)).await.expect(200)["status"], "succeeded");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn send_failed_is_final_and_finance_makes_a_new_request() {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    app.add_fault(
        TRANSFERS,
        FaultKind::Error { err_code: "SEND_FAILED".into(), err_code_des: Some("付款错误".into()) },
        1,
    );
    let p = app.request_payout(&openid(&app), 3_000).await;
    settle(&app, &sender).await;
    let got = app.get_payout(&app.keys.finance, id(&p)).await.expect(200).clone();
    assert_eq!((got["status"].as_str(), got["failure_code"].as_str()), (Some("failed"), Some("SEND_FAILED")));
    assert!(transfers_for(&app, &ptn(&p)).is_empty());
    let (failed_hooks,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM webhook_outbox WHERE event_type = 'payout.failed'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(failed_hooks, 1);

    let again = app.request_payout(&openid(&app), 3_000).await;
    assert_ne!(ptn(&again), ptn(&p), "a new request has a new number");
    settle(&app, &sender).await;
    assert_eq!(app.get_payout(&app.keys.finance, id(&again)).await.expect(200)["status"], "succeeded");
    let mut c = app.pool().acquire().await.unwrap();
    assert_eq!(ledger::count_postings(&mut c, Kind::Payout, &ptn(&p)).await.unwrap(), 0);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn large_payouts_need_another_key_and_rejections_give_back_the_limit() {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    let o = openid(&app);
    let p = app.request_payout(&o, 20_000).await;
    assert_eq!(p["status"], "pending_approval");
    assert!(sender.try_execute_payout().await.unwrap().is_none(), "nothing is sent before approval");

    assert_eq!(app.approve_payout(&app.keys.finance, id(&p)).await.expect(403)["error"]["code"], "forbidden");
    let ok = app.approve_payout(&app.keys.approver, id(&p)).await.expect(200).clone();
    assert_eq!(ok["status"], "approved");
    assert!(ok["approved_by"].is_string());
    assert_eq!(app.approve_payout(&app.keys.approver, id(&p)).await.expect(409)["error"]["code"], "invalid_state");

    // admin may do both jobs, but never on its own request.
    let own = app
        .create_payout(&app.keys.admin, &json!({"openid": o, "amount": 20_000, "description": "x"}), "admin-own")
        .await
        .expect(201)
        .clone();
    assert_eq!(app.approve_payout(&app.keys.admin, id(&own)).await.expect(403)["error"]["code"], "maker_checker");
    assert_eq!(app.reject_payout(&app.keys.admin, id(&own), "no").await.expect(403)["error"]["code"], "maker_checker");
    let rejected = app.reject_payout(&app.keys.approver, id(&own), "duplicate").await.expect(200).clone();
    assert_eq!(
        (rejected["status"].as_str(), rejected["reject_reason"].as_str()),
        (Some("rejected"), Some("duplicate"))
    );

    settle(&app, &sender).await;
    assert_eq!(app.get_payout(&app.keys.finance, id(&p)).await.expect(200)["status"], "succeeded");
    assert!(transfers_for(&app, &ptn(&own)).is_empty(), "a rejected request is never sent");
    let listed = app.list_payouts(&app.keys.viewer, "status=rejected").await.expect(200).clone();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn payout_requests_need_an_idempotency_key_and_a_repeat_returns_the_first() {
    let app = TestApp::spawn_with(opts()).await;
    let body = json!({"openid": openid(&app), "amount": 1_000, "description": "once"});
    let none = app.post_as(Some(&app.keys.finance), "/v1/payouts", &body, None).await;
    assert_eq!(none.expect(400)["error"]["code"], "idempotency_key_required");
    let first = app.create_payout(&app.keys.finance, &body, "k-1").await.expect(201).clone();
    let again = app.create_payout(&app.keys.finance, &body, "k-1").await.expect(201).clone();
    assert_eq!(first["partner_trade_no"], again["partner_trade_no"]);
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM payouts").fetch_one(app.pool()).await.unwrap();
    assert_eq!(n, 1);
    let bad = app
        .create_payout(&app.keys.finance, &json!({"openid": openid(&app), "amount": 50, "description": "x"}), "k-2")
        .await;
    assert_eq!(bad.expect(422)["error"]["code"], "amount_below_minimum");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_exceed_the_merchant_daily_limit() {
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|c| {
            c.payouts.merchant_daily_amount = 50_000;
            c.payouts.retry_initial_ms = 1;
        }),
        ..Options::default()
    })
    .await;
    let sender = app.payout_sender();
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"openid": format!("oRaceUser{i:018}"), "amount": 5_000, "description": "race"});
            app.create_payout(&app.keys.finance, &body, &format!("race-{i}")).await
        }));
    }
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => created += 1,
            422 => assert_eq!(r.code(), "merchant_daily_amount_exceeded"),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(created, 10, "50,000 fen / 5,000 fen");
    settle(&app, &sender).await;
    let total: i64 = app.sandbox.transfers().iter().map(|t| t.amount.get()).sum();
    assert_eq!(total, 50_000, "WeChat paid exactly the daily limit, never more");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_approvals_of_one_request_approve_it_once() {
    let app = std::sync::Arc::new(TestApp::spawn_with(opts()).await);
    let sender = app.payout_sender();
    let p = app.request_payout(&openid(&app), 30_000).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let app = app.clone();
        let pid = id(&p);
        tasks.push(tokio::spawn(async move {
            let key = if i % 2 == 0 { &app.keys.approver } else { &app.keys.admin };
            app.approve_payout(key, pid).await.status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409, 409, 409, 409, 409]);
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log WHERE action = 'payout.approved'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    settle(&app, &sender).await;
    assert_eq!(transfers_for(&app, &ptn(&p)).len(), 1);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_csv_batch_is_all_or_nothing_and_approved_as_one() {
    let app = TestApp::spawn_with(opts()).await;
    let sender = app.payout_sender();
    let o = openid(&app);
    let bad = format!("openid,amount,description\n{o},1000,ok\nnot an openid,1000,x\n{o},50,too small\n{o},700,ok\n");
    let r = app.create_payout_batch(&app.keys.finance, &bad, "batch-bad").await;
    let err = r.expect(422)["error"].clone();
    assert_eq!(err["code"], "invalid_batch");
    let rows: Vec<(i64, &str)> = err["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_i64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(rows, [(2, "invalid_openid"), (3, "amount_below_minimum")]);
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM payouts").fetch_one(app.pool()).await.unwrap();
    assert_eq!(n, 0, "nothing of a refused batch exists");

    let good = format!(
        "openid,amount,description,real_name\n{o},1000,bonus,张三\n{o},700,\"bonus, Nov\"\noBatchUser000000000000000001,300,gift\n"
    );
    let b = app.create_payout_batch(&app.keys.finance, &good, "batch-good").await.expect(201).clone();
    assert_eq!((b["row_count"].as_i64(), b["total_amount"].as_i64()), (Some(3), Some(2_000)));
    let first = &b["payouts"][0];
    assert_eq!(
        (first["status"].as_str(), first["check_name"].as_str()),
        (Some("pending_approval"), Some("FORCE_CHECK"))
    );
    let bid = id(&b);
    assert_eq!(app.approve_payout(&app.keys.approver, id(first)).await.expect(409)["error"]["code"], "payout_in_batch");
    assert_eq!(app.approve_payout_batch(&app.keys.finance, bid).await.status, 403);
    let approved = app.approve_payout_batch(&app.keys.approver, bid).await.expect(200).clone();
    assert_eq!(approved["status"], "approved");
    assert!(approved["payouts"].as_array().unwrap().iter().all(|p| p["status"] == "approved"));
    settle(&app, &sender).await;
    let view = app.get_payout_batch(&app.keys.viewer, bid).await.expect(200).clone();
    for p in view["payouts"].as_array().unwrap() {
        assert_eq!(p["status"], "succeeded", "{p}");
        assert_eq!(transfers_for(&app, &ptn(p)).len(), 1);
    }
    app.assert_ledger_balanced().await;
}
