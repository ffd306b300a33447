//! Delivers the spool's batches to logarithmd, one at a time and in order, until each is
//! acknowledged.
//!
//! A batch counts as delivered only on a 2xx answer (an [`IngestAck`], sent by logarithmd
//! after its commit); only then are the frame's checkpoint effects applied (see
//! [`crate::checkpoint`]; the file follows within [`crate::checkpoint::WRITE_INTERVAL`]) and
//! does the spool move past it. Failures never drop data:
//! - transient (connection error, timeout, 408, 5xx, 429/503 with `Retry-After`): retry the
//!   same bytes with exponential backoff and jitter (100 ms doubling to 30 s);
//! - permanent (400, 401, 403, 413, other 4xx): log the server's message at error level and
//!   retry at the longest interval, so fixing the server or token resumes delivery.
//!
//! While a batch is retried nothing else is sent and the spool fills up; once it is full the
//! pipeline stalls with bounded memory and disk instead of reordering or dropping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::checkpoint::CheckpointStore;
use crate::config::{Compression, Config};
use crate::error::{Error, ErrorKind};
use crate::metrics::{Metrics, ShipFailure};
use crate::spool;
use bytes::Bytes;
use protocol::{Batch, ErrorBody, IngestAck};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Upper bound on an honoured `Retry-After`, so a bogus header cannot park the agent.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);
/// Error bodies are read up to this size (they are small JSON documents).
const ERROR_BODY_MAX: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct Shipper {
    client: reqwest::Client,
    url: String,
    auth: Option<HeaderValue>,
    metrics: Arc<Metrics>,
}

/// How one attempt failed.
#[derive(Debug)]
enum Failure {
    /// Retry with backoff; at least after `retry_after` if the server said so.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying soon will not help; retry at the longest interval.
    Permanent(String),
}

impl Shipper {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Shipper, Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("antilog/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::with_source(ErrorKind::Http, "cannot build HTTP client", e))?;
        let auth = match config.effective_token() {
            Some(t) => Some(HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| {
                Error::with_source(ErrorKind::Config, "token is not a valid header value", e)
            })?),
            None => {
                tracing::warn!("no token configured: requests carry no Authorization header");
                None
            }
        };
        Ok(Shipper {
            client,
            url: config.ingest_url(),
            auth,
            metrics,
        })
    }

    /// Ships the spool's batches until the spool is closed and everything in it delivered.
    /// Each frame is the request body as spooled, with its own compression; once it is
    /// acknowledged, its checkpoint effects are applied to `store`.
    pub async fn run(self, spool: spool::Reader, store: Arc<CheckpointStore>) {
        while let Some(frame) = spool.next().await {
            if !frame.body.is_empty() {
                let handed = Instant::now();
                let records = frame.meta.records as usize;
                self.deliver(frame.body.clone(), frame.meta.compression, records)
                    .await;
                self.metrics
                    .batch_shipped(records, frame.meta.newest_ts, handed.elapsed());
            }
            // An empty body carries only effects: nothing to send.
            acknowledged(&store, &frame);
            spool.ack().await;
        }
    }

    /// Sends `body` until it is acknowledged.
    async fn deliver(&self, body: Bytes, compression: Compression, records: usize) {
        let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let delay = match self.attempt(body.clone(), compression).await {
                Ok(ack) => {
                    tracing::debug!(
                        records,
                        stored = ack.as_ref().map(|a| a.stored),
                        duplicates = ack.as_ref().map(|a| a.duplicates),
                        attempt,
                        "batch acknowledged"
                    );
                    return;
                }
                Err(Failure::Transient {
                    reason,
                    retry_after,
                }) => {
                    let d = backoff.next_delay();
                    let d = retry_after.map_or(d, |r| r.min(RETRY_AFTER_MAX).max(d));
                    tracing::warn!(%reason, attempt, retry_in = ?d, "batch not delivered; retrying");
                    d
                }
                Err(Failure::Permanent(reason)) => {
                    let d = backoff.max();
                    tracing::error!(%reason, attempt, retry_in = ?d, "logarithmd rejected the batch; retrying at the longest interval");
                    d
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        body: Bytes,
        compression: Compression,
    ) -> Result<Option<IngestAck>, Failure> {
        let mut req = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(enc) = compression.content_encoding() {
            req = req.header(CONTENT_ENCODING, enc);
        }
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let resp = req.send().await.map_err(|e| {
            self.metrics.ship_failed(if e.is_timeout() {
                ShipFailure::Timeout
            } else {
                ShipFailure::Connect
            });
            Failure::Transient {
                reason: error_chain(&e),
                retry_after: None,
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            // Delivered whatever the body says; an unreadable ack is only worth a warning.
            // An ack is a tiny JSON object: a body announced larger is not read at all.
            if resp
                .content_length()
                .is_some_and(|n| n > ERROR_BODY_MAX as u64)
            {
                tracing::warn!("2xx answer with an oversized body; not read");
                return Ok(None);
            }
            return match resp.json::<IngestAck>().await {
                Ok(ack) => Ok(Some(ack)),
                Err(e) => {
                    tracing::warn!(error = %e, "2xx answer without a readable IngestAck");
                    Ok(None)
                }
            };
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        self.metrics
            .ship_failed(ShipFailure::of_status(status.as_u16()));
        let message = read_error(resp).await;
        let reason = format!("HTTP {status}: {message}");
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Failure::Transient {
                reason,
                retry_after,
            },
            StatusCode::REQUEST_TIMEOUT => Failure::Transient {
                reason,
                retry_after: None,
            },
            s if s.is_server_error() => Failure::Transient {
                reason,
                retry_after: None,
            },
            _ => Failure::Permanent(reason),
        })
    }
}

/// Applies the checkpoint effects of a frame logarithmd acknowledged (in frame order: the
/// shipper acknowledges frames one at a time).
pub fn acknowledged(store: &CheckpointStore, frame: &spool::segment::Frame) {
    let effects = frame.effects.iter().map(|(id, e)| (&**id, e));
    if frame.replayed {
        store.apply_replayed(effects);
    } else {
        store.apply(effects);
    }
}

impl Compression {
    fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::Zstd => Some("zstd"),
            Compression::Gzip => Some("gzip"),
            Compression::None => None,
        }
    }
}

/// Serializes and compresses a batch (CPU-bound: called off the async threads).
pub fn encode(batch: &Batch, compression: Compression) -> Result<Bytes, std::io::Error> {
    let json = serde_json::to_vec(batch)?;
    let body = match compression {
        Compression::None => json,
        Compression::Zstd => zstd::bulk::compress(&json, 3)?,
        Compression::Gzip => {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(json.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(&json)?;
            enc.finish()?
        }
    };
    Ok(Bytes::from(body))
}

/// The server's error message (its JSON `ErrorBody`, else the raw text), bounded.
async fn read_error(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < ERROR_BODY_MAX {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c[..c.len().min(ERROR_BODY_MAX - buf.len())]),
            Ok(None) => break,
            Err(e) => return format!("(error body unreadable: {e})"),
        }
    }
    match serde_json::from_slice::<ErrorBody>(&buf) {
        Ok(b) => format!("{} ({})", b.error.message, b.error.code),
        Err(_) if buf.is_empty() => "(empty body)".to_string(),
        Err(_) => String::from_utf8_lossy(&buf).into_owned(),
    }
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Agent;

    #[test]
    fn encodings_round_trip() {
        let batch = Batch {
            version: 1,
            agent: Agent {
                id: "a".into(),
                node: "n".into(),
            },
            segments: vec![],
        };
        let json = serde_json::to_vec(&batch).unwrap();
        assert_eq!(&encode(&batch, Compression::None).unwrap()[..], &json[..]);
        let z = encode(&batch, Compression::Zstd).unwrap();
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), json);
        let g = encode(&batch, Compression::Gzip).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&g[..]), &mut out).unwrap();
        assert_eq!(out, json);
    }
}
