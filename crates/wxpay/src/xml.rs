//! WeChat's XML: a root element (`<xml>`, or `<root>` inside a decrypted refund
//! notification) with flat children whose values are text or CDATA. One nested shape
//! exists (`<hblist><hbinfo>…</hbinfo></hblist>` in red-packet queries), kept as a list.
//!
//! Decoding is strict where an attacker could gain something: size limit first, UTF-8 next,
//! then no DOCTYPE (so no entity declarations, no XXE, no billion laughs), no unknown
//! entities, no duplicate field names (a duplicate could make us sign one value and act on
//! another). Encoding writes every value in CDATA, numbers bare, as WeChat's SDKs do.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::Event;

/// A flat WeChat document: field name → value, sorted by byte order (the signing order).
pub type Params = BTreeMap<String, String>;

/// The default body limit: 64 KiB is far above any genuine WeChat document.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// A decoded document: the root's flat fields plus any nested lists (`hblist` → `hbinfo`*).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub root: String,
    pub fields: Params,
    pub lists: BTreeMap<String, Vec<Params>>,
}

/// Why a body was refused. Every variant is safe to log (no body content beyond names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("body of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("DOCTYPE and entity declarations are not accepted")]
    Doctype,
    #[error("unknown entity reference &{0};")]
    UnknownEntity(String),
    #[error("field {0:?} appears twice")]
    DuplicateField(String),
    #[error("nesting deeper than WeChat uses")]
    TooDeep,
    #[error("empty document")]
    Empty,
    #[error("malformed XML: {0}")]
    Malformed(String),
}

/// Decodes a flat document with the default limit (nested lists are refused).
pub fn decode(body: &[u8]) -> Result<Params, XmlError> {
    decode_with_limit(body, DEFAULT_LIMIT)
}

/// Decodes a flat document with an explicit size limit.
pub fn decode_with_limit(body: &[u8], limit: usize) -> Result<Params, XmlError> {
    let doc = decode_document_with_limit(body, limit)?;
    if let Some(name) = doc.lists.keys().next() {
        return Err(XmlError::Malformed(format!("unexpected nested element <{name}>")));
    }
    Ok(doc.fields)
}

/// Decodes a document that may contain WeChat's nested lists, with the default limit.
pub fn decode_document(body: &[u8]) -> Result<Document, XmlError> {
    decode_document_with_limit(body, DEFAULT_LIMIT)
}

/// Where the parser is: at depth 1 we are inside the root, at 2 inside a field or a list,
/// at 3 inside a list item, at 4 inside an item's field.
struct Builder {
    doc: Document,
    depth: usize,
    /// name of the element open at depth 2, and whether it turned out to be a list
    field: Option<String>,
    text: String,
    is_list: bool,
    item: Option<Params>,
    item_field: Option<String>,
    /// Flat fields in arrival order; sorted and checked for duplicates once at the end,
    /// which is cheaper than a map insertion per field (WeChat sends them nearly sorted).
    fields: Vec<(String, String)>,
    done: bool,
}

pub fn decode_document_with_limit(body: &[u8], limit: usize) -> Result<Document, XmlError> {
    if body.len() > limit {
        return Err(XmlError::TooLarge { size: body.len(), limit });
    }
    let s = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    let mut reader = Reader::from_str(s);
    let mut b = Builder {
        doc: Document::default(),
        depth: 0,
        field: None,
        text: String::new(),
        is_list: false,
        item: None,
        item_field: None,
        fields: Vec::with_capacity(24),
        done: false,
    };
    loop {
        let ev = reader.read_event().map_err(|e| XmlError::Malformed(e.to_string()))?;
        match ev {
            Event::Eof => break,
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Start(e) => {
                let name = e.name().into_inner().to_owned();
                b.open(name)?;
            }
            Event::Empty(e) => {
                let name = e.name().into_inner().to_owned();
                b.open(name)?;
                b.close()?;
            }
            Event::End(_) => b.close()?,
            Event::Text(t) => {
                let raw = t.into_inner();
                b.text(&raw, false)?;
            }
            Event::CData(t) => {
                let raw = t.into_inner();
                b.text(&raw, true)?;
            }
            Event::GeneralRef(r) => {
                let name = r.into_inner();
                let c = resolve_entity(&name)?;
                let mut buf = [0u8; 4];
                b.text(c.encode_utf8(&mut buf), true)?;
            }
        }
    }
    if !b.done {
        return Err(if b.depth == 0 { XmlError::Empty } else { XmlError::Malformed("unexpected end".into()) });
    }
    b.finish()
}

fn resolve_entity(name: &str) -> Result<char, XmlError> {
    let unknown = || XmlError::UnknownEntity(name.chars().take(32).collect());
    match name {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        _ => {
            let code = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).map_err(|_| unknown())?
            } else if let Some(dec) = name.strip_prefix('#') {
                dec.parse::<u32>().map_err(|_| unknown())?
            } else {
                return Err(unknown());
            };
            char::from_u32(code).ok_or_else(unknown)
        }
    }
}

impl Builder {
    /// Sorts the fields (stable, near-linear on WeChat's already sorted documents), refuses
    /// duplicates, then builds the map in bulk.
    fn finish(mut self) -> Result<Document, XmlError> {
        self.fields.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = self.fields.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(XmlError::DuplicateField(w[0].0.clone()));
        }
        if let Some((name, _)) = self.fields.iter().find(|(k, _)| self.doc.lists.contains_key(k)) {
            return Err(XmlError::DuplicateField(name.clone()));
        }
        self.doc.fields = self.fields.into_iter().collect();
        Ok(self.doc)
    }

    fn open(&mut self, name: String) -> Result<(), XmlError> {
        if self.done {
            return Err(XmlError::Malformed("content after the root element".into()));
        }
        match self.depth {
            0 => self.doc.root = name,
            1 => {
                if self.doc.lists.contains_key(&name) {
                    return Err(XmlError::DuplicateField(name));
                }
                self.field = Some(name);
                self.text.clear();
                self.is_list = false;
            }
            2 => {
                // The field at depth 2 holds elements: it is a list (hblist), this is an item.
                if !self.text.trim().is_empty() {
                    return Err(XmlError::Malformed("mixed content".into()));
                }
                self.is_list = true;
                self.item = Some(Params::new());
            }
            3 => {
                self.item_field = Some(name);
                self.text.clear();
            }
            _ => return Err(XmlError::TooDeep),
        }
        self.depth += 1;
        Ok(())
    }

    fn close(&mut self) -> Result<(), XmlError> {
        match self.depth {
            1 => self.done = true,
            2 => {
                let name = self.field.take().unwrap_or_default();
                if self.is_list {
                    self.doc.lists.entry(name).or_default();
                } else {
                    self.fields.push((name, std::mem::take(&mut self.text)));
                }
            }
            3 => {
                let item = self.item.take().unwrap_or_default();
                let name = self.field.clone().unwrap_or_default();
                self.doc.lists.entry(name).or_default().push(item);
                self.text.clear();
            }
            4 => {
                let name = self.item_field.take().unwrap_or_default();
                let item = self.item.get_or_insert_with(Params::new);
                if item.contains_key(&name) {
                    return Err(XmlError::DuplicateField(name));
                }
                item.insert(name, std::mem::take(&mut self.text));
            }
            _ => return Err(XmlError::Malformed("unbalanced end tag".into())),
        }
        self.depth -= 1;
        Ok(())
    }

    fn text(&mut self, raw: &str, literal: bool) -> Result<(), XmlError> {
        match self.depth {
            2 | 4 => {
                if literal {
                    self.text.push_str(raw);
                } else {
                    // quick-xml reports entity references as separate events, so plain text
                    // here contains no '&'; it is taken as written.
                    self.text.push_str(raw);
                }
                Ok(())
            }
            _ if raw.trim().is_empty() && !literal => Ok(()),
            _ => Err(XmlError::Malformed("text outside a field".into())),
        }
    }
}

/// Encodes flat params under `<xml>`.
pub fn encode(params: &Params) -> String {
    encode_named("xml", params, &BTreeMap::new())
}

/// Encodes a document with nested lists (`hblist` → `hbinfo` items), as the sandbox answers
/// red-packet queries.
pub fn encode_document(doc: &Document, item_name: &str) -> String {
    let mut out = String::with_capacity(512);
    let root = if doc.root.is_empty() { "xml" } else { doc.root.as_str() };
    out.push('<');
    out.push_str(root);
    out.push('>');
    write_fields(&mut out, &doc.fields);
    for (name, items) in &doc.lists {
        out.push_str(&format!("<{name}>"));
        for item in items {
            out.push_str(&format!("<{item_name}>"));
            write_fields(&mut out, item);
            out.push_str(&format!("</{item_name}>"));
        }
        out.push_str(&format!("</{name}>"));
    }
    out.push_str(&format!("</{root}>"));
    out
}

fn encode_named(root: &str, params: &Params, lists: &BTreeMap<String, Vec<Params>>) -> String {
    let doc = Document { root: root.to_owned(), fields: params.clone(), lists: lists.clone() };
    encode_document(&doc, "hbinfo")
}

fn write_fields(out: &mut String, params: &Params) {
    for (k, v) in params {
        debug_assert!(is_name(k), "field names are ours, never user input: {k:?}");
        out.push('<');
        out.push_str(k);
        out.push('>');
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(v);
        } else {
            write_cdata(out, v);
        }
        out.push_str("</");
        out.push_str(k);
        out.push('>');
    }
}

/// CDATA cannot contain `]]>`: split it so the reader concatenates the pieces back.
fn write_cdata(out: &mut String, v: &str) {
    out.push_str("<![CDATA[");
    out.push_str(&v.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]>");
}

fn is_name(k: &str) -> bool {
    let mut bytes = k.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_cdata_and_bare() {
        let body = b"<xml>\n<return_code><![CDATA[SUCCESS]]></return_code>\n<total_fee>100</total_fee><attach/><body>a &amp; b &#x4e2d;</body></xml>";
        let p = decode(body).unwrap();
        assert_eq!(p["return_code"], "SUCCESS");
        assert_eq!(p["total_fee"], "100");
        assert_eq!(p["attach"], "");
        assert_eq!(p["body"], "a & b 中");
    }

    #[test]
    fn cdata_terminator_roundtrips() {
        let mut p = Params::new();
        p.insert("attach".into(), "x]]>y<z>&".into());
        p.insert("total_fee".into(), "1".into());
        p.insert("body".into(), "中文 商品".into());
        assert_eq!(decode(encode(&p).as_bytes()).unwrap(), p);
    }

    #[test]
    fn refuses_doctype_and_entities() {
        let xxe =
            br#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><a>&x;</a></xml>"#;
        assert_eq!(decode(xxe), Err(XmlError::Doctype));
        assert!(matches!(decode(b"<xml><a>&x;</a></xml>"), Err(XmlError::UnknownEntity(_))));
    }

    #[test]
    fn refuses_bad_bodies() {
        assert_eq!(decode(b"<xml><a>\xff</a></xml>"), Err(XmlError::NotUtf8));
        let big = vec![b' '; DEFAULT_LIMIT + 1];
        assert!(matches!(decode(&big), Err(XmlError::TooLarge { .. })));
        assert_eq!(decode(b"<xml><a>1</a><a>2</a></xml>"), Err(XmlError::DuplicateField("a".into())));
        assert!(decode(b"<xml><a>1</a>").is_err());
        assert_eq!(decode(b""), Err(XmlError::Empty));
        assert!(decode(b"<xml><a>1</a></xml><xml></xml>").is_err());
        assert!(decode(b"<xml><a><b><c><d>1</d></c></b></a></xml>").is_err());
    }

    #[test]
    fn nested_hblist() {
        let body = "<xml><status>RECEIVED</status><hblist><hbinfo><openid>o1</openid><amount>100</amount></hbinfo><hbinfo><openid>o2</openid><amount>200</amount></hbinfo></hblist></xml>";
        let doc = decode_document(body.as_bytes()).unwrap();
        assert_eq!(doc.fields["status"], "RECEIVED");
        let list = &doc.lists["hblist"];
        assert_eq!(list.len(), 2);
        assert_eq!(list[1]["amount"], "200");
        assert_eq!(decode_document(encode_document(&doc, "hbinfo").as_bytes()).unwrap(), doc);
        assert!(decode(body.as_bytes()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn roundtrip(fields in proptest::collection::btree_map("[a-z_][a-z0-9_]{0,15}", "\\PC{0,40}", 0..16)) {
            let p: Params = fields;
            let back = decode(encode(&p).as_bytes()).unwrap();
            proptest::prop_assert_eq!(back, p);
        }
    }
}
