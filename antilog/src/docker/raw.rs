//! A minimal reader of a TTY container's log as raw bytes, over the Docker socket.
//!
//! bollard decodes a TTY log by buffering up to each `\n`: a run's last output without
//! newline is lost (`bytes remaining on stream` at EOF) and newline-free output (progress
//! bars redrawn with `\r`) is buffered without bound and delivered late. For TTY containers
//! the follower therefore reads the log endpoint itself: an HTTP/1.0 request (so the body
//! is neither chunked nor kept alive: it is the raw log, up to the connection's end) on the
//! same Unix socket or plain TCP endpoint bollard uses. Other endpoints (TLS, named pipes)
//! fall back to bollard.

use std::path::PathBuf;
use std::time::Duration;

use bollard::ClientVersion;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::Failure;

/// Longest response head we accept.
const MAX_HEAD: usize = 16 << 10;
/// Longest error body we read.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Bytes per read of the body (bounds memory per TTY follower).
const READ_SIZE: usize = 64 << 10;
/// Connecting and receiving the response head must not take longer.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

/// Where and how to send raw log requests.
#[derive(Debug, Clone)]
pub struct RawClient {
    endpoint: Endpoint,
    /// `v1.41`: the version negotiated by bollard.
    api: String,
}

trait Conn: AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

/// A log body being read.
pub struct RawBody {
    conn: Box<dyn Conn>,
    /// Body bytes that arrived with the head.
    first: Option<Bytes>,
}

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawBody").finish_non_exhaustive()
    }
}

impl RawClient {
    /// The raw endpoint for `host` (as in the configuration; `None` = bollard's local
    /// default, honouring `DOCKER_HOST`), if it is one we can speak to directly.
    pub fn new(host: Option<&str>, version: &ClientVersion) -> Option<RawClient> {
        let env = std::env::var("DOCKER_HOST").ok();
        let host = match host {
            Some(h) => h.to_string(),
            None => env
                .filter(|h| h.starts_with("unix://"))
                .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string()),
        };
        let endpoint = if let Some(p) = host.strip_prefix("unix://") {
            Endpoint::Unix(PathBuf::from(p))
        } else if host.starts_with('/') {
            Endpoint::Unix(PathBuf::from(host))
        } else if let Some(a) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            Endpoint::Tcp(a.trim_end_matches('/').to_string())
        } else {
            return None;
        };
        Some(RawClient {
            endpoint,
            api: format!("v{}.{}", version.major_version, version.minor_version),
        })
    }

    /// Requests `GET /containers/{id}/logs` with timestamps, both streams, all lines.
    pub async fn logs(&self, id: &str, since: i64, follow: bool) -> Result<RawBody, Failure> {
        // Container ids are hex; anything else could smuggle bytes into the request line.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Failure::Permanent(format!("invalid container id {id:?}")));
        }
        let path = format!(
            "/{}/containers/{id}/logs?stdout=1&stderr=1&timestamps=1&tail=all&since={since}&follow={}",
            self.api,
            u8::from(follow)
        );
        match tokio::time::timeout(HEAD_TIMEOUT, self.request(&path)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Transient(
                "timed out waiting for Docker's answer".to_string(),
            )),
        }
    }

    async fn request(&self, path: &str) -> Result<RawBody, Failure> {
        let io_err = |what: &str, e: std::io::Error| Failure::Transient(format!("{what}: {e}"));
        let mut conn: Box<dyn Conn> = match &self.endpoint {
            Endpoint::Unix(p) => Box::new(
                tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| io_err("cannot connect to the Docker socket", e))?,
            ),
            Endpoint::Tcp(a) => Box::new(
                tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(|e| io_err("cannot connect to Docker", e))?,
            ),
        };
        let req = format!("GET {path} HTTP/1.0\r\nHost: docker\r\nUser-Agent: antilog\r\n\r\n");
        conn.write_all(req.as_bytes())
            .await
            .map_err(|e| io_err("cannot send the request", e))?;
        let mut buf = BytesMut::with_capacity(4096);
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            if buf.len() > MAX_HEAD {
                return Err(Failure::Transient("response head too long".to_string()));
            }
            let n = conn
                .read_buf(&mut buf)
                .await
                .map_err(|e| io_err("cannot read the response", e))?;
            if n == 0 {
                return Err(Failure::Transient(
                    "connection closed before the response head".to_string(),
                ));
            }
        };
        let head = buf.split_to(head_end + 4);
        let status = parse_status(&head)
            .ok_or_else(|| Failure::Transient("malformed response status line".to_string()))?;
        if status == 200 {
            return Ok(RawBody {
                conn,
                first: (!buf.is_empty()).then(|| buf.freeze()),
            });
        }
        // An error: its body is `{"message": "..."}`.
        while buf.len() < MAX_ERROR_BODY {
            match conn.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let message = serde_json::from_slice::<serde_json::Value>(&buf)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&buf).into_owned());
        Err(match status {
            404 => Failure::NotFound,
            408 | 429 => Failure::Transient(format!("HTTP {status}: {message}")),
            s if s >= 500 && s != 501 => Failure::Transient(format!("HTTP {status}: {message}")),
            _ => Failure::Permanent(format!("HTTP {status}: {message}")),
        })
    }
}

impl RawBody {
    /// The next chunk of the log; `None` at its end.
    pub async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        if let Some(b) = self.first.take() {
            return Some(Ok(b));
        }
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        match self.conn.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some(Ok(buf.freeze())),
            Err(e) => Some(Err(e)),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `HTTP/1.x 200 OK` -> 200.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_status() {
        let v = ClientVersion {
            major_version: 1,
            minor_version: 41,
        };
        let c = RawClient::new(Some("unix:///run/d.sock"), &v).unwrap();
        assert_eq!(c.endpoint, Endpoint::Unix("/run/d.sock".into()));
        assert_eq!(c.api, "v1.41");
        let c = RawClient::new(Some("tcp://10.0.0.1:2375"), &v).unwrap();
        assert_eq!(c.endpoint, Endpoint::Tcp("10.0.0.1:2375".into()));
        assert!(RawClient::new(Some("https://x:2376"), &v).is_none());
        assert_eq!(
            parse_status(b"HTTP/1.0 501 Not Implemented\r\n\r\n"),
            Some(501)
        );
        assert_eq!(parse_status(b"garbage"), None);
    }
}
