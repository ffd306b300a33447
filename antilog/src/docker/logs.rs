//! Reading a container's log through the Docker API with hyper (HTTP/1.1 over the Unix
//! socket, or plain TCP), for every container.
//!
//! Why not bollard's `logs`: it takes `since` in whole seconds only, so resuming and the
//! read after a run's exit would fetch the whole last second again (233,634 lines for a
//! container printing at full speed); and it decodes a TTY log by buffering up to each
//! `\n`, losing a run's last output without newline and holding newline-free output
//! (progress bars redrawn with `\r`) without bound. Here `since` carries Docker's
//! nanosecond form (`secs.nanos`, inclusive), the body is read as it comes, and the
//! multiplexed stream of non-TTY containers (8-byte headers: stream, 3 zero bytes, u32 BE
//! length) is split into frames without a per-frame decoder. Endpoints we cannot speak to
//! directly (TLS, named pipes) fall back to bollard in the follower.
//!
//! Each request gets its own connection (`hyper::client::conn::http1`), driven by the task
//! that reads the body ([`body`]) rather than spawned: Docker writes every log message as
//! its own HTTP chunk, and a spawned connection task would hand the body over one chunk at a
//! time, waking the reader across threads for each line.

mod body;

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bollard::ClientVersion;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::Failure;
use crate::checkpoint::Position;
use crate::error::chain;
use body::Driven;
pub use body::LogBody;

/// Longest error body we read.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Connecting and receiving the response head must not take longer.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection being driven: resolves when it closes.
type Conn = Pin<Box<dyn std::future::Future<Output = hyper::Result<()>> + Send>>;

#[derive(Debug, Clone)]
enum Endpoint {
    Unix { socket: PathBuf },
    Tcp { authority: String },
}

/// Where and how to send log requests.
#[derive(Debug, Clone)]
pub struct LogClient {
    endpoint: Endpoint,
    /// `v1.41`: the version negotiated by bollard.
    api: String,
}

/// Docker's `since` for resuming at `pos`: its exact timestamp (Docker includes lines
/// stamped at `since`; the follower skips the ones already delivered), `0` for the start.
pub fn since_param(pos: &Position) -> String {
    if pos.at_ts == 0 {
        return "0".to_string();
    }
    format!(
        "{}.{:09}",
        pos.ts.div_euclid(1_000_000_000),
        pos.ts.rem_euclid(1_000_000_000)
    )
}

impl LogClient {
    /// The endpoint for `host` (as in the configuration; `None` = bollard's local default,
    /// honouring `DOCKER_HOST`), if it is one we can speak to directly.
    pub fn new(host: Option<&str>, version: &ClientVersion) -> Option<LogClient> {
        let env = std::env::var("DOCKER_HOST").ok();
        let host = match host {
            Some(h) => h.to_string(),
            None => env
                .filter(|h| h.starts_with("unix://"))
                .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string()),
        };
        let endpoint = if let Some(p) = host.strip_prefix("unix://") {
            Endpoint::Unix {
                socket: PathBuf::from(p),
            }
        } else if host.starts_with('/') {
            Endpoint::Unix {
                socket: PathBuf::from(&host),
            }
        } else if let Some(a) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            Endpoint::Tcp {
                authority: a.trim_end_matches('/').to_string(),
            }
        } else {
            return None;
        };
        Some(LogClient {
            endpoint,
            api: format!("v{}.{}", version.major_version, version.minor_version),
        })
    }

    /// `GET /containers/{id}/logs` with timestamps, both streams, all lines from `since`
    /// (see [`since_param`]), or with `from_end` (`tail=0`) none already written: a follow
    /// stream from the log's end. A TTY container's log is raw bytes, any other's
    /// multiplexed (the Content-Type says so only from API 1.42 on).
    pub async fn logs(
        &self,
        id: &str,
        since: &str,
        follow: bool,
        from_end: bool,
        tty: bool,
    ) -> Result<LogBody, Failure> {
        // Container ids are hex; anything else could smuggle bytes into the request line.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Failure::Permanent(format!("invalid container id {id:?}")));
        }
        let path = format!(
            "/{}/containers/{id}/logs?stdout=1&stderr=1&timestamps=1&tail={}&since={since}&follow={}",
            self.api,
            if from_end { "0" } else { "all" },
            u8::from(follow)
        );
        match tokio::time::timeout(HEAD_TIMEOUT, self.request(&path, !tty)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Transient(
                "timed out waiting for Docker's answer".to_string(),
            )),
        }
    }

    async fn request(&self, path: &str, mux: bool) -> Result<LogBody, Failure> {
        let (status, driven) = match &self.endpoint {
            Endpoint::Unix { socket } => {
                let io = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|e| unreachable(&e))?;
                // Docker ignores the host of a request over its socket; HTTP/1.1 wants one.
                get(TokioIo::new(io), "docker", path).await?
            }
            Endpoint::Tcp { authority } => {
                let io = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|e| unreachable(&e))?;
                // Log lines are small writes read as they come.
                let _ = io.set_nodelay(true);
                get(TokioIo::new(io), authority, path).await?
            }
        };
        if status == 200 {
            return Ok(LogBody::new(driven, mux));
        }
        Err(error_answer(status, driven).await)
    }
}

/// Sends `GET path` over `io`, driving the connection until the response head is in.
async fn get<T>(io: T, host: &str, path: &str) -> Result<(u16, Driven), Failure>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Permanent(format!("bad Docker request: {e}")))?;
    let (mut sender, conn) = http1::Builder::new()
        .handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(|e| unreachable(&e))?;
    let mut conn: Conn = Box::pin(conn);
    let answer = sender.send_request(req);
    tokio::pin!(answer);
    let (resp, conn) = tokio::select! {
        biased;
        r = &mut answer => (r, Some(conn)),
        // Closed before the head came: the answer says why (its error, or the head
        // read just before the close).
        _ = &mut conn => (answer.await, None),
    };
    let resp = resp.map_err(|e| unreachable(&e))?;
    // No further request: the connection closes once the body is read.
    drop(sender);
    let status = resp.status().as_u16();
    Ok((status, Driven::new(resp.into_body(), conn)))
}

fn unreachable(e: &dyn std::error::Error) -> Failure {
    Failure::Transient(format!("cannot reach the Docker engine: {}", chain(e)))
}

/// The failure an answer other than 200 stands for; its body is `{"message": "..."}`.
async fn error_answer(status: u16, mut driven: Driven) -> Failure {
    let mut buf = Vec::new();
    while buf.len() < MAX_ERROR_BODY {
        match driven.data().await {
            Some(Ok(d)) => buf.extend_from_slice(&d[..d.len().min(MAX_ERROR_BODY - buf.len())]),
            _ => break,
        }
    }
    let message = serde_json::from_slice::<serde_json::Value>(&buf)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&buf).into_owned());
    match status {
        404 => Failure::NotFound,
        408 | 429 => Failure::Transient(format!("HTTP {status}: {message}")),
        s if s >= 500 && s != 501 => Failure::Transient(format!("HTTP {status}: {message}")),
        _ => Failure::Permanent(format!("HTTP {status}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_the_exact_nanosecond() {
        assert_eq!(since_param(&Position::default()), "0");
        let pos = Position {
            seq: 3,
            ts: 1_700_000_000_000_000_042,
            at_ts: 2,
            file: None,
        };
        assert_eq!(since_param(&pos), "1700000000.000000042");
    }

    #[test]
    fn endpoints() {
        let v = ClientVersion {
            major_version: 1,
            minor_version: 41,
        };
        let c = LogClient::new(Some("unix:///run/d.sock"), &v).unwrap();
        assert!(
            matches!(&c.endpoint, Endpoint::Unix { socket, .. } if socket == &PathBuf::from("/run/d.sock"))
        );
        assert_eq!(c.api, "v1.41");
        let c = LogClient::new(Some("tcp://10.0.0.1:2375"), &v).unwrap();
        assert!(
            matches!(&c.endpoint, Endpoint::Tcp { authority, .. } if authority == "10.0.0.1:2375")
        );
        assert!(LogClient::new(Some("https://x:2376"), &v).is_none());
    }
}
