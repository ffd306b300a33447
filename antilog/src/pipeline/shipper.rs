//! Delivers the spool's batches to logarithmd until each is settled: acknowledged, or, for
//! the parts logarithmd refuses for good, written to the dead-letter file.
//!
//! # In flight
//! Up to `max_in_flight_batches` batches are sent at once. logarithmd stores a job's lines
//! in the order they arrive, and live tails read by `seq`, so a batch holding data of a
//! container with a batch still in flight waits for it, unless logarithmd orders them
//! itself ([`super::order`]): then up to two batches of a container are in flight, the
//! later naming the earlier. Batches spooled by older agents, whose containers are
//! unknown, go alone. Batches are settled in spool order whatever
//! order their answers come in: only then are a frame's checkpoint effects applied (see
//! [`crate::checkpoint`]) and does the spool move past it.
//!
//! # Answers
//! - 2xx (an [`IngestAck`], sent after logarithmd's commit): delivered.
//! - transient (connection error, timeout, 408, 429, 5xx other than logarithmd's own
//!   `internal` 500): the same bytes again after a delay from the retry schedule
//!   (`ship_retry_initial` doubling to `ship_retry_max`, with jitter; at least
//!   `Retry-After`).
//! - refused for good (400, 413, and 500 `internal`, which logarithmd answers only for
//!   errors that retrying does not fix): the batch is split in halves ([`super::split`])
//!   and each half sent, recursively, until each refused part is a single record (or one
//!   container's meta or exit); those go to the dead-letter file
//!   ([`crate::dead_letter`]) and everything else is stored. One bad record never stalls
//!   the node.
//! - stop (401, 403, 404, 400 `unsupported_version`): the token, URL or server version is
//!   wrong for every batch, so nothing is dropped: logged at error level and retried at
//!   the longest interval, with the spool kept, until the operator fixes it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use protocol::{Agent, Batch, IngestAck};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::order::{self, Order, Sequencer, Ticket};
use super::split;
use crate::checkpoint::CheckpointStore;
use crate::codec;
use crate::config::{Compression, Config};
use crate::dead_letter::DeadLetter;
use crate::error::chain as error_chain;
use crate::error::{Error, ErrorKind};
use crate::metrics::{Metrics, ShipFailure};
use crate::retry::{Retry, Schedule};
use crate::spool;
use answer::{classify, read_error, Failure, ERROR_BODY_MAX};

/// Upper bound on an honoured `Retry-After`, so a bogus header cannot park the agent.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);
/// Most bytes a spooled body may decompress to when it is split (logarithmd's default
/// decompressed-size cap).
const SPLIT_MAX_JSON: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct Shipper {
    client: reqwest::Client,
    url: String,
    auth: Option<HeaderValue>,
    metrics: Arc<Metrics>,
    retry: Schedule,
    max_in_flight: usize,
    dead_letter: Arc<DeadLetter>,
    sequencer: Arc<Sequencer>,
}

/// How sending one body ended.
enum Settled {
    Stored,
    Refused { status: u16, reason: String },
}

type Delivery = Pin<Box<dyn Future<Output = (spool::segment::Frame, OwnedSemaphorePermit)> + Send>>;

impl Shipper {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Shipper, Error> {
        let client = crate::http_client::build(config)?;
        let auth = match config.effective_token() {
            Some(t) => Some(HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| {
                Error::with_source(ErrorKind::Config, "token is not a valid header value", e)
            })?),
            None => {
                tracing::warn!("no token configured: requests carry no Authorization header");
                None
            }
        };
        let dead_letter = Arc::new(DeadLetter::new(
            &config.dead_letter_path(),
            config.dead_letter_max_bytes,
            metrics.clone(),
        ));
        Ok(Shipper {
            client,
            url: config.ingest_url(),
            auth,
            metrics,
            retry: Schedule {
                initial: config.ship_retry_initial,
                max: config.ship_retry_max,
            },
            max_in_flight: config.max_in_flight_batches.max(1),
            dead_letter,
            sequencer: Arc::default(),
        })
    }

    /// Ships the spool's batches until the spool is closed and everything in it settled.
    /// Each frame is the request body as spooled, with its own compression; once it is
    /// settled (in spool order), its checkpoint effects are applied to `store`.
    pub async fn run(self, spool: spool::Reader, store: Arc<CheckpointStore>) {
        let this = Arc::new(self);
        // The reader runs ahead of the deliveries by up to `max_in_flight` frames.
        let slots = Arc::new(Semaphore::new(this.max_in_flight));
        let (tx, mut frames) = mpsc::channel(1);
        let feeder = {
            let spool = spool.clone();
            let slots = slots.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let Some(frame) = spool.next().await else {
                        return;
                    };
                    if tx.send((frame, slot)).await.is_err() {
                        return;
                    }
                }
            })
        };
        let mut in_flight: FuturesOrdered<Delivery> = FuturesOrdered::new();
        // Containers with a batch in flight (how many each, and the latest), and batches
        // of unknown containers in flight.
        let mut busy: HashMap<Arc<str>, (usize, Ticket)> = HashMap::new();
        let mut exclusive = 0usize;
        let mut waiting: Option<(spool::segment::Frame, OwnedSemaphorePermit)> = None;
        let mut open = true;
        loop {
            if let Some((frame, _)) = &waiting {
                let free = match &frame.keys {
                    None => in_flight.is_empty(),
                    Some(keys) => {
                        // A batch names at most BATCH_AFTER_MAX predecessors, one per
                        // container at most.
                        let per_container = if this.sequencer.ordered()
                            && keys.len() <= protocol::BATCH_AFTER_MAX
                        {
                            order::PER_CONTAINER
                        } else {
                            1
                        };
                        exclusive == 0
                            && keys
                                .iter()
                                .all(|k| busy.get(k).is_none_or(|(n, _)| *n < per_container))
                    }
                };
                if free {
                    if let Some((frame, slot)) = waiting.take() {
                        let ticket = this.sequencer.ticket();
                        let mut order = Order {
                            own: Some(ticket.clone()),
                            after: Vec::new(),
                        };
                        match &frame.keys {
                            None => exclusive += 1,
                            Some(keys) => {
                                for k in keys {
                                    match busy.get_mut(k) {
                                        Some((n, last)) => {
                                            *n += 1;
                                            if !order.after.iter().any(|t| t.id() == last.id()) {
                                                order.after.push(last.clone());
                                            }
                                            *last = ticket.clone();
                                        }
                                        None => {
                                            busy.insert(k.clone(), (1, ticket.clone()));
                                        }
                                    }
                                }
                            }
                        }
                        let this = this.clone();
                        this.metrics.batches_in_flight.inc();
                        in_flight.push_back(Box::pin(async move {
                            this.deliver_frame(&frame, &order).await;
                            ticket.settle();
                            (frame, slot)
                        }));
                    }
                }
            }
            if !open && waiting.is_none() && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                next = frames.recv(), if open && waiting.is_none() => match next {
                    Some(f) => waiting = Some(f),
                    None => open = false,
                },
                Some((frame, slot)) = in_flight.next(), if !in_flight.is_empty() => {
                    this.metrics.batches_in_flight.dec();
                    match &frame.keys {
                        None => exclusive -= 1,
                        Some(keys) => {
                            for k in keys {
                                if let Some((n, _)) = busy.get_mut(k) {
                                    *n -= 1;
                                    if *n == 0 {
                                        busy.remove(k);
                                    }
                                }
                            }
                        }
                    }
                    acknowledged(&store, &frame);
                    let store = store.clone();
                    spool.ack_after(move || {
                        if let Err(e) = store.write_before_ack() {
                            // The spool moves on anyway: a restart then resends less
                            // than it could, never loses (the periodic write retries).
                            tracing::warn!(error = %e, "cannot write the checkpoint");
                        }
                    }).await;
                    drop(slot);
                }
            }
        }
        let _ = feeder.await;
    }

    /// Delivers one spooled frame until it is settled.
    async fn deliver_frame(&self, frame: &spool::segment::Frame, order: &Order) {
        // An empty body carries only effects: nothing to send.
        if frame.body.is_empty() {
            return;
        }
        let handed = Instant::now();
        let records = frame.meta.records as usize;
        let compression = frame.meta.compression;
        match self.send(frame.body.clone(), compression, order).await {
            Settled::Stored => {}
            Settled::Refused { status, reason } => {
                self.isolate(frame.body.clone(), compression, status, reason, order)
                    .await;
            }
        }
        self.metrics
            .batch_shipped(records, frame.meta.newest_ts, handed.elapsed());
    }

    /// Sends `body` until it is acknowledged or refused for good.
    async fn send(&self, body: Bytes, compression: Compression, order: &Order) -> Settled {
        let mut retry = Retry::new(self.retry.initial, self.retry.max);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let delay = match self.attempt(body.clone(), compression, order).await {
                Ok(ack) => {
                    tracing::debug!(
                        stored = ack.as_ref().map(|a| a.stored),
                        duplicates = ack.as_ref().map(|a| a.duplicates),
                        attempt,
                        "batch acknowledged"
                    );
                    return Settled::Stored;
                }
                Err(Failure::Refused { status, reason }) => {
                    return Settled::Refused { status, reason };
                }
                Err(Failure::Transient {
                    reason,
                    retry_after,
                }) => {
                    let d = retry.next_delay();
                    let d = retry_after.map_or(d, |r| r.min(RETRY_AFTER_MAX).max(d));
                    tracing::warn!(%reason, attempt, retry_in = ?d, "batch not delivered; retrying");
                    d
                }
                Err(Failure::Stop(reason)) => {
                    let d = retry.max();
                    tracing::error!(%reason, attempt, retry_in = ?d, "logarithmd refuses every batch; keeping the spool and retrying at the longest interval");
                    d
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// Splits a refused batch until every refused part is one unit, sends the rest and
    /// writes the refused parts to the dead-letter file.
    async fn isolate(
        &self,
        body: Bytes,
        compression: Compression,
        status: u16,
        reason: String,
        order: &Order,
    ) {
        // The parts still follow the batch's predecessors; none has an id of its own.
        let order = order.part();
        let decoded =
            tokio::task::spawn_blocking(move || codec::decode(&body, compression, SPLIT_MAX_JSON))
                .await;
        let batch = match decoded {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                self.metrics.dead_letter_entries.inc();
                tracing::error!(error = %e, status, %reason, "logarithmd refused a batch that cannot be decoded to split it; dropped");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "batch decoding task failed");
                return;
            }
        };
        tracing::warn!(
            status,
            %reason,
            units = split::units(&batch),
            "logarithmd refused a batch for good: splitting it to isolate what it refuses"
        );
        // Parts still to send, in order; each one is known to be refused or not yet sent.
        let mut todo: Vec<(Batch, Option<(u16, String)>)> = vec![(batch, Some((status, reason)))];
        while let Some((part, refused)) = todo.pop() {
            let refused = match refused {
                Some(r) => Some(r),
                None => match self.send_batch(&part, compression, &order).await {
                    Ok(Settled::Stored) => None,
                    Ok(Settled::Refused { status, reason }) => Some((status, reason)),
                    Err(e) => Some((0, format!("cannot encode the part: {e}"))),
                },
            };
            let Some((status, reason)) = refused else {
                continue;
            };
            match split::split(part.clone()) {
                Some((left, right)) => {
                    // Stack: the left half goes first.
                    todo.push((right, None));
                    todo.push((left, None));
                }
                None => self.dead_letter(part, status, reason).await,
            }
        }
    }

    async fn send_batch(
        &self,
        part: &Batch,
        compression: Compression,
        order: &Order,
    ) -> std::io::Result<Settled> {
        let part = part.clone();
        let body = tokio::task::spawn_blocking(move || codec::encode(&part, compression))
            .await
            .map_err(std::io::Error::other)??;
        Ok(self.send(body, compression, order).await)
    }

    async fn dead_letter(&self, part: Batch, status: u16, reason: String) {
        let dl = self.dead_letter.clone();
        let res = tokio::task::spawn_blocking(move || {
            let agent: &Agent = &part.agent;
            for seg in &part.segments {
                dl.write(agent, seg, status, &reason);
            }
        })
        .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "dead-letter task failed");
        }
    }

    async fn attempt(
        &self,
        body: Bytes,
        compression: Compression,
        order: &Order,
    ) -> Result<Option<IngestAck>, Failure> {
        let mut req = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(enc) = codec::content_encoding(compression) {
            req = req.header(CONTENT_ENCODING, enc);
        }
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(own) = &order.own {
            req = req.header(protocol::BATCH_ID_HEADER, own.id());
        }
        if let Some(after) = order.after_header() {
            req = req.header(protocol::BATCH_AFTER_HEADER, after);
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
            self.sequencer
                .answered(resp.headers().contains_key(protocol::ORDERED_INGEST_HEADER));
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
        let (code, message) = read_error(resp).await;
        Err(classify(status, code.as_deref(), message, retry_after))
    }
}

/// Applies the checkpoint effects of a frame that is settled (in frame order: the shipper
/// settles frames in spool order).
pub fn acknowledged(store: &CheckpointStore, frame: &spool::segment::Frame) {
    let effects = frame.effects.iter().map(|(id, e)| (&**id, e));
    if frame.replayed {
        store.apply_replayed(effects);
    } else {
        store.apply(effects);
    }
}

mod answer;
#[cfg(test)]
mod tests;
