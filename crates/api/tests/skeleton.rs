//! The API's frame without WeChat: health, readiness, metrics, the OpenAPI document, the JSON
//! 404 and authentication. Endpoint behaviour is tested end to end in `tests/` (minipay-e2e).

use std::path::Path;

use minipay_api::Application;
use minipay_config::Config;
use minipay_store::clients::{self, Role};
use minipay_testkit::TestDb;

async fn spawn() -> (String, TestDb) {
    let db = TestDb::new().await;
    let toml = r#"
        [api]
        listen = "127.0.0.1:0"
        workers = 1
        [wechat]
        pay_base_url = "http://127.0.0.1:9"
        api_base_url = "http://127.0.0.1:9"
        [[merchants]]
        mch_id = "1900000109"
        api_key = "192006250b4c09247ec02edce69f6a2d"
        [[apps]]
        appid = "wxd930ea5d5a258f4f"
        mch_id = "1900000109"
        secret = "s"
    "#;
    let config = Config::from_toml_with_env(toml, Vec::new(), Path::new(".")).unwrap();
    let app = Application::build(config, db.pool.clone()).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    (url, db)
}

#[tokio::test]
async fn operational_endpoints_answer() {
    let (url, _db) = spawn().await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let r = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("minipay_http_requests_total"), "{text}");
    let doc: serde_json::Value = http.get(format!("{url}/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/healthz"].is_object(), "{doc}");
    let r = http.get(format!("{url}/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn keys_are_checked_and_stored_hashed() {
    let (url, db) = spawn().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let created = clients::create(&mut conn, "shop", Role::Client, None).await.unwrap();
    let found = clients::authenticate(&db.pool, &created.key).await.unwrap().unwrap();
    assert_eq!(found.role, Role::Client);
    let (stored,): (String,) = sqlx::query_as("SELECT key_hash FROM api_clients").fetch_one(&db.pool).await.unwrap();
    assert_ne!(stored, created.key);
    assert_eq!(stored, clients::hash_key(&created.key));
    assert!(clients::authenticate(&db.pool, "mp_client_wrong").await.unwrap().is_none());

    let http = reqwest::Client::new();
    let r = http.post(format!("{url}/v1/orders")).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let r = http
        .post(format!("{url}/v1/orders"))
        .bearer_auth("mp_client_wrong")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
