//! TLS for the TCP listeners (`--tls-cert FILE --tls-key FILE`, PEM): rustls, so browsers get
//! the page over https and WebSocket over wss, and the mailbox's clients a TLS connection.
//! A listener with TLS still takes plain connections on the same port: the first byte tells
//! which (a TLS handshake begins with 0x16, every HTTP request and mailbox command with a
//! letter), so the original mailbox client, which knows no TLS, keeps working beside it.
//! The handshake happens in the connection's own reads, never in the accept loop, so a slow
//! or silent client holds up nobody (the gate's deadline covers it).

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The first byte of a TLS record that carries a handshake.
const HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate {path}: {why}")]
    Cert { path: PathBuf, why: String },
    #[error("cannot read the private key {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("the certificate and key do not make a TLS server: {0}")]
    Config(String),
}

/// What a listener offers: the server side of TLS, loaded once and shared.
#[derive(Clone)]
pub struct Tls(pub TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// The server side of TLS, from a PEM certificate chain and its private key.
pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.into(),
            why: "no certificate in it".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.into(),
        why: e.to_string(),
    })?;
    // ring: classical key exchange (X25519, ECDHE) only; rustls marks it deprecated for
    // lacking the post-quantum hybrid, which aws-lc-rs has at the cost of a long C build
    // (docs/tls.md says so).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Tls(TlsAcceptor::from(Arc::new(config))))
}

/// An accepted connection: plain, or TLS once its first byte asked for it.
pub enum Stream {
    /// The first byte has not arrived yet (with TLS to offer, if it asks).
    Detecting(TcpStream, TlsAcceptor),
    Plain(TcpStream),
    Handshaking(Box<tokio_rustls::Accept<TcpStream>>),
    Tls(Box<TlsStream<TcpStream>>),
    /// A handshake failed (the error was returned once).
    Failed,
}

impl Stream {
    /// A connection as accepted: plain when there is no TLS to offer.
    pub fn new(conn: TcpStream, tls: Option<&Tls>) -> Self {
        match tls {
            Some(tls) => Stream::Detecting(conn, tls.0.clone()),
            None => Stream::Plain(conn),
        }
    }

    /// Whether the connection speaks TLS (known once it is ready).
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Handshaking(_) | Stream::Tls(_))
    }

    /// Reads the first byte's verdict and finishes the TLS handshake, if any.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self {
                Stream::Plain(_) | Stream::Tls(_) => return Poll::Ready(Ok(())),
                Stream::Failed => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                Stream::Detecting(conn, _) => {
                    let mut first = [0u8; 1];
                    let mut buf = ReadBuf::new(&mut first);
                    let peeked = ready!(conn.poll_peek(cx, &mut buf))?;
                    let Stream::Detecting(conn, tls) = std::mem::replace(self, Stream::Failed)
                    else {
                        unreachable!("matched above")
                    };
                    *self = match peeked == 1 && first[0] == HANDSHAKE_RECORD {
                        true => Stream::Handshaking(Box::new(tls.accept(conn))),
                        false => Stream::Plain(conn),
                    };
                }
                Stream::Handshaking(accept) => match ready!(Pin::new(accept.as_mut()).poll(cx)) {
                    Ok(tls) => *self = Stream::Tls(Box::new(tls)),
                    Err(e) => {
                        *self = Stream::Failed;
                        return Poll::Ready(Err(e));
                    }
                },
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        match this {
            Stream::Plain(c) => Pin::new(c).poll_read(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
            _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        match this {
            Stream::Plain(c) => Pin::new(c).poll_write(cx, bytes),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, bytes),
            _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(c) => Pin::new(c).poll_flush(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(c) => Pin::new(c).poll_shutdown(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
            Stream::Detecting(c, _) => Pin::new(c).poll_shutdown(cx),
            Stream::Handshaking(_) | Stream::Failed => Poll::Ready(Ok(())),
        }
    }
}
