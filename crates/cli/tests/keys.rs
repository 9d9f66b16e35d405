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

#[tokio::test]
async fn keys_disable_stops_the_key_at_once_and_is_audited() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let shop = clients::create(&mut conn, "shop", Role::Client, Some("https://shop.test/h")).await.unwrap();
    let twin_a = clients::create(&mut conn, "twin", Role::Client, None).await.unwrap();
    let twin_b = clients::create(&mut conn, "twin", Role::Viewer, None).await.unwrap();
    drop(conn);

    let out = minipay(&db, &["keys", "disable", "--name", "shop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("disabled id={}", shop.client.id));
    assert!(clients::authenticate(&db.pool, &shop.key).await.unwrap().is_none(), "the key no longer works");
    let (action, details): (String, serde_json::Value) =
        sqlx::query_as("SELECT action, details FROM audit_log WHERE subject_id = $1")
            .bind(shop.client.id.to_string())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((action.as_str(), details["name"].as_str()), ("api_client.disabled", Some("shop")));
    let again = minipay(&db, &["keys", "disable", "--id", &shop.client.id.to_string()]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("already disabled"));

    // Two enabled clients share a name: refused, naming both ids; --id picks one.
    let ambiguous = minipay(&db, &["keys", "disable", "--name", "twin"]);
    assert!(!ambiguous.status.success());
    let err = String::from_utf8_lossy(&ambiguous.stderr);
    assert!(err.contains(&twin_a.client.id.to_string()) && err.contains("--id"), "{err}");
    assert!(clients::authenticate(&db.pool, &twin_a.key).await.unwrap().is_some(), "nothing disabled");
    let out = minipay(&db, &["keys", "disable", "--id", &twin_b.client.id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(clients::authenticate(&db.pool, &twin_b.key).await.unwrap().is_none());
    assert!(clients::authenticate(&db.pool, &twin_a.key).await.unwrap().is_some());

    assert!(!minipay(&db, &["keys", "disable", "--name", "nobody"]).status.success());
    assert_eq!(minipay(&db, &["keys", "disable"]).status.code(), Some(2), "--name or --id is required");
}
