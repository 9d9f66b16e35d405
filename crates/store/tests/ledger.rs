//! The ledger's guarantees hold in the database itself, not only in our Rust code.

use chrono::Utc;
use minipay_store::Fen;
use minipay_store::ledger::{self, Kind, Movement, Posting, account};
use minipay_testkit::TestDb;

#[tokio::test]
async fn postings_are_idempotent_balanced_and_append_only() {
    let db = TestDb::new().await;
    let mut tx = db.pool.begin().await.unwrap();
    let m = Movement::standard(Kind::Payment, "order-1", "1900000109", Fen::new(1234), Utc::now());
    assert!(matches!(ledger::post(&mut tx, &m).await.unwrap(), Posting::Posted { .. }));
    assert_eq!(ledger::post(&mut tx, &m).await.unwrap(), Posting::AlreadyPosted);
    tx.commit().await.unwrap();

    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(ledger::balance(&mut conn, &account::wechat("1900000109")).await.unwrap(), Fen::new(1234));
    assert_eq!(ledger::balance(&mut conn, &account::sales("1900000109")).await.unwrap(), Fen::new(-1234));
    assert_eq!(ledger::count_postings(&mut conn, Kind::Payment, "order-1").await.unwrap(), 1);
    assert!(ledger::unbalanced_transactions(&mut conn).await.unwrap().is_empty());

    // Entries can be neither changed nor removed.
    assert!(sqlx::query("UPDATE ledger_entries SET amount = 1").execute(&db.pool).await.is_err());
    assert!(sqlx::query("DELETE FROM ledger_entries").execute(&db.pool).await.is_err());
    assert!(sqlx::query("TRUNCATE ledger_entries CASCADE").execute(&db.pool).await.is_err());

    // An unbalanced transaction cannot even be written, by hand or otherwise: the statement
    // that inserts it fails, and so does the commit of its database transaction.
    let mut tx = db.pool.begin().await.unwrap();
    let id = new_transaction(&mut tx, "x").await;
    let err = insert_entries(&mut tx, "($1, 'a', 5), ($1, 'b', -4)", id).await.unwrap_err();
    assert!(err.to_string().contains("unbalanced"), "{err}");
    // COMMIT of the aborted transaction rolls it back: nothing of it is kept.
    tx.commit().await.ok();
    let (kept,): (i64,) = sqlx::query_as("SELECT count(*) FROM ledger_transactions WHERE reference = 'x'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(kept, 0, "the unbalanced transaction left nothing behind");

    // A single entry is unbalanced too.
    let mut tx = db.pool.begin().await.unwrap();
    let id = new_transaction(&mut tx, "y").await;
    assert!(insert_entries(&mut tx, "($1, 'a', 7)", id).await.is_err(), "a one-entry transaction is refused");
    drop(tx);

    // Entries must name an existing transaction (what a foreign key used to check), even
    // balanced ones.
    let err = insert_entries(&mut conn, "($1, 'a', 5), ($1, 'b', -5)", 987_654_321).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");

    // A lone entry added later to a balanced posting unbalances it: refused.
    let (posted,): (i64,) = sqlx::query_as("SELECT id FROM ledger_transactions WHERE reference = 'order-1'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let extra = insert_entries(&mut conn, "($1, 'a', 1)", posted).await;
    assert!(extra.is_err(), "a lone entry added to a balanced transaction is refused");
    assert!(ledger::unbalanced_transactions(&mut conn).await.unwrap().is_empty());
    assert!(ledger::post(&mut conn, &Movement::standard(Kind::Fee, "d", "1", Fen::ZERO, Utc::now())).await.is_err());
}

async fn new_transaction(conn: &mut sqlx::PgConnection, reference: &str) -> i64 {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO ledger_transactions (kind, reference, mch_id, occurred_at) VALUES ('payment', $1, '1', now()) RETURNING id",
    )
    .bind(reference)
    .fetch_one(conn)
    .await
    .unwrap();
    id
}

/// `INSERT INTO ledger_entries … VALUES <values>` with `$1` bound to `transaction_id`.
async fn insert_entries(
    conn: &mut sqlx::PgConnection,
    values: &'static str,
    transaction_id: i64,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    let sql = format!("INSERT INTO ledger_entries (transaction_id, account, amount) VALUES {values}");
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(transaction_id).execute(conn).await
}
