//! Platform certificates of a v3 merchant in certificate mode: learned on demand, shared
//! through Postgres, refreshed by one worker at a time, and a rotation in the middle of the
//! day keeps answers and notifications verifying.

use minipay_e2e::{DEMO_MCH_ID, Options, Protocol, TestApp};
use minipay_worker::certificates::{CertStep, CertificateRefresh};

fn certificate_mode() -> Options {
    let mut opts = Options::with_protocol(Protocol::V3);
    opts.sandbox.merchants[0].v3_mode = minipay_sandbox::V3Mode::Certificate;
    opts
}

async fn stored_serials(app: &TestApp) -> Vec<String> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT serial_no FROM wechatpay_platform_certificates WHERE mch_id = $1 ORDER BY not_before")
            .bind(DEMO_MCH_ID)
            .fetch_all(app.pool())
            .await
            .unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

async fn pay_one(app: &TestApp, openid: &str, amount: i64) -> String {
    let order = app.create_order_for(openid, amount).await.expect(201).clone();
    app.assert_pay_params(&order["pay_params"]);
    let no = order["out_trade_no"].as_str().unwrap().to_owned();
    app.pay(&no);
    app.wait_for_order_status(&no, "paid").await;
    no
}

#[tokio::test]
async fn a_certificate_rotated_mid_day_keeps_answers_and_notifications_verifying() {
    let app = TestApp::spawn_with(certificate_mode()).await;
    let openid = app.login("demo-user").await;
    let keys = app.sandbox.v3_keys(DEMO_MCH_ID).unwrap();
    let first = keys.platform_signer().serial().to_owned();

    // The first answer is signed with a certificate nobody has yet: fetched once, stored.
    pay_one(&app, &openid, 500).await;
    assert_eq!(stored_serials(&app).await, std::slice::from_ref(&first));

    // WeChat rotates: the new certificate signs from now on, the old one stays listed.
    let second = keys.rotate_platform_certificate().unwrap();
    assert_ne!(first, second);
    let no = pay_one(&app, &openid, 700).await;
    assert_eq!(app.get_order_refreshed(&no).await.expect(200)["status"], "paid");
    let r = app.refund(&no, &serde_json::json!({"out_refund_no": "rot-r1", "amount": 200})).await;
    r.expect(201);
    app.wait_for_refund_status("rot-r1", "succeeded").await;
    let mut stored = stored_serials(&app).await;
    stored.sort();
    let mut both = vec![first, second];
    both.sort();
    assert_eq!(stored, both, "both certificates kept for the other replicas");
    let sent = app.delivered_notifications().await;
    assert!(sent.iter().all(|n| n.v3), "{sent:?}");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn one_worker_at_a_time_refreshes_and_the_others_find_them_stored() {
    let app = TestApp::spawn_with(certificate_mode()).await;
    let every = std::time::Duration::from_secs(12 * 3600);
    let a = CertificateRefresh::new(app.pool().clone(), &app.config, every).unwrap();
    let b = CertificateRefresh::new(app.pool().clone(), &app.config, every).unwrap();
    let (sa, sb) = tokio::join!(a.run_once(), b.run_once());
    let mut steps = [sa.unwrap(), sb.unwrap()].concat();
    steps.sort_by_key(|s| format!("{s:?}"));
    let refreshed = steps.iter().filter(|s| matches!(s, CertStep::Refreshed { certificates: 1, .. })).count();
    assert_eq!(refreshed, 1, "exactly one worker fetched: {steps:?}");
    assert!(
        steps.iter().any(|s| matches!(s, CertStep::Busy { .. } | CertStep::Fresh { .. })),
        "the other one waited its turn or found them fresh: {steps:?}"
    );
    assert_eq!(stored_serials(&app).await.len(), 1);
    // Fresh now: a second round fetches nothing.
    assert_eq!(a.run_once().await.unwrap(), [CertStep::Fresh { mch_id: DEMO_MCH_ID.into() }]);
    // A rotation is picked up by the next stale round; a replica that never called WeChat
    // loads both from the store instead of fetching.
    let second = app.sandbox.v3_keys(DEMO_MCH_ID).unwrap().rotate_platform_certificate().unwrap();
    let c = CertificateRefresh::new(app.pool().clone(), &app.config, std::time::Duration::ZERO).unwrap();
    assert!(matches!(&c.run_once().await.unwrap()[..], [CertStep::Refreshed { certificates: 2, .. }]));
    assert!(stored_serials(&app).await.contains(&second));
    let replica = app.config.v3_client_for(DEMO_MCH_ID, minipay_e2e::DEMO_APPID).unwrap();
    minipay_store::platform_certs::attach(&replica, app.pool(), DEMO_MCH_ID);
    assert_eq!(replica.load_stored_certificates().await.unwrap(), 2);
    assert!(replica.verifier().keys().get(&second).is_some());
}
