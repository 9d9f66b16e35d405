//! The binary run the way the container runs it: as the image's unprivileged uid 10001 (when
//! the test runs as root, as CI does), from a copy at a path of its own, with the
//! configuration of deploy/k8s/config.yaml mounted read-only and the merchant's secrets laid
//! out as the Kubernetes Secret volume lays them out (files 0440, group 10001 — `fsGroup`),
//! the rest from `MINIPAY_…` environment variables as the manifests set them. It migrates
//! (the Job), checks its configuration, serves api, notify and worker as three processes (the
//! Deployments), takes one payment end to end and a refund (the client certificate read from
//! the secret volume), and stops each on SIGTERM with exit 0.
//!
//! The binary is `MINIPAY_RELEASE_BIN` when set — `scripts/test.sh` (and so CI) builds the
//! release binary the Dockerfile ships and sets it — else the one cargo built for the tests.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use minipay_config::{DEMO_API_KEY, DEMO_APP_SECRET, DEMO_MCH_ID};
use serde_json::{Value, json};

const UID: u32 = 10001;

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// The `minipay.toml` block of deploy/k8s/config.yaml, as the pods see it.
fn manifest_config() -> String {
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/k8s/config.yaml")).unwrap();
    let mut lines = yaml.lines().skip_while(|l| !l.trim_start().starts_with("minipay.toml: |")).skip(1);
    let mut out = String::new();
    for l in lines.by_ref() {
        if !l.is_empty() && !l.starts_with("    ") {
            break;
        }
        out.push_str(l.strip_prefix("    ").unwrap_or(l));
        out.push('\n');
    }
    assert!(out.contains("[[merchants]]"), "the ConfigMap's minipay.toml was found");
    out
}

fn write(path: &Path, bytes: &[u8], mode: u32, group: Option<u32>) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    if let Some(g) = group {
        std::os::unix::fs::chown(path, Some(0), Some(g)).unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

/// The container's world: its binary, its mounts, its environment.
struct Pod {
    bin: PathBuf,
    env: HashMap<String, String>,
    as_root: bool,
}

impl Pod {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args).env_clear().envs(&self.env).current_dir("/");
        if self.as_root {
            c.uid(UID).gid(UID);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run minipay")
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start minipay")
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(url).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn json_ok(r: reqwest::Response) -> Value {
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status.is_success(), "HTTP {status}: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// The three services; killed if the test fails before stopping them.
struct Services(Vec<(&'static str, Child)>);

impl Drop for Services {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn stop(child: &mut Child, name: &str) {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{name} exited with {status} on SIGTERM");
            return;
        }
        assert!(Instant::now() < deadline, "{name} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_a_payment_as_the_container_runs_it() {
    let as_root = running_as_root();
    let db = minipay_testkit::TestDb::new().await;
    let sandbox = minipay_sandbox::Sandbox::start(minipay_sandbox::SandboxConfig::for_tests()).await.unwrap();

    // The image: /usr/local/bin/minipay, world-executable.
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = root.path().join("minipay");
    let src =
        std::env::var_os("MINIPAY_RELEASE_BIN").map(PathBuf::from).unwrap_or(env!("CARGO_BIN_EXE_minipay").into());
    std::fs::copy(&src, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The ConfigMap volume (root-owned, 0644) and the Secret volume (0440, group = fsGroup).
    let etc = root.path().join("etc-minipay");
    let secrets = root.path().join("run-secrets-minipay");
    std::fs::create_dir(&etc).unwrap();
    std::fs::create_dir(&secrets).unwrap();
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o750)).unwrap();
    let group = as_root.then_some(UID);
    if as_root {
        std::os::unix::fs::chown(&secrets, Some(0), Some(UID)).unwrap();
    }
    let config = manifest_config().replace("/run/secrets/minipay", &secrets.display().to_string());
    write(&etc.join("minipay.toml"), config.as_bytes(), 0o644, None);
    write(&etc.join("sandbox-ca.pem"), &sandbox.ca_pem(), 0o644, None);
    write(&secrets.join("mch_api_key"), format!("{DEMO_API_KEY}\n").as_bytes(), 0o440, group);
    write(&secrets.join("apiclient_cert.p12"), &sandbox.client_identity_p12(DEMO_MCH_ID).unwrap(), 0o440, group);
    write(&secrets.join("app_secret"), DEMO_APP_SECRET.as_bytes(), 0o440, group);

    // The Deployment's environment (plus what points this pod at the sandbox).
    let (api, notify, metrics) = (free_port(), free_port(), free_port());
    let env: HashMap<String, String> = [
        ("MINIPAY_CONFIG", etc.join("minipay.toml").display().to_string()),
        ("MINIPAY_DATABASE_URL", db.url.clone()),
        ("MINIPAY_API_LISTEN", format!("127.0.0.1:{api}")),
        ("MINIPAY_NOTIFY_LISTEN", format!("127.0.0.1:{notify}")),
        ("MINIPAY_NOTIFY_PUBLIC_URL", format!("http://127.0.0.1:{notify}")),
        ("MINIPAY_WORKER_METRICS_LISTEN", format!("127.0.0.1:{metrics}")),
        ("MINIPAY_WORKER_WEBHOOK_INTERVAL_MS", "500".into()),
        ("MINIPAY_WECHAT_PAY_BASE_URL", sandbox.https_url()),
        ("MINIPAY_WECHAT_API_BASE_URL", sandbox.https_url()),
        ("MINIPAY_WECHAT_CA_FILE", etc.join("sandbox-ca.pem").display().to_string()),
        ("MINIPAY_LOG_FORMAT", "json".into()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let pod = Pod { bin, env, as_root };

    // The migration Job, then the check every serve runs first.
    let m = pod.run(&["migrate"]);
    assert!(m.status.success(), "migrate: {}", text(&m));
    let check = pod.run(&["config", "check", "--database"]);
    assert!(check.status.success(), "config check: {}", text(&check));
    assert!(!text(&check).contains(DEMO_API_KEY) && !text(&check).contains(DEMO_APP_SECRET), "no secret printed");

    if as_root {
        // The compose bug this layout avoids: a key readable by root only.
        let locked = secrets.join("mch_api_key_root_only");
        write(&locked, b"x", 0o600, None);
        let bad = Pod {
            bin: pod.bin.clone(),
            env: pod
                .env
                .clone()
                .into_iter()
                .chain([("MINIPAY_CONFIG".to_owned(), {
                    let p = etc.join("locked.toml");
                    write(&p, config.replace("mch_api_key\"", "mch_api_key_root_only\"").as_bytes(), 0o644, None);
                    p.display().to_string()
                })])
                .collect(),
            as_root,
        };
        let refused = bad.run(&["serve", "api"]);
        assert!(!refused.status.success());
        assert!(text(&refused).contains("permission denied for uid 10001"), "{}", text(&refused));
    }

    let mut procs = Services(vec![
        ("api", pod.spawn(&["serve", "api"])),
        ("notify", pod.spawn(&["serve", "notify"])),
        ("worker", pod.spawn(&["serve", "worker"])),
    ]);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let api_url = format!("http://127.0.0.1:{api}");
    for url in [
        format!("{api_url}/readyz"),
        format!("http://127.0.0.1:{notify}/readyz"),
        format!("http://127.0.0.1:{metrics}/readyz"),
    ] {
        wait_ready(&http, &url).await;
    }

    let key = pod.run(&["keys", "create", "--role", "client", "--name", "shop"]);
    assert!(key.status.success(), "{}", text(&key));
    let key = String::from_utf8_lossy(&key.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("key=").map(str::to_owned))
        .expect("key printed");

    let code = json_ok(
        http.post(format!("{}/sandbox/jscode", sandbox.http_url()))
            .json(&json!({"user": "pod-user"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let session = json_ok(
        http.post(format!("{api_url}/v1/sessions"))
            .bearer_auth(&key)
            .json(&json!({"code": code["code"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let order = json_ok(
        http.post(format!("{api_url}/v1/orders"))
            .bearer_auth(&key)
            .json(&json!({"openid": session["openid"], "amount": 990, "description": "container"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let no = order["out_trade_no"].as_str().unwrap().to_owned();
    json_ok(
        http.post(format!("{}/sandbox/pay", sandbox.http_url()))
            .json(&json!({"out_trade_no": no}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = json_ok(http.get(format!("{api_url}/v1/orders/{no}")).bearer_auth(&key).send().await.unwrap()).await;
        if o["status"] == "paid" {
            break;
        }
        assert!(Instant::now() < deadline, "the notification never marked the order paid: {o}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refund = json_ok(
        http.post(format!("{api_url}/v1/orders/{no}/refunds"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "container-refund-1")
            .json(&json!({"amount": 90}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        matches!(refund["status"].as_str(), Some("processing" | "succeeded")) && refund["refund_id"].is_string(),
        "WeChat accepted the refund, made with the certificate from the secret volume: {refund}"
    );

    let m = http.get(format!("http://127.0.0.1:{metrics}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("minipay_worker_job_runs_total"), "{m}");

    for (name, child) in &mut procs.0 {
        stop(child, name);
    }
    procs.0.clear();
    sandbox.shutdown().await;
}
