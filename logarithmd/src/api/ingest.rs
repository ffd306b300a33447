//! `POST /api/v1/ingest`: authenticate, bound, decompress, validate, parse COUT, commit,
//! acknowledge. The answer is sent only after the whole batch is committed; a rejected
//! batch writes nothing.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use protocol::{Batch, IngestAck, Stream, MAX_ANNOTATIONS_BYTES, SUPPORTED_VERSIONS};
use serde::Deserialize;
use storage::{
    ApplyOutcome, CoResultWrite, ExitWrite, JobMeta, JobWrite, NewLine, OutputWrite, WriteBatch,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, ApiResult};
use super::ingest_order::{self, BatchOrder};
use super::AppState;
use crate::cout;
use crate::metrics::{CommittedBatch, GaugeGuard};

/// Longest line accepted in one record. Agents split longer lines into continuation
/// records; this keeps every stored row well under TiDB's default 6 MiB entry limit.
pub const MAX_RECORD_BYTES: usize = 4 << 20;
/// Longest container id accepted.
const MAX_CONTAINER_ID: usize = 128;

/// Bounds the batches being written and waiting to be written, so memory stays bounded and
/// a slow database turns into 503s (which agents retry) instead of a growing pile.
pub struct IngestGate {
    writers: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    timeout: Duration,
}

impl IngestGate {
    pub fn new(concurrency: usize, max_waiting: usize, timeout: Duration) -> IngestGate {
        IngestGate {
            writers: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            timeout,
        }
    }

    async fn enter(&self) -> ApiResult<OwnedSemaphorePermit> {
        if let Ok(p) = self.writers.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::overloaded("ingest queue is full; retry later", 1));
        }
        let res = tokio::time::timeout(self.timeout, self.writers.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match res {
            Ok(Ok(p)) => Ok(p),
            _ => Err(ApiError::overloaded(
                "storage is not keeping up; retry later",
                2,
            )),
        }
    }

    /// Batches waiting for a writer now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<([(&'static str, &'static str); 1], Json<IngestAck>)> {
    let arrived = Instant::now();
    let result = ingest_batch(&state, &headers, body, arrived).await;
    state.metrics.ingest_answered(match &result {
        Ok(_) => StatusCode::OK.as_u16(),
        Err(e) => e.status().as_u16(),
    });
    // This server stores a batch after the ones it names (see `ingest_order`).
    result.map(|ack| ([(protocol::ORDERED_INGEST_HEADER, "1")], ack))
}

async fn ingest_batch(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    arrived: Instant,
) -> ApiResult<Json<IngestAck>> {
    state.auth.require(headers, crate::auth::Scope::Ingest)?;
    let order = BatchOrder::from_headers(headers)?;
    let mut permit = state.ingest_gate.enter().await?;
    let _in_flight = GaugeGuard::new(&state.metrics.ingest_in_flight);
    let raw = read_limited(headers, body, state.config.max_body_bytes).await?;
    state.metrics.ingest_request_bytes.inc_by(raw.len() as u64);
    // Decompressing, parsing and COUT-scanning up to 64 MiB is CPU work: it runs on the
    // blocking pool so it never stalls the async workers serving other requests.
    let limit = state.config.max_decompressed_bytes;
    let headers_owned = headers.clone();
    let (records, write) = tokio::task::spawn_blocking(move || -> ApiResult<(u64, WriteBatch)> {
        let json = decompress(&headers_owned, raw, limit)?;
        let batch = parse_batch(&json)?;
        let records = batch.segments.iter().map(|s| s.records.len() as u64).sum();
        Ok((records, to_write_batch(batch)?))
    })
    .await
    .map_err(|e| ApiError::internal("decoding an ingest batch panicked", &e))??;
    // Decoded beside the batches it follows; masked and stored after them (masking reads
    // where the job's stored log ends, so it must see them).
    if !state.ingest_order.all_committed(&order.after) {
        drop(permit);
        permit = wait_for_predecessors(state, &order, &write).await?;
    }
    // Before storage: the database never holds a secret.
    let write = mask(state, write).await?;
    let write_started = Instant::now();
    // A hung database must not hold a writer slot for long: past the deadline the agent
    // is told to retry (the resend is deduplicated even if this write still commits).
    let applied = match tokio::time::timeout(
        state.config.storage_write_timeout,
        state.storage.apply(&write),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(storage::Error::new(
            storage::ErrorKind::Timeout,
            format!(
                "writing the batch took longer than {:?}",
                state.config.storage_write_timeout
            ),
        )),
    };
    state
        .metrics
        .storage_write_duration
        .observe(write_started.elapsed().as_secs_f64());
    let outcome = applied.map_err(|e| {
        state.metrics.storage_write_failed(&e);
        ApiError::storage("writing an ingest batch failed", &e)
    })?;
    state
        .metrics
        .ingest_committed(&committed(&write, records, &outcome), arrived.elapsed());
    // Committed: followers get the lines now (moved, not copied), then the events go out.
    state.live.jobs.publish(write, &outcome.events);
    state.notify(&outcome);
    // Only now may the batches after this one go: followers get the lines in order.
    if let Some(id) = order.id {
        state.ingest_order.committed(id);
    }
    drop(permit);
    Ok(Json(IngestAck {
        records,
        stored: outcome.stored,
        duplicates: outcome.duplicates,
    }))
}

/// Waits, without a writer slot, until the batches `order` names are stored, then for a
/// writer. Batches waiting never hold up the ones they wait for: those need no room, and
/// a batch that finds none is answered 503 at once, never waiting for it. The room is
/// held until a writer is found, so the decoded batch counts against the bound all along.
async fn wait_for_predecessors(
    state: &AppState,
    order: &BatchOrder,
    write: &WriteBatch,
) -> ApiResult<OwnedSemaphorePermit> {
    let room = state.ingest_order.hold(ingest_order::decoded_bytes(write));
    if room.is_none() && !state.ingest_order.all_committed(&order.after) {
        state.metrics.ingest_order_refused.inc();
        return Err(ApiError::overloaded(
            "too many batches are waiting for the batches they follow; retry later",
            1,
        ));
    }
    state
        .ingest_order
        .wait_for(&order.after, state.config.ingest_order_wait)
        .await?;
    let permit = state.ingest_gate.enter().await?;
    drop(room);
    Ok(permit)
}

/// Masks each job of the batch with its masks (global, and its flow's secrets), on the
/// blocking pool. A failed lookup of a job's masks refuses the batch.
async fn mask(state: &AppState, mut write: WriteBatch) -> ApiResult<WriteBatch> {
    let masks = state.run_masks.for_batch(&write).await.map_err(|e| {
        ApiError::storage("finding the secrets of an ingest batch's jobs failed", &e)
    })?;
    if !masks.iter().any(|m| m.masker.is_active()) {
        return Ok(write);
    }
    tokio::task::spawn_blocking(move || {
        for (job, m) in write.jobs.iter_mut().zip(&masks) {
            m.masker.mask_job(job, m.continues);
        }
        write
    })
    .await
    .map_err(|e| ApiError::internal("masking an ingest batch panicked", &e))
}

/// What a committed batch contained, for the metrics.
fn committed(write: &WriteBatch, records: u64, outcome: &ApplyOutcome) -> CommittedBatch {
    let mut c = CommittedBatch {
        records,
        stored: outcome.stored,
        duplicates: outcome.duplicates,
        ..CommittedBatch::default()
    };
    for w in &write.jobs {
        c.line_bytes += w.lines.iter().map(|l| l.line.len() as u64).sum::<u64>();
        c.outputs += w.outputs.len() as u64;
        c.co_results += u64::from(w.co_result.is_some());
    }
    c
}

/// Reads the body, refusing more than `limit` bytes without buffering them.
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    let too_large = || ApiError::too_large(format!("request body exceeds {limit} bytes"));
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    // Without a (truthful) Content-Length, reading stops at the first byte past the limit.
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(
            "invalid_body",
            format!("reading the body failed: {e}"),
        )),
    }
}

/// Undoes `Content-Encoding` (gzip, zstd or none), refusing output beyond `limit` so a
/// small compressed body cannot expand without bound.
fn decompress(headers: &HeaderMap, raw: Bytes, limit: usize) -> ApiResult<Bytes> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let reader: Box<dyn Read + '_> = match encoding.as_deref() {
        None | Some("") | Some("identity") => {
            if raw.len() > limit {
                return Err(ApiError::too_large(format!(
                    "decompressed body exceeds {limit} bytes"
                )));
            }
            return Ok(raw);
        }
        Some("gzip") => Box::new(flate2::read::GzDecoder::new(&raw[..])),
        Some("zstd") => Box::new(zstd::stream::read::Decoder::new(&raw[..]).map_err(|e| {
            ApiError::bad_request("invalid_body", format!("zstd stream is invalid: {e}"))
        })?),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding {other:?} is not supported; use gzip, zstd or none"),
            ))
        }
    };
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let n = reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("decompressing the body failed: {e}"),
            )
        })?;
    if n > limit {
        return Err(ApiError::too_large(format!(
            "decompressed body exceeds {limit} bytes"
        )));
    }
    Ok(Bytes::from(out))
}

/// Parses the envelope in one pass. Only when that fails, or names a version this build
/// does not speak, is the version read alone, so an unknown version is named as such even
/// if the rest is a newer format (a second pass over a batch that is refused anyway).
pub fn parse_batch(json: &[u8]) -> ApiResult<Batch> {
    let supported = |v: u64| SUPPORTED_VERSIONS.iter().any(|s| u64::from(*s) == v);
    let unsupported = |what: String| {
        let listed: Vec<String> = SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect();
        ApiError::bad_request(
            "unsupported_version",
            format!("{what}; supported: {}", listed.join(", ")),
        )
    };
    let invalid = match serde_json::from_slice::<Batch>(json) {
        Ok(batch) if supported(u64::from(batch.version)) => return Ok(batch),
        Ok(batch) => {
            return Err(unsupported(format!(
                "protocol version {} is not supported",
                batch.version
            )))
        }
        Err(e) => e,
    };
    // Not a batch of this version: name the version if that is what is wrong.
    #[derive(Deserialize)]
    struct Probe {
        version: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(json)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("body is not JSON: {e}")))?;
    match probe.version.as_ref().and_then(|v| v.as_u64()) {
        Some(v) if supported(v) => Err(ApiError::bad_request(
            "invalid_body",
            format!("invalid batch: {invalid}"),
        )),
        Some(v) => Err(unsupported(format!(
            "protocol version {v} is not supported"
        ))),
        None => Err(unsupported("missing or non-numeric `version`".to_string())),
    }
}

/// Validates a batch and turns it into one storage write, parsing COUT on the way. Any
/// problem rejects the whole batch.
pub fn to_write_batch(batch: Batch) -> ApiResult<WriteBatch> {
    let bad = |msg: String| ApiError::bad_request("invalid_batch", msg);
    if batch.agent.node.is_empty() || batch.agent.node.len() > 255 {
        return Err(bad("agent.node must be 1 to 255 bytes".into()));
    }
    let node = batch.agent.node;
    let mut jobs = Vec::with_capacity(batch.segments.len());
    for (i, seg) in batch.segments.into_iter().enumerate() {
        let cid = &seg.container_id;
        if cid.is_empty()
            || cid.len() > MAX_CONTAINER_ID
            || !cid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'))
        {
            return Err(bad(format!(
                "segments[{i}].container_id must be 1 to {MAX_CONTAINER_ID} characters of [A-Za-z0-9_.:-]"
            )));
        }
        let mut w = JobWrite::new(cid, &node);
        if let Some(m) = seg.meta {
            if m.name.len() > 255 || m.image.len() > 512 || m.log_driver.len() > 64 {
                return Err(bad(format!(
                    "segments[{i}].meta: name (255), image (512) or log_driver (64) too long"
                )));
            }
            let annotation_bytes: usize =
                m.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
            if annotation_bytes > MAX_ANNOTATIONS_BYTES {
                return Err(bad(format!(
                    "segments[{i}].meta.annotations hold {annotation_bytes} bytes (keys and values); \
                     at most {MAX_ANNOTATIONS_BYTES} are accepted: leave out the largest"
                )));
            }
            w.meta = Some(JobMeta {
                name: m.name,
                image: m.image,
                labels: m.labels,
                annotations: m.annotations,
                created_at: m.created_at,
                started_at: m.started_at,
                restart_count: m.restart_count,
                tty: m.tty,
                log_driver: m.log_driver,
            });
        }
        let mut prev_seq = 0u64;
        let mut prev_cont = false;
        w.lines.reserve(seg.records.len());
        for (j, r) in seg.records.into_iter().enumerate() {
            if r.seq == 0 || r.seq <= prev_seq {
                return Err(bad(format!(
                    "segments[{i}].records[{j}].seq must be positive and increasing (got {} after {prev_seq})",
                    r.seq
                )));
            }
            prev_seq = r.seq;
            let (seq, ts, stream, cont) = (r.seq, r.ts, r.stream, r.cont);
            let line = r
                .into_bytes()
                .map_err(|e| bad(format!("segments[{i}].records[{j}]: {e}")))?;
            if line.len() > MAX_RECORD_BYTES {
                return Err(ApiError::too_large(format!(
                    "segments[{i}].records[{j}] is {} bytes; split lines into continuation records of at most {MAX_RECORD_BYTES} bytes",
                    line.len()
                )));
            }
            // COUT is parsed on whole stdout lines only: a line split into continuation
            // records is never an output.
            if stream == Stream::Stdout && !cont && !prev_cont {
                if let Some(out) = cout::parse(&line) {
                    if out.key == cout::CO_RESULT {
                        // Only true/false are meaningful; a longer value is invalid either way
                        // and is kept short enough for its column.
                        w.co_result = Some(CoResultWrite {
                            value: truncate_utf8(out.value, 255),
                            seq,
                        });
                    } else {
                        w.outputs.push(OutputWrite {
                            name: out.key,
                            value: out.value,
                            seq,
                        });
                    }
                }
            }
            prev_cont = cont;
            w.lines.push(NewLine {
                seq,
                ts,
                stream,
                cont,
                line,
            });
        }
        if let Some(e) = seg.exit {
            w.exit = Some(ExitWrite {
                exit_code: e.exit_code,
                finished_at: e.finished_at,
                last_seq: e.last_seq,
                restart_count: e.restart_count,
                // The agent's word on why the end is unknown; a known code decides itself.
                failure: e.reason.filter(|_| e.exit_code.is_none()),
            });
        }
        w.logs_unavailable = seg.logs_unavailable;
        jobs.push(w);
    }
    Ok(WriteBatch { jobs })
}

fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
