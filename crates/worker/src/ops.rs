//! The worker's operational endpoints (`[worker] metrics_listen`): `/healthz` (the process
//! answers), `/readyz` (the scheduler is ticking and the database answers within two
//! seconds) and `/metrics` (Prometheus text: job runs and failures, jobs in flight,
//! reconciliation and payout counters — everything in the process' default registry).
//! Keep this port away from the public: the NetworkPolicy in deploy/k8s admits only the
//! monitoring namespace.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus::{Encoder, TextEncoder};
use sqlx::PgPool;

/// Shared with the handlers: whether the scheduler runs (set by the caller around
/// [`crate::Worker::start`] / [`crate::Worker::shutdown`]).
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

struct State {
    pool: PgPool,
    ready: Readiness,
}

/// The running ops server.
pub struct OpsServer {
    port: u16,
    server: Server,
}

impl OpsServer {
    /// Binds `listen` (port 0: any) and builds the server; spawn [`OpsServer::run_until_stopped`].
    pub fn bind(listen: &str, pool: PgPool, ready: Readiness) -> std::io::Result<OpsServer> {
        let listener = TcpListener::bind(listen)?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(State { pool, ready });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(2)
        .listen(listener)?
        .run();
        Ok(OpsServer { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    if !state.ready.get() {
        return HttpResponse::ServiceUnavailable().content_type("text/plain").body("scheduler not running");
    }
    let check = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&state.pool));
    match check.await {
        Ok(Ok(_)) => HttpResponse::Ok().content_type("text/plain").body("ready"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "worker readiness: database");
            HttpResponse::ServiceUnavailable().content_type("text/plain").body("database unavailable")
        }
        Err(_) => HttpResponse::ServiceUnavailable().content_type("text/plain").body("database unavailable"),
    }
}

/// The text exposition of the process' default registry.
pub fn render() -> String {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&prometheus::gather(), &mut buf).expect("text encoding cannot fail");
    String::from_utf8(buf).unwrap_or_default()
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(render())
}
