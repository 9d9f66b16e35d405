//! 消息推送: the messages WeChat pushes to a mini-program's server (customer-service
//! messages a user sends, and events), in both data formats (XML, JSON) and both modes
//! (plaintext; safe mode = AES-256-CBC). The same code encrypts, so the sandbox pushes with
//! it and our endpoint reads with it.
//!
//! - URL verification: `signature = sha1(sort(token, timestamp, nonce).join(""))`, answer
//!   `echostr` verbatim ([`url_signature`]).
//! - Safe mode: `msg_signature = sha1(sort(token, timestamp, nonce, Encrypt).join(""))`
//!   ([`msg_signature`]); AES key = base64(EncodingAESKey + "="), IV = its first 16 bytes,
//!   PKCS#7 padding to 32-byte blocks, plaintext = 16 random bytes ‖ message length (4
//!   bytes, big-endian) ‖ message ‖ appid; the appid suffix must be ours ([`PushCipher`]).
//! - [`PushMessage`]: the fields we act on, whatever the format.
//!
//! Nothing here logs; the secret token and key are [`SecretString`]s.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::symm::{Cipher, Crypter, Mode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::xml::{self, Params};

/// Why a pushed message was refused. Safe to log: no content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("signature mismatch")]
    Signature,
    #[error("EncodingAESKey must be 43 base64 characters")]
    Key,
    #[error("ciphertext is not valid ({0})")]
    Cipher(&'static str),
    #[error("the message is for another app")]
    AppId,
    #[error("body unreadable: {0}")]
    Body(String),
}

/// The two data formats an app can choose in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

impl Format {
    /// JSON bodies start with `{`; anything else is read as XML.
    pub fn sniff(body: &[u8]) -> Format {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Format::Json,
            _ => Format::Xml,
        }
    }
}

/// sha1 hex of the sorted, concatenated parts (WeChat's push signatures).
fn sorted_sha1(parts: &mut [&str]) -> String {
    parts.sort_unstable();
    sha1_hex(parts.concat().as_bytes())
}

/// The `signature` of a URL verification or plaintext push.
pub fn url_signature(token: &SecretString, timestamp: &str, nonce: &str) -> String {
    sorted_sha1(&mut [token.expose_secret(), timestamp, nonce])
}

/// The `msg_signature` of a safe-mode push (over the `Encrypt` field).
pub fn msg_signature(token: &SecretString, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sorted_sha1(&mut [token.expose_secret(), timestamp, nonce, encrypt])
}

/// Constant-time comparison of two hex signatures (case-insensitive, as WeChat's are lower).
pub fn signature_matches(expected: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    let given = given.to_ascii_lowercase();
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The safe-mode cipher of one app: key from the EncodingAESKey, the appid it checks.
#[derive(Clone)]
pub struct PushCipher {
    key: [u8; 32],
    appid: String,
}

impl fmt::Debug for PushCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushCipher").field("appid", &self.appid).field("key", &"***").finish()
    }
}

/// WeChat pads to 32-byte blocks, not AES's 16.
const PAD_BLOCK: usize = 32;

impl PushCipher {
    /// `encoding_aes_key`: the 43 characters from the console.
    pub fn new(encoding_aes_key: &SecretString, appid: &str) -> Result<PushCipher, PushError> {
        let k = encoding_aes_key.expose_secret();
        if k.len() != 43 {
            return Err(PushError::Key);
        }
        // The console's 43 characters are random: the last one may carry bits beyond the
        // 32 bytes, which WeChat's own SDKs ignore. Decode the same lenient way.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let bytes = lenient.decode(format!("{k}=")).map_err(|_| PushError::Key)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| PushError::Key)?;
        Ok(PushCipher { key, appid: appid.to_owned() })
    }

    fn crypt(&self, mode: Mode, data: &[u8]) -> Result<Vec<u8>, PushError> {
        let mut c = Crypter::new(Cipher::aes_256_cbc(), mode, &self.key, Some(&self.key[..16]))
            .map_err(|_| PushError::Cipher("cipher"))?;
        c.pad(false);
        let mut out = vec![0; data.len() + 32];
        let n = c.update(data, &mut out).map_err(|_| PushError::Cipher("block"))?;
        let m = c.finalize(&mut out[n..]).map_err(|_| PushError::Cipher("block"))?;
        out.truncate(n + m);
        Ok(out)
    }

    /// Decrypts an `Encrypt` field; the appid suffix must be this cipher's.
    pub fn decrypt(&self, encrypt_b64: &str) -> Result<Vec<u8>, PushError> {
        let data = STANDARD.decode(encrypt_b64.trim()).map_err(|_| PushError::Cipher("base64"))?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(PushError::Cipher("length"));
        }
        let mut plain = self.crypt(Mode::Decrypt, &data)?;
        let pad = *plain.last().ok_or(PushError::Cipher("empty"))? as usize;
        if pad == 0
            || pad > PAD_BLOCK
            || pad > plain.len()
            || plain[plain.len() - pad..].iter().any(|&b| b as usize != pad)
        {
            return Err(PushError::Cipher("padding"));
        }
        plain.truncate(plain.len() - pad);
        if plain.len() < 20 {
            return Err(PushError::Cipher("short"));
        }
        let len = u32::from_be_bytes([plain[16], plain[17], plain[18], plain[19]]) as usize;
        let end = 20usize.checked_add(len).filter(|e| *e <= plain.len()).ok_or(PushError::Cipher("length field"))?;
        if &plain[end..] != self.appid.as_bytes() {
            return Err(PushError::AppId);
        }
        Ok(plain[20..end].to_vec())
    }

    /// Encrypts `msg` for this app with the given 16 random bytes; base64 out.
    pub fn encrypt_with(&self, msg: &[u8], random16: [u8; 16]) -> Result<String, PushError> {
        let len = u32::try_from(msg.len()).map_err(|_| PushError::Cipher("too long"))?;
        let mut plain = Vec::with_capacity(20 + msg.len() + self.appid.len() + PAD_BLOCK);
        plain.extend_from_slice(&random16);
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(msg);
        plain.extend_from_slice(self.appid.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        Ok(STANDARD.encode(self.crypt(Mode::Encrypt, &plain)?))
    }

    pub fn encrypt(&self, msg: &[u8]) -> Result<String, PushError> {
        self.encrypt_with(msg, rand::random())
    }
}

/// A pushed message, format-independent. `fields` keeps every field as sent (numbers as
/// JSON numbers in JSON pushes, text in XML ones).
#[derive(Debug, Clone)]
pub struct PushMessage {
    /// The mini-program's original id (`gh_…`).
    pub to_user_name: String,
    /// The user's openid.
    pub from_user_name: String,
    pub create_time: i64,
    /// `text`, `image`, `miniprogrampage`, `event`, …
    pub msg_type: String,
    /// Absent on events.
    pub msg_id: Option<String>,
    pub event: Option<String>,
    pub fields: Map<String, Value>,
}

impl PushMessage {
    /// The key WeChat's retries share: MsgId for messages, FromUserName + CreateTime for
    /// events (WeChat's own advice for deduplication).
    pub fn dedupe_key(&self) -> String {
        match &self.msg_id {
            Some(id) => format!("msg:{id}"),
            None => format!("event:{}:{}", self.from_user_name, self.create_time),
        }
    }

    fn from_map(fields: Map<String, Value>) -> Result<PushMessage, PushError> {
        let text = |k: &str| match fields.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let need = |k: &str| text(k).filter(|s| !s.is_empty()).ok_or_else(|| PushError::Body(format!("no {k}")));
        let create_time =
            need("CreateTime")?.parse::<i64>().map_err(|_| PushError::Body("CreateTime is not a number".into()))?;
        Ok(PushMessage {
            to_user_name: need("ToUserName")?,
            from_user_name: need("FromUserName")?,
            create_time,
            msg_type: need("MsgType")?,
            msg_id: text("MsgId").filter(|s| !s.is_empty()),
            event: text("Event").filter(|s| !s.is_empty()),
            fields,
        })
    }
}

/// Reads a flat body (XML `<xml>` or a JSON object) into field → value.
pub fn decode_fields(body: &[u8], format: Format) -> Result<Map<String, Value>, PushError> {
    match format {
        Format::Xml => {
            let p = xml::decode(body).map_err(|e| PushError::Body(e.to_string()))?;
            Ok(p.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
        }
        Format::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(PushError::Body("not a JSON object".into())),
            Err(e) => Err(PushError::Body(e.to_string())),
        },
    }
}

/// Writes fields back in a format (XML values as CDATA / bare numbers).
pub fn encode_fields(fields: &Map<String, Value>, format: Format) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(fields).unwrap_or_default(),
        Format::Xml => {
            let p: Params = fields
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
                .collect();
            xml::encode(&p).into_bytes()
        }
    }
}

/// The query string WeChat adds to every push.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct PushQuery {
    pub signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub openid: Option<String>,
    pub encrypt_type: Option<String>,
    pub msg_signature: Option<String>,
    pub echostr: Option<String>,
}

/// How one app's pushes are read.
#[derive(Clone)]
pub struct PushReader {
    pub token: SecretString,
    /// `None`: plaintext only (safe-mode pushes are refused).
    pub cipher: Option<PushCipher>,
}

impl fmt::Debug for PushReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushReader").field("token", &"***").field("cipher", &self.cipher).finish()
    }
}

impl PushReader {
    /// The URL check of a GET: `Some(echostr)` when the signature matches.
    pub fn verify_url<'a>(&self, q: &'a PushQuery) -> Option<&'a str> {
        let (ts, nonce, sig, echo) =
            (q.timestamp.as_deref()?, q.nonce.as_deref()?, q.signature.as_deref()?, q.echostr.as_deref()?);
        signature_matches(&url_signature(&self.token, ts, nonce), sig).then_some(echo)
    }

    /// Checks and reads a POST body in whatever mode and format it came.
    pub fn read(&self, q: &PushQuery, body: &[u8]) -> Result<(PushMessage, Format, bool), PushError> {
        let format = Format::sniff(body);
        let ts = q.timestamp.as_deref().ok_or(PushError::Signature)?;
        let nonce = q.nonce.as_deref().ok_or(PushError::Signature)?;
        let outer = decode_fields(body, format)?;
        let encrypt = outer.get("Encrypt").and_then(Value::as_str);
        let safe = q.encrypt_type.as_deref() == Some("aes") || encrypt.is_some();
        if !safe {
            let sig = q.signature.as_deref().ok_or(PushError::Signature)?;
            if !signature_matches(&url_signature(&self.token, ts, nonce), sig) {
                return Err(PushError::Signature);
            }
            return Ok((PushMessage::from_map(outer)?, format, false));
        }
        let encrypt = encrypt.ok_or_else(|| PushError::Body("no Encrypt field".into()))?;
        let msig = q.msg_signature.as_deref().ok_or(PushError::Signature)?;
        if !signature_matches(&msg_signature(&self.token, ts, nonce, encrypt), msig) {
            return Err(PushError::Signature);
        }
        let cipher = self.cipher.as_ref().ok_or(PushError::Key)?;
        let inner = cipher.decrypt(encrypt)?;
        // The inner document is in the same format as the envelope.
        let fields = decode_fields(&inner, format)?;
        Ok((PushMessage::from_map(fields)?, format, true))
    }

    /// The passive reply that hands the conversation to the web customer-service tool
    /// (`transfer_customer_service`), encrypted in safe mode.
    pub fn transfer_reply(
        &self,
        msg: &PushMessage,
        format: Format,
        safe: bool,
        timestamp: &str,
        nonce: &str,
    ) -> Result<Vec<u8>, PushError> {
        let mut m = Map::new();
        m.insert("ToUserName".into(), Value::String(msg.from_user_name.clone()));
        m.insert("FromUserName".into(), Value::String(msg.to_user_name.clone()));
        m.insert("CreateTime".into(), Value::from(msg.create_time));
        m.insert("MsgType".into(), Value::String("transfer_customer_service".into()));
        let plain = encode_fields(&m, format);
        if !safe {
            return Ok(plain);
        }
        let cipher = self.cipher.as_ref().ok_or(PushError::Key)?;
        let enc = cipher.encrypt(&plain)?;
        let mut env = Map::new();
        env.insert("MsgSignature".into(), Value::String(msg_signature(&self.token, timestamp, nonce, &enc)));
        env.insert("Encrypt".into(), Value::String(enc));
        env.insert("TimeStamp".into(), Value::String(timestamp.to_owned()));
        env.insert("Nonce".into(), Value::String(nonce.to_owned()));
        Ok(encode_fields(&env, format))
    }
}

/// SHA-1 through OpenSSL (already a dependency); WeChat's push signatures need nothing else.
fn sha1_hex(data: &[u8]) -> String {
    hex::encode(openssl::sha::sha1(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    #[test]
    fn url_signature_is_sorted_sha1() {
        let token = SecretString::from("QDG6eK".to_owned());
        // sorted: "1409659589", "263014780", "QDG6eK"
        let expect = hex::encode(openssl::sha::sha1(b"1409659589263014780QDG6eK"));
        assert_eq!(url_signature(&token, "1409659589", "263014780"), expect);
        assert!(signature_matches(&expect, &expect.to_uppercase()));
        assert!(!signature_matches(&expect, "00"));
    }

    #[test]
    fn encrypt_decrypt_round_trip_and_appid_check() {
        let c = PushCipher::new(&SecretString::from(KEY.to_owned()), "wx1111111111111111").unwrap();
        for len in [0usize, 1, 11, 12, 13, 31, 32, 33, 500] {
            let msg = vec![b'x'; len];
            let enc = c.encrypt(&msg).unwrap();
            assert_eq!(STANDARD.decode(&enc).unwrap().len() % 32, 0, "32-byte blocks");
            assert_eq!(c.decrypt(&enc).unwrap(), msg);
        }
        let other = PushCipher::new(&SecretString::from(KEY.to_owned()), "wx2222222222222222").unwrap();
        assert_eq!(other.decrypt(&c.encrypt(b"hi").unwrap()), Err(PushError::AppId));
        assert!(c.decrypt("not base64!").is_err());
        assert!(PushCipher::new(&SecretString::from("short".to_owned()), "wx").is_err());
    }

    #[test]
    fn dedupe_keys() {
        let xml = b"<xml><ToUserName>gh_1</ToUserName><FromUserName>oU</FromUserName><CreateTime>1700000000</CreateTime><MsgType>text</MsgType><Content>hi</Content><MsgId>123</MsgId></xml>";
        let m = PushMessage::from_map(decode_fields(xml, Format::Xml).unwrap()).unwrap();
        assert_eq!(m.dedupe_key(), "msg:123");
        let json = br#"{"ToUserName":"gh_1","FromUserName":"oU","CreateTime":1700000000,"MsgType":"event","Event":"user_enter_tempsession"}"#;
        let e = PushMessage::from_map(decode_fields(json, Format::Json).unwrap()).unwrap();
        assert_eq!(e.dedupe_key(), "event:oU:1700000000");
        assert_eq!(Format::sniff(b"  {"), Format::Json);
    }
}
