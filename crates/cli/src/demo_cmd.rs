//! `minipay demo [--env FILE]`: the whole story against a running `minipay dev`, each step
//! printed with what was sent and what came back — a user logs in, an order is created and
//! paid in the sandbox, WeChat's notification marks it paid, part of it is refunded, a payout
//! is requested by finance and approved by an approver, a red packet is sent, and the sandbox
//! day is reconciled through `POST /v1/reconciliations`.
//!
//! It talks only HTTP (the api and the sandbox's control API), so it is also a script of what
//! a client backend and finance staff do. The URLs and keys come from the `dev.env` file
//! `minipay dev` writes (`--env`, else `$MINIPAY_DEV_ENV`), or from the same variables in the
//! environment. Exit 0 when every step succeeded, 1 at the first that did not.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Args)]
pub struct DemoArgs {
    /// The `dev.env` that `minipay dev` wrote (default `$MINIPAY_DEV_ENV`, else the
    /// DEV_API_URL, DEV_CLIENT_KEY, … variables themselves).
    #[arg(long, value_name = "FILE")]
    env: Option<PathBuf>,
    /// How long to wait for each asynchronous outcome (notification, payout, …), seconds.
    #[arg(long, default_value_t = 60)]
    wait_secs: u64,
}

pub fn run(args: &DemoArgs) -> ExitCode {
    let result = crate::serve_cmd::runtime().and_then(|rt| rt.block_on(demo(args)));
    match result {
        Ok(()) => {
            println!("\ndemo complete: every step succeeded");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Demo {
    http: reqwest::Client,
    env: HashMap<String, String>,
    wait: Duration,
    step: usize,
}

fn load_env(args: &DemoArgs) -> anyhow::Result<HashMap<String, String>> {
    let file = args.env.clone().or_else(|| std::env::var_os("MINIPAY_DEV_ENV").map(PathBuf::from));
    let mut env: HashMap<String, String> = std::env::vars().collect();
    if let Some(f) = file {
        let text = std::fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?;
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                env.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }
    Ok(env)
}

impl Demo {
    fn var(&self, k: &str) -> anyhow::Result<&str> {
        self.env
            .get(k)
            .map(String::as_str)
            .with_context(|| format!("{k} is not set: pass --env <dev.env of minipay dev>"))
    }

    fn step(&mut self, title: &str) {
        self.step += 1;
        println!("\n{}. {title}", self.step);
    }

    /// One api call with a role's key; the answer must be a success.
    async fn api(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.var("DEV_API_URL")?);
        let mut req = self.http.request(method.clone(), &url).bearer_auth(self.var(key)?);
        if let Some(b) = &body {
            req = req.header("Idempotency-Key", uuid::Uuid::new_v4().to_string()).json(b);
            println!("   → {method} {path} {b}");
        } else {
            println!("   → {method} {path}");
        }
        answer(req.send().await.with_context(|| format!("{method} {url}"))?).await
    }

    /// One call of the sandbox's control API (what the payer or WeChat's clock does).
    async fn sandbox(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}/sandbox/{path}", self.var("SANDBOX_HTTP_URL")?);
        println!("   → sandbox POST /sandbox/{path} {body}");
        answer(self.http.post(&url).json(&body).send().await.with_context(|| format!("POST {url}"))?).await
    }

    /// Polls `path` until `field` is one of `want`; fails on one of `fail` or the timeout.
    async fn wait_for(
        &self,
        path: &str,
        key: &str,
        field: &str,
        want: &[&str],
        fail: &[&str],
    ) -> anyhow::Result<Value> {
        let start = Instant::now();
        let url = format!("{}{path}", self.var("DEV_API_URL")?);
        loop {
            let v = answer(self.http.get(&url).bearer_auth(self.var(key)?).send().await?).await?;
            let s = v[field].as_str().unwrap_or_default().to_owned();
            if want.contains(&s.as_str()) {
                println!("   ← {path}: {field} = {s} (after {:.1} s)", start.elapsed().as_secs_f64());
                return Ok(v);
            }
            if fail.contains(&s.as_str()) || start.elapsed() > self.wait {
                bail!("{path}: {field} is {s:?}, waited for {want:?}: {v}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn answer(r: reqwest::Response) -> anyhow::Result<Value> {
    let status = r.status();
    let text = r.text().await?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if !status.is_success() {
        bail!("HTTP {status}: {text}");
    }
    Ok(v)
}

fn show(v: &Value, fields: &[&str]) -> String {
    fields.iter().map(|f| format!("{f}={}", v[*f])).collect::<Vec<_>>().join(" ")
}

async fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut d = Demo { http, env: load_env(args)?, wait: Duration::from_secs(args.wait_secs), step: 0 };
    println!("minipay demo against {} (sandbox {})", d.var("DEV_API_URL")?, d.var("SANDBOX_HTTP_URL")?);

    d.step("login: the mini-program's wx.login code becomes an openid");
    let code = d.sandbox("jscode", json!({"user": "demo-user"})).await?;
    let code = code["code"].as_str().context("the sandbox minted no code")?.to_owned();
    let session = d.api(Method::POST, "/v1/sessions", "DEV_CLIENT_KEY", Some(json!({"code": code}))).await?;
    let openid = session["openid"].as_str().context("no openid")?.to_owned();
    println!("   ← {}", show(&session, &["appid", "openid"]));

    d.step("order: 12.00 yuan, with the wx.requestPayment parameters");
    let body = json!({"openid": openid, "amount": 1200, "description": "minipay demo order"});
    let order = d.api(Method::POST, "/v1/orders", "DEV_CLIENT_KEY", Some(body)).await?;
    let no = order["out_trade_no"].as_str().context("no out_trade_no")?.to_owned();
    println!(
        "   ← {} pay_params.package={}",
        show(&order, &["out_trade_no", "status", "amount"]),
        order["pay_params"]["package"]
    );

    d.step("pay: the user pays in the sandbox, as in WeChat");
    let paid = d.sandbox("pay", json!({"out_trade_no": no})).await?;
    println!("   ← sandbox: transaction_id={}", paid["transaction_id"]);

    d.step("notification: WeChat's callback reaches notify and the order is paid");
    let o = d.wait_for(&format!("/v1/orders/{no}"), "DEV_CLIENT_KEY", "status", &["paid"], &["closed"]).await?;
    println!("   ← {}", show(&o, &["status", "transaction_id", "paid_at"]));

    d.step("APIv3: the same order for the v3 demo merchant's app (RSA pay_params, a v3 notification)");
    let v3app = crate::dev_cmd::V3_APPID;
    let code = d.sandbox("jscode", json!({"user": "demo-user", "appid": v3app})).await?;
    let code = code["code"].as_str().context("the sandbox minted no code")?.to_owned();
    let session =
        d.api(Method::POST, "/v1/sessions", "DEV_CLIENT_KEY", Some(json!({"code": code, "appid": v3app}))).await?;
    let v3_openid = session["openid"].as_str().context("no openid")?.to_owned();
    let body = json!({"appid": v3app, "openid": v3_openid, "amount": 800, "description": "minipay demo v3 order"});
    let order = d.api(Method::POST, "/v1/orders", "DEV_CLIENT_KEY", Some(body)).await?;
    let v3_no = order["out_trade_no"].as_str().context("no out_trade_no")?.to_owned();
    let sign_type = order["pay_params"]["signType"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(sign_type == "RSA", "a v3 merchant's pay_params are RSA-signed, got {sign_type:?}");
    println!("   ← {} mch_id={} signType={sign_type}", show(&order, &["out_trade_no", "status"]), order["mch_id"]);
    d.sandbox("pay", json!({"out_trade_no": v3_no, "mch_id": order["mch_id"]})).await?;
    let o = d.wait_for(&format!("/v1/orders/{v3_no}"), "DEV_CLIENT_KEY", "status", &["paid"], &["closed"]).await?;
    println!("   ← {}", show(&o, &["status", "transaction_id"]));

    d.step("refund: 2.00 yuan back to the user (client certificate), settled by WeChat");
    let body = json!({"amount": 200, "reason": "demo partial refund"});
    let refund = d.api(Method::POST, &format!("/v1/orders/{no}/refunds"), "DEV_CLIENT_KEY", Some(body)).await?;
    let rno = refund["out_refund_no"].as_str().context("no out_refund_no")?.to_owned();
    println!("   ← {}", show(&refund, &["out_refund_no", "status", "amount"]));
    d.sandbox("refunds/settle", json!({"out_refund_no": rno})).await?;
    let r = d.wait_for(&format!("/v1/refunds/{rno}"), "DEV_CLIENT_KEY", "status", &["succeeded"], &["failed"]).await?;
    println!("   ← {}", show(&r, &["status", "refund_id"]));

    d.step("payout: finance asks for 600.00 yuan to the user's balance; above the threshold, an approver decides");
    let body = json!({"openid": openid, "amount": 60000, "description": "minipay demo payout"});
    let p = d.api(Method::POST, "/v1/payouts", "DEV_FINANCE_KEY", Some(body)).await?;
    let id = p["id"].as_i64().context("no payout id")?;
    println!("   ← {}", show(&p, &["id", "partner_trade_no", "status"]));
    let a = d.api(Method::POST, &format!("/v1/payouts/{id}/approve"), "DEV_APPROVER_KEY", Some(json!({}))).await?;
    println!("   ← approved: status={}", a["status"]);
    let p = d
        .wait_for(&format!("/v1/payouts/{id}"), "DEV_FINANCE_KEY", "status", &["succeeded"], &["failed", "rejected"])
        .await?;
    println!("   ← {}", show(&p, &["status", "payment_no"]));

    d.step("red packet: 8.88 yuan, sent by the worker");
    let body = json!({"kind": "normal", "openid": openid, "amount": 888, "total_num": 1, "wishing": "恭喜发财",
                      "act_name": "minipay demo", "remark": "thanks for trying minipay"});
    let rp = d.api(Method::POST, "/v1/redpacks", "DEV_FINANCE_KEY", Some(body)).await?;
    let billno = rp["mch_billno"].as_str().context("no mch_billno")?.to_owned();
    println!("   ← {}", show(&rp, &["mch_billno", "status"]));
    let rp = d
        .wait_for(&format!("/v1/redpacks/{billno}"), "DEV_FINANCE_KEY", "status", &["sent", "received"], &["failed"])
        .await?;
    println!("   ← {}", show(&rp, &["status", "send_listid"]));

    d.step("reconciliation: the sandbox's day is over; finance asks for its run");
    let clock = answer(d.http.get(format!("{}/sandbox/clock", d.var("SANDBOX_HTTP_URL")?)).send().await?).await?;
    let day = clock["now_beijing"].as_str().and_then(|s| s.get(..10)).context("sandbox clock")?.to_owned();
    let next = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")? + chrono::Duration::days(1);
    d.sandbox("clock", json!({"set": format!("{next} 11:00:00")})).await?;
    let outcome = reconcile_day(&d, &day).await;
    // Put the sandbox clock back whatever happened, so the system keeps running in real time.
    d.sandbox("clock", json!({"reset": true})).await?;
    outcome
}

async fn reconcile_day(d: &Demo, day: &str) -> anyhow::Result<()> {
    let accepted = d.api(Method::POST, "/v1/reconciliations", "DEV_FINANCE_KEY", Some(json!({"date": day}))).await?;
    let requests = accepted["requests"].as_array().context("no requests")?;
    for r in requests {
        let id = r["id"].as_i64().context("request id")?;
        let done = d
            .wait_for(
                &format!("/v1/reconciliations/requests/{id}"),
                "DEV_FINANCE_KEY",
                "status",
                &["completed"],
                &["failed"],
            )
            .await?;
        println!("   ← request {id}: merchant {} run {}", done["mch_id"], done["run_id"]);
    }
    let report = d.api(Method::GET, &format!("/v1/reconciliations/{day}"), "DEV_FINANCE_KEY", None).await?;
    for m in report["merchants"].as_array().into_iter().flatten() {
        println!(
            "   ← merchant {}: run {} {} (trigger {})",
            m["mch_id"], m["run"]["run_id"], m["run"]["status"], m["run"]["trigger"]
        );
        if let Some(text) = m["summary_text"].as_str() {
            for line in text.lines() {
                println!("     {line}");
            }
        }
    }
    Ok(())
}
