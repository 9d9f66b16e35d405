//! WeChat's reply document. Only `return_code` SUCCESS stops WeChat's retries; the FAIL
//! message is deliberately vague (a forger learns nothing about why).

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

const SUCCESS: &str =
    "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";

/// The acknowledgement: WeChat stops retrying.
pub fn success() -> HttpResponse {
    HttpResponse::Ok().content_type("text/xml; charset=utf-8").body(SUCCESS)
}

/// A refusal (4xx: the body is not acceptable) or a temporary failure (5xx: try again).
/// WeChat retries either way; the status only tells operators and load balancers which.
pub fn fail(status: StatusCode) -> HttpResponse {
    let msg = if status.is_server_error() { "temporarily unavailable" } else { "rejected" };
    HttpResponse::build(status).content_type("text/xml; charset=utf-8").body(format!(
        "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[{msg}]]></return_msg></xml>"
    ))
}

/// The v3 acknowledgement: 204, no body (WeChat accepts 200 or 204).
pub fn v3_success() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// A v3 refusal or temporary failure: the status and `{"code":"FAIL","message":…}`, as
/// vague as the v2 one.
pub fn v3_fail(status: StatusCode) -> HttpResponse {
    let msg = if status.is_server_error() { "temporarily unavailable" } else { "rejected" };
    HttpResponse::build(status).content_type("application/json").body(wxpay::v3::notify::failure_body(msg))
}
