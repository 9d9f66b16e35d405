//! # minipay-testkit — the harness every test uses
//!
//! - [`TestDb::new`] gives a test its own fresh database with all migrations applied.
//!   Databases are cloned from a template that is migrated once per migration set, so a new
//!   database costs one `CREATE DATABASE … TEMPLATE` (tens of milliseconds).
//! - Where the databases live: if `DATABASE_URL` is set (an admin URL, e.g. the cluster that
//!   `scripts/test.sh` starts), on that server; otherwise the first test in the process starts
//!   a throwaway cluster with `initdb` + `pg_ctl` on a free loopback port ([`PgCluster`]) and a
//!   watchdog stops and removes it when the process exits.
//! - [`PgCluster::start`] is also public for tests that must stop and restart their own
//!   server (a notification arriving while the database is down).
//!
//! PostgreSQL refuses to run as root: under root the server runs as the `postgres` user.

pub mod http1;
mod pg;

pub use pg::PgCluster;

use std::sync::OnceLock;

use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgPool};

/// Where per-test databases are created: an external server or our own throwaway cluster.
enum Server {
    External(String),
    Local(PgCluster),
}

impl Server {
    fn admin_url(&self) -> String {
        match self {
            Server::External(url) => url.clone(),
            Server::Local(c) => c.admin_url(),
        }
    }
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Server::External(url),
        _ => Server::Local(PgCluster::start().expect("start a throwaway PostgreSQL cluster")),
    })
}

/// A fresh, migrated database that belongs to one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

impl TestDb {
    /// A new database on the shared test server (see the crate docs).
    pub async fn new() -> TestDb {
        let admin = server().admin_url();
        TestDb::create(&admin).await
    }

    /// A new database on a given cluster (for tests that own their server).
    pub async fn on(cluster: &PgCluster) -> TestDb {
        TestDb::create(&cluster.admin_url()).await
    }

    async fn create(admin_url: &str) -> TestDb {
        let template = ensure_template(admin_url).await;
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url).await.expect("connect to the test server");
        sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#)))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let url = with_database(admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect(&url)
            .await
            .expect("connect to the test database");
        TestDb { pool, url, name }
    }
}

/// Replaces the database name in a postgres URL (keeps query parameters).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host_part = match path_start {
        Some(i) => &base[..i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// The template's name changes whenever the migrations change, so a stale template is never
/// used, even on a long-lived external server.
fn template_name() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for m in minipay_store::MIGRATOR.iter() {
        h.update(m.version.to_le_bytes());
        h.update(&*m.checksum);
    }
    format!("minipay_tpl_{}", &hex::encode(h.finalize())[..16])
}

async fn ensure_template(admin_url: &str) -> String {
    let name = template_name();
    let mut admin = PgConnection::connect(admin_url).await.expect("connect to the test server");
    // One process migrates; the others wait on the lock and then find the template.
    admin.execute("SELECT pg_advisory_lock(7274251)").await.expect("advisory lock");
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await
        .expect("look up template");
    if exists.is_none() {
        let building = format!("{name}_building");
        sqlx::raw_sql(AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{building}""#)))
            .execute(&mut admin)
            .await
            .expect("drop half-built template");
        sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{building}""#)))
            .execute(&mut admin)
            .await
            .expect("create template");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&with_database(admin_url, &building))
            .await
            .expect("connect template");
        minipay_store::MIGRATOR.run(&pool).await.expect("migrate the template database");
        pool.close().await;
        sqlx::raw_sql(AssertSqlSafe(format!(r#"ALTER DATABASE "{building}" RENAME TO "{name}""#)))
            .execute(&mut admin)
            .await
            .expect("publish template");
    }
    admin.execute("SELECT pg_advisory_unlock(7274251)").await.expect("advisory unlock");
    admin.close().await.ok();
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_database_in_url() {
        assert_eq!(with_database("postgres://u@127.0.0.1:5432/postgres", "t1"), "postgres://u@127.0.0.1:5432/t1");
        assert_eq!(
            with_database("postgres://u@h:1/postgres?sslmode=disable", "t"),
            "postgres://u@h:1/t?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:1", "t"), "postgres://u@h:1/t");
    }
}
