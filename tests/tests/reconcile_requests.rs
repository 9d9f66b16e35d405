//! `POST /v1/reconciliations`: finance asks for a run of a day, a worker serves it, the
//! report appears with trigger `api`; a worker that stops hands its request back.

use chrono::{Duration, FixedOffset, TimeZone, Utc};
use minipay_e2e::{DEMO_MCH_ID, TestApp};
use minipay_store::recon;
use minipay_worker::recon_requests::try_execute_request;
use minipay_worker::reconcile::Reconciler;
use serde_json::json;

fn beijing_today() -> chrono::NaiveDate {
    Utc::now().with_timezone(&FixedOffset::east_opt(8 * 3600).unwrap()).date_naive()
}

#[tokio::test]
async fn only_finance_asks_and_bad_requests_are_refused() {
    let app = TestApp::spawn().await;
    let yesterday = (beijing_today() - Duration::days(1)).to_string();
    let body = json!({"date": yesterday});
    for key in [&app.keys.client, &app.keys.viewer, &app.keys.approver] {
        let r = app.post_as(Some(key), "/v1/reconciliations", &body, Some("k")).await;
        assert_eq!(r.status, 403, "{:?}", r.body);
    }
    let f = Some(app.keys.finance.as_str());
    let r = app.post_as(f, "/v1/reconciliations", &json!({"date": "2026-13-01"}), None).await;
    assert_eq!((r.status, r.code()), (422, "invalid_date"));
    let tomorrow = (beijing_today() + Duration::days(1)).to_string();
    let r = app.post_as(f, "/v1/reconciliations", &json!({"date": tomorrow}), None).await;
    assert_eq!((r.status, r.code()), (422, "invalid_date"));
    let r = app.post_as(f, "/v1/reconciliations", &json!({"date": yesterday, "merchant": "1234"}), None).await;
    assert_eq!((r.status, r.code()), (422, "unknown_merchant"));

    let r = app.post_as(f, "/v1/reconciliations", &body, Some("ask-1")).await;
    let accepted = r.expect(202).clone();
    let requests = accepted["requests"].as_array().unwrap();
    assert_eq!(requests.len(), app.config.merchants.len(), "one request per configured merchant");
    assert_eq!(requests[0]["status"], "pending");
    assert_eq!(requests[0]["mch_id"], DEMO_MCH_ID);
    // The same Idempotency-Key asks once.
    let again = app.post_as(f, "/v1/reconciliations", &body, Some("ask-1")).await;
    assert_eq!(again.expect(202)["requests"][0]["id"], requests[0]["id"]);

    let id = requests[0]["id"].as_i64().unwrap();
    let seen = app.get_as(Some(&app.keys.viewer), &format!("/v1/reconciliations/requests/{id}")).await;
    assert_eq!(seen.expect(200)["status"], "pending");
    let r = app.get_as(Some(&app.keys.client), &format!("/v1/reconciliations/requests/{id}")).await;
    assert_eq!(r.status, 403);
    let r = app.get_as(Some(&app.keys.viewer), "/v1/reconciliations/requests/999999").await;
    assert_eq!((r.status, r.code()), (404, "reconciliation_request_not_found"));
}

#[tokio::test]
async fn a_worker_runs_the_request_and_the_report_appears() {
    let app = TestApp::spawn().await;
    let openid = app.login("recon-user").await;
    let order = app.create_order_for(&openid, 1500).await.expect(201).clone();
    let no = order["out_trade_no"].as_str().unwrap().to_owned();
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;

    // The sandbox's next morning: the bill of the day exists.
    let day = app.sandbox.now().with_timezone(&FixedOffset::east_opt(8 * 3600).unwrap()).date_naive();
    let next = FixedOffset::east_opt(8 * 3600)
        .unwrap()
        .from_local_datetime(&(day + Duration::days(1)).and_hms_opt(11, 0, 0).unwrap())
        .unwrap();
    app.sandbox.set_clock(next.with_timezone(&Utc));

    let f = Some(app.keys.finance.as_str());
    let r =
        app.post_as(f, "/v1/reconciliations", &json!({"date": day.to_string(), "merchant": DEMO_MCH_ID}), None).await;
    let id = r.expect(202)["requests"][0]["id"].as_i64().unwrap();

    let worker = Reconciler::from_config(&app.config, app.pool().clone()).unwrap().with_worker_id("worker-a");
    let served = try_execute_request(&worker).await.unwrap().expect("the request was waiting");
    assert_eq!(served.request.id, id);
    assert!(served.completed, "{:?}", served.error);
    assert!(try_execute_request(&worker).await.unwrap().is_none(), "the queue is empty");

    let seen = app.get_as(Some(&app.keys.finance), &format!("/v1/reconciliations/requests/{id}")).await;
    let seen = seen.expect(200).clone();
    assert_eq!(seen["status"], "completed");
    let run_id = seen["run_id"].as_i64().unwrap();
    let day_report = app.get_as(Some(&app.keys.finance), &format!("/v1/reconciliations/{day}")).await;
    let m = &day_report.expect(200)["merchants"][0];
    assert_eq!(m["run"]["run_id"], run_id);
    assert_eq!(m["run"]["trigger"], "api");
    assert_eq!(m["run"]["status"], "completed");
    assert_eq!(m["report"]["discrepancies"].as_array().map(Vec::len), Some(0), "{m}");
}

#[tokio::test]
async fn a_stopping_worker_hands_its_request_back() {
    let app = TestApp::spawn().await;
    let f = Some(app.keys.finance.as_str());
    let yesterday = (beijing_today() - Duration::days(1)).to_string();
    let r = app.post_as(f, "/v1/reconciliations", &json!({"date": yesterday}), None).await;
    let id = r.expect(202)["requests"][0]["id"].as_i64().unwrap();

    // Worker A claims it (as if mid-run), then stops: the request is pending again at once,
    // not when A's lease ends, and worker B takes it.
    let claimed = recon::claim_request(app.pool(), "worker-a", 3600).await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.status.as_str(), claimed.attempts), (id, "running", 1));
    assert!(recon::claim_request(app.pool(), "worker-b", 3600).await.unwrap().is_none(), "A's lease holds");
    assert_eq!(recon::release_requests(app.pool(), "worker-a").await.unwrap(), (1, 0));
    let b = recon::claim_request(app.pool(), "worker-b", 3600).await.unwrap().expect("handed back");
    assert_eq!((b.id, b.attempts), (id, 2));
    // A's late finish does not overwrite B's claim.
    assert!(!recon::finish_request(app.pool(), id, "worker-a", true, None, None).await.unwrap());
    assert!(recon::finish_request(app.pool(), id, "worker-b", false, None, Some("no bill")).await.unwrap());
}
