//! HTTPS for logarithmd with rustls: a certificate and key file, optionally a CA whose
//! client certificates are required (mutual TLS). [`TlsListener`] hands axum connections
//! whose handshake is done; handshakes run in their own tasks (bounded, with a deadline)
//! so a slow client cannot hold up others. [`TlsFiles::reload`] re-reads the files (on
//! SIGHUP): new connections use the new certificate, open ones keep theirs, and a reload
//! that fails keeps the old certificate and logs why.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Handshakes in progress at once; beyond, accepting waits.
const MAX_HANDSHAKES: usize = 256;
/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[tls]`: serve HTTPS instead of HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate chain (leaf first). Re-read on SIGHUP.
    pub cert: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1). Re-read on
    /// SIGHUP.
    pub key: PathBuf,
    /// PEM file with the CA certificates that sign client certificates. When set, every
    /// client must present a certificate signed by one of them (mutual TLS); handshakes
    /// without one, or with one from another CA, are refused and logged. Re-read on SIGHUP.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid TLS setup: {0}")]
    Invalid(String),
}

/// The files and the server configuration built from them, swapped on reload.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    config: TlsConfig,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl TlsFiles {
    /// Reads the files; fails when any is missing or invalid.
    pub fn load(config: TlsConfig) -> Result<TlsFiles, TlsError> {
        let server = build(&config)?;
        Ok(TlsFiles {
            config,
            current: Arc::new(RwLock::new(Arc::new(server))),
        })
    }

    /// Re-reads the files. On failure the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let server = build(&self.config)?;
        match self.current.write() {
            Ok(mut cur) => *cur = Arc::new(server),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(server),
        }
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        let cur = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(cur)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |reason: String| TlsError::File {
        path: path.clone(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn build(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(&config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| TlsError::File {
        path: config.key.clone(),
        reason: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Invalid(format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Invalid(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid(format!("certificate and key: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}

/// A listener whose connections have finished their TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accepting: tokio_util::task::AbortOnDropHandle<()>,
}

impl TlsListener {
    /// Accepts on `tcp`, handshaking with the current certificate of `files`.
    pub fn new(tcp: TcpListener, files: TlsFiles) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(tcp, files, tx));
        Ok(TlsListener {
            ready,
            local,
            _accepting: tokio_util::task::AbortOnDropHandle::new(accepting),
        })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    files: TlsFiles,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            _ = tx.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = files.acceptor();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "TLS handshake refused");
                }
                Err(_) => {
                    tracing::warn!(%peer, "TLS handshake did not finish in time");
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop ended (it only does when this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
