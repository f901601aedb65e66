//! Accounts against real router processes: a name registered with a password is refused to
//! everyone not signed in to it, on every front-end (text, DuckChat, WebSocket, the mailbox);
//! its mail reaches only its signed-in sessions, however many; a name that is no account is
//! held by one text or web session; guessing is bounded; nothing is stored for a source that
//! never showed it receives; one network cannot spend the registrations of all.

use crate::mailbox::{data_dir, start, Listener, Mailbox, Text};
use crate::support::{self, Client, Reply, WAIT};
use crate::web::{connect, next_event, send, wait_for};

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Confirms the text client's address with the code the router sent it (`refused`: the
/// router's answer to a request that needed it).
fn confirm(client: &Text, refused: &str) {
    let code = refused
        .strip_prefix("-ERR Confirm your address first: /confirm ")
        .unwrap_or_else(|| panic!("not asked to confirm: {refused}"));
    assert_eq!(
        client.ask(&format!("/confirm {code}")),
        "+OK Address confirmed"
    );
}

/// A text client signed in to a new account `name`.
pub(crate) fn register(m: &Mailbox, name: &str, password: &str) -> Text {
    let client = Text::new(m.router.addr());
    let line = format!("/register {name} {password}");
    confirm(&client, &client.ask(&line));
    assert_eq!(
        client.ask(&line),
        format!("+OK Registered '{name}', signed in")
    );
    client
}

#[test]
fn a_registered_name_is_its_owners_alone_on_every_front_end() {
    let dir = data_dir("accounts");
    let ws_port = support::free_tcp_port();
    let ws = format!("127.0.0.1:{ws_port}");
    let m = crate::mailbox::start_with(&dir, support::free_tcp_port(), &["--ws", &ws]);
    let udp = m.router.addr();
    let amy = register(&m, "amy", "correct horse");

    // Text: /nick, and /register of a taken name.
    let eve = Text::new(udp);
    assert_eq!(eve.ask("/nick amy"), "-ERR 'amy' is registered");
    confirm(&eve, &eve.ask("/register amy another one"));
    assert_eq!(
        eve.ask("/register amy another one"),
        "-ERR That name is registered already"
    );
    assert_eq!(
        eve.ask("/login amy wrong password"),
        "-ERR Wrong name or password"
    );
    assert_eq!(
        eve.ask("/login nobody wrong password"),
        "-ERR Wrong name or password"
    );

    // DuckChat: a LOGIN is refused with an error, and the source has no session.
    let duck = Client::new(udp);
    duck.login("amy");
    match duck.expect() {
        Reply::Error(e) => assert_eq!(e, "Registered name, sign in elsewhere: amy"),
        other => panic!("{other:?}"),
    }
    duck.join("Common");
    assert!(matches!(duck.expect(), Reply::Error(e) if e == "Not logged in"));

    // WebSocket: nick refused; login with the password signs in.
    let mut browser = connect(ws_port, true);
    assert_eq!(next_event(&mut browser)["type"], "welcome");
    send(&mut browser, json!({"type": "nick", "name": "amy"}));
    assert_eq!(
        wait_for(&mut browser, "error")["message"],
        "amy is a registered name: sign in to use it"
    );
    send(
        &mut browser,
        json!({"type": "login", "name": "amy", "password": "correct horse"}),
    );
    let ok = wait_for(&mut browser, "ok");
    assert_eq!(
        (&ok["request"], &ok["name"]),
        (&json!("login"), &json!("amy"))
    );
    assert!(ok["token"].is_string(), "a token to sign in again: {ok}");
    // WHO and presence show who is signed in.
    let mut anonymous = connect(ws_port, true);
    assert_eq!(next_event(&mut anonymous)["type"], "welcome");
    send(&mut anonymous, json!({"type": "nick", "name": "zed"}));
    assert_eq!(wait_for(&mut anonymous, "ok")["name"], "zed");
    send(&mut anonymous, json!({"type": "join", "channel": "Common"}));
    assert_eq!(wait_for(&mut anonymous, "ok")["channel"], "Common");
    send(&mut browser, json!({"type": "join", "channel": "Common"}));
    let mut joined = wait_for(&mut anonymous, "presence");
    if joined["user"] == "zed" {
        joined = wait_for(&mut anonymous, "presence"); // its own join came first
    }
    assert_eq!(
        (&joined["user"], &joined["signed_in"]),
        (&json!("amy"), &json!(true))
    );
    send(&mut anonymous, json!({"type": "who", "channel": "Common"}));
    let members = wait_for(&mut anonymous, "members");
    assert_eq!(members["users"], json!(["amy", "zed"]));
    assert_eq!(members["signed_in"], json!(["amy"]));

    // The mailbox's protocol has no password: it cannot act as amy.
    assert_eq!(m.ask(&["REGISTER", "amy"]), [1], "registered already");
    let port = Listener::new();
    assert_eq!(m.ask(&["CONNECT", "amy", &port.port()]), [3]);
    assert_eq!(m.ask(&["DISCONNECT", "amy"]), [3]);
    assert_eq!(m.ask(&["UNREGISTER", "amy"]), [2]);
    assert_eq!(m.ask(&["REGISTER", "bob"]), [0], "an open account");
    assert_eq!(m.ask(&["SEND", "amy", "bob", "forged"]), [2]);

    // amy's mail reaches both places she is signed in to, and no one else.
    let answer = m.ask(&["SEND", "bob", "amy", "for amy only"]);
    assert_eq!(answer[0], 0, "{answer:?}");
    assert_eq!(amy.next(WAIT).as_deref(), Some("+MSG <bob> for amy only"));
    let dm = wait_for(&mut browser, "dm");
    assert_eq!(
        (&dm["from"], &dm["text"]),
        (&json!("bob"), &json!("for amy only"))
    );
    assert_eq!(eve.next(Duration::from_millis(200)), None);

    // A signed-in session keeps its account's name.
    assert_eq!(amy.ask("/nick ann"), "-ERR You are signed in as 'amy'");
    assert_eq!(amy.ask("/nick amy"), "+OK Nickname set to 'amy'");

    // Accounts are durable: after a restart the name is still refused, the password still
    // signs in.
    let (_, _) = m.router.interrupt();
    let m = crate::mailbox::start_with(&dir, m.port, &[]);
    let again = Text::new(m.router.addr());
    assert_eq!(again.ask("/nick amy"), "-ERR 'amy' is registered");
    confirm(&again, &again.ask("/login amy correct horse"));
    assert_eq!(
        again.ask("/login amy correct horse"),
        "+OK Signed in as 'amy'"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_name_that_is_no_account_is_held_by_one_session() {
    let dir = data_dir("unique-names");
    let ws_port = support::free_tcp_port();
    let ws = format!("127.0.0.1:{ws_port}");
    let m = crate::mailbox::start_with(&dir, support::free_tcp_port(), &["--ws", &ws]);
    let (first, second) = (Text::new(m.router.addr()), Text::new(m.router.addr()));
    assert_eq!(first.ask("/nick carol"), "+OK Nickname set to 'carol'");
    assert_eq!(second.ask("/nick carol"), "-ERR Nickname 'carol' is in use");
    let mut browser = connect(ws_port, true);
    assert_eq!(next_event(&mut browser)["type"], "welcome");
    send(&mut browser, json!({"type": "nick", "name": "carol"}));
    assert_eq!(
        wait_for(&mut browser, "error")["message"],
        "the nick carol is in use"
    );
    // Once its holder goes by another name, it is free.
    assert_eq!(
        first.ask("/nick caroline"),
        "+OK Nickname set to 'caroline'"
    );
    assert_eq!(second.ask("/nick carol"), "+OK Nickname set to 'carol'");
    // Registering it logs out the session that held it (it was no one's until now).
    let owner = register(&m, "carol", "carol's password");
    second.send("/join 1");
    assert_eq!(
        second.next(WAIT).as_deref(),
        Some("+OK You are now in chat room #1")
    );
    assert_eq!(owner.ask("/join 1"), "+OK You are now in chat room #1");
    second.send("who am I");
    let heard = owner.next(WAIT).unwrap_or_default();
    assert!(
        heard.starts_with("<127.0.0.1:") && heard.ends_with("> who am I"),
        "the old holder goes by its address now, not by carol: {heard}"
    );
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn guessing_a_password_is_bounded() {
    let dir = data_dir("guessing");
    let m = start(&dir, support::free_tcp_port());
    register(&m, "dan", "the right one");
    let guesser = Text::new(m.router.addr());
    confirm(&guesser, &guesser.ask("/login dan guessing"));
    let mut answers = Vec::new();
    for i in 1..=6 {
        answers.push(guesser.ask(&format!("/login dan guess no. {i}")));
    }
    assert_eq!(answers[..5], ["-ERR Wrong name or password"; 5]);
    assert_eq!(answers[5], "-ERR Too many attempts: try again later");
    assert_eq!(
        guesser.ask("/login dan the right one"),
        "-ERR Too many attempts: try again later",
        "the name is closed to guesses for a while, whoever asks"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A datagram source that never reads what is sent to it is what a forged source looks like to
/// the router: its direct message to a registered user who is away is refused, not stored, and
/// taking the user's name does not divert the user's stored mail to it.
#[test]
fn nothing_lasting_for_a_source_that_never_showed_it_receives() {
    let dir = data_dir("unconfirmed");
    let m = start(&dir, support::free_tcp_port());
    assert_eq!(m.ask(&["REGISTER", "bob"]), [0]);
    assert_eq!(m.ask(&["REGISTER", "amy"]), [0]);
    assert_eq!(m.ask(&["SEND", "amy", "bob", "kept for bob"])[0], 0);
    let forger = Text::new(m.router.addr());
    assert_eq!(forger.ask("/nick bob"), "+OK Nickname set to 'bob'");
    assert_eq!(
        forger.next(Duration::from_millis(300)),
        None,
        "bob's mail stays stored"
    );
    let other = Text::new(m.router.addr());
    assert_eq!(other.ask("/nick mallory"), "+OK Nickname set to 'mallory'");
    let refused = other.ask("/msg amy you have been diverted");
    assert!(
        refused.starts_with("-ERR Confirm your address first"),
        "{refused}"
    );
    forger.send("/quit");
    let bob = Listener::new();
    assert_eq!(m.ask(&["CONNECT", "bob", &bob.port()]), [0]);
    let pushes = bob.pushes(1, WAIT);
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0][0], "SEND_MESSAGE");
    assert_eq!(pushes[0][3], "kept for bob");
    let amy = Listener::new();
    assert_eq!(m.ask(&["CONNECT", "amy", &amy.port()]), [0]);
    let pushes = amy.pushes(2, Duration::from_millis(500));
    assert_eq!(
        pushes,
        [vec!["SEND_MESS_ACK".to_string(), "0".to_string()]],
        "only the acknowledgement of what amy sent bob: nothing stored for her"
    );
    // Now online, amy is handed what a stranger sends, but nothing is stored for her.
    assert_eq!(
        other.ask("/msg amy hello now"),
        "+OK Message for amy delivered",
        "handed to amy's listen port"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One network registers at most its quota; another network still can (127.0.0.0/8 is all this
/// host's, so 127.0.1.1 is another /24).
#[test]
fn one_network_cannot_spend_the_registrations_of_all() {
    let dir = data_dir("registrations");
    let m = start(&dir, support::free_tcp_port());
    let register_from = |ip: [u8; 4], user: &str| -> Vec<u8> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None);
        let socket = socket.unwrap();
        socket
            .bind(&std::net::SocketAddr::from((ip, 0)).into())
            .unwrap();
        let to = std::net::SocketAddr::from(([127, 0, 0, 1], m.port));
        socket.connect(&to.into()).unwrap();
        let mut c: TcpStream = socket.into();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.write_all(format!("REGISTER\0{user}\0").as_bytes())
            .unwrap();
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).unwrap();
        answer
    };
    let quota = 1_000;
    std::thread::scope(|s| {
        for t in 0..4 {
            let register_from = &register_from;
            s.spawn(move || {
                for i in (t..quota).step_by(4) {
                    assert_eq!(register_from([127, 0, 0, 1], &format!("u{i}")), [0]);
                }
            });
        }
    });
    assert_eq!(
        register_from([127, 0, 0, 2], "one more"),
        [2],
        "the /24's quota"
    );
    assert_eq!(
        register_from([127, 0, 1, 1], "elsewhere"),
        [0],
        "another /24"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tokens: the page's (signed by the router for a browser that signed in, good after a
/// restart) and an existing site's (signed with the operator's `--auth-key`).
#[test]
fn tokens_sign_in_browsers_and_text_users() {
    let dir = data_dir("tokens");
    std::fs::create_dir_all(&dir).unwrap();
    let key = b"the operator's key, 32 bytes or more".to_vec();
    let key_file = dir.join("auth.key");
    std::fs::write(&key_file, [&key[..], b"\n"].concat()).unwrap();
    let ws_port = support::free_tcp_port();
    let ws = format!("127.0.0.1:{ws_port}");
    let args = ["--ws", &ws, "--auth-key", key_file.to_str().unwrap()];
    let m = crate::mailbox::start_with(&dir, support::free_tcp_port(), &args);

    // A browser signs up and is given a token; another connection signs in with it.
    let mut first = connect(ws_port, true);
    assert_eq!(next_event(&mut first)["type"], "welcome");
    send(
        &mut first,
        json!({"type": "register", "name": "pat", "password": "pat's password"}),
    );
    let ok = wait_for(&mut first, "ok");
    assert_eq!(
        (&ok["request"], &ok["name"]),
        (&json!("register"), &json!("pat"))
    );
    let token = ok["token"].as_str().expect("a token").to_string();
    let login_with = |token: &str| {
        let mut ws = connect(ws_port, true);
        assert_eq!(next_event(&mut ws)["type"], "welcome");
        send(&mut ws, json!({"type": "login", "token": token}));
        let answer = next_event(&mut ws);
        (ws, answer)
    };
    let (_second, answer) = login_with(&token);
    assert_eq!(
        (&answer["type"], &answer["name"]),
        (&json!("ok"), &json!("pat"))
    );
    // One character of the signature changed (to another of the alphabet).
    let at = token.len() - 10;
    let swap = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
    let (_third, answer) = login_with(&forged);
    assert_eq!(answer["message"], "that token signs no one in");

    // The operator's site vouches for its user over the text protocol.
    let site_token = chat_router::engine::token::sign(&key, "site-user", 4_102_444_800).unwrap();
    let text = Text::new(m.router.addr());
    confirm(&text, &text.ask(&format!("/login {site_token}")));
    assert_eq!(
        text.ask(&format!("/login {site_token}")),
        "+OK Signed in as 'site-user'"
    );
    let expired = chat_router::engine::token::sign(&key, "site-user", 1).unwrap();
    assert_eq!(
        text.ask(&format!("/login {expired}")),
        "-ERR That token signs no one in"
    );
    let other = Text::new(m.router.addr());
    assert_eq!(
        other.ask("/nick site-user"),
        "-ERR Nickname 'site-user' is in use",
        "held by its signed-in session"
    );

    // The router's own key lives with its data: the page's token is good after a restart.
    let (_, _) = m.router.interrupt();
    let m = crate::mailbox::start_with(&dir, m.port, &args);
    let (_again, answer) = login_with(&token);
    assert_eq!(
        (&answer["type"], &answer["name"]),
        (&json!("ok"), &json!("pat"))
    );
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}
