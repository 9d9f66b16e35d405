//! What the mini-program needs from the server for v3 payments and payouts.
//!
//! - `wx.requestPayment` (v3): `appId`, `timeStamp` (Unix seconds, as a string),
//!   `nonceStr`, `package` = `prepay_id=<id>`, `signType` = `RSA`, and `paySign` =
//!   base64 SHA256withRSA with the **merchant** key over `appId\ntimeStamp\nnonceStr\npackage\n`
//!   (four lines, each ending in `\n`; `signType` is not signed). `appId` is sent to the
//!   mini-program although the client passes only the other five to `wx.requestPayment`:
//!   the signature covers it, so the front end can check it is paying into the right app.
//! - `wx.requestMerchantTransfer` (base library ≥ 3.3.0): `mchId`, `appId`, `package` = the
//!   transfer bill's `package_info`, `openId` (optional, lets WeChat check the user).
//!   Nothing is signed: `package_info` itself is WeChat's token.

use serde::Serialize;

use super::sign::MerchantSigner;

/// The object handed to `wx.requestPayment` (camelCase, as the mini-program API names it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestPaymentParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    /// Always `RSA` for v3.
    pub sign_type: &'static str,
    pub pay_sign: String,
}

/// The signed string: `appId\ntimeStamp\nnonceStr\npackage\n`.
pub fn request_payment_message(app_id: &str, time_stamp: &str, nonce_str: &str, package: &str) -> String {
    format!("{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n")
}

/// `wx.requestPayment` parameters for a prepay_id, now, with a fresh nonce.
pub fn request_payment_params(appid: &str, prepay_id: &str, signer: &MerchantSigner) -> RequestPaymentParams {
    request_payment_params_at(appid, prepay_id, signer, chrono::Utc::now().timestamp(), &crate::client::nonce())
}

/// As [`request_payment_params`] with a given timestamp and nonce (tests, the sandbox).
pub fn request_payment_params_at(
    appid: &str,
    prepay_id: &str,
    signer: &MerchantSigner,
    timestamp: i64,
    nonce: &str,
) -> RequestPaymentParams {
    let package = format!("prepay_id={prepay_id}");
    let time_stamp = timestamp.to_string();
    let pay_sign = signer.sign(request_payment_message(appid, &time_stamp, nonce, &package).as_bytes());
    RequestPaymentParams {
        app_id: appid.to_owned(),
        time_stamp,
        nonce_str: nonce.to_owned(),
        package,
        sign_type: "RSA",
        pay_sign,
    }
}

/// The object handed to `wx.requestMerchantTransfer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMerchantTransferParams {
    pub mch_id: String,
    pub app_id: String,
    /// The transfer bill's `package_info`.
    pub package: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_id: Option<String>,
}

impl RequestMerchantTransferParams {
    pub fn new(mch_id: &str, app_id: &str, package_info: &str, open_id: Option<&str>) -> Self {
        RequestMerchantTransferParams {
            mch_id: mch_id.to_owned(),
            app_id: app_id.to_owned(),
            package: package_info.to_owned(),
            open_id: open_id.map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v3::sign::rsa_sha256_verify;
    use crate::v3::testkeys;

    #[test]
    fn pay_sign_is_rsa_over_four_lines() {
        let s = testkeys::merchant();
        let p = request_payment_params_at(
            "wx8888888888888888",
            "wx201410272009395522657a690389285100",
            &s,
            1414561699,
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        );
        assert_eq!(p.package, "prepay_id=wx201410272009395522657a690389285100");
        let msg = "wx8888888888888888\n1414561699\n5K8264ILTKCH16CQ2502SI8ZNMTM67VS\nprepay_id=wx201410272009395522657a690389285100\n";
        assert_eq!(request_payment_message(&p.app_id, &p.time_stamp, &p.nonce_str, &p.package), msg);
        assert!(rsa_sha256_verify(&testkeys::merchant_public(), msg.as_bytes(), &p.pay_sign));
        // signType is not part of the signed string.
        let with_type = format!("{msg}RSA\n");
        assert!(!rsa_sha256_verify(&testkeys::merchant_public(), with_type.as_bytes(), &p.pay_sign));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"appId":"wx8888888888888888","timeStamp":"1414561699",
                "nonceStr":"5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
                "package":"prepay_id=wx201410272009395522657a690389285100","signType":"RSA","paySign":p.pay_sign})
        );
    }

    #[test]
    fn merchant_transfer_params() {
        let p = RequestMerchantTransferParams::new("1900001109", "wxf636efh567hg4356", "affffddafdfafddffda==", None);
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"mchId":"1900001109","appId":"wxf636efh567hg4356","package":"affffddafdfafddffda=="})
        );
        let p = RequestMerchantTransferParams::new("1", "wx", "pkg", Some("o-MYE42l80oelYMDE34nYD456Xoy"));
        assert_eq!(serde_json::to_value(&p).unwrap()["openId"], "o-MYE42l80oelYMDE34nYD456Xoy");
    }
}
