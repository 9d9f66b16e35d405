//! Mutual TLS end to end with OpenSSL on both sides: a blocking TLS server on 127.0.0.1
//! that *requires* a client certificate, trusted by the client through
//! `extra_root_ca_pem`. Proves the PEM → PKCS#12 identity is really presented, and that a
//! certificate endpoint works over TLS the way the sandbox and WeChat will run it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509, X509NameBuilder};
use wxpay::api::{GetTransferInfoRequest, TransferStatus};
use wxpay::xml::{self, Params};
use wxpay::{ApiKey, Client, ClientConfig, ClientIdentity, Fen, Outcome};

fn cert(cn: &str) -> (X509, PKey<Private>) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
    let san =
        SubjectAlternativeName::new().ip("127.0.0.1").dns("localhost").build(&b.x509v3_context(None, None)).unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (b.build(), key)
}

#[tokio::test]
async fn certificate_endpoint_over_mutual_tls() {
    let (server_cert, server_key) = cert("127.0.0.1");
    let (client_cert, client_key) = cert("1900000109");

    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor.set_private_key(&server_key).unwrap();
    acceptor.set_certificate(&server_cert).unwrap();
    acceptor.cert_store_mut().add_cert(client_cert.clone()).unwrap();
    acceptor.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    let acceptor = acceptor.build();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer: Params = [
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("partner_trade_no", "PO1"),
        ("status", "SUCCESS"),
        ("payment_amount", "100"),
        ("payment_time", "2026-11-25 10:00:00"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let body = xml::encode(&answer);
    let server = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = acceptor.accept(sock).expect("handshake with a client certificate");
        let peer = tls.ssl().peer_certificate().expect("client presented a certificate");
        let cn = peer.subject_name().entries().next().unwrap().data().to_string().unwrap();
        let mut buf = [0u8; 8192];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tls.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).unwrap();
        tls.write_all(body.as_bytes()).unwrap();
        let _ = tls.shutdown();
        (cn, String::from_utf8_lossy(&got).to_string())
    });

    let mut cfg = ClientConfig::new("1900000109", "wxd930ea5d5a258f4f", ApiKey::new("k"));
    cfg.base_url = format!("https://127.0.0.1:{port}");
    cfg.extra_root_ca_pem = Some(server_cert.to_pem().unwrap());
    cfg.identity = Some(ClientIdentity::Pem {
        cert_pem: client_cert.to_pem().unwrap(),
        key_pem: String::from_utf8(client_key.private_key_to_pem_pkcs8().unwrap()).unwrap().into(),
    });
    let client = Client::new(cfg).unwrap();
    let out = client.get_transfer_info(&GetTransferInfoRequest { partner_trade_no: "PO1".into() }).await.unwrap();
    match out {
        Outcome::Success(r) => {
            assert_eq!(r.status, TransferStatus::Success);
            assert_eq!(r.payment_amount, Fen::new(100));
        }
        other => panic!("{other:?}"),
    }
    let (cn, head) = server.join().unwrap();
    assert_eq!(cn, "1900000109");
    assert!(head.starts_with("POST /mmpaymkttransfers/gettransferinfo HTTP/1.1"), "{head}");
}
