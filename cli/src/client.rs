//! The HTTP client: one `reqwest::Client` for the whole command, the bearer token on every
//! request, and the server's error body turned into its message.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

use crate::args::Global;

/// Why a command could not do its work (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered an error; `message` is the one it sent.
    #[error("{message} (HTTP {status})")]
    Server { status: StatusCode, message: String },
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(g: &Global) -> Result<Client> {
        let url = reqwest::Url::parse(&g.url)
            .map_err(|e| Error::Invalid(format!("invalid --url {:?}: {e}", g.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Invalid(format!(
                "--url {:?} must be an http:// or https:// URL",
                g.url
            )));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("logarithm-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &g.ca_file {
            let certs = reqwest::Certificate::from_pem_bundle(&read(path)?).map_err(|e| {
                Error::Invalid(format!(
                    "{} holds no valid PEM certificate: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(Error::Invalid(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
            builder = builder.tls_built_in_root_certs(false);
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&g.client_cert, &g.client_key) {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend_from_slice(&read(key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                Error::Invalid(format!(
                    "{} and {} are not a PEM certificate and private key: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: g.url.trim_end_matches('/').to_owned(),
            token: g.token.clone().filter(|t| !t.is_empty()),
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends, and turns an error answer into [`Error::Server`] with the server's message.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await.map_err(|source| Error::Connect {
            url: self.base.clone(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(Error::Server {
            status,
            message: server_message(&body, status),
        })
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        self.json(resp).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let resp = self
            .send(self.request(Method::POST, path).json(body))
            .await?;
        self.json(resp).await
    }

    pub async fn json(&self, resp: Response) -> Result<Value> {
        resp.json().await.map_err(|source| Error::Connect {
            url: self.base.clone(),
            source,
        })
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        context: format!("reading {}", path.display()),
        source,
    })
}

/// The message of `{"error": {"message": …}}` (logarithmd) or `{"message": …}` (the Loki
/// routes), else the body itself, else the status text.
pub fn server_message(body: &str, status: StatusCode) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        if let Some(m) = v["error"]["message"].as_str().or(v["message"].as_str()) {
            return m.to_owned();
        }
    }
    let trimmed = body.trim();
    if trimmed.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        trimmed.chars().take(500).collect()
    }
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from pairs (values encoded), `?a=b&c=d`, or empty.
pub fn query(pairs: &[(&str, String)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_error_bodies() {
        let s = StatusCode::UNAUTHORIZED;
        assert_eq!(
            server_message(
                r#"{"error":{"code":"unauthorized","message":"missing or invalid bearer token"}}"#,
                s
            ),
            "missing or invalid bearer token"
        );
        assert_eq!(
            server_message(r#"{"status":"error","message":"bad"}"#, s),
            "bad"
        );
        assert_eq!(server_message("plain text\n", s), "plain text");
        assert_eq!(server_message("", s), "Unauthorized");
    }

    #[test]
    fn encoding() {
        assert_eq!(enc("a b/c=d&é"), "a%20b%2Fc%3Dd%26%C3%A9");
        assert_eq!(
            query(&[("flow", "x y".into()), ("label", "k=v".into())]),
            "?flow=x%20y&label=k%3Dv"
        );
        assert_eq!(query(&[]), "");
    }
}
