//! The api.weixin.qq.com client against a fake upstream: login, typed errors, the token
//! cache's single flight, refresh and invalidation, and that secrets stay out of errors.

mod fake_upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fake_upstream::{Reply, spawn};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use wxpay::weixin::{ApiErrorKind, TokenCache, WeixinClient, WeixinConfig, WeixinError};

fn client(base: &str) -> WeixinClient {
    WeixinClient::new(WeixinConfig { base_url: base.into(), timeout: Duration::from_millis(800), ..Default::default() })
        .unwrap()
}

fn secret() -> SecretString {
    SecretString::from("app-secret-never-logged".to_string())
}

#[tokio::test]
async fn jscode2session_success_and_query() {
    let fake = spawn(|_| {
        Reply::json(json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "session_key": "tiihtNczf5v6AKRyjwEUhQ==", "unionid": "ocMvos6NjeKLIBqg5Mr9QjxrP1FA"}))
    })
    .await;
    let s = client(&fake.base_url).jscode2session("wx1", &secret(), "081aBc").await.unwrap();
    assert_eq!(s.openid, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    assert_eq!(s.session_key.expose_secret(), "tiihtNczf5v6AKRyjwEUhQ==");
    assert_eq!(s.unionid.as_deref(), Some("ocMvos6NjeKLIBqg5Mr9QjxrP1FA"));
    assert!(!format!("{s:?}").contains("tiihtN"));
    let r = &fake.requests()[0];
    assert_eq!(r.path(), "/sns/jscode2session");
    assert_eq!(r.query("js_code").as_deref(), Some("081aBc"));
    assert_eq!(r.query("grant_type").as_deref(), Some("authorization_code"));
}

#[tokio::test]
async fn jscode2session_errors_are_typed() {
    for (code, kind) in [
        (40029, ApiErrorKind::InvalidCode),
        (45011, ApiErrorKind::RateLimited),
        (40163, ApiErrorKind::CodeUsed),
        (-1, ApiErrorKind::Busy),
    ] {
        let fake = spawn(move |_| Reply::json(json!({"errcode": code, "errmsg": "x"}))).await;
        let err = client(&fake.base_url).jscode2session("wx1", &secret(), "c").await.unwrap_err();
        assert!(matches!(err, WeixinError::Api { kind: k, errcode, .. } if k == kind && errcode == code), "{err:?}");
    }
}

#[tokio::test]
async fn transport_errors_do_not_leak_the_secret() {
    let fake = spawn(|_| Reply::Delay(Duration::from_secs(5), Box::new(Reply::json(json!({}))))).await;
    let err = client(&fake.base_url).access_token("wx1", &secret()).await.unwrap_err();
    assert!(matches!(err, WeixinError::Transport(_)));
    assert!(!err.to_string().contains("app-secret"), "{err}");
}

#[tokio::test]
async fn token_cache_single_flight_and_reuse() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    let fake = spawn(move |_| {
        let n = f.fetch_add(1, Ordering::SeqCst);
        Reply::Delay(
            Duration::from_millis(100),
            Box::new(Reply::json(json!({"access_token": format!("TOKEN{n}"), "expires_in": 7200}))),
        )
    })
    .await;
    let cache = Arc::new(TokenCache::new(client(&fake.base_url), Duration::from_secs(300)));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = cache.clone();
        tasks.push(tokio::spawn(async move { c.get("wx1", &secret()).await.unwrap().expose_secret().to_owned() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "TOKEN0");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "concurrent callers share one fetch");
    assert_eq!(cache.get("wx1", &secret()).await.unwrap().expose_secret(), "TOKEN0");
    // Another appid has its own token.
    assert_eq!(cache.get("wx2", &secret()).await.unwrap().expose_secret(), "TOKEN1");
    let r = &fake.requests()[0];
    assert_eq!(r.path(), "/cgi-bin/token");
    assert_eq!(r.query("grant_type").as_deref(), Some("client_credential"));
}

#[tokio::test]
async fn token_cache_refreshes_ahead_of_expiry() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    let fake = spawn(move |_| {
        let n = f.fetch_add(1, Ordering::SeqCst);
        // Expires in 60 s: inside the 300 s refresh-ahead window, so every get refreshes.
        Reply::json(json!({"access_token": format!("T{n}"), "expires_in": 60}))
    })
    .await;
    let cache = TokenCache::new(client(&fake.base_url), Duration::from_secs(300));
    assert_eq!(cache.get("wx1", &secret()).await.unwrap().expose_secret(), "T0");
    assert_eq!(cache.get("wx1", &secret()).await.unwrap().expose_secret(), "T1");
}

#[tokio::test]
async fn custom_message_retries_once_after_token_invalidation() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    let fake = spawn(move |c| {
        if c.path() == "/cgi-bin/token" {
            let n = f.fetch_add(1, Ordering::SeqCst);
            return Reply::json(json!({"access_token": format!("T{n}"), "expires_in": 7200}));
        }
        if c.query("access_token").as_deref() == Some("T0") {
            Reply::json(json!({"errcode": 40001, "errmsg": "invalid credential"}))
        } else {
            Reply::json(json!({"errcode": 0, "errmsg": "ok"}))
        }
    })
    .await;
    let cache = TokenCache::new(client(&fake.base_url), Duration::from_secs(300));
    cache.send_custom_message("wx1", &secret(), "o1", "您的提现已到账").await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let sends: Vec<_> = fake.requests().into_iter().filter(|r| r.path() == "/cgi-bin/message/custom/send").collect();
    assert_eq!(sends.len(), 2);
    let body: serde_json::Value = serde_json::from_slice(&sends[1].body).unwrap();
    assert_eq!(body, json!({"touser": "o1", "msgtype": "text", "text": {"content": "您的提现已到账"}}));
}
