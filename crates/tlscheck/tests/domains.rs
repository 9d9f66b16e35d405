//! check-domains: every rule, one list entry at a time, and a clean configuration.

use minipay_tlscheck::domains::{MAX_PER_LIST, check_domains, host_of, parse_lists};

fn rules(json: &str) -> Vec<(String, Option<usize>, &'static str)> {
    let lists = parse_lists(json).expect("parse");
    check_domains(&lists).into_iter().map(|v| (v.list.as_str().to_owned(), v.index, v.rule)).collect()
}

#[test]
fn a_clean_configuration_has_no_violation() {
    let json = r#"{"request": ["https://api.example.com", "https://pay.example.com/"],
                   "socket": ["wss://ws.example.com"],
                   "uploadFile": ["https://up.example.com"],
                   "downloaddomain": ["https://cdn.example.com", "https://xn--fiqs8s.example.cn"]}"#;
    assert_eq!(rules(json), vec![]);
}

#[test]
fn scheme_is_https_or_wss_per_list() {
    assert_eq!(rules(r#"{"request": ["http://api.example.com"]}"#), vec![("request".into(), Some(0), "scheme")]);
    assert_eq!(rules(r#"{"request": ["wss://api.example.com"]}"#), vec![("request".into(), Some(0), "scheme")]);
    assert_eq!(rules(r#"{"socket": ["https://ws.example.com"]}"#), vec![("socket".into(), Some(0), "scheme")]);
    assert_eq!(rules(r#"{"uploadFile": ["up.example.com"]}"#), vec![("uploadFile".into(), Some(0), "scheme")]);
    assert_eq!(rules(r#"{"wsrequestdomain": ["wss://ws.example.com"]}"#), vec![]);
}

#[test]
fn no_ip_address_no_localhost_no_port() {
    assert_eq!(rules(r#"{"request": ["https://10.0.0.1"]}"#), vec![("request".into(), Some(0), "ip-address")]);
    assert_eq!(rules(r#"{"request": ["https://[::1]"]}"#), vec![("request".into(), Some(0), "ip-address")]);
    assert_eq!(
        rules(r#"{"downloadFile": ["https://localhost"]}"#),
        vec![("downloadFile".into(), Some(0), "localhost")]
    );
    assert_eq!(rules(r#"{"request": ["https://api.example.com:8443"]}"#), vec![("request".into(), Some(0), "port")]);
    // Even the scheme's own port is refused.
    assert_eq!(rules(r#"{"socket": ["wss://ws.example.com:443"]}"#), vec![("socket".into(), Some(0), "port")]);
    // Both an IP and a port: two lines.
    assert_eq!(
        rules(r#"{"request": ["https://127.0.0.1:8080"]}"#),
        vec![("request".into(), Some(0), "port"), ("request".into(), Some(0), "ip-address")]
    );
}

#[test]
fn api_weixin_qq_com_is_forbidden() {
    assert_eq!(
        rules(r#"{"request": ["https://api.weixin.qq.com"]}"#),
        vec![("request".into(), Some(0), "forbidden-domain")]
    );
    assert_eq!(
        rules(r#"{"request": ["https://API.Weixin.qq.com/"]}"#),
        vec![("request".into(), Some(0), "forbidden-domain")]
    );
}

#[test]
fn at_most_twenty_per_list() {
    let twenty: Vec<String> = (0..MAX_PER_LIST).map(|i| format!("\"https://h{i}.example.com\"")).collect();
    assert_eq!(rules(&format!("{{\"request\": [{}]}}", twenty.join(","))), vec![]);
    let more: Vec<String> = (0..=MAX_PER_LIST).map(|i| format!("\"https://h{i}.example.com\"")).collect();
    assert_eq!(rules(&format!("{{\"request\": [{}]}}", more.join(","))), vec![("request".into(), None, "too-many")]);
}

#[test]
fn hostname_path_and_duplicates() {
    assert_eq!(
        rules(r#"{"request": ["https://bad_name.example.com"]}"#),
        vec![("request".into(), Some(0), "hostname")]
    );
    assert_eq!(rules(r#"{"request": ["https://example"]}"#), vec![("request".into(), Some(0), "hostname")]);
    assert_eq!(rules(r#"{"request": ["https://-a.example.com"]}"#), vec![("request".into(), Some(0), "hostname")]);
    assert_eq!(rules(r#"{"request": ["https://api.example.com/v1"]}"#), vec![("request".into(), Some(0), "path")]);
    assert_eq!(
        rules(r#"{"request": ["https://api.example.com", "https://API.example.com/"]}"#),
        vec![("request".into(), Some(1), "duplicate")]
    );
}

#[test]
fn messages_name_the_list_entry_and_rule() {
    let lists = parse_lists(r#"{"request": ["http://api.example.com:80"]}"#).unwrap();
    let lines: Vec<String> = check_domains(&lists).iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("request[0] http://api.example.com:80: scheme: "), "{}", lines[0]);
    assert!(lines[1].contains(": port: "), "{}", lines[1]);
}

#[test]
fn bad_input_is_refused() {
    assert!(parse_lists("[]").is_err());
    assert!(parse_lists(r#"{"requests": []}"#).is_err());
    assert!(parse_lists(r#"{"request": [1]}"#).is_err());
    assert!(parse_lists("not json").is_err());
}

#[test]
fn hosts_for_cert_checks() {
    assert_eq!(host_of("https://API.example.com/x").as_deref(), Some("api.example.com"));
    assert_eq!(host_of("wss://ws.example.com:443").as_deref(), Some("ws.example.com"));
    assert_eq!(host_of("api.example.com"), None);
}
