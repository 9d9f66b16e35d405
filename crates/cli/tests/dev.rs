//! `minipay dev` (one of the README's two commands) as a newcomer uses it: started as a
//! child, the demo story runs against it (`minipay demo`), every other command works with the
//! configuration it printed, and Ctrl-C leaves no process, database cluster or directory
//! behind.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn minipay(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_minipay"));
    c.args(args).env("RUST_LOG", "warn").env_remove("MINIPAY_CONFIG").env_remove("DATABASE_URL");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run minipay")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Processes whose command line mentions `needle` (the cluster's port, the dev directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

#[test]
fn dev_runs_the_demo_story_and_leaves_nothing_behind() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("dev");
    let mut child = Command::new(env!("CARGO_BIN_EXE_minipay"))
        .args(["dev", "--dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start minipay dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut vars = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !vars.contains_key("MINIPAY_DEV_ENV") {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("minipay dev printed its URLs in time");
        if let Some((k, v)) = line.split_once('=') {
            vars.insert(k.to_owned(), v.to_owned());
        }
    }
    let config = vars["MINIPAY_CONFIG"].clone();
    assert!(Path::new(&config).starts_with(&dir), "{config} is in --dir");
    let pg_port = vars["DATABASE_URL"].rsplit_once(':').unwrap().1.split('/').next().unwrap().to_owned();

    // The story, as a newcomer runs it.
    let demo = minipay(&["demo", "--env", &vars["MINIPAY_DEV_ENV"]], &[]);
    let out = text(&demo);
    assert!(demo.status.success(), "demo failed:\n{out}");
    for step in ["login", "order", "pay", "notification", "refund", "payout", "red packet", "reconciliation"] {
        assert!(out.contains(&format!(". {step}")), "step {step} missing:\n{out}");
    }
    assert!(out.contains("status = paid") && out.contains("trigger \"api\""), "{out}");
    assert!(out.contains("discrepancies: 0"), "the sandbox day reconciles cleanly:\n{out}");

    // Every CLI command works with the configuration dev printed.
    let with_cfg = [("MINIPAY_CONFIG", config.as_str())];
    let check = minipay(&["config", "check", "--database"], &with_cfg);
    assert!(check.status.success(), "{}", text(&check));
    let keys = minipay(&["keys", "create", "--role", "viewer", "--name", "newcomer"], &with_cfg);
    assert!(keys.status.success() && text(&keys).contains("mp_viewer_"), "{}", text(&keys));
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    let rec = minipay(&["reconcile", "--date", &yesterday], &with_cfg);
    assert!(rec.status.success(), "{}", text(&rec));
    let send = minipay(&["payouts", "send", "--once", "--config", &config], &[]);
    assert!(send.status.success(), "{}", text(&send));

    // The worker's metrics and readiness.
    let metrics = &vars["DEV_WORKER_METRICS_URL"];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let m = reqwest::get(format!("{metrics}/metrics")).await.unwrap().text().await.unwrap();
        assert!(m.contains("minipay_worker_job_runs_total{job=\"reconcile:requests\"}"), "{m}");
        assert_eq!(reqwest::get(format!("{metrics}/readyz")).await.unwrap().status(), 200);
    });

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "minipay dev exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "minipay dev did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0, "nothing else written beside it");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(&format!("-p {pg_port}"));
        let left: Vec<_> = left.into_iter().chain(processes_mentioning(&dir.display().to_string())).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", pg_port.parse::<u16>().unwrap())).is_err(),
        "postgres still listens"
    );
    assert!(
        std::net::TcpStream::connect(vars["DEV_API_URL"].trim_start_matches("http://")).is_err(),
        "api still listens"
    );
}
