//! The crash test: a real `minipay payouts send` process is killed (SIGKILL) after it has
//! committed `sending` and while WeChat (the sandbox, holding the call with a delay fault)
//! has not answered. A new sender process then resolves the payout — query first, then the
//! same number if WeChat never took it — and the sandbox holds exactly one transfer.
//!
//! It lives in the cli package because only here does Cargo hand tests the path of the
//! `minipay` binary (`CARGO_BIN_EXE_minipay`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use minipay_sandbox::{Fault, FaultKind, Sandbox, SandboxConfig};
use minipay_store::Fen;
use minipay_store::domain::OpenId;
use minipay_store::ledger::{self, Kind};
use minipay_store::payout_attempts::{self, SubjectType};
use minipay_store::payout_limits::Limits;
use minipay_store::payouts::{self, NewPayout, PayoutStatus};
use minipay_store::redpacks::{self, NewRedpack, RedpackKind, RedpackRules, RedpackStatus};
use minipay_testkit::TestDb;
use sqlx::PgPool;

const MCH: &str = minipay_sandbox::config::DEMO_MCH_ID;
const APPID: &str = minipay_sandbox::config::DEMO_APPID;

fn limits() -> Limits {
    Limits {
        min_amount: Fen::new(100),
        max_amount: Fen::new(1_000_000),
        approval_threshold: Fen::new(1_000_000),
        auto_approve_daily_per_maker: Fen::new(i64::MAX),
        openid_daily_amount: Fen::new(1_000_000),
        openid_daily_count: 10,
        merchant_daily_amount: Fen::new(10_000_000),
    }
}

/// A configuration file for the sender processes, pointing at the sandbox and the test
/// database. `timeout_ms` bounds the WeChat call; the lease is twice that.
fn write_config(dir: &Path, db_url: &str, sandbox: &Sandbox, timeout_ms: u64) -> std::path::PathBuf {
    let toml = format!(
        r#"
[database]
url = "{db_url}"
max_connections = 4

[wechat]
pay_base_url = "{https}"
api_base_url = "{https}"
ca_file = "{ca}"
timeout_ms = {timeout_ms}
connect_timeout_ms = 2000

[payouts]
lease_ms = 1
retry_initial_ms = 50
retry_max_ms = 200
send_interval_ms = 100

[[merchants]]
mch_id = "{MCH}"
api_key = "{key}"
cert_p12_file = "{p12}"

[[apps]]
appid = "{APPID}"
mch_id = "{MCH}"
secret = "crash-test-secret"
"#,
        https = sandbox.https_url(),
        ca = dir.join("ca.pem").display(),
        key = minipay_sandbox::config::DEMO_API_KEY,
        p12 = dir.join("apiclient_cert.p12").display(),
    );
    let path = dir.join(format!("minipay-{timeout_ms}.toml"));
    std::fs::write(&path, toml).expect("write the config");
    path
}

fn sender(config: &Path, once: bool) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_minipay"));
    c.args(["payouts", "send", "--config"]).arg(config);
    if once {
        c.arg("--once");
    }
    c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start minipay payouts send")
}

async fn client_key(pool: &PgPool) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO api_clients (id, name, role, key_hash, key_prefix) VALUES ($1, 'fin', 'finance', $2, 'k')",
    )
    .bind(id)
    .bind(id.simple().to_string())
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO apps (appid, mch_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(APPID)
        .bind(MCH)
        .execute(pool)
        .await
        .unwrap();
    id
}

/// Polls `cond` every 20 ms until it holds (true), for at most `limit` (false).
async fn poll_until<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn wait_until<F, Fut>(limit: Duration, what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(poll_until(limit, cond).await, "timed out waiting until {what}");
}

async fn status_of(pool: &PgPool, table_sql: &'static str, id: i64) -> String {
    let (s,): (String,) = sqlx::query_as(table_sql).bind(id).fetch_one(pool).await.unwrap();
    s
}

fn kill(mut child: Child) {
    // SIGKILL: no destructor, no rollback, no goodbye — a crash.
    child.kill().expect("kill the sender");
    child.wait().expect("reap the sender");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_mid_transfer_is_resolved_on_restart_with_exactly_one_transfer() {
    let db = TestDb::new().await;
    let sandbox = Sandbox::start(SandboxConfig::default()).await.expect("start the sandbox");
    let dir = tempfile::tempdir().unwrap();
    sandbox.write_certs(dir.path()).unwrap();
    let finance = client_key(&db.pool).await;
    let openid = OpenId::parse(sandbox.openid("demo-user", APPID)).unwrap();
    let new = NewPayout {
        mch_id: MCH,
        appid: APPID,
        openid: &openid,
        amount: Fen::new(1_234),
        description: "crash test",
        real_name: None,
        spbill_create_ip: Some("127.0.0.1"),
        created_by: finance,
        request_key: None,
    };
    let mut tx = db.pool.begin().await.unwrap();
    let p = payouts::create(&mut tx, &new, &limits(), false, None, Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(p.status, PayoutStatus::Approved);

    // WeChat holds the call for 10 s; the first sender would wait 3 s for it.
    sandbox
        .add_fault(Fault {
            path: "/mmpaymkttransfers/promotion/transfers".into(),
            kind: FaultKind::Delay { delay_ms: 10_000 },
            times: Some(1),
        })
        .unwrap();
    let slow = write_config(dir.path(), &db.url, &sandbox, 3_000);
    let first = sender(&slow, true);
    let q = "SELECT status FROM payouts WHERE id = $1";
    wait_until(Duration::from_secs(15), "the payout is sending", || async {
        status_of(&db.pool, q, p.id).await == "sending"
    })
    .await;
    kill(first);
    let mut c = db.pool.acquire().await.unwrap();
    let attempts = payout_attempts::list(&mut c, SubjectType::Payout, p.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].action.as_str(), attempts[0].outcome.as_str()), ("send", "pending"), "killed mid-call");
    assert_eq!(status_of(&db.pool, q, p.id).await, "sending", "the answer was never stored");

    // Restart: a new sender picks the payout up once the dead one's lease (2 × 3 s) is over.
    let fast = write_config(dir.path(), &db.url, &sandbox, 1_000);
    let second = sender(&fast, false);
    let resolved =
        poll_until(Duration::from_secs(20), || async { status_of(&db.pool, q, p.id).await == "succeeded" }).await;
    if !resolved {
        let mut c = db.pool.acquire().await.unwrap();
        let now = payouts::get(&mut c, p.id).await.unwrap().unwrap();
        let attempts = payout_attempts::list(&mut c, SubjectType::Payout, p.id).await.unwrap();
        panic!("not resolved: {now:?} last_error={:?} attempts={attempts:?}", now.last_error);
    }
    kill(second);

    let ours: Vec<_> = sandbox.transfers().into_iter().filter(|t| t.partner_trade_no == p.partner_trade_no).collect();
    assert_eq!(ours.len(), 1, "exactly one transfer at WeChat");
    assert_eq!(ours[0].amount, Fen::new(1_234));
    let done = payouts::get(&mut c, p.id).await.unwrap().unwrap();
    assert_eq!(done.payment_no.as_deref(), Some(ours[0].payment_no.as_str()));
    let attempts = payout_attempts::list(&mut c, SubjectType::Payout, p.id).await.unwrap();
    assert_eq!(attempts[1].action, "query", "after a crash the first call is a query: {attempts:?}");
    assert!(attempts.iter().all(|a| a.request_params == attempts[0].request_params || a.action == "query"));
    assert_eq!(ledger::count_postings(&mut c, Kind::Payout, &p.partner_trade_no).await.unwrap(), 1);
    assert!(ledger::unbalanced_transactions(&mut c).await.unwrap().is_empty());
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_mid_red_packet_is_resolved_on_restart_with_exactly_one_packet() {
    let db = TestDb::new().await;
    let sandbox = Sandbox::start(SandboxConfig::default()).await.expect("start the sandbox");
    let dir = tempfile::tempdir().unwrap();
    sandbox.write_certs(dir.path()).unwrap();
    let finance = client_key(&db.pool).await;
    let openid = OpenId::parse(sandbox.openid("demo-user", APPID)).unwrap();
    let rules = RedpackRules {
        limits: limits(),
        min_per_packet: Fen::new(100),
        max_per_packet: Fen::new(20_000),
        group_min_num: 3,
        group_max_num: 20,
    };
    let new = NewRedpack {
        mch_id: MCH,
        appid: APPID,
        kind: RedpackKind::Normal,
        re_openid: &openid,
        total_amount: Fen::new(888),
        total_num: 1,
        send_name: "minipay",
        wishing: "恭喜发财",
        act_name: "crash",
        remark: "test",
        scene_id: None,
        client_ip: Some("127.0.0.1"),
        created_by: finance,
        request_key: None,
        owner_client_id: None,
    };
    let mut tx = db.pool.begin().await.unwrap();
    let r = redpacks::create(&mut tx, &new, &rules, Utc::now()).await.unwrap();
    tx.commit().await.unwrap();

    sandbox
        .add_fault(Fault {
            path: "/mmpaymkttransfers/sendredpack".into(),
            kind: FaultKind::Delay { delay_ms: 10_000 },
            times: Some(1),
        })
        .unwrap();
    let slow = write_config(dir.path(), &db.url, &sandbox, 3_000);
    let first = sender(&slow, true);
    let q = "SELECT status FROM redpacks WHERE id = $1";
    wait_until(Duration::from_secs(15), "the packet is sending", || async {
        status_of(&db.pool, q, r.id).await == "sending"
    })
    .await;
    kill(first);

    let fast = write_config(dir.path(), &db.url, &sandbox, 1_000);
    let second = sender(&fast, false);
    wait_until(Duration::from_secs(20), "the packet is resolved", || async {
        status_of(&db.pool, q, r.id).await == "sent"
    })
    .await;
    kill(second);

    let ours: Vec<_> = sandbox.redpacks().into_iter().filter(|x| x.mch_billno == r.mch_billno).collect();
    assert_eq!(ours.len(), 1, "exactly one red packet at WeChat");
    let mut c = db.pool.acquire().await.unwrap();
    let done = redpacks::get(&mut c, &r.mch_billno).await.unwrap().unwrap();
    assert_eq!(done.status, RedpackStatus::Sent);
    assert_eq!(done.send_listid.as_deref(), Some(ours[0].send_listid.as_str()));
    assert_eq!(ledger::count_postings(&mut c, Kind::RedPacketSent, &r.mch_billno).await.unwrap(), 1);
    assert!(ledger::unbalanced_transactions(&mut c).await.unwrap().is_empty());
    sandbox.shutdown().await;
}
