//! Puts the commit the binaries are built from into `--version` (`0.1.0 (1479a05)`), or
//! "unknown commit" outside a git checkout.

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown commit".into());
    println!(
        "cargo:rustc-env=CHAT_ROUTER_VERSION={} ({commit})",
        env!("CARGO_PKG_VERSION")
    );
    // A new commit or checkout changes HEAD or the ref it points to. Outside a checkout (a
    // copy of the files, a source archive) there is nothing to watch: a path that does not
    // exist would make cargo run this again, and rebuild the crate, on every command.
    let watched: Vec<&str> = [".git/HEAD", ".git/refs/heads"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    if watched.is_empty() {
        println!("cargo:rerun-if-changed=build.rs");
    }
    for path in watched {
        println!("cargo:rerun-if-changed={path}");
    }
}
