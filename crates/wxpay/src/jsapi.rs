//! Parameters the mini-program passes to `wx.requestPayment` and `wx.sendBizRedPacket`,
//! signed on the server (the API key never leaves it).
//!
//! - `wx.requestPayment`: `appId`, `timeStamp` (seconds, as a string), `nonceStr`,
//!   `package` = `prepay_id=<id>`, `signType` (the order's), `paySign` = v2 signature over
//!   exactly those five camelCase fields.
//! - `wx.sendBizRedPacket`: `timeStamp`, `nonceStr`, `package` (the sendminiprogramhb
//!   `package`, URL-encoded), `signType` = `MD5`, `paySign` = MD5 v2 signature over
//!   `appId`, `timeStamp`, `nonceStr`, `package` (URL-encoded) — `signType` **not** signed.
//!   This follows one public implementation; no official example exists, so it is a guess
//!   to confirm against a real device. The URL-encoding is `encodeURIComponent`-style
//!   (unreserved characters and `!'()*` kept, everything else `%XX` uppercase), also a guess.

use chrono::Utc;
use serde::Serialize;

use crate::secret::ApiKey;
use crate::sign::{SignType, sign};
use crate::xml::Params;

/// The object handed to `wx.requestPayment` (serialises with WeChat's camelCase names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestPaymentParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: SignType,
    pub pay_sign: String,
}

/// Builds the `wx.requestPayment` parameters for a prepay_id, now, with a fresh nonce.
pub fn request_payment_params(appid: &str, prepay_id: &str, sign_type: SignType, key: &ApiKey) -> RequestPaymentParams {
    request_payment_params_at(appid, prepay_id, sign_type, key, Utc::now().timestamp(), &crate::client::nonce())
}

/// As [`request_payment_params`] with a given timestamp and nonce (deterministic, for tests
/// and the sandbox's checker).
pub fn request_payment_params_at(
    appid: &str,
    prepay_id: &str,
    sign_type: SignType,
    key: &ApiKey,
    timestamp: i64,
    nonce: &str,
) -> RequestPaymentParams {
    let package = format!("prepay_id={prepay_id}");
    let time_stamp = timestamp.to_string();
    let p: Params = [
        ("appId", appid),
        ("timeStamp", time_stamp.as_str()),
        ("nonceStr", nonce),
        ("package", package.as_str()),
        ("signType", sign_type.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let pay_sign = sign(&p, key, sign_type);
    RequestPaymentParams {
        app_id: appid.to_owned(),
        time_stamp,
        nonce_str: nonce.to_owned(),
        package,
        sign_type,
        pay_sign,
    }
}

/// The object handed to `wx.sendBizRedPacket` (no appId: the mini-program knows its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendBizRedPacketParams {
    pub time_stamp: String,
    pub nonce_str: String,
    /// URL-encoded.
    pub package: String,
    /// Always MD5.
    pub sign_type: SignType,
    pub pay_sign: String,
}

/// Builds the `wx.sendBizRedPacket` parameters for a sendminiprogramhb `package`.
pub fn send_biz_red_packet_params(appid: &str, package: &str, key: &ApiKey) -> SendBizRedPacketParams {
    send_biz_red_packet_params_at(appid, package, key, Utc::now().timestamp(), &crate::client::nonce())
}

/// As [`send_biz_red_packet_params`] with a given timestamp and nonce.
pub fn send_biz_red_packet_params_at(
    appid: &str,
    package: &str,
    key: &ApiKey,
    timestamp: i64,
    nonce: &str,
) -> SendBizRedPacketParams {
    let package = url_encode(package);
    let time_stamp = timestamp.to_string();
    let p: Params =
        [("appId", appid), ("timeStamp", time_stamp.as_str()), ("nonceStr", nonce), ("package", package.as_str())]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let pay_sign = sign(&p, key, SignType::Md5);
    SendBizRedPacketParams { time_stamp, nonce_str: nonce.to_owned(), package, sign_type: SignType::Md5, pay_sign }
}

/// `encodeURIComponent`: keeps `A-Z a-z 0-9 - _ . ! ~ * ' ( )`, percent-encodes the rest
/// (UTF-8 bytes, uppercase hex).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::verify_as;

    #[test]
    fn request_payment_is_signed_over_exactly_five_fields() {
        let key = ApiKey::new("192006250b4c09247ec02edce69f6a2d");
        for st in [SignType::Md5, SignType::HmacSha256] {
            let r = request_payment_params_at(
                "wxd930ea5d5a258f4f",
                "wx2017033010242291fcfe0db70013231072",
                st,
                &key,
                1490840662,
                "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
            );
            assert_eq!(r.package, "prepay_id=wx2017033010242291fcfe0db70013231072");
            let mut p: Params = [
                ("appId", r.app_id.as_str()),
                ("timeStamp", r.time_stamp.as_str()),
                ("nonceStr", r.nonce_str.as_str()),
                ("package", r.package.as_str()),
                ("signType", st.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            p.insert("sign".into(), r.pay_sign.clone());
            verify_as(&p, &key, st).unwrap();
            let json = serde_json::to_value(&r).unwrap();
            let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            assert_eq!(keys, ["appId", "nonceStr", "package", "paySign", "signType", "timeStamp"]);
            assert_eq!(json["signType"], st.as_str());
            assert_eq!(json["timeStamp"], "1490840662");
        }
    }

    #[test]
    fn md5_request_payment_matches_hand_computed_string() {
        let key = ApiKey::new("k");
        let r = request_payment_params_at("wxA", "P1", SignType::Md5, &key, 100, "N");
        // appId=wxA&nonceStr=N&package=prepay_id=P1&signType=MD5&timeStamp=100&key=k
        let expected = hex::encode_upper(<md5::Md5 as md5::Digest>::digest(
            b"appId=wxA&nonceStr=N&package=prepay_id=P1&signType=MD5&timeStamp=100&key=k",
        ));
        assert_eq!(r.pay_sign, expected);
    }

    #[test]
    fn biz_red_packet_signs_encoded_package_without_sign_type() {
        let key = ApiKey::new("k");
        let r = send_biz_red_packet_params_at("wxA", "sendid=ab&ver=8&sign=X Y", &key, 100, "N");
        assert_eq!(r.package, "sendid%3Dab%26ver%3D8%26sign%3DX%20Y");
        let expected = hex::encode_upper(<md5::Md5 as md5::Digest>::digest(
            b"appId=wxA&nonceStr=N&package=sendid%3Dab%26ver%3D8%26sign%3DX%20Y&timeStamp=100&key=k",
        ));
        assert_eq!(r.pay_sign, expected);
        assert_eq!(serde_json::to_value(&r).unwrap()["signType"], "MD5");
    }

    #[test]
    fn url_encode_utf8() {
        assert_eq!(url_encode("a b/ç~"), "a%20b%2F%C3%A7~");
    }
}
