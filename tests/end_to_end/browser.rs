//! The chat page in a real headless Chromium (Debian's `chromium`, driven by `playwright-core`
//! from npm; `.ci/install-test-tools` installs both, as `.ci/run` does): two pages on two
//! federated routers chat, one router is killed, the page on it reconnects to the other and
//! the conversation goes on with nothing shown twice, and a direct message typed as `/msg` on
//! one page shows on the other; and two pages sign up, sign in and talk over https and wss with a
//! self-signed certificate. Screenshots go to `target/browser-artifacts/`.

use crate::support;

use std::path::Path;
use std::process::Command;
use support::{free_port, free_tcp_port, Router, WAIT};

/// The directory of the browser scripts, with what they need installed.
fn scripts() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists()
            && dir.join("node_modules/playwright-core").exists(),
        "this test needs Debian's chromium and playwright-core: run .ci/install-test-tools"
    );
    dir
}

fn artifacts() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"))
        .join("browser-artifacts")
}

#[test]
fn two_pages_sign_up_and_sign_in_over_wss() {
    let dir = scripts();
    let data = std::env::temp_dir().join(format!("chat-router-browser-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (data.join("cert.pem"), data.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let ws = format!("127.0.0.1:{}", free_tcp_port());
    let mailbox = format!("127.0.0.1:{}", free_tcp_port());
    let args = [
        "--ws",
        &ws,
        "--mailbox",
        &mailbox,
        "--data-dir",
        data.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let mut router = Router::start(free_port(), &[], &args);
    router.wait_for_line("mailbox on", WAIT);
    let out = Command::new("node")
        .current_dir(&dir)
        .arg("accounts.mjs")
        .arg(&ws)
        .arg(artifacts())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK: accounts"),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    drop(router);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_page_fails_over_to_the_next_server() {
    let dir = scripts();
    let (a_udp, b_udp) = (free_port(), free_port());
    let (a_ws, b_ws) = (free_tcp_port(), free_tcp_port());
    let ws = |port: u16| format!("127.0.0.1:{port}");
    let mut a = Router::start(a_udp, &[b_udp], &["--ws", &ws(a_ws)]);
    a.wait_for_line("WebSocket on", WAIT);
    let data = std::env::temp_dir().join(format!("chat-router-browser-{}", std::process::id()));
    let mailbox = ws(free_tcp_port());
    let b_args = [
        "--ws",
        &ws(b_ws),
        "--mailbox",
        &mailbox,
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut b = Router::start(b_udp, &[a_udp], &b_args);
    b.wait_for_line("mailbox on", WAIT);
    let artifacts = artifacts();
    let out = Command::new("node")
        .current_dir(&dir)
        .arg("failover.mjs")
        .arg(ws(a_ws))
        .arg(ws(b_ws))
        .arg(a.child.id().to_string())
        .arg(&artifacts)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK: failover"),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(artifacts.join("3-direct-ann.png").exists());
    let _ = std::fs::remove_dir_all(&data);
    // Router a was killed by the script (its PID, which this test started); reap it.
    a.kill();
}
