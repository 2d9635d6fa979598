//! TLS for the client's WebSocket (rustls), over a non-blocking socket the event loop watches.
//!
//! Python's `ssl` under an asyncio transport costs several interpreter-level calls, a memory
//! BIO copy and an OpenSSL 3 record path per message; a session sends 50 and receives 25 a
//! second. Here one call encrypts and writes a message, and one call reads and decrypts what
//! the socket holds. The event loop still owns the waiting (readiness of the fd).

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// Why a TLS stream failed.
#[derive(Debug)]
pub enum TlsError {
    /// The socket failed (reset, refused, ...).
    Io(io::Error),
    /// The peer's certificate is not trusted for the name.
    Certificate(String),
    /// Any other TLS failure (protocol, alert from the peer).
    Protocol(String),
    /// The connection ended during the handshake.
    HandshakeEof,
    /// No CA certificate to trust could be found.
    NoTrustedRoots(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(err) => write!(f, "{err}"),
            Self::Certificate(msg) => write!(f, "certificate verify failed: {msg}"),
            Self::Protocol(msg) => write!(f, "TLS error: {msg}"),
            Self::HandshakeEof => write!(f, "the connection closed during the TLS handshake"),
            Self::NoTrustedRoots(msg) => write!(f, "no trusted CA certificates: {msg}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<io::Error> for TlsError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

impl From<rustls::Error> for TlsError {
    fn from(err: rustls::Error) -> Self {
        match err {
            rustls::Error::InvalidCertificate(cert) => Self::Certificate(format!("{cert:?}")),
            other => Self::Protocol(other.to_string()),
        }
    }
}

/// What the handshake waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Done,
    WantRead,
    WantWrite,
}

/// The client configuration trusting the system's CA certificates (as OpenSSL finds them,
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` included), built once per value of those variables:
/// loading the store takes milliseconds, a connection should not pay it.
pub fn system_client_config() -> Result<Arc<ClientConfig>, TlsError> {
    type Cached = Option<((Option<String>, Option<String>), Arc<ClientConfig>)>;
    static CACHE: Mutex<Cached> = Mutex::new(None);
    let key = (
        std::env::var("SSL_CERT_FILE").ok(),
        std::env::var("SSL_CERT_DIR").ok(),
    );
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((cached_key, config)) = cache.as_ref() {
        if *cached_key == key {
            return Ok(config.clone());
        }
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "the system store is empty".to_owned(), |e| e.to_string());
        return Err(TlsError::NoTrustedRoots(format!(
            "{why} (install ca-certificates, set SSL_CERT_FILE, or pass an ssl context)"
        )));
    }
    let config = client_config(roots)?;
    *cache = Some((key, config.clone()));
    Ok(config)
}

/// A client configuration trusting exactly `roots` (DER certificates).
pub fn client_config_with_roots(roots: &[Vec<u8>]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut store = RootCertStore::empty();
    for der in roots {
        store.add(CertificateDer::from(der.clone()))?;
    }
    client_config(store)
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TLS client connection over a connected, non-blocking TCP socket.
pub struct TlsStream {
    sock: Option<TcpStream>,
    conn: ClientConnection,
    /// Plaintext accepted and not yet fully written to the socket (for flow control).
    unsent: usize,
}

impl TlsStream {
    /// Start a connection to `server_name` (a DNS name or an IP address) over `sock`.
    pub fn new(
        sock: TcpStream,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> Result<Self, TlsError> {
        sock.set_nonblocking(true)?;
        let name = ServerName::try_from(server_name.to_owned()).map_err(|err| {
            TlsError::Protocol(format!("invalid server name {server_name:?}: {err}"))
        })?;
        let mut conn = ClientConnection::new(config, name)?;
        // Flow control is the caller's (it pauses writers on `unsent`); rustls's own limit
        // would make a write take only part of a message.
        conn.set_buffer_limit(None);
        Ok(Self {
            sock: Some(sock),
            conn,
            unsent: 0,
        })
    }

    /// Advance the handshake as far as the socket allows.
    pub fn handshake(&mut self) -> Result<Handshake, TlsError> {
        loop {
            if !self.push()? {
                return Ok(Handshake::WantWrite);
            }
            if !self.conn.is_handshaking() {
                return Ok(Handshake::Done);
            }
            match self.pull_once()? {
                Pulled::Nothing => return Ok(Handshake::WantRead),
                Pulled::Eof => return Err(TlsError::HandshakeEof),
                Pulled::Some => {}
            }
        }
    }

    /// Encrypt `data` and write what the socket takes; true when nothing is left unsent (else
    /// wait until the socket is writable and call [`Self::flush`]).
    pub fn write(&mut self, data: &[u8]) -> Result<bool, TlsError> {
        self.conn.writer().write_all(data)?;
        self.unsent += data.len();
        self.flush()
    }

    /// Write what is left; true when all of it went.
    pub fn flush(&mut self) -> Result<bool, TlsError> {
        let done = self.push()?;
        if done {
            self.unsent = 0;
        }
        Ok(done)
    }

    /// Plaintext accepted but not yet all written (an upper bound, in plaintext bytes).
    pub fn unsent(&self) -> usize {
        self.unsent
    }

    /// Read and decrypt what the socket holds, appending the plaintext to `out`; false once
    /// the peer has ended the stream (close_notify or TCP EOF) and nothing more will come.
    pub fn read_into(&mut self, out: &mut Vec<u8>) -> Result<bool, TlsError> {
        let open = loop {
            let pulled = self.pull_once()?;
            // Take the plaintext after every record batch: rustls refuses to read more while
            // too much is waiting.
            match self.conn.reader().read_to_end(out) {
                Ok(_) => break false, // close_notify: the end of the stream
                Err(err) if err.kind() == ErrorKind::WouldBlock => {}
                Err(err) if err.kind() == ErrorKind::UnexpectedEof => break false,
                Err(err) => return Err(err.into()),
            }
            match pulled {
                Pulled::Some => {}
                Pulled::Nothing => break true,
                Pulled::Eof => break false,
            }
        };
        self.push()?; // anything the reading produced (key updates, alerts)
        Ok(open)
    }

    /// Close the socket, after a close_notify when `graceful` (best effort: what the socket
    /// does not take at once is dropped).
    pub fn close(&mut self, graceful: bool) {
        if graceful && self.sock.is_some() {
            self.conn.send_close_notify();
            let _ = self.push();
        }
        self.sock = None;
    }

    /// The socket's file descriptor, for the event loop to watch (-1 once closed).
    #[cfg(unix)]
    pub fn fileno(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.sock.as_ref().map_or(-1, |sock| sock.as_raw_fd())
    }

    /// Write what rustls holds; false when the socket would block first.
    fn push(&mut self) -> Result<bool, TlsError> {
        while self.conn.wants_write() {
            let sock = connected(&mut self.sock)?;
            match self.conn.write_tls(sock) {
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(true)
    }

    /// One read from the socket into rustls, processed.
    fn pull_once(&mut self) -> Result<Pulled, TlsError> {
        loop {
            let sock = connected(&mut self.sock)?;
            match self.conn.read_tls(sock) {
                Ok(0) => return Ok(Pulled::Eof),
                Ok(_) => {
                    self.conn.process_new_packets()?;
                    return Ok(Pulled::Some);
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(Pulled::Nothing),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
}

fn connected(sock: &mut Option<TcpStream>) -> io::Result<&mut TcpStream> {
    sock.as_mut()
        .ok_or_else(|| io::Error::from(ErrorKind::NotConnected))
}

enum Pulled {
    Nothing,
    Some,
    Eof,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    /// A self-signed certificate for `name` and its key (DER).
    fn certificate(name: &str) -> (Vec<u8>, Vec<u8>) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (cert.cert.der().to_vec(), cert.key_pair.serialize_der())
    }

    /// A TLS echo server for one connection (Python's side is tested against the emulator);
    /// returns its port.
    fn echo_server(cert: Vec<u8>, key: Vec<u8>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::try_from(key).unwrap(),
            )
            .unwrap();
        thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let conn = ServerConnection::new(Arc::new(config)).unwrap();
            let mut stream = StreamOwned::new(conn, sock);
            let mut buf = [0u8; 8192];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break, // the client's close_notify, or a failed handshake
                    Ok(n) => stream.write_all(&buf[..n]).unwrap(),
                }
            }
            stream.conn.send_close_notify();
            let _ = stream.flush();
        });
        port
    }

    fn connect(port: u16, name: &str, roots: &[Vec<u8>]) -> Result<TlsStream, TlsError> {
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut tls = TlsStream::new(sock, name, client_config_with_roots(roots)?)?;
        while tls.handshake()? != Handshake::Done {
            thread::sleep(Duration::from_millis(1)); // a test may spin; the event loop waits
        }
        Ok(tls)
    }

    #[test]
    fn a_megabyte_goes_out_and_comes_back_whole_then_the_close_is_seen() {
        let (cert, key) = certificate("127.0.0.1");
        let port = echo_server(cert.clone(), key);
        let mut tls = connect(port, "127.0.0.1", &[cert]).unwrap();
        let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut echoed = Vec::new();
        for piece in sent.chunks(20_000) {
            let mut flushed = tls.write(piece).unwrap();
            while !flushed {
                assert!(tls.unsent() > 0);
                assert!(tls.read_into(&mut echoed).unwrap()); // the peer may wait for us to read
                flushed = tls.flush().unwrap();
            }
            assert_eq!(tls.unsent(), 0);
        }
        while echoed.len() < sent.len() {
            assert!(
                tls.read_into(&mut echoed).unwrap(),
                "the stream ended early"
            );
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(echoed, sent);
        tls.close(true); // close_notify: the server ends too
        assert_eq!(tls.fileno(), -1);
        assert!(matches!(tls.write(b"x"), Err(TlsError::Io(_))));
    }

    #[test]
    fn the_peers_close_notify_ends_the_stream_after_what_came_before() {
        let (cert, key) = certificate("127.0.0.1");
        let port = echo_server(cert.clone(), key);
        let mut tls = connect(port, "127.0.0.1", &[cert]).unwrap();
        tls.write(b"last words").unwrap();
        // Our close_notify, without closing the socket: the server echoes nothing more and
        // answers with its own.
        tls.conn.send_close_notify();
        assert!(tls.flush().unwrap());
        let mut received = Vec::new();
        while tls.read_into(&mut received).unwrap() {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(received, b"last words");
        assert!(!tls.read_into(&mut received).unwrap(), "ended stays ended");
    }

    #[test]
    fn an_untrusted_certificate_and_a_wrong_name_are_refused() {
        let (cert, key) = certificate("127.0.0.1");
        let (stranger, _) = certificate("127.0.0.1");
        let port = echo_server(cert.clone(), key.clone());
        assert!(matches!(
            connect(port, "127.0.0.1", &[stranger]),
            Err(TlsError::Certificate(_))
        ));
        let port = echo_server(cert.clone(), key);
        match connect(port, "localhost", &[cert]) {
            Err(TlsError::Certificate(why)) => assert!(why.contains("NotValidForName"), "{why}"),
            other => panic!("expected a refused name, got {:?}", other.err()),
        }
    }
}
