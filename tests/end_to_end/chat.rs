//! The `chat` client against a real router: two people talk in DuckChat and in a text room.

use crate::support;

use crate::mailbox::{data_dir, start};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use support::{free_port, Router, WAIT};

/// A `chat` process, typed into and read line by line.
struct Person {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Person {
    fn start(args: &[&str]) -> Person {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chat");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Person {
            child,
            stdin,
            lines,
        }
    }

    fn types(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("chat reads its input");
    }

    /// Lines up to and including the first equal to `want` (panics after `WAIT`).
    fn sees(&self, want: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line == want;
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("never saw {want:?}; saw {seen:?}");
    }

    /// Types `/exit` and waits for a clean exit.
    fn leaves(mut self) {
        self.types("/exit");
        let status = self.child.wait().expect("chat exits");
        assert!(status.success(), "{status}");
    }
}

#[test]
fn two_people_talk_over_duckchat_with_the_course_clients_commands() {
    let port = free_port();
    let router = Router::start(port, &[], &["--cores", "2"]);
    let server = ["127.0.0.1", &port.to_string()];
    let mut amy = Person::start(&[server[0], server[1], "amy"]);
    let mut bob = Person::start(&[server[0], server[1], "bob"]);
    // Both join Common at start-up: once WHO shows both, each hears the other (and itself).
    bob.types("/who Common");
    let who = bob.sees(" bob");
    if !who.contains(&" amy".to_string()) {
        amy.types("/who Common");
        amy.sees(" bob");
    }
    amy.types("hello from amy");
    bob.sees("[Common][amy]: hello from amy");
    amy.sees("[Common][amy]: hello from amy");
    bob.types("/join dev");
    bob.types("/who dev");
    bob.sees(" bob");
    amy.types("/join dev");
    amy.types("/who dev");
    let who = amy.sees(" bob");
    assert!(
        who.contains(&"Users on channel dev:".to_string()),
        "{who:?}"
    );
    amy.types("in dev now");
    bob.sees("[dev][amy]: in dev now");
    // /switch back to Common: lines go there again.
    bob.types("/switch Common");
    bob.types("back in Common");
    amy.sees("[Common][bob]: back in Common");
    amy.types("/list");
    let list = amy.sees(" dev");
    assert!(list.contains(&"Existing channels:".to_string()), "{list:?}");
    amy.types("/leave nowhere");
    amy.sees("Error: No channel by the name nowhere");
    // /exit logs out: amy leaves dev (the router hears of it a moment later).
    amy.leaves();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        bob.types("/who dev");
        let who = bob.sees(" bob");
        if !who.contains(&" amy".to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "amy never left: {who:?}"
        );
    }
    bob.types("/switch dev");
    bob.types("anyone?");
    bob.sees("[dev][bob]: anyone?");
    bob.leaves();
    drop(router);
}

#[test]
fn text_mode_talks_in_rooms() {
    let port = free_port();
    let _router = Router::start(port, &[], &[]);
    let p = port.to_string();
    let mut ann = Person::start(&["--text", "127.0.0.1", &p, "ann"]);
    let mut ben = Person::start(&["--text", "127.0.0.1", &p]);
    ann.sees("+OK Nickname set to 'ann'");
    ann.types("/join 3");
    ann.sees("+OK You are now in chat room #3");
    ben.types("/join 3");
    ben.sees("+OK You are now in chat room #3");
    ann.types("hi ben");
    ben.sees("<ann> hi ben");
    ann.sees("<ann> hi ben");
    ann.leaves();
    ben.leaves();
}

/// Registering from `chat --text`: the client confirms its address by itself when asked, and
/// the account's name is then refused to a second client.
#[test]
fn text_mode_registers_and_confirms_its_address_by_itself() {
    let dir = data_dir("chat-register");
    let m = start(&dir, support::free_tcp_port());
    let port = m.router.addr().port();
    let p = port.to_string();
    let mut ann = Person::start(&["--text", "127.0.0.1", &p]);
    ann.types("/register ann a long password");
    ann.sees("+OK Address confirmed");
    ann.sees("+OK Registered 'ann', signed in");
    let mut ben = Person::start(&["--text", "127.0.0.1", &p]);
    ben.types("/nick ann");
    ben.sees("-ERR 'ann' is registered");
    ann.leaves();
    ben.leaves();
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's mailbox example: a message stored for bob reaches `chat --text` when it takes
/// the name, because the client showed first that its address receives.
#[test]
fn text_mode_receives_stored_mail_for_its_nick() {
    let dir = data_dir("chat-mail");
    let m = start(&dir, support::free_tcp_port());
    assert_eq!(m.ask(&["REGISTER", "amy"]), [0]);
    assert_eq!(m.ask(&["REGISTER", "bob"]), [0]);
    assert_eq!(m.ask(&["SEND", "amy", "bob", "hello bob"])[0], 0);
    let port = m.router.addr().port();
    let mut bob = Person::start(&["--text", "127.0.0.1", &port.to_string()]);
    bob.types("/nick bob");
    bob.sees("+MSG <amy> hello bob");
    bob.leaves();
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_server_yet_is_said_once_and_the_client_carries_on() {
    // As when a person starts the client before the server: UDP sends go on.
    let port = free_port().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["127.0.0.1", &port, "early"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat");
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in ["hello?", "anyone?", "/list"] {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let out = child
        .wait_with_output()
        .expect("chat exits at the end of its input");
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.matches("no server answering").count() <= 1, "{err}");
    assert!(!err.contains("cannot send"), "{err}");
}
