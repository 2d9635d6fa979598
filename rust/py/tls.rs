//! `TlsStream` for `geminilive._tls` (see `crate::tls`).

use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyType};

use crate::tls::{self, Handshake, TlsError};

/// As `ssl` raises them: (1, message), 1 being OpenSSL's SSL_ERROR_SSL (so `str()` is the
/// message, and `.reason`-less code can still tell them apart by class).
fn ssl_error(
    py: Python<'_>,
    cell: &'static GILOnceCell<Py<PyType>>,
    name: &str,
    message: String,
) -> PyErr {
    match cell.import(py, "ssl", name) {
        Ok(class) => PyErr::from_type(class.clone(), (1, message)),
        Err(err) => err,
    }
}

/// Socket failures keep their OSError subclass; TLS failures are `ssl`'s own exceptions, as
/// with Python's TLS (both are OSErrors).
fn to_py(py: Python<'_>, err: TlsError) -> PyErr {
    static VERIFY: GILOnceCell<Py<PyType>> = GILOnceCell::new();
    static SSL: GILOnceCell<Py<PyType>> = GILOnceCell::new();
    match err {
        TlsError::Io(err) => err.into(),
        TlsError::Certificate(_) => {
            ssl_error(py, &VERIFY, "SSLCertVerificationError", err.to_string())
        }
        _ => ssl_error(py, &SSL, "SSLError", err.to_string()),
    }
}

/// What a TLS server presents: a certificate chain and its key, parsed once for every
/// connection it accepts.
#[pyclass(module = "geminilive._native", frozen)]
struct TlsServerConfig {
    config: Arc<rustls::ServerConfig>,
}

#[pymethods]
impl TlsServerConfig {
    /// `cert_chain`: PEM, the server's certificate then its issuers'; `key`: PEM.
    #[new]
    fn new(py: Python<'_>, cert_chain: &[u8], key: &[u8]) -> PyResult<Self> {
        let config = tls::server_config(cert_chain, key).map_err(|err| to_py(py, err))?;
        Ok(Self { config })
    }
}

/// Take ownership of a connected TCP socket the caller gives up (`socket.detach()`).
fn adopt(fd: i32) -> PyResult<TcpStream> {
    if fd < 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "not an open socket",
        ));
    }
    // SAFETY: the caller gives up an open TCP socket (socket.detach()): from here on the
    // stream owns the descriptor and closes it.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// A TLS connection over a connected socket the caller hands over (`socket.detach()`): a
/// client (the constructor) or a server's side (`accept`).
#[pyclass(module = "geminilive._native")]
struct TlsStream {
    inner: tls::TlsStream,
    received: Vec<u8>,
}

#[pymethods]
impl TlsStream {
    /// A client of `server_name`, trusting the system's CA certificates.
    #[new]
    fn new(py: Python<'_>, fd: i32, server_name: &str) -> PyResult<Self> {
        let sock = adopt(fd)?;
        let config = tls::system_client_config().map_err(|err| to_py(py, err))?;
        let inner =
            tls::TlsStream::client(sock, server_name, config).map_err(|err| to_py(py, err))?;
        Ok(Self::wrap(inner))
    }

    /// The server's side of a connection a client made on `fd`.
    #[staticmethod]
    fn accept(py: Python<'_>, fd: i32, config: &TlsServerConfig) -> PyResult<Self> {
        let inner = tls::TlsStream::server(adopt(fd)?, config.config.clone())
            .map_err(|err| to_py(py, err))?;
        Ok(Self::wrap(inner))
    }

    /// Advance the handshake: "done", "read" or "write" (what to wait for).
    fn handshake(&mut self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(
            match self.inner.handshake().map_err(|err| to_py(py, err))? {
                Handshake::Done => "done",
                Handshake::WantRead => "read",
                Handshake::WantWrite => "write",
            },
        )
    }

    /// Encrypt and write; True when nothing is left unsent.
    fn write(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<bool> {
        self.inner.write(data).map_err(|err| to_py(py, err))
    }

    /// Write what is left; True when all of it went.
    fn flush(&mut self, py: Python<'_>) -> PyResult<bool> {
        self.inner.flush().map_err(|err| to_py(py, err))
    }

    /// Plaintext bytes not yet all written.
    #[getter]
    fn unsent(&self) -> usize {
        self.inner.unsent()
    }

    /// What the socket holds, decrypted (b"" if nothing whole yet), and whether the stream
    /// is still open (False once the peer has ended it: nothing follows what this returns).
    fn read<'py>(&mut self, py: Python<'py>) -> PyResult<(Bound<'py, PyBytes>, bool)> {
        self.received.clear();
        let open = self
            .inner
            .read_into(&mut self.received)
            .map_err(|err| to_py(py, err))?;
        Ok((PyBytes::new(py, &self.received), open))
    }

    /// Close the socket, after a close_notify when `graceful` (best effort).
    fn close(&mut self, graceful: bool) {
        self.inner.close(graceful);
    }

    fn fileno(&self) -> i32 {
        self.inner.fileno()
    }
}

impl TlsStream {
    fn wrap(inner: tls::TlsStream) -> Self {
        Self {
            inner,
            received: Vec::with_capacity(64 * 1024),
        }
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TlsServerConfig>()?;
    m.add_class::<TlsStream>()
}
