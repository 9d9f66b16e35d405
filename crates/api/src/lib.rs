//! # minipay-api — the HTTP API for mini-program backends and finance staff
//!
//! [`Application::build`] binds the listener from `config.api.listen` (port 0 in tests; read
//! it back with [`Application::port`]) and returns the server ready to
//! [`Application::run_until_stopped`]; [`Application::handle`] stops it gracefully.
//!
//! ## Layout
//! - [`error`]: [`ApiError`], the one error shape `{"error":{"code","message"}}` and the list
//!   of stable codes.
//! - [`auth`]: Bearer keys → [`auth::Caller`] with a role; `caller.require(&[Role::…])`.
//! - [`idempotency`]: `Idempotency-Key` on every POST (replay / 409), as middleware.
//! - [`telemetry`]: request id on every log line, access log, request metrics.
//! - [`metrics`], [`state`]: Prometheus metrics and the shared [`state::AppState`].
//! - [`routes`]: one module per resource family.
//! - [`platform`]: the shared access token, sealed session keys, push readers (issue 18).
//!
//! ## Adding a route module (payouts, red packets, reconciliations, …)
//! 1. Write `src/routes/<name>.rs` with `pub fn configure(cfg: &mut web::ServiceConfig)`
//!    (register `web::resource("/v1/...")` routes) and `pub fn openapi() -> utoipa::openapi::OpenApi`
//!    (a `#[derive(utoipa::OpenApi)] #[openapi(paths(...), components(schemas(...)))]`
//!    struct's `openapi()`; annotate handlers with `#[utoipa::path(...)]`).
//! 2. Declare it in `src/routes/mod.rs` (`pub mod <name>;`) and add one line to
//!    [`ROUTE_MODULES`] below.
//! 3. In handlers: take `state: web::Data<AppState>` and `caller: Caller`; call
//!    `caller.require(&[Role::Finance])?`; take `web::Json<T>` bodies (size limit and
//!    malformed-JSON errors are handled for you; define `T` with `#[serde(deny_unknown_fields)]`
//!    if you want typos refused); return `Result<HttpResponse, ApiError>`; map store errors
//!    with `?` (`From<StoreError>`); POSTs are idempotent by key without extra code.
//! 4. Test through `minipay_e2e::TestApp` (tests/src/lib.rs): add one typed method per endpoint.

pub mod auth;
pub mod error;
pub mod idempotency;
pub mod keys;
pub mod metrics;
pub mod payments;
pub mod platform;
pub mod routes;
pub mod state;
pub mod telemetry;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use minipay_config::Config;
use sqlx::PgPool;

pub use error::ApiError;
pub use state::AppState;

/// One route module: how it registers its routes and documents them.
pub struct RouteModule {
    pub name: &'static str,
    pub configure: fn(&mut web::ServiceConfig),
    pub openapi: fn() -> utoipa::openapi::OpenApi,
}

impl RouteModule {
    pub const fn new(
        name: &'static str,
        configure: fn(&mut web::ServiceConfig),
        openapi: fn() -> utoipa::openapi::OpenApi,
    ) -> RouteModule {
        RouteModule { name, configure, openapi }
    }
}

/// Every route module of the API. Add yours with one line.
pub const ROUTE_MODULES: &[RouteModule] = &[
    RouteModule::new("health", routes::health::configure, routes::health::openapi),
    RouteModule::new("sessions", routes::sessions::configure, routes::sessions::openapi),
    RouteModule::new("orders", routes::orders::configure, routes::orders::openapi),
    RouteModule::new("refunds", routes::refunds::configure, routes::refunds::openapi),
    RouteModule::new("webhooks", routes::webhooks::configure, routes::webhooks::openapi),
    RouteModule::new("payouts", routes::payouts::configure, routes::payouts::openapi),
    RouteModule::new("redpacks", routes::redpacks::configure, routes::redpacks::openapi),
    RouteModule::new("reconciliations", routes::reconciliations::configure, routes::reconciliations::openapi),
    RouteModule::new(
        "reconciliation_requests",
        routes::reconciliation_requests::configure,
        routes::reconciliation_requests::openapi,
    ),
    RouteModule::new("anomalies", routes::anomalies::configure, routes::anomalies::openapi),
    RouteModule::new("wechat_token", routes::wechat_token::configure, routes::wechat_token::openapi),
    RouteModule::new("users", routes::users::configure, routes::users::openapi),
    RouteModule::new("cs", routes::cs::configure, routes::cs::openapi),
    RouteModule::new("push", routes::push::configure, routes::push::openapi),
];

/// The OpenAPI document of every module (served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("minipay API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "WeChat Pay (v2) payments, refunds, payouts and reconciliation for mini-programs. \
                     Amounts are integer fen. Authenticate with `Authorization: Bearer <key>`; \
                     every POST accepts `Idempotency-Key`. Errors: {\"error\":{\"code\",\"message\"}}.",
                ))
                .build(),
        )
        .build();
    for m in ROUTE_MODULES {
        doc.merge((m.openapi)());
    }
    doc
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] minipay_config::ConfigError),
    #[error("database: {0}")]
    Store(#[from] minipay_store::StoreError),
}

/// A bound, not yet running API server.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl Application {
    /// Builds the app: upserts the configured apps into the database, binds the listener,
    /// builds the server (not yet polled: run it with [`Application::run_until_stopped`]).
    pub async fn build(config: Config, pool: PgPool) -> Result<Application, StartError> {
        let config = Arc::new(config);
        for app in &config.apps {
            minipay_store::users::upsert_app(&pool, &app.appid, &app.mch_id).await?;
        }
        let state = web::Data::new(AppState::new(config.clone(), pool, metrics::Metrics::new())?);
        let addr = config.api.listen.clone();
        let listener = TcpListener::bind(&addr).map_err(|source| StartError::Bind { addr: addr.clone(), source })?;
        let port = listener.local_addr().map_err(|source| StartError::Bind { addr: addr.clone(), source })?.port();
        let limit = config.api.max_body_bytes;
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            let app =
                App::new()
                    .app_data(app_state.clone())
                    .app_data(web::JsonConfig::default().limit(limit).error_handler(|e, _| error::json_error(e).into()))
                    .app_data(web::PathConfig::default().error_handler(|e, _| {
                        ApiError::not_found("not_found", format!("bad path parameter: {e}")).into()
                    }))
                    .app_data(web::QueryConfig::default().error_handler(|e, _| {
                        ApiError::invalid("invalid_request", format!("bad query string: {e}")).into()
                    }))
                    .wrap(from_fn(idempotency::idempotency))
                    .wrap(from_fn(auth::authenticate))
                    .wrap(from_fn(telemetry::trace_requests));
            ROUTE_MODULES
                .iter()
                .fold(app, |app, m| app.configure(m.configure))
                .default_service(web::to(routes::health::not_found))
        })
        .shutdown_timeout(10)
        .disable_signals();
        if config.api.workers > 0 {
            server = server.workers(config.api.workers);
        }
        let server = server.listen(listener).map_err(|source| StartError::Bind { addr, source })?.run();
        Ok(Application { port, server, state })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server: `handle().stop(true)` finishes in-flight requests first.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
