//! `check-domains`: a mini-program's server-domain lists against WeChat's rules (小程序后台
//! → 开发设置 → 服务器域名).
//!
//! Input: a JSON object with up to four lists. Both WeChat's field names (those of the
//! `modify_domain` API) and the console's names are accepted:
//!
//! ```json
//! {"request": ["https://api.example.com"], "socket": ["wss://ws.example.com"],
//!  "uploadFile": ["https://up.example.com"], "downloadFile": ["https://cdn.example.com"]}
//! ```
//! (`requestdomain`, `wsrequestdomain`, `uploaddomain`, `downloaddomain` are the same lists.)
//!
//! Rules, one [`Violation`] each time one is broken:
//! - `scheme`: `https://` for request / uploadFile / downloadFile, `wss://` for socket;
//! - `ip-address`: no IPv4 or IPv6 address;
//! - `localhost`: no `localhost` (nor `*.localhost`);
//! - `port`: no port, not even `:443`;
//! - `forbidden-domain`: never `api.weixin.qq.com` (the app secret stays on the server);
//! - `too-many`: at most 20 domains per list;
//! - `hostname`: a syntactically valid DNS name with a dot;
//! - `path`: only the domain — WeChat's console keeps the host alone (*our reading*: a
//!   path or query in the entry is a mistake the console refuses);
//! - `duplicate`: the same domain twice in one list (*guess*: the console refuses it).
//!
//! ICP filing (备案), also required, cannot be checked from here.

use std::net::IpAddr;

use serde::Serialize;

/// WeChat's limit per list.
pub const MAX_PER_LIST: usize = 20;

/// The host WeChat refuses as a server domain.
pub const FORBIDDEN_HOST: &str = "api.weixin.qq.com";

/// The four lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ListKind {
    #[serde(rename = "request")]
    Request,
    #[serde(rename = "socket")]
    Socket,
    #[serde(rename = "uploadFile")]
    UploadFile,
    #[serde(rename = "downloadFile")]
    DownloadFile,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Request => "request",
            ListKind::Socket => "socket",
            ListKind::UploadFile => "uploadFile",
            ListKind::DownloadFile => "downloadFile",
        }
    }

    fn parse(key: &str) -> Option<ListKind> {
        match key {
            "request" | "requestdomain" | "request_domain" => Some(ListKind::Request),
            "socket" | "connectSocket" | "wsrequestdomain" | "ws_request_domain" => Some(ListKind::Socket),
            "uploadFile" | "upload" | "uploaddomain" | "upload_domain" => Some(ListKind::UploadFile),
            "downloadFile" | "download" | "downloaddomain" | "download_domain" => Some(ListKind::DownloadFile),
            _ => None,
        }
    }

    /// The scheme WeChat allows for this list.
    pub fn scheme(self) -> &'static str {
        match self {
            ListKind::Socket => "wss",
            ListKind::Request | ListKind::UploadFile | ListKind::DownloadFile => "https",
        }
    }
}

/// The lists as read.
#[derive(Debug, Clone, Default)]
pub struct DomainLists {
    pub lists: Vec<(ListKind, Vec<String>)>,
}

/// One broken rule.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub list: ListKind,
    /// Position in the list (`None` for list-wide rules such as `too-many`).
    pub index: Option<usize>,
    pub entry: String,
    pub rule: &'static str,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}[{i}] {}: {}: {}", self.list.as_str(), self.entry, self.rule, self.message),
            None => write!(f, "{}: {}: {}", self.list.as_str(), self.rule, self.message),
        }
    }
}

/// Why the input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DomainsError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("expected a JSON object of lists")]
    NotObject,
    #[error("unknown list {0:?} (use request, socket, uploadFile, downloadFile)")]
    UnknownList(String),
    #[error("list {0:?} must be an array of strings")]
    NotStrings(String),
}

/// Reads the JSON described in the module docs.
pub fn parse_lists(text: &str) -> Result<DomainLists, DomainsError> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    let obj = v.as_object().ok_or(DomainsError::NotObject)?;
    let mut lists: Vec<(ListKind, Vec<String>)> = Vec::new();
    for (k, v) in obj {
        let kind = ListKind::parse(k).ok_or_else(|| DomainsError::UnknownList(k.clone()))?;
        let arr = v.as_array().ok_or_else(|| DomainsError::NotStrings(k.clone()))?;
        let mut entries = Vec::with_capacity(arr.len());
        for e in arr {
            entries.push(e.as_str().ok_or_else(|| DomainsError::NotStrings(k.clone()))?.to_owned());
        }
        match lists.iter_mut().find(|(l, _)| *l == kind) {
            Some((_, existing)) => existing.extend(entries),
            None => lists.push((kind, entries)),
        }
    }
    Ok(DomainLists { lists })
}

/// The host of an entry that passed the scheme rule, for `--check-cert`.
pub fn host_of(entry: &str) -> Option<String> {
    let rest = entry.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Every violation in every list, in input order.
pub fn check_domains(lists: &DomainLists) -> Vec<Violation> {
    let mut out = Vec::new();
    for (kind, entries) in &lists.lists {
        if entries.len() > MAX_PER_LIST {
            out.push(Violation {
                list: *kind,
                index: None,
                entry: String::new(),
                rule: "too-many",
                message: format!("{} domains; WeChat allows at most {MAX_PER_LIST} per list", entries.len()),
            });
        }
        let mut seen: Vec<String> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let mut v = |rule: &'static str, message: String| {
                out.push(Violation { list: *kind, index: Some(i), entry: entry.clone(), rule, message })
            };
            check_entry(*kind, entry, &mut v);
            let key = entry.trim().trim_end_matches('/').to_ascii_lowercase();
            if seen.contains(&key) {
                v("duplicate", "already in this list".into());
            } else {
                seen.push(key);
            }
        }
    }
    out
}

fn check_entry(kind: ListKind, entry: &str, v: &mut impl FnMut(&'static str, String)) {
    let e = entry.trim();
    let Some((scheme, rest)) = e.split_once("://") else {
        v("scheme", format!("no scheme; write {}://{e}", kind.scheme()));
        return;
    };
    if !scheme.eq_ignore_ascii_case(kind.scheme()) {
        v("scheme", format!("{scheme}:// is not allowed in {}; only {}://", kind.as_str(), kind.scheme()));
    }
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, ""),
    };
    if !tail.is_empty() && tail != "/" {
        v("path", format!("{tail:?}: give the domain only"));
    }
    // IPv6 literals keep their colons inside brackets.
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        match r.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (r, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if let Some(p) = port {
        v("port", format!(":{p}: WeChat does not allow a port (the default port of the scheme is used)"));
    }
    let host = host.to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    if host.parse::<IpAddr>().is_ok() {
        v("ip-address", format!("{host} is an IP address; a domain name is required"));
        return;
    }
    if host == "localhost" || host.ends_with(".localhost") {
        v("localhost", format!("{host} cannot be a server domain"));
        return;
    }
    if host == FORBIDDEN_HOST {
        v(
            "forbidden-domain",
            format!("{FORBIDDEN_HOST} may not be configured: call it from your server, where the app secret lives"),
        );
        return;
    }
    if !valid_hostname(host) {
        v("hostname", format!("{host:?} is not a valid domain name"));
    }
}

/// Letters, digits, hyphens; labels of 1–63 not starting or ending with a hyphen; at
/// least two labels; at most 253 characters. (Punycode `xn--` labels pass.)
fn valid_hostname(h: &str) -> bool {
    let labels: Vec<&str> = h.split('.').collect();
    h.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}
