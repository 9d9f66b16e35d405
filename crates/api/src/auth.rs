//! Bearer authentication and roles.
//!
//! The [`authenticate`] middleware looks the key up once per request (keys are stored as
//! SHA-256, see `minipay_store::clients`) and leaves a [`Caller`] in the request's
//! extensions. Handlers take `caller: Caller` as an argument (401 when there is none) and
//! call [`Caller::require`] with the roles allowed (403 otherwise; `admin` passes every
//! check):
//!
//! ```ignore
//! async fn create_payout(caller: Caller, ...) -> Result<HttpResponse, ApiError> {
//!     caller.require(&[Role::Finance])?;
//!     ...
//! }
//! ```

use std::future::{Ready, ready};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
pub use minipay_store::clients::Role;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated API client making the request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Passes when the caller has one of `roles` (or is `admin`); 403 `forbidden` otherwise.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "this endpoint needs the role {}; the key has {}",
                names.join(" or "),
                self.role
            )))
        }
    }

    /// The audit actor for this caller.
    pub fn actor(&self) -> String {
        format!("client:{}", self.id)
    }
}

/// Why there is no caller (kept for the 401 message).
#[derive(Clone, Debug)]
struct NoCaller(&'static str);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ext = req.extensions();
        ready(match (ext.get::<Caller>(), ext.get::<NoCaller>()) {
            (Some(c), _) => Ok(c.clone()),
            (None, Some(NoCaller(why))) => Err(ApiError::unauthorized(*why)),
            (None, None) => Err(ApiError::unauthorized("send Authorization: Bearer <key>")),
        })
    }
}

/// Middleware: resolves `Authorization: Bearer <key>` into a [`Caller`] extension.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let header = req.headers().get(actix_web::http::header::AUTHORIZATION).map(|h| h.to_str().unwrap_or(""));
    match header {
        None => {
            req.extensions_mut().insert(NoCaller("send Authorization: Bearer <key>"));
        }
        Some(h) => {
            let key = h.strip_prefix("Bearer ").map(str::trim).filter(|k| !k.is_empty() && k.len() <= 200);
            match key {
                None => {
                    req.extensions_mut().insert(NoCaller("the Authorization header must be `Bearer <key>`"));
                }
                Some(key) => {
                    let state = req.app_data::<web::Data<AppState>>().cloned();
                    let found = match state {
                        Some(s) => s.authenticate(key).await?,
                        None => None,
                    };
                    match found {
                        Some(c) => {
                            tracing::Span::current().record("client", tracing::field::display(&c.id));
                            req.extensions_mut().insert(Caller { id: c.id, name: c.name, role: c.role });
                        }
                        None => {
                            req.extensions_mut().insert(NoCaller("unknown or disabled API key"));
                        }
                    }
                }
            }
        }
    }
    next.call(req).await
}
