//! TLS for WebSockets (rustls), over a non-blocking socket the event loop watches: the client's
//! connections, and the emulator's.
//!
//! Python's `ssl` under an asyncio transport costs several interpreter-level calls, a memory
//! BIO copy and an OpenSSL 3 record path per message; a session sends 50 and receives 25 a
//! second. Here one call encrypts and writes a message, and one call reads and decrypts what
//! the socket holds. The event loop still owns the waiting (readiness of the fd).

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

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

/// The cryptography both sides use (ring: builds with a C compiler alone).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server configuration presenting `cert_chain` (PEM: the certificate, then its issuers)
/// with `key` (PEM).
pub fn server_config(cert_chain: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let bad_pem = |what: &str, err: rustls::pki_types::pem::Error| {
        TlsError::Protocol(format!("{what}: {err}"))
    };
    let chain = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad_pem("the certificate chain", err))?;
    if chain.is_empty() {
        return Err(TlsError::Protocol(
            "the certificate chain holds no certificate".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|err| bad_pem("the private key", err))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// A TLS connection (either side) over a connected, non-blocking TCP socket.
pub struct TlsStream {
    sock: Option<TcpStream>,
    conn: Connection,
    /// Plaintext accepted and not yet fully written to the socket (for flow control).
    unsent: usize,
}

impl TlsStream {
    /// Start a connection to `server_name` (a DNS name or an IP address) over `sock`.
    pub fn client(
        sock: TcpStream,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> Result<Self, TlsError> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|err| {
            TlsError::Protocol(format!("invalid server name {server_name:?}: {err}"))
        })?;
        Self::over(sock, ClientConnection::new(config, name)?.into())
    }

    /// Answer a client that connected on `sock`.
    pub fn server(sock: TcpStream, config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        Self::over(sock, ServerConnection::new(config)?.into())
    }

    fn over(sock: TcpStream, mut conn: Connection) -> Result<Self, TlsError> {
        sock.set_nonblocking(true)?;
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

    use rustls::{ServerConnection, StreamOwned};

    /// A client configuration trusting exactly `roots` (DER certificates).
    fn client_config_with_roots(roots: &[Vec<u8>]) -> Result<Arc<ClientConfig>, TlsError> {
        let mut store = RootCertStore::empty();
        for der in roots {
            store.add(CertificateDer::from(der.clone()))?;
        }
        client_config(store)
    }

    struct Certificate {
        der: Vec<u8>,
        pem: Vec<u8>,
        key_pem: Vec<u8>,
    }

    /// A self-signed certificate for `name`, and its key.
    fn certificate(name: &str) -> Certificate {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        Certificate {
            der: cert.cert.der().to_vec(),
            pem: cert.cert.pem().into_bytes(),
            key_pem: cert.key_pair.serialize_pem().into_bytes(),
        }
    }

    /// A blocking TLS echo server (rustls's own stream) for one connection; returns its port.
    fn echo_server(cert: &Certificate) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = server_config(&cert.pem, &cert.key_pem).unwrap();
        thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let conn = ServerConnection::new(config).unwrap();
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
        let mut tls = TlsStream::client(sock, name, client_config_with_roots(roots)?)?;
        while tls.handshake()? != Handshake::Done {
            thread::sleep(Duration::from_millis(1)); // a test may spin; the event loop waits
        }
        Ok(tls)
    }

    #[test]
    fn a_megabyte_goes_out_and_comes_back_whole_then_the_close_is_seen() {
        let cert = certificate("127.0.0.1");
        let port = echo_server(&cert);
        let mut tls = connect(port, "127.0.0.1", &[cert.der]).unwrap();
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
        let cert = certificate("127.0.0.1");
        let port = echo_server(&cert);
        let mut tls = connect(port, "127.0.0.1", &[cert.der]).unwrap();
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
        let cert = certificate("127.0.0.1");
        let stranger = certificate("127.0.0.1");
        let port = echo_server(&cert);
        assert!(matches!(
            connect(port, "127.0.0.1", &[stranger.der]),
            Err(TlsError::Certificate(_))
        ));
        let port = echo_server(&cert);
        match connect(port, "localhost", &[cert.der]) {
            Err(TlsError::Certificate(why)) => assert!(why.contains("NotValidForName"), "{why}"),
            other => panic!("expected a refused name, got {:?}", other.err()),
        }
    }

    #[test]
    fn our_server_side_and_client_side_talk_and_close() {
        let cert = certificate("127.0.0.1");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client_sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server_sock, _) = listener.accept().unwrap();
        let config = server_config(&cert.pem, &cert.key_pem).unwrap();
        let mut server = TlsStream::server(server_sock, config).unwrap();
        let roots = client_config_with_roots(&[cert.der]).unwrap();
        let mut client = TlsStream::client(client_sock, "127.0.0.1", roots).unwrap();
        // One thread drives both (non-blocking) handshakes in turn.
        loop {
            let (at_client, at_server) = (client.handshake().unwrap(), server.handshake().unwrap());
            if (at_client, at_server) == (Handshake::Done, Handshake::Done) {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        assert!(client.write(b"hello server").unwrap());
        assert!(server.write(b"hello client").unwrap());
        let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
        while at_server.len() < 12 || at_client.len() < 12 {
            assert!(
                server.read_into(&mut at_server).unwrap()
                    && client.read_into(&mut at_client).unwrap()
            );
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            (&at_server[..], &at_client[..]),
            (&b"hello server"[..], &b"hello client"[..])
        );
        client.close(true);
        while server.read_into(&mut at_server).unwrap() {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(at_server, b"hello server", "the close added nothing");
    }

    #[test]
    fn a_server_configuration_needs_a_certificate_and_a_key_in_pem() {
        let cert = certificate("127.0.0.1");
        assert!(server_config(&cert.pem, &cert.key_pem).is_ok());
        assert!(matches!(
            server_config(b"", &cert.key_pem),
            Err(TlsError::Protocol(_))
        ));
        assert!(matches!(
            server_config(&cert.pem, b"not a key"),
            Err(TlsError::Protocol(_))
        ));
        assert!(matches!(
            server_config(&cert.key_pem, &cert.pem),
            Err(TlsError::Protocol(_))
        ));
    }
}
