//! antilog's one HTTP client to logarithmd: timeouts, user agent and TLS. With `[tls]`,
//! `ca_file` pins the CA that signs logarithmd's certificate (the system roots are then not
//! trusted), and `client_cert` + `client_key` present a client certificate (mutual TLS).
//! Files are read once, at start: a missing or invalid file is a configuration error.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, ErrorKind};

/// `[tls]` of antilog's configuration (the CLI takes the same three settings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM file with the CA certificate(s) logarithmd's certificate must chain to. When set,
    /// only these are trusted (the system roots are not).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate (chain) to present (mutual TLS).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

impl ClientTls {
    /// Checks that the client certificate and key come together.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) | (None, Some(_)) => {
                Err("tls.client_cert and tls.client_key go together".into())
            }
            _ => Ok(()),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            format!("cannot read TLS file {}", path.display()),
            e,
        )
    })
}

fn invalid(what: String, e: reqwest::Error) -> Error {
    Error::with_source(ErrorKind::Config, what, e)
}

/// The client every request to logarithmd goes through.
pub fn build(config: &Config) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .user_agent(concat!("antilog/", env!("CARGO_PKG_VERSION")));
    let tls = &config.tls;
    if let Some(ca) = &tls.ca_file {
        let pem = read(ca)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            invalid(
                format!("{} holds no valid PEM certificate", ca.display()),
                e,
            )
        })?;
        if certs.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{} holds no PEM certificate", ca.display()),
            ));
        }
        builder = builder.tls_built_in_root_certs(false);
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let mut pem = read(cert)?;
        pem.push(b'\n');
        pem.extend_from_slice(&read(key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            invalid(
                format!(
                    "{} and {} are not a PEM certificate and private key",
                    cert.display(),
                    key.display()
                ),
                e,
            )
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| Error::with_source(ErrorKind::Http, "cannot build HTTP client", e))
}
