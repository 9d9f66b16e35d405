//! The harness itself: per-test databases are migrated, isolated, and usable at once.

use minipay_testkit::TestDb;

#[tokio::test]
async fn two_databases_at_once_are_isolated() {
    let (a, b) = tokio::join!(TestDb::new(), TestDb::new());
    assert_ne!(a.name, b.name);

    sqlx::query("INSERT INTO apps (appid, mch_id) VALUES ('wxa', '1')").execute(&a.pool).await.unwrap();
    let in_a: (i64,) = sqlx::query_as("SELECT count(*) FROM apps").fetch_one(&a.pool).await.unwrap();
    let in_b: (i64,) = sqlx::query_as("SELECT count(*) FROM apps").fetch_one(&b.pool).await.unwrap();
    assert_eq!(in_a.0, 1);
    assert_eq!(in_b.0, 0, "a row written in one test's database is invisible in another's");

    // Both carry the full schema (the migrations ran).
    let tables: (i64,) = sqlx::query_as(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('orders', 'ledger_entries')",
    )
    .fetch_one(&b.pool)
    .await
    .unwrap();
    assert_eq!(tables.0, 2);
}

#[tokio::test]
async fn a_private_cluster_restarts() {
    let cluster = minipay_testkit::PgCluster::start().expect("start a private cluster");
    let db = TestDb::on(&cluster).await;
    sqlx::query("INSERT INTO apps (appid, mch_id) VALUES ('wxa', '1')").execute(&db.pool).await.unwrap();
    cluster.stop_server().unwrap();
    assert!(sqlx::query("SELECT 1").execute(&db.pool).await.is_err(), "the server is down");
    cluster.start_server().unwrap();
    let n: (i64,) = sqlx::query_as("SELECT count(*) FROM apps").fetch_one(&db.pool).await.unwrap();
    assert_eq!(n.0, 1, "data survives a restart");
}
