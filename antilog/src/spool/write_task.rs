//! The spool writer's async side ([`run_writer`]): takes batches from the batcher,
//! encodes them off the async threads, appends them and syncs by groups, waits for room
//! when the spool is full, and retries failed writes with backoff.

use super::*;

/// Runs a blocking operation on the writer off the async threads.
async fn blocking<T: Send + 'static>(
    w: &Arc<Mutex<SpoolWriter>>,
    f: impl FnOnce(&mut SpoolWriter) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let w = w.clone();
    tokio::task::spawn_blocking(move || f(&mut lock(&w)))
        .await
        .map_err(|e| Error::with_source(ErrorKind::Internal, "spool writer task failed", e))?
}

/// Retries `op` with backoff until it succeeds (true) or `stop` (false).
async fn with_retry(
    w: &Arc<Mutex<SpoolWriter>>,
    stop: &CancellationToken,
    what: &str,
    op: impl Fn(&mut SpoolWriter) -> Result<(), Error> + Send + Sync + Clone + 'static,
) -> bool {
    let mut retry = Retry::new(RETRY_INITIAL, RETRY_MAX);
    loop {
        let op = op.clone();
        match blocking(w, move |w| op(w)).await {
            Ok(()) => return true,
            Err(e) => {
                let d = retry.next_delay();
                error!(error = %e, retry_in = ?d, "cannot {what}; retrying (reading pauses meanwhile)");
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }
}

/// Takes batches from the batcher and appends them, with their checkpoint effects, to the
/// spool, syncing by groups (the shipper sends only durable frames and applies the effects
/// once logarithmd acknowledges them). Returns when the batcher is done (everything taken is
/// then durable) or, while waiting for room or retrying a failed write, when `stop` is
/// cancelled (what is not durable then is read from Docker again on the next start, as the
/// checkpoint does not cover it).
pub async fn run_writer(
    mut rx: mpsc::Receiver<OutBatch>,
    writer: SpoolWriter,
    compression: Compression,
    stop: CancellationToken,
) {
    let shared = writer.shared.clone();
    let w = Arc::new(Mutex::new(writer));
    let mut first_unsynced: Option<Instant> = None;
    loop {
        let out = if first_unsynced.is_none() {
            rx.recv().await
        } else {
            match rx.try_recv() {
                Ok(out) => Some(out),
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Nothing else ready: this group is complete.
                    if !sync(&w, &stop).await {
                        return;
                    }
                    first_unsynced = None;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        };
        let Some(out) = out else { break };
        if !out.batch.segments.is_empty() || !out.effects.is_empty() {
            let records = out.records;
            let frame = match encode_frame(out, compression).await {
                Ok(f) => Arc::new(f),
                Err(e) => {
                    // Serializing our own types cannot fail short of a bug; the effects are
                    // never applied, so the data is read again after a restart.
                    error!(error = %e, records, "cannot encode batch; skipping it");
                    continue;
                }
            };
            let n = frame.len() as u64;
            if !shared.has_room(n) {
                // What was appended must become deliverable before we wait for room.
                if !sync(&w, &stop).await {
                    return;
                }
                first_unsynced = None;
                if !wait_for_room(&shared, n, &stop).await {
                    warn!(
                        records,
                        "stopping while the spool is full: the last batch is read from Docker \
                         again on the next start"
                    );
                    return;
                }
            }
            let f = frame.clone();
            if !with_retry(&w, &stop, "append to the spool", move |w| w.append(&f)).await {
                return;
            }
            first_unsynced.get_or_insert_with(Instant::now);
        }
        let unsynced = lock(&w).unsynced();
        if unsynced >= SYNC_MAX_BYTES
            || first_unsynced.is_some_and(|t| t.elapsed() >= SYNC_MAX_DELAY)
        {
            if !sync(&w, &stop).await {
                return;
            }
            first_unsynced = None;
        }
    }
    sync(&w, &stop).await;
}

/// Makes what was appended durable and visible to the shipper; false if `stop` came first.
async fn sync(w: &Arc<Mutex<SpoolWriter>>, stop: &CancellationToken) -> bool {
    with_retry(w, stop, "fsync the spool", |w| w.sync()).await
}

/// Waits until `n` bytes fit; false if `stop` came first.
async fn wait_for_room(shared: &Shared, n: u64, stop: &CancellationToken) -> bool {
    let stats = shared.stats();
    shared.full.store(true, Ordering::Release);
    warn!(
        spool_bytes = stats.bytes,
        spool_max_bytes = stats.max_bytes,
        "spool full ({} of {} bytes): reading paused until logarithmd catches up",
        stats.bytes,
        stats.max_bytes
    );
    let ok = loop {
        if shared.has_room(n) {
            break true;
        }
        tokio::select! {
            _ = stop.cancelled() => break false,
            _ = shared.room.notified() => {}
        }
    };
    shared.full.store(false, Ordering::Release);
    if ok {
        info!(
            spool_bytes = shared.stats().bytes,
            "spool has room again: reading resumed"
        );
    }
    ok
}

/// Encodes a batch and its effects as a frame, off the async threads. A batch without
/// segments (only effects) gets an empty body: nothing is sent for it.
async fn encode_frame(out: OutBatch, compression: Compression) -> Result<Vec<u8>, Error> {
    tokio::task::spawn_blocking(move || {
        let OutBatch {
            batch,
            effects,
            records,
        } = out;
        let newest_ts = batch
            .segments
            .iter()
            .flat_map(|s| s.records.iter().map(|r| r.ts))
            .max()
            .unwrap_or(0);
        // The containers the batch holds data of, once each.
        let mut keys: Vec<Arc<str>> = Vec::new();
        for s in &batch.segments {
            if !keys.iter().any(|k| **k == *s.container_id) {
                keys.push(Arc::from(s.container_id.as_str()));
            }
        }
        let err = |e| Error::with_source(ErrorKind::Internal, "cannot encode batch", e);
        let body = if batch.segments.is_empty() {
            bytes::Bytes::new()
        } else {
            crate::codec::encode(&batch, compression).map_err(err)?
        };
        let meta = FrameMeta {
            compression,
            records: u32::try_from(records).unwrap_or(u32::MAX),
            newest_ts,
        };
        segment::encode_frame(&meta, &effects, &keys, &body).map_err(err)
    })
    .await
    .map_err(|e| Error::with_source(ErrorKind::Internal, "batch encoder task failed", e))?
}
