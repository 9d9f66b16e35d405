//! `minipay keys create` and `minipay migrate` against a test database, through the binary.

use std::process::Command;

use minipay_store::clients::{self, Role};
use minipay_testkit::TestDb;

fn minipay(db: &TestDb, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_minipay"))
        .args(args)
        .env("MINIPAY_DATABASE_URL", &db.url)
        .env_remove("MINIPAY_CONFIG")
        .output()
        .expect("run minipay")
}

#[tokio::test]
async fn keys_create_prints_a_working_key_once() {
    let db = TestDb::new().await;
    let out =
        minipay(&db, &["keys", "create", "--role", "finance", "--name", "alice", "--webhook-url", "https://x.test/h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let field = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} in {stdout}"))
            .to_owned()
    };
    let key = field("key");
    assert!(key.starts_with("mp_finance_"));
    assert!(field("webhook_secret").starts_with("whsec_"));
    let found = clients::authenticate(&db.pool, &key).await.unwrap().expect("the printed key works");
    assert_eq!((found.role, found.name.as_str()), (Role::Finance, "alice"));
    let (stored,): (String,) = sqlx::query_as("SELECT key_hash FROM api_clients").fetch_one(&db.pool).await.unwrap();
    assert_eq!(stored, clients::hash_key(&key), "only the hash is stored");

    let bad = minipay(&db, &["keys", "create", "--role", "root", "--name", "x"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let db = TestDb::new().await;
    let out = minipay(&db, &["migrate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations").fetch_one(&db.pool).await.unwrap();
    assert_eq!(n as usize, minipay_store::MIGRATOR.iter().count());
}
