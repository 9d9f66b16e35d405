//! Store functions behind the payments API: idempotency keys, orders' transitions, the
//! order group statement, refund reservations.

use std::time::Duration;

use chrono::Utc;
use minipay_store::clients::{self, Role};
use minipay_store::domain::OrderStatus;
use minipay_store::group_commit::Connections;
use minipay_store::idempotency::{self, Begin, Claim, Completion, KeyedRequest};
use minipay_store::orders::{self, GroupInsert, NewOrder, NewOrderOwned};
use minipay_store::refunds::{self, CreateError};
use minipay_store::{Fen, StoreError};
use minipay_testkit::TestDb;

async fn setup(db: &TestDb) -> uuid::Uuid {
    minipay_store::users::upsert_app(&db.pool, "wx1", "1900000109").await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    clients::create(&mut conn, "shop", Role::Client, None).await.unwrap().client.id
}

fn new_order(no: &str, client: uuid::Uuid) -> NewOrder<'_> {
    NewOrder {
        out_trade_no: no,
        appid: "wx1",
        mch_id: "1900000109",
        client_id: Some(client),
        openid: "openid-1",
        amount: Fen::new(1000),
        description: "d",
        attach: None,
        sign_type: "MD5",
        expires_at: Utc::now() + chrono::Duration::hours(1),
    }
}

#[tokio::test]
async fn idempotency_keys_start_replay_refuse_and_take_over() {
    let db = TestDb::new().await;
    let client = setup(&db).await;
    let req = KeyedRequest { client_id: client, key: "k1", method: "POST", path: "/v1/orders", request_hash: "h1" };
    let long = Duration::from_secs(60);
    assert_eq!(idempotency::begin(&db.pool, &req, long).await.unwrap(), Begin::Started);
    assert_eq!(idempotency::begin(&db.pool, &req, long).await.unwrap(), Begin::InProgress);
    let other = KeyedRequest { request_hash: "h2", ..req };
    assert_eq!(idempotency::begin(&db.pool, &other, long).await.unwrap(), Begin::Mismatch);
    let body = serde_json::json!({"ok": true});
    idempotency::complete(&db.pool, client, "k1", 201, &body).await.unwrap();
    assert_eq!(idempotency::begin(&db.pool, &req, long).await.unwrap(), Begin::Replay { status: 201, body });

    // A claim whose request never finished is taken over once it is old enough.
    let req2 = KeyedRequest { key: "k2", ..req };
    assert_eq!(idempotency::begin(&db.pool, &req2, long).await.unwrap(), Begin::Started);
    assert_eq!(idempotency::begin(&db.pool, &req2, Duration::ZERO).await.unwrap(), Begin::Started);
    idempotency::release(&db.pool, client, "k2").await.unwrap();
    assert_eq!(idempotency::begin(&db.pool, &req2, long).await.unwrap(), Begin::Started, "released: runs again");
}

#[tokio::test]
async fn orders_follow_their_transitions() {
    let db = TestDb::new().await;
    let client = setup(&db).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let o = orders::insert(&mut conn, &new_order("o-1", client)).await.unwrap();
    assert_eq!(o.status, OrderStatus::Created);
    assert!(matches!(orders::insert(&mut conn, &new_order("o-1", client)).await, Err(StoreError::Conflict(_))));
    assert!(orders::mark_prepaid(&mut *conn, "o-1", "wx-prepay").await.unwrap());
    let o = orders::find(&mut *conn, "o-1").await.unwrap().unwrap();
    assert_eq!((o.status, o.prepay_id.as_deref()), (OrderStatus::Prepaid, Some("wx-prepay")));
    orders::set_closed(&mut conn, &o).await.unwrap();
    assert!(!orders::mark_prepaid(&mut *conn, "o-1", "wx-other").await.unwrap(), "a closed order stays closed");
    let o = orders::find(&mut *conn, "o-1").await.unwrap().unwrap();
    assert!(matches!(orders::set_failed(&mut conn, &o, "x").await, Err(StoreError::InvalidTransition { .. })));
    // Expired open orders come one at a time, skipping ones queried recently.
    orders::insert(&mut conn, &new_order("o-2", client)).await.unwrap();
    let later = Utc::now() + chrono::Duration::hours(2);
    let due = orders::lock_next_expired(&mut conn, later, later).await.unwrap().unwrap();
    assert_eq!(due.out_trade_no, "o-2");
    orders::mark_queried(&mut *conn, due.id).await.unwrap();
    assert!(
        orders::lock_next_expired(&mut conn, later, Utc::now() - chrono::Duration::seconds(30))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn refunds_reserve_and_release() {
    let db = TestDb::new().await;
    let client = setup(&db).await;
    let mut conn = db.pool.acquire().await.unwrap();
    orders::insert(&mut conn, &new_order("o-r", client)).await.unwrap();
    // Paid directly for the test (the real path is settle::apply_payment).
    sqlx::query("UPDATE orders SET status = 'paid', transaction_id = 't1', paid_at = now() WHERE out_trade_no = 'o-r'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let o = orders::lock(&mut tx, "o-r").await.unwrap().unwrap();
    let r1 = refunds::create_pending(&mut tx, &o, "r-1", Fen::new(700), None, Some(client)).await.unwrap();
    let o = orders::lock(&mut tx, "o-r").await.unwrap().unwrap();
    assert_eq!(o.refundable(), Fen::new(300));
    let over = refunds::create_pending(&mut tx, &o, "r-2", Fen::new(301), None, Some(client)).await;
    assert!(matches!(over, Err(CreateError::ExceedsRefundable { refundable }) if refundable == Fen::new(300)));
    let taken = refunds::create_pending(&mut tx, &o, "r-1", Fen::new(1), None, Some(client)).await;
    assert!(matches!(taken, Err(CreateError::NumberTaken(_))));
    tx.commit().await.unwrap();
    // WeChat refuses r-1: its 700 are free again.
    let mut tx = db.pool.begin().await.unwrap();
    refunds::set_failed(&mut tx, &r1, "NOTENOUGH", "余额不足").await.unwrap();
    tx.commit().await.unwrap();
    let o = orders::find(&db.pool, "o-r").await.unwrap().unwrap();
    assert_eq!(o.refunded_amount, Fen::ZERO);
    let r1 = refunds::find(&db.pool, "r-1").await.unwrap().unwrap();
    assert_eq!(r1.failure_code.as_deref(), Some("NOTENOUGH"));
    // The database itself refuses reserving more than the amount, whatever the caller does.
    let direct =
        sqlx::query("UPDATE orders SET refunded_amount = 1001 WHERE out_trade_no = 'o-r'").execute(&db.pool).await;
    assert!(direct.is_err());
}

fn claim(client: uuid::Uuid, key: &str, hash: &str) -> Option<Claim> {
    Some(Claim {
        client_id: client,
        key: key.to_owned(),
        method: "POST".into(),
        path: "/v1/orders".into(),
        request_hash: hash.to_owned(),
    })
}

#[tokio::test]
async fn the_order_group_claims_keys_with_their_orders_and_leaves_the_rest_to_the_single_path() {
    let db = TestDb::new().await;
    let client = setup(&db).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let owned = |no: &str| NewOrderOwned::new(&new_order(no, client));
    orders::insert(&mut conn, &new_order("taken", client)).await.unwrap();
    idempotency::begin(
        &db.pool,
        &KeyedRequest { client_id: client, key: "used", method: "POST", path: "/v1/orders", request_hash: "h0" },
        Duration::from_secs(60),
    )
    .await
    .unwrap();

    let answers = orders::claim_and_insert_group(
        &mut conn,
        &[
            (owned("g-1"), claim(client, "k-1", "h1")),   // new key, new number
            (owned("g-2"), claim(client, "used", "h2")),  // key already there
            (owned("taken"), claim(client, "k-3", "h3")), // new key, number taken
            (owned("g-4"), None),                         // no key, new number
            (owned("taken"), None),                       // no key, number taken
            (owned("g-1"), claim(client, "k-6", "h6")),   // number of an earlier input
            (owned("g-7"), claim(client, "k-1", "h1")),   // key of an earlier input
        ],
    )
    .await
    .unwrap();
    let kinds: Vec<&str> = answers
        .iter()
        .map(|a| match a {
            GroupInsert::Inserted(_) => "inserted",
            GroupInsert::Claimed => "claimed",
            GroupInsert::Skipped => "skipped",
        })
        .collect();
    assert_eq!(kinds, ["inserted", "skipped", "claimed", "inserted", "skipped", "skipped", "skipped"]);
    let GroupInsert::Inserted(g1) = &answers[0] else { unreachable!() };
    assert_eq!((g1.out_trade_no.as_str(), g1.status, g1.client_id), ("g-1", OrderStatus::Created, Some(client)));
    assert_eq!(**g1, orders::find(&mut *conn, "g-1").await.unwrap().unwrap(), "answered as stored");

    // Written: the inserted orders and the claimed keys, nothing else.
    let numbers: Vec<(String,)> =
        sqlx::query_as("SELECT out_trade_no FROM orders ORDER BY 1").fetch_all(&mut *conn).await.unwrap();
    assert_eq!(numbers, [("g-1".into(),), ("g-4".into(),), ("taken".into(),)]);
    let keys: Vec<(String, String, Option<i32>)> =
        sqlx::query_as("SELECT key, request_hash, response_status FROM idempotency_keys ORDER BY 1")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(
        keys,
        [("k-1".into(), "h1".into(), None), ("k-3".into(), "h3".into(), None), ("used".into(), "h0".into(), None)]
    );
    // The single path then decides the skipped ones as it always did.
    let used = KeyedRequest { client_id: client, key: "used", method: "POST", path: "/v1/orders", request_hash: "h2" };
    assert_eq!(idempotency::begin(&db.pool, &used, Duration::from_secs(60)).await.unwrap(), Begin::Mismatch);

    // The stored responses and the prepay marks: one statement; a closed order stays closed.
    let g4 = orders::find(&mut *conn, "g-4").await.unwrap().unwrap();
    orders::set_closed(&mut conn, &g4).await.unwrap();
    let done = |key: &str, prepaid: Option<(&str, &str)>| Completion {
        client_id: client,
        key: key.to_owned(),
        status: 201,
        body: serde_json::json!({"key": key}),
        prepaid: prepaid.map(|(n, p)| (n.to_owned(), p.to_owned())),
    };
    idempotency::complete_group(
        &db.pool,
        &[done("k-1", Some(("g-1", "wx-1"))), done("k-3", Some(("g-4", "wx-4"))), done("used", None)],
    )
    .await
    .unwrap();
    let g1 = orders::find(&mut *conn, "g-1").await.unwrap().unwrap();
    assert_eq!((g1.status, g1.prepay_id.as_deref()), (OrderStatus::Prepaid, Some("wx-1")));
    let g4 = orders::find(&mut *conn, "g-4").await.unwrap().unwrap();
    assert_eq!((g4.status, g4.prepay_id), (OrderStatus::Closed, None));
    let k1 = KeyedRequest { client_id: client, key: "k-1", method: "POST", path: "/v1/orders", request_hash: "h1" };
    assert_eq!(
        idempotency::begin(&db.pool, &k1, Duration::from_secs(60)).await.unwrap(),
        Begin::Replay { status: 201, body: serde_json::json!({"key": "k-1"}) }
    );
}

#[tokio::test]
async fn group_connections_are_kept_after_a_group_and_dropped_after_a_failure() {
    let db = TestDb::new().await;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&db.url).await.unwrap();
    let conns = Connections::new(pool.clone());
    let pid = async |c: &mut sqlx::PgConnection| -> Result<i32, StoreError> {
        Ok(sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(c).await?)
    };
    let first = conns.run(pid).await.unwrap();
    assert_eq!((pool.size(), pool.num_idle()), (1, 0), "kept by the group, not back in the pool");
    assert_eq!(conns.run(pid).await.unwrap(), first, "the next group reuses it");
    let failed = conns
        .run(async |c| -> Result<(), StoreError> {
            sqlx::query("SELECT 1 / 0").execute(c).await?;
            Ok(())
        })
        .await;
    assert!(failed.is_err());
    // Dropped: sqlx hands it back to the pool in the background.
    for _ in 0..100 {
        if pool.num_idle() == pool.size() as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pool.num_idle(), pool.size() as usize, "a failed group gives its connection back to the pool");
    conns.run(pid).await.unwrap();
    assert_eq!(pool.num_idle(), pool.size() as usize - 1);
}
