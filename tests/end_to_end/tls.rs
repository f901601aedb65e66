//! TLS against a real router with a certificate the test makes: the page over https, WebSocket
//! over wss (signing in, so a password crosses only encrypted), and the mailbox over TLS,
//! while plain clients (the original mailbox client) keep working on the same ports; a bad
//! certificate file is refused at start with one line.

use crate::mailbox::data_dir;
use crate::support::{free_port, free_tcp_port, Router, WAIT};

use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A self-signed certificate for localhost, written as PEM into `dir`; its DER for clients.
pub(crate) fn certificate(dir: &Path) -> rustls::pki_types::CertificateDer<'static> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
    made.cert.der().clone()
}

/// A TLS connection to `port` that trusts `cert` alone.
pub(crate) fn tls_connect(port: u16, cert: &rustls::pki_types::CertificateDer<'static>) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    #[allow(deprecated)] // the test client's crypto, as the server's (see src/tls.rs)
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn read_all(stream: &mut impl Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return bytes,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

fn next_json(ws: &mut tungstenite::WebSocket<Tls>) -> Value {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Message::Text(t) = ws.read().expect("an event") {
            return serde_json::from_str(&t).unwrap();
        }
    }
    panic!("no event");
}

#[test]
fn page_websocket_and_mailbox_over_tls_beside_plain() {
    let dir = data_dir("tls");
    let cert = certificate(&dir);
    let (ws_port, mailbox_port) = (free_tcp_port(), free_tcp_port());
    let (ws, mailbox) = (
        format!("127.0.0.1:{ws_port}"),
        format!("127.0.0.1:{mailbox_port}"),
    );
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut router = Router::start(
        free_port(),
        &[],
        &[
            "--ws",
            &ws,
            "--mailbox",
            &mailbox,
            "--data-dir",
            dir.to_str().unwrap(),
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
            "--cores",
            "1",
        ],
    );
    router.wait_for_line("mailbox on", WAIT);

    // https: the page.
    let mut https = tls_connect(ws_port, &cert);
    https
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let page = String::from_utf8_lossy(&read_all(&mut https)).into_owned();
    assert!(page.starts_with("HTTP/1.1 200"), "{page:.200}");
    assert!(page.contains("<html"), "the page");

    // wss: a browser registers an account; its password crosses encrypted.
    let mut request = format!("wss://localhost:{ws_port}/ws")
        .into_client_request()
        .unwrap();
    let protocol = "chat-router".parse().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol);
    let (mut wss, _) = tungstenite::client(request, tls_connect(ws_port, &cert)).expect("wss");
    assert_eq!(next_json(&mut wss)["type"], "welcome");
    let register = json!({"type": "register", "name": "tess", "password": "over tls only"});
    wss.send(Message::Text(register.to_string().into()))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let ok = loop {
        let event = next_json(&mut wss);
        if event["type"] == "ok" || Instant::now() > deadline {
            break event;
        }
    };
    assert_eq!(
        (&ok["request"], &ok["name"]),
        (&json!("register"), &json!("tess"))
    );

    // The mailbox over TLS, and plain beside it (the original client knows no TLS).
    let mut tls_mailbox = tls_connect(mailbox_port, &cert);
    tls_mailbox.write_all(b"REGISTER\0over-tls\0").unwrap();
    assert_eq!(read_all(&mut tls_mailbox), [0]);
    let mut plain = TcpStream::connect(("127.0.0.1", mailbox_port)).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(b"REGISTER\0plain\0").unwrap();
    assert_eq!(read_all(&mut plain), [0]);
    drop(router);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_certificate_that_cannot_be_read_is_refused_in_one_line() {
    let dir = data_dir("bad-tls");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), "not a certificate\n").unwrap();
    std::fs::write(dir.join("key.pem"), "not a key\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_router"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--tls-cert",
        ])
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("router: cannot read the certificate"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
