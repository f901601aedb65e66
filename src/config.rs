//! Parsing of what users type: durations with units, `host port` endpoints and cluster files.
//! Each error names the offending text, so the command line can report it in one line.

use crate::engine::{Member, Peer, MAX_SERVERS};
use crate::proto::duckchat::{Endian, SayLayout};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("--auth-key {0}")]
    AuthKey(String),
    #[error("invalid duration '{0}': expected a number with a unit, e.g. 500ms, 2s, 1m")]
    Duration(String),
    #[error("invalid port '{0}': expected a number from 1 to 65535")]
    Port(String),
    #[error("cannot resolve host '{0}'")]
    Host(String),
    #[error("invalid address '{0}': expected HOST:PORT, e.g. 127.0.0.1:4000")]
    Address(String),
    #[error(
        "expected HOST PORT [NEIGHBOR_HOST NEIGHBOR_PORT]..., got an odd number of arguments: {0}"
    )]
    OddArguments(String),
    #[error("give the listen address either as HOST PORT or with --listen, not both")]
    ListenTwice,
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("cannot read cluster file {file}: {why}")]
    ClusterFile { file: String, why: String },
    #[error("cluster file line {line}: {why}")]
    ClusterLine { line: usize, why: String },
    #[error("cluster file lists {0} servers; at least 1 and at most {MAX_SERVERS} are supported")]
    ClusterSize(usize),
    #[error("invalid server index '{0}': expected a number from 1")]
    IndexNumber(String),
    #[error("--index {index} is not in the cluster file (servers 1 to {servers})")]
    Index { index: usize, servers: usize },
    #[error("{0}")]
    Conflict(&'static str),
    #[error("--cores {0}: at most {max} shards", max = crate::runtime::MAX_SHARDS)]
    TooManyShards(usize),
    #[error("cannot read cluster key file {file}: {why}")]
    KeyFile { file: String, why: String },
    #[error("cluster key file {0} is empty: put a secret of at least 16 bytes in it")]
    KeyTooShort(String),
    #[error("neighbor {0} is this server's own address")]
    NeighborIsSelf(SocketAddr),
    #[error("--neighbor {neighbor}: unknown format '{format}' (expected user-first, channel-first, little-endian or big-endian)")]
    NeighborFormat { neighbor: String, format: String },
}

/// `500ms`, `2s`, `1m`, `1h`, `250us`; fractions allowed (`1.5s`).
/// A key file (`--auth-key`): its bytes, without a final line break, at least 32 of them
/// (HS256 with a shorter key can be guessed).
pub fn read_key(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let fail = |why: String| ConfigError::AuthKey(format!("{}: {why}", path.display()));
    let mut key = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < 32 {
        let n = key.len();
        return Err(fail(format!("a key is at least 32 bytes, this one {n}")));
    }
    Ok(key)
}

pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let err = || ConfigError::Duration(text.to_string());
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| err())?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| err())
}

/// A port from 1 to 65535 (0 is allowed only where `allow_zero`).
pub fn parse_port(text: &str, allow_zero: bool) -> Result<u16, ConfigError> {
    match text.parse::<u16>() {
        Ok(0) if !allow_zero => Err(ConfigError::Port(text.to_string())),
        Ok(port) => Ok(port),
        Err(_) => Err(ConfigError::Port(text.to_string())),
    }
}

/// Resolves `host` (a name such as `localhost` or a literal address), preferring IPv4 as the
/// course servers do.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|_| ConfigError::Host(host.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| ConfigError::Host(host.to_string()))
}

/// `HOST:PORT` (also `[v6]:PORT`).
pub fn parse_address(text: &str) -> Result<SocketAddr, ConfigError> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| ConfigError::Address(text.to_string()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(ConfigError::Address(text.to_string()));
    }
    resolve(host, parse_port(port, true)?)
}

/// `ADDR[,FORMAT]...`: a neighbor, with how it writes S2S datagrams where given
/// (`user-first`/`channel-first`: its S2S_SAY layout; `little-endian`/`big-endian`: its type
/// codes).
pub fn parse_neighbor(text: &str) -> Result<Peer, ConfigError> {
    let mut parts = text.split(',');
    let mut peer = Peer::new(parse_address(parts.next().unwrap_or_default())?);
    for format in parts {
        match format.trim() {
            "user-first" => peer.layout = Some(SayLayout::UserFirst),
            "channel-first" => peer.layout = Some(SayLayout::ChannelFirst),
            "little-endian" => peer.endian = Some(Endian::Little),
            "big-endian" => peer.endian = Some(Endian::Big),
            other => {
                return Err(ConfigError::NeighborFormat {
                    neighbor: text.to_string(),
                    format: other.to_string(),
                })
            }
        }
    }
    Ok(peer)
}

/// The course form `HOST PORT [NEIGHBOR_HOST NEIGHBOR_PORT]...`: (listen, neighbors).
pub fn parse_course_args(args: &[String]) -> Result<(SocketAddr, Vec<SocketAddr>), ConfigError> {
    if !args.len().is_multiple_of(2) {
        return Err(ConfigError::OddArguments(args.join(" ")));
    }
    let mut pairs = args
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| resolve(&pair[0], parse_port(&pair[1], i == 0)?));
    let listen = pairs
        .next()
        .unwrap_or(Err(ConfigError::OddArguments(String::new())))?;
    Ok((listen, pairs.collect::<Result<_, _>>()?))
}

/// A cluster file: one server per line, `ADDR` (forwarding = bind) or `FORWARD,BIND`. Blank
/// lines and `#` comments are skipped; line numbers in errors count every line.
pub fn parse_cluster(text: &str) -> Result<Vec<Member>, ConfigError> {
    let mut members = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |e: ConfigError| ConfigError::ClusterLine {
            line: i + 1,
            why: e.to_string(),
        };
        let member = match line.split_once(',') {
            None => {
                let a = parse_address(line).map_err(at)?;
                Member {
                    forward: a,
                    bind: a,
                }
            }
            Some((forward, bind)) => Member {
                forward: parse_address(forward.trim()).map_err(at)?,
                bind: parse_address(bind.trim()).map_err(at)?,
            },
        };
        for (what, a) in [("forwarding", member.forward), ("bind", member.bind)] {
            if a.port() == 0 {
                return Err(ConfigError::ClusterLine {
                    line: i + 1,
                    why: format!("{what} address {a} has port 0"),
                });
            }
        }
        let clash = members.iter().any(|m: &Member| {
            [m.forward, m.bind].contains(&member.forward)
                || (member.bind != member.forward && [m.forward, m.bind].contains(&member.bind))
        });
        if clash {
            return Err(ConfigError::ClusterLine {
                line: i + 1,
                why: format!("'{line}' repeats an address of an earlier server"),
            });
        }
        members.push(member);
    }
    if members.is_empty() || members.len() > MAX_SERVERS {
        return Err(ConfigError::ClusterSize(members.len()));
    }
    Ok(members)
}

/// The command line of `program`, parsed: `--help` and `--version` are printed (exit 0); an
/// error becomes one line naming the problem (exit 2), the usage one `--help` away. Shared by
/// the binaries so that they all fail the same way.
pub fn parse_command_line<T: clap::Parser>(program: &str) -> Result<T, std::process::ExitCode> {
    T::try_parse().map_err(|e| {
        if !e.use_stderr() {
            let _ = e.print();
            return std::process::ExitCode::SUCCESS;
        }
        // clap's message up to its usage: the problem, with what it names on later lines.
        let text = e.to_string();
        let words: Vec<&str> = text
            .lines()
            .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
            .map(str::trim)
            .collect();
        let line = words.join(" ");
        eprintln!(
            "{program}: {} (see {program} --help)",
            line.trim_start_matches("error: ")
        );
        std::process::ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbors_with_formats() {
        let plain = parse_neighbor("127.0.0.1:5000").unwrap();
        assert_eq!((plain.layout, plain.endian), (None, None));
        let both = parse_neighbor("127.0.0.1:5000,channel-first,big-endian").unwrap();
        assert_eq!(both.addr.port(), 5000);
        assert_eq!(
            (both.layout, both.endian),
            (Some(SayLayout::ChannelFirst), Some(Endian::Big))
        );
        assert_eq!(
            parse_neighbor("127.0.0.1:5000,sideways")
                .unwrap_err()
                .to_string(),
            "--neighbor 127.0.0.1:5000,sideways: unknown format 'sideways' (expected user-first, \
             channel-first, little-endian or big-endian)"
        );
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["5", "s", "", "-1s", "1x", "1.2.3s", "1e400s"] {
            assert_eq!(
                parse_duration(bad),
                Err(ConfigError::Duration(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn course_arguments_resolve_names_and_pair_up() {
        let args: Vec<String> = ["localhost", "4000", "127.0.0.1", "5000"]
            .map(String::from)
            .to_vec();
        let (listen, neighbors) = parse_course_args(&args).unwrap();
        assert_eq!(listen, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(neighbors, vec!["127.0.0.1:5000".parse().unwrap()]);
        let odd: Vec<String> = ["localhost", "4000", "x"].map(String::from).to_vec();
        assert!(matches!(
            parse_course_args(&odd),
            Err(ConfigError::OddArguments(_))
        ));
        let bad_port: Vec<String> = ["localhost", "99999"].map(String::from).to_vec();
        assert_eq!(
            parse_course_args(&bad_port),
            Err(ConfigError::Port("99999".into()))
        );
    }

    #[test]
    fn cluster_files() {
        let text = "127.0.0.1:8000,127.0.0.1:5000\n\n# third has one address\n127.0.0.1:8001 , 127.0.0.1:5001\n127.0.0.1:5002\n";
        let members = parse_cluster(text).unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members[0].forward, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(members[0].bind, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(members[1].forward, "127.0.0.1:8001".parse().unwrap());
        assert_eq!(members[2].forward, members[2].bind);
        assert_eq!(
            parse_cluster("\n# nothing\n"),
            Err(ConfigError::ClusterSize(0))
        );
        let bad = parse_cluster("127.0.0.1:5000\n127.0.0.1\n").unwrap_err();
        assert!(bad.to_string().starts_with("cluster file line 2:"), "{bad}");
        let twice = parse_cluster("127.0.0.1:5000\n127.0.0.1:6000,127.0.0.1:5000\n").unwrap_err();
        assert!(twice.to_string().contains("repeats"), "{twice}");
        assert!(parse_cluster("127.0.0.1:0\n").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("127.0.0.1:4000"),
            Ok("127.0.0.1:4000".parse().unwrap())
        );
        assert_eq!(
            parse_address("[::1]:4000"),
            Ok("[::1]:4000".parse().unwrap())
        );
        assert!(matches!(
            parse_address("4000"),
            Err(ConfigError::Address(_))
        ));
        assert!(matches!(
            parse_address("host.invalid.:1"),
            Err(ConfigError::Host(_))
        ));
    }
}
