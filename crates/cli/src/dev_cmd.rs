//! `minipay dev`: the whole system on this machine with no configuration. Starts a throwaway
//! PostgreSQL cluster (`initdb` + `pg_ctl` in a temporary directory, removed on exit), applies
//! the migrations, starts the WeChat sandbox, then writes the configuration of a system wired
//! to it — `minipay.toml` plus the files it names (sandbox CA, merchant certificates and keys,
//! app secrets) — into a private directory it prints, and runs notify, api and worker from
//! that file exactly as `minipay serve all --config FILE` would. Every other command works
//! against the running system with the same file:
//!
//! ```sh
//! export MINIPAY_CONFIG=/tmp/minipay-dev-1234/minipay.toml   # printed at start
//! minipay reconcile --date 2026-12-01
//! minipay keys create --role finance --name alice
//! minipay payouts send --once
//! ```
//!
//! Ctrl-C (or SIGTERM) drains the services, stops everything and deletes the directory and
//! the data. Ports: api 8080, notify 8081, sandbox 8480 (HTTP) / 8443 (HTTPS), worker metrics
//! 9090 when free, otherwise any free port (the printed URLs are the truth). Machine-readable
//! `KEY=value` lines go to stdout and to `dev.env` in the directory (`MINIPAY_CONFIG`,
//! `DEV_API_URL`, `DEV_CLIENT_KEY`, …; none of them is read as a `MINIPAY_…` setting, so
//! `set -a; . dev.env` is safe before any command); the human summary to stderr.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use minipay_config::{DEMO_API_KEY, DEMO_APP_SECRET, DEMO_APPID, DEMO_MCH_ID};
use minipay_sandbox::{Sandbox, SandboxConfig};
use minipay_store::clients::{self, Role};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

#[derive(Args)]
pub struct DevArgs {
    /// Use this PostgreSQL server (an admin URL) instead of starting a throwaway cluster; a
    /// new database `minipay_dev_<time>_<pid>` is created on it and dropped on exit.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Multiply the sandbox's real waits (refund processing, notification retries).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Where to write the configuration (created, must not exist; removed on exit).
    /// Default: a new `minipay-dev-<pid>` directory under the system's temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// One merchant `dev` configures against the sandbox, with its app. Add a merchant (a v3
/// one, say) by adding an entry to [`dev_merchants`]; the file writer handles the rest.
struct DevMerchant {
    mch_id: String,
    /// The v2 key; `None` for the v3 demo merchant, which shows that v3 merchants need none.
    api_key: Option<String>,
    /// PKCS#12 client certificate (password = mch_id, as WeChat issues them).
    client_p12: Vec<u8>,
    appid: String,
    app_secret: String,
    default_app: bool,
    /// APIv3 material: the merchant speaks v3 (public-key mode).
    v3: Option<DevV3>,
}

/// What a v3 merchant downloads from the merchant platform, as the sandbox holds it.
struct DevV3 {
    serial: String,
    key_pem: Vec<u8>,
    api_v3_key: String,
    public_key_id: String,
    public_key_pem: Vec<u8>,
}

/// The APIv3 demo merchant `dev` adds to the sandbox: its own mch_id and app, WeChat Pay
/// public-key mode (how merchants onboarded since late 2024 verify WeChat), no v2 key.
const V3_MCH_ID: &str = "1900000110";
pub(crate) const V3_APPID: &str = "wxa3dfd5e0c1b24e77";
const V3_API_V3_KEY: &str = "minipayDevV3MerchantApiV3Key0001";
const V3_PUB_KEY_ID: &str = "PUB_KEY_ID_0119000001102025120200000000000001";

/// The sandbox `dev` runs: the demo merchant (v2) and the v3 demo merchant, each with an app.
fn sandbox_config(port: u16, tls_port: u16, time_scale: f64) -> anyhow::Result<SandboxConfig> {
    let mut cfg = SandboxConfig { port, tls_port, time_scale, ..SandboxConfig::default() };
    cfg.merchants.push(minipay_sandbox::MerchantConfig {
        mch_id: V3_MCH_ID.into(),
        // The sandbox keeps a v2 key for every merchant; dev's configuration does not use it.
        api_key: wxpay::ApiKey::new("v3demo0000000000000000000000v2ky"),
        appids: vec![V3_APPID.into()],
        api_v3_key: wxpay::ApiV3Key::new(V3_API_V3_KEY).context("the v3 demo APIv3 key is 32 bytes")?,
        v3_mode: minipay_sandbox::V3Mode::PublicKey,
        pub_key_id: V3_PUB_KEY_ID.into(),
        ..minipay_sandbox::MerchantConfig::default()
    });
    cfg.apps.push(minipay_sandbox::AppConfig {
        appid: V3_APPID.into(),
        secret: "sandbox-v3-demo-app-secret-0123".to_owned().into(),
        unionid: true,
    });
    Ok(cfg)
}

fn dev_merchants(sandbox: &Sandbox) -> anyhow::Result<Vec<DevMerchant>> {
    let keys = sandbox.v3_keys(V3_MCH_ID).context("v3 demo merchant keys")?;
    Ok(vec![
        DevMerchant {
            mch_id: DEMO_MCH_ID.into(),
            api_key: Some(DEMO_API_KEY.into()),
            client_p12: sandbox.client_identity_p12(DEMO_MCH_ID).context("demo merchant certificate")?,
            appid: DEMO_APPID.into(),
            app_secret: DEMO_APP_SECRET.into(),
            default_app: true,
            v3: None,
        },
        DevMerchant {
            mch_id: V3_MCH_ID.into(),
            api_key: None,
            client_p12: sandbox.client_identity_p12(V3_MCH_ID).context("v3 demo merchant certificate")?,
            appid: V3_APPID.into(),
            app_secret: "sandbox-v3-demo-app-secret-0123".into(),
            default_app: false,
            v3: Some(DevV3 {
                serial: keys.merchant_serial.clone(),
                key_pem: sandbox.client_key_pem(V3_MCH_ID).context("v3 demo merchant key")?,
                api_v3_key: V3_API_V3_KEY.into(),
                public_key_id: V3_PUB_KEY_ID.into(),
                public_key_pem: keys.public_key_pem.clone(),
            }),
        },
    ])
}

/// The addresses the services will listen on.
struct Ports {
    api: u16,
    notify: u16,
    metrics: u16,
}

/// A free port: the preferred one when it is free, else one the OS picks. (Bound and released
/// here, taken again by the service a moment later.)
fn free_port(preferred: u16) -> std::io::Result<u16> {
    match std::net::TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(_) => Ok(preferred),
        Err(_) => Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port()),
    }
}

/// The directory `dev` writes to, removed when dropped (on every way out of [`dev`]).
struct DevDir(PathBuf);

impl DevDir {
    fn create(path: PathBuf) -> anyhow::Result<DevDir> {
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(DevDir(path))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        let p = self.0.join(name);
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(&p).and_then(|mut f| f.write_all(bytes)).with_context(|| format!("write {}", p.display()))?;
        Ok(p)
    }
}

impl Drop for DevDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

/// Writes `minipay.toml` and the files it names; returns the configuration's path.
fn write_config(
    dir: &DevDir,
    db_url: &str,
    sandbox: &Sandbox,
    merchants: &[DevMerchant],
    ports: &Ports,
) -> anyhow::Result<PathBuf> {
    let ca = dir.write("sandbox-ca.pem", &sandbox.ca_pem())?;
    let mut t = String::new();
    writeln!(t, "# Written by `minipay dev` for the system it runs; removed when it stops.")?;
    writeln!(t, "# Every minipay command takes it: --config FILE or MINIPAY_CONFIG=FILE.\n")?;
    writeln!(t, "[database]\nurl = {}\nmax_connections = 10\n", toml_str(db_url))?;
    writeln!(t, "[api]\nlisten = \"127.0.0.1:{}\"\n", ports.api)?;
    writeln!(t, "[notify]\nlisten = \"127.0.0.1:{0}\"\npublic_url = \"http://127.0.0.1:{0}\"\n", ports.notify)?;
    writeln!(
        t,
        "[wechat]\npay_base_url = {}\napi_base_url = {}\nca_file = {}\n",
        toml_str(&sandbox.https_url()),
        toml_str(&sandbox.https_url()),
        toml_str(&ca.display().to_string())
    )?;
    writeln!(
        t,
        "[worker]\nexpiry_interval_ms = 5000\nwebhook_interval_ms = 1000\nmetrics_listen = \"127.0.0.1:{}\"\ndrain_secs = 10\n",
        ports.metrics
    )?;
    writeln!(t, "[payouts]\nsend_interval_ms = 1000\n")?;
    for m in merchants {
        let p12 = dir.write(&format!("merchant-{}-apiclient_cert.p12", m.mch_id), &m.client_p12)?;
        writeln!(
            t,
            "[[merchants]]\nmch_id = {}\ncert_p12_file = {}",
            toml_str(&m.mch_id),
            toml_str(&p12.display().to_string())
        )?;
        if let Some(k) = &m.api_key {
            let key = dir.write(&format!("merchant-{}-api-key", m.mch_id), k.as_bytes())?;
            writeln!(t, "api_key_file = {}", toml_str(&key.display().to_string()))?;
        }
        if let Some(v3) = &m.v3 {
            let file = |name: &str, bytes: &[u8]| -> anyhow::Result<String> {
                Ok(toml_str(&dir.write(&format!("merchant-{}-{name}", m.mch_id), bytes)?.display().to_string()))
            };
            writeln!(
                t,
                "api_version = \"v3\"\nmch_serial_no = {}\nprivate_key_file = {}\napi_v3_key_file = {}\n\
                 verify_mode = \"public_key\"\npublic_key_file = {}\npublic_key_id = {}",
                toml_str(&v3.serial),
                file("apiclient_key.pem", &v3.key_pem)?,
                file("apiv3-key", v3.api_v3_key.as_bytes())?,
                file("wechatpay_public_key.pem", &v3.public_key_pem)?,
                toml_str(&v3.public_key_id),
            )?;
        }
        writeln!(t)?;
    }
    for m in merchants {
        let secret = dir.write(&format!("app-{}-secret", m.appid), m.app_secret.as_bytes())?;
        writeln!(
            t,
            "[[apps]]\nappid = {}\nmch_id = {}\nsecret_file = {}\ndefault = {}\n",
            toml_str(&m.appid),
            toml_str(&m.mch_id),
            toml_str(&secret.display().to_string()),
            m.default_app
        )?;
    }
    dir.write("minipay.toml", t.as_bytes())
}

pub fn run(args: &DevArgs) -> ExitCode {
    crate::serve_cmd::init_tracing();
    let result = crate::serve_cmd::runtime().and_then(|rt| rt.block_on(dev(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dev(args: &DevArgs) -> anyhow::Result<()> {
    let dir_path =
        args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("minipay-dev-{}", std::process::id())));
    // Dropped last (declared first): the directory goes on every way out.
    let dir = DevDir::create(dir_path)?;
    // The cluster lives as long as this function: dropping it stops and removes it.
    let (cluster, admin_url) = match &args.database_url {
        Some(u) => (None, u.clone()),
        None => {
            eprintln!("starting a throwaway PostgreSQL cluster…");
            let c = minipay_testkit::PgCluster::start()
                .context("start PostgreSQL (is it installed? scripts/dev.sh installs it)")?;
            let url = c.admin_url();
            (Some(c), url)
        }
    };
    let db_name = format!("minipay_dev_{}_{}", chrono::Utc::now().format("%Y%m%d%H%M%S"), std::process::id());
    let mut admin = PgConnection::connect(&admin_url).await.context("connect to PostgreSQL")?;
    sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{db_name}""#))).execute(&mut admin).await?;
    admin.close().await.ok();
    let db_url = minipay_testkit::with_database(&admin_url, &db_name);

    let result = run_system(args, &dir, &db_url).await;

    // Give the pool's connections a moment to close before the cluster goes away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if cluster.is_none() {
        let mut admin = PgConnection::connect(&admin_url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)"#)))
            .execute(&mut admin)
            .await?;
        admin.close().await.ok();
    }
    drop(cluster);
    drop(dir);
    result
}

async fn run_system(args: &DevArgs, dir: &DevDir, db_url: &str) -> anyhow::Result<()> {
    let sandbox_cfg = sandbox_config(free_port(8480)?, free_port(8443)?, args.time_scale)?;
    let sandbox = Sandbox::start(sandbox_cfg).await.context("start the sandbox")?;
    let merchants = dev_merchants(&sandbox)?;
    let ports = Ports { api: free_port(8080)?, notify: free_port(8081)?, metrics: free_port(9090)? };
    let config_path = write_config(dir, db_url, &sandbox, &merchants, &ports)?;
    // From here on, the file is the configuration: what runs is what the file says.
    let config = crate::serve_cmd::checked_config(Some(&config_path))?;

    let pool = crate::serve_cmd::connect(&config).await?;
    minipay_store::db::migrate(&pool).await.context("apply migrations")?;
    let running = crate::serve_cmd::start(crate::serve_cmd::Service::All, &config, &pool).await?;
    let api_url = format!("http://{}", config.api.listen);

    let mut conn = pool.acquire().await?;
    let client = clients::create(&mut conn, "demo shop", Role::Client, None).await?;
    let admin_key = clients::create(&mut conn, "demo admin", Role::Admin, None).await?;
    let finance = clients::create(&mut conn, "demo finance", Role::Finance, None).await?;
    let approver = clients::create(&mut conn, "demo approver", Role::Approver, None).await?;
    drop(conn);

    let metrics_url = running.worker_ops_port().map(|p| format!("http://127.0.0.1:{p}")).unwrap_or_default();
    let env_lines = [
        ("MINIPAY_CONFIG", config_path.display().to_string()),
        ("MINIPAY_DEV_DIR", dir.0.display().to_string()),
        ("DEV_API_URL", api_url.clone()),
        ("DEV_CLIENT_KEY", client.key.clone()),
        ("DEV_ADMIN_KEY", admin_key.key.clone()),
        ("DEV_FINANCE_KEY", finance.key.clone()),
        ("DEV_APPROVER_KEY", approver.key.clone()),
        ("DEV_NOTIFY_URL", config.notify.public_url.clone()),
        ("DEV_WORKER_METRICS_URL", metrics_url.clone()),
        ("SANDBOX_HTTP_URL", sandbox.http_url()),
        ("SANDBOX_HTTPS_URL", sandbox.https_url()),
        ("DATABASE_URL", db_url.to_owned()),
    ];
    let env_text: String = env_lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let env_file = dir.write("dev.env", env_text.as_bytes())?;
    let mut out = std::io::stdout().lock();
    out.write_all(env_text.as_bytes())?;
    writeln!(out, "MINIPAY_DEV_ENV={}", env_file.display())?;
    out.flush()?;
    drop(out);
    let sb = sandbox.http_url();
    let key = &client.key;
    eprintln!(
        "\nminipay dev is running (Ctrl-C stops it and deletes everything)\n\
         \n  config     {cfg}   (export MINIPAY_CONFIG={cfg}: reconcile, keys, payouts use it)\
         \n  api        {api_url}   (OpenAPI: {api_url}/openapi.json)\
         \n  notify     {notify}/wxpay/notify/pay\
         \n  worker     {metrics_url}/metrics\
         \n  sandbox    {sb}/sandbox/   {sbs}\
         \n  database   {db_url}\
         \n  client key {key}\
         \n\nMerchants: {v2mch} (v2, app {v2app}, the default) and {v3mch} (APIv3, public-key mode, no v2 key,\
         \n  app {v3app}: POST /v1/orders with \"appid\": \"{v3app}\" gets RSA-signed pay_params; its\
         \n  notifications arrive at {notify}/wxpay/v3/notify/{v3mch}/pay)\
         \n\nThe whole story (login, pay, refund, payout, red packet, reconciliation):\
         \n  minipay demo --env {env}     (or: bash scripts/demo.sh)\n",
        cfg = config_path.display(),
        notify = config.notify.public_url,
        v2mch = DEMO_MCH_ID,
        v2app = DEMO_APPID,
        v3mch = V3_MCH_ID,
        v3app = V3_APPID,
        sbs = sandbox.https_url(),
        env = env_file.display(),
    );

    crate::serve_cmd::wait_for_stop().await;
    eprintln!("stopping…");
    running.stop().await;
    sandbox.shutdown().await;
    pool.close().await;
    Ok(())
}
