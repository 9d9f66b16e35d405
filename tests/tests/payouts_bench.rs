//! Payout throughput against the sandbox (ignored by default: a measurement, not a check).
//! Run: `cargo test --release -p minipay-e2e --test payouts_bench -- --ignored --nocapture`.
//! Figures go to docs/PERFORMANCE.md ("Payouts").

use std::sync::Arc;
use std::time::{Duration, Instant};

use minipay_e2e::{Options, TestApp};
use serde_json::json;

const N: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn payout_request_and_send_throughput() {
    let app = Arc::new(
        TestApp::spawn_with(Options {
            configure: Box::new(|c| {
                c.payouts.openid_daily_count = 1_000;
                c.payouts.openid_daily_amount = 100_000_000;
            }),
            ..Options::default()
        })
        .await,
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..N).step_by(4) {
                let body =
                    json!({"openid": format!("oBenchUser{:017}", i % 50), "amount": 100, "description": "bench"});
                app.create_payout(&app.keys.finance, &body, &format!("bench-{i}")).await.expect(201);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let requested = started.elapsed();

    let started = Instant::now();
    let senders: Vec<_> = (0..2).map(|_| app.payout_sender()).collect();
    let mut tasks = Vec::new();
    for s in senders {
        tasks.push(tokio::spawn(async move { s.run_until_idle(N).await.unwrap().len() }));
    }
    let mut steps = 0;
    for t in tasks {
        steps += t.await.unwrap();
    }
    let sent = started.elapsed();
    assert_eq!(steps, N, "two senders with SKIP LOCKED share the work without overlap");
    assert_eq!(app.sandbox.transfers().len(), N);
    app.assert_ledger_balanced().await;
    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    println!(
        "payouts: {N} requests via POST /v1/payouts (4 concurrent clients) in {requested:.2?} = {:.0}/s; \
         sent by 2 senders in {sent:.2?} = {:.0}/s",
        rate(requested),
        rate(sent)
    );
}
