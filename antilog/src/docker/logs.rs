//! Reading a container's log through the Docker API with hyper (over the Unix socket with
//! hyperlocal, or plain TCP), for every container.
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

use std::path::PathBuf;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::ClientVersion;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;

use super::Failure;
use crate::checkpoint::Position;
use crate::error::chain;

/// Longest error body we read.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Largest multiplexed frame accepted (Docker's are one log message: at most 16 KiB of
/// line plus its timestamp, or a journald entry); a larger length is a broken stream.
const MAX_FRAME: usize = 16 << 20;
/// Connecting and receiving the response head must not take longer.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// The stream byte of Docker's error messages in a multiplexed log (`stdcopy.Systemerr`).
const SYSTEM_ERR: u8 = 3;

#[derive(Debug, Clone)]
enum Endpoint {
    Unix {
        client: Client<UnixConnector, Empty<Bytes>>,
        socket: PathBuf,
    },
    Tcp {
        client: Client<HttpConnector, Empty<Bytes>>,
        authority: String,
    },
}

/// Where and how to send log requests.
#[derive(Debug, Clone)]
pub struct LogClient {
    endpoint: Endpoint,
    /// `v1.41`: the version negotiated by bollard.
    api: String,
}

/// A log body being read.
pub struct LogBody {
    body: Incoming,
    /// Multiplexed (non-TTY) or raw (TTY) stream.
    mux: bool,
    buf: BytesMut,
    done: bool,
}

impl std::fmt::Debug for LogBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBody")
            .field("mux", &self.mux)
            .finish_non_exhaustive()
    }
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
        let unix = |p: &str| Endpoint::Unix {
            client: Client::builder(TokioExecutor::new()).build(UnixConnector),
            socket: PathBuf::from(p),
        };
        let endpoint = if let Some(p) = host.strip_prefix("unix://") {
            unix(p)
        } else if host.starts_with('/') {
            unix(&host)
        } else if let Some(a) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            Endpoint::Tcp {
                client: Client::builder(TokioExecutor::new()).build_http(),
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
        let failed = |e: &dyn std::error::Error| {
            Failure::Transient(format!("cannot reach the Docker engine: {}", chain(e)))
        };
        let resp = match &self.endpoint {
            Endpoint::Unix { client, socket } => {
                let uri: hyper::Uri = hyperlocal::Uri::new(socket, path).into();
                client.get(uri).await.map_err(|e| failed(&e))?
            }
            Endpoint::Tcp { client, authority } => {
                let uri: hyper::Uri = format!("http://{authority}{path}")
                    .parse()
                    .map_err(|e| Failure::Permanent(format!("bad Docker URL: {e}")))?;
                client.get(uri).await.map_err(|e| failed(&e))?
            }
        };
        let status = resp.status().as_u16();
        let body = resp.into_body();
        if status == 200 {
            return Ok(LogBody {
                body,
                mux,
                buf: BytesMut::new(),
                done: false,
            });
        }
        // An error: its body is `{"message": "..."}`.
        let mut buf = Vec::new();
        let mut body = body;
        while buf.len() < MAX_ERROR_BODY {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        buf.extend_from_slice(&d[..d.len().min(MAX_ERROR_BODY - buf.len())]);
                    }
                }
                _ => break,
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

impl LogBody {
    /// The next piece of the log (a frame of one stream, or a chunk of a TTY log); `None`
    /// at its end.
    pub async fn next(&mut self) -> Option<Result<LogOutput, Failure>> {
        loop {
            if self.mux {
                match next_frame(&mut self.buf) {
                    Ok(Some(out)) => return Some(Ok(out)),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.done {
                if self.buf.is_empty() {
                    return None;
                }
                self.buf.clear();
                return Some(Err(Failure::Transient(
                    "the log stream ended inside a frame".to_string(),
                )));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(Failure::Transient(format!(
                        "reading the log failed: {}",
                        chain(&e)
                    ))));
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if !self.mux {
                        return Some(Ok(LogOutput::Console { message: data }));
                    }
                    self.buf.extend_from_slice(&data);
                }
            }
        }
    }
}

/// Takes one whole multiplexed frame from the front of `buf`.
fn next_frame(buf: &mut BytesMut) -> Result<Option<LogOutput>, Failure> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if size > MAX_FRAME {
        buf.clear();
        return Err(Failure::Transient(format!(
            "log frame of {size} bytes: not a Docker log stream"
        )));
    }
    if buf.len() < 8 + size {
        return Ok(None);
    }
    let stream = buf[0];
    buf.advance(8);
    let message = buf.split_to(size).freeze();
    Ok(Some(match stream {
        0 => LogOutput::StdIn { message },
        2 => LogOutput::StdErr { message },
        // Stream 3 (`Systemerr`): Docker's own error, written into the log stream when its
        // reader failed (`Error grabbing logs: ...`), never the container's output. It
        // comes out as `Console`, which a multiplexed stream has no other use for.
        SYSTEM_ERR => LogOutput::Console { message },
        _ => LogOutput::StdOut { message },
    }))
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

    #[test]
    fn frames_are_split_across_chunks() {
        let mut wire = Vec::new();
        for (stream, msg) in [
            (1u8, &b"out line\n"[..]),
            (2, b"err"),
            (1, b""),
            (3, b"Error grabbing logs: x\n"),
        ] {
            wire.extend_from_slice(&[stream, 0, 0, 0]);
            wire.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            wire.extend_from_slice(msg);
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        // Fed 3 bytes at a time: frames come out whole and in order.
        for chunk in wire.chunks(3) {
            buf.extend_from_slice(chunk);
            while let Some(out) = next_frame(&mut buf).unwrap() {
                got.push(match out {
                    LogOutput::StdOut { message } => (1, message),
                    LogOutput::StdErr { message } => (2, message),
                    LogOutput::Console { message } => (3, message),
                    other => panic!("{other:?}"),
                });
            }
        }
        assert!(buf.is_empty());
        assert_eq!(
            got,
            vec![
                (1, Bytes::from_static(b"out line\n")),
                (2, Bytes::from_static(b"err")),
                (1, Bytes::new()),
                (3, Bytes::from_static(b"Error grabbing logs: x\n"))
            ]
        );
        let mut bad = BytesMut::from(&[1u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(next_frame(&mut bad).is_err());
    }
}
