//! What `downloadbill` / `downloadfundflow` answered: a bill (plain or gzip), or WeChat's
//! small XML error document. `No Bill Exist` is an empty day and `Bill Creating` means
//! "come back later"; reconciliation must not treat either as a failure, so they get their
//! own variants instead of hiding in a generic error.
//!
//! The XML is scanned here with a few string searches rather than the crate's XML codec: the
//! document is tiny and flat, and the bill module should not depend on anything but text.

use std::io::{self, BufRead, BufReader, Chain, Cursor, Read};

use flate2::read::MultiGzDecoder;

use super::BillError;

/// The largest XML error document we read; WeChat's are a few hundred bytes.
const MAX_XML: u64 = 64 * 1024;

const BUF: usize = 64 * 1024;

/// How much of the body is read up front to classify it.
const HEAD: usize = 64;

/// WeChat's answer to a bill download.
#[derive(Debug)]
pub enum BillBody<R> {
    /// A bill: feed the text to [`super::BillReader::new`] or [`super::FundFlowReader::new`].
    Bill(BillText<R>),
    /// `No Bill Exist`: no trades that day. The day is reconciled as empty.
    NoBill,
    /// `Bill Creating`: the bill for that day is not ready yet; retry later.
    NotReady,
    /// Any other error (SYSTEMERROR, invalid bill_type, SIGN ERROR…), with WeChat's words.
    Failed(BillApiError),
}

/// An XML error answer other than the two expected ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("WeChat refused the bill download: {return_code} {return_msg} (error_code {error_code:?})")]
pub struct BillApiError {
    /// `return_code`, normally `FAIL`.
    pub return_code: String,
    /// `return_msg`, the reason in WeChat's words (e.g. `invalid bill_type`).
    pub return_msg: String,
    /// `error_code` when present (e.g. `20001`); SYSTEMERROR may come here or in `return_msg`.
    pub error_code: Option<String>,
}

type Source<R> = Chain<Cursor<Vec<u8>>, R>;

/// The bill's text, gunzipped on the fly when the body was gzip, buffered for line reading.
#[derive(Debug)]
pub struct BillText<R> {
    inner: Inner<R>,
}

#[derive(Debug)]
enum Inner<R> {
    Plain(BufReader<Source<R>>),
    Gzip(BufReader<MultiGzDecoder<Source<R>>>),
}

impl<R: Read> BillText<R> {
    /// Whether the body was gzip (`tar_type=GZIP`), e.g. for logs.
    pub fn was_gzip(&self) -> bool {
        matches!(self.inner, Inner::Gzip(_))
    }
}

impl<R: Read> Read for BillText<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(r) => r.read(buf),
            Inner::Gzip(r) => r.read(buf),
        }
    }
}

impl<R: Read> BufRead for BillText<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match &mut self.inner {
            Inner::Plain(r) => r.fill_buf(),
            Inner::Gzip(r) => r.fill_buf(),
        }
    }

    fn consume(&mut self, amt: usize) {
        match &mut self.inner {
            Inner::Plain(r) => r.consume(amt),
            Inner::Gzip(r) => r.consume(amt),
        }
    }
}

/// Classifies a response body read from `r` (e.g. the HTTP response), without reading the
/// bill itself: gzip is recognised by its magic bytes `1f 8b` and decompressed as it is read;
/// a body starting with `<` (after gunzip) is WeChat's XML error.
pub fn open_body<R: Read>(mut r: R) -> Result<BillBody<R>, BillError> {
    // Enough of the body to see the gzip magic, or a BOM and whitespace before an XML `<`.
    let mut head = vec![0u8; HEAD];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    head.truncate(n);
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let xml = !gzip && starts_with_tag(&head);
    let source = Cursor::new(head).chain(r);
    let mut text = if gzip {
        BillText { inner: Inner::Gzip(BufReader::with_capacity(BUF, MultiGzDecoder::new(source))) }
    } else {
        BillText { inner: Inner::Plain(BufReader::with_capacity(BUF, source)) }
    };
    // A gzipped XML error has not been seen in the wild; checking costs nothing.
    if !(xml || gzip && starts_with_tag(text.fill_buf()?)) {
        return Ok(BillBody::Bill(text));
    }
    let mut doc = Vec::new();
    text.take(MAX_XML).read_to_end(&mut doc)?;
    Ok(classify(&String::from_utf8_lossy(&doc)))
}

/// Whether the bytes start, after an optional BOM and whitespace, with `<`.
fn starts_with_tag(b: &[u8]) -> bool {
    let b = b.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(b);
    b.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'<')
}

/// [`open_body`] for a body already in memory.
pub fn decode_body(bytes: &[u8]) -> Result<BillBody<&[u8]>, BillError> {
    open_body(bytes)
}

fn classify<R>(doc: &str) -> BillBody<R> {
    let msg = tag(doc, "return_msg").unwrap_or_default();
    let lower = msg.to_ascii_lowercase();
    if lower.contains("no bill exist") {
        return BillBody::NoBill;
    }
    if lower.contains("bill creating") {
        return BillBody::NotReady;
    }
    BillBody::Failed(BillApiError {
        return_code: tag(doc, "return_code").unwrap_or_default().to_owned(),
        return_msg: msg.to_owned(),
        error_code: tag(doc, "error_code").or_else(|| tag(doc, "err_code")).map(str::to_owned),
    })
}

/// The text of `<name>…</name>`, CDATA unwrapped and trimmed.
fn tag<'d>(doc: &'d str, name: &str) -> Option<&'d str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = doc.find(&open)? + open.len();
    let end = start + doc[start..].find(&close)?;
    let v = doc[start..end].trim();
    let v = v.strip_prefix("<![CDATA[").and_then(|v| v.strip_suffix("]]>")).unwrap_or(v);
    Some(v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_with_and_without_cdata() {
        let doc = "<xml><return_code><![CDATA[FAIL]]></return_code>\n<return_msg>invalid bill_type</return_msg></xml>";
        assert_eq!(tag(doc, "return_code"), Some("FAIL"));
        assert_eq!(tag(doc, "return_msg"), Some("invalid bill_type"));
        assert_eq!(tag(doc, "error_code"), None);
    }

    #[test]
    fn plain_text_is_a_bill() {
        let body = decode_body("交易时间,公众账号ID\n".as_bytes()).unwrap();
        assert!(matches!(body, BillBody::Bill(ref t) if !t.was_gzip()));
        assert!(matches!(decode_body(b"").unwrap(), BillBody::Bill(_)));
    }

    #[test]
    fn xml_after_bom_and_whitespace_is_still_xml() {
        let doc = "\u{feff}  \r\n <xml><return_code>FAIL</return_code><return_msg>Bill Creating</return_msg></xml>";
        assert!(matches!(decode_body(doc.as_bytes()).unwrap(), BillBody::NotReady));
    }
}
