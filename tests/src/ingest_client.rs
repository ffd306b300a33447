//! Ingest as an agent does it, without an agent: numbered zstd batches of synthetic lines
//! POSTed to `/api/v1/ingest`, a 503 sent again (and counted), for the benchmark and the
//! load test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use protocol::{
    Agent as WireAgent, Batch, ContainerExit, ContainerMeta, ContainerSegment, Record, Stream,
};

use crate::{Daemon, TOKEN};

/// Bytes of each synthetic line (without the newline).
pub const LINE_BYTES: usize = 100;
/// Lines per batch.
pub const BATCH: u64 = 5_000;

/// Line `seq`: its number, then `x` up to [`LINE_BYTES`].
pub fn line(seq: u64) -> String {
    let s = format!("{seq:010} ");
    format!("{s}{}", "x".repeat(LINE_BYTES - s.len()))
}

/// A random container id.
pub fn container_id() -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        crate::rand_u64(),
        crate::rand_u64(),
        crate::rand_u64(),
        crate::rand_u64()
    )
}

/// One zstd batch body: lines `first_seq..first_seq + n` of `container` (even seqs on
/// stderr), its metadata when `meta`, and its exit (code 0) when `exit`.
pub fn batch_body(
    container: &str,
    first_seq: u64,
    n: u64,
    meta: bool,
    exit: bool,
) -> Result<Vec<u8>> {
    let records = (first_seq..first_seq + n)
        .map(|seq| {
            Record::new(
                seq,
                1_764_000_000_000_000_000 + seq as i64,
                if seq % 2 == 0 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                line(seq).into_bytes(),
                false,
            )
        })
        .collect();
    let batch = Batch {
        version: protocol::PROTOCOL_VERSION,
        agent: WireAgent {
            id: "bench".into(),
            node: "bench-node".into(),
        },
        segments: vec![ContainerSegment {
            container_id: container.to_owned(),
            meta: meta.then(|| ContainerMeta {
                name: format!("bench-{container}"),
                image: "bench".into(),
                labels: Default::default(),
                annotations: Default::default(),
                created_at: 1,
                started_at: 1,
                restart_count: 0,
                tty: false,
                log_driver: "json-file".into(),
            }),
            records,
            exit: exit.then(|| ContainerExit {
                exit_code: Some(0),
                finished_at: protocol::now_ns(),
                last_seq: (first_seq + n).saturating_sub(1),
                restart_count: 0,
                reason: None,
            }),
            logs_unavailable: None,
        }],
    };
    Ok(zstd::encode_all(&serde_json::to_vec(&batch)?[..], 1)?)
}

/// The zstd request bodies of `lines` lines of one container, in batches of [`BATCH`]
/// (the first with its metadata).
pub fn bodies(container: &str, lines: u64) -> Result<Vec<Vec<u8>>> {
    let mut list = Vec::new();
    let mut seq = 1;
    while seq <= lines {
        let n = BATCH.min(lines - seq + 1);
        list.push(batch_body(container, seq, n, seq == 1, false)?);
        seq += n;
    }
    Ok(list)
}

/// POSTs one body until it is acknowledged: a 503 means "send the same batch again
/// shortly", as agents do, and is counted in `unavailable`.
pub async fn post(
    http: &reqwest::Client,
    base: &str,
    body: &[u8],
    unavailable: &AtomicU64,
) -> Result<()> {
    let url = format!("{base}/api/v1/ingest");
    loop {
        let r = http
            .post(&url)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .header("content-encoding", "zstd")
            .body(body.to_vec())
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            unavailable.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if !r.status().is_success() {
            bail!("ingest answered {}: {}", r.status(), r.text().await?);
        }
        return Ok(());
    }
}

/// POSTs each list of bodies in order, the lists at once, as agents do; returns how many
/// answers were 503 (each such batch was sent again).
pub async fn post_all(daemon: &Daemon, lists: Vec<Vec<Vec<u8>>>) -> Result<u64> {
    let unavailable = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for list in lists {
        let (http, base) = (daemon.http.clone(), daemon.base.clone());
        let unavailable = unavailable.clone();
        tasks.push(tokio::spawn(async move {
            for body in list {
                post(&http, &base, &body, &unavailable).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(unavailable.load(Ordering::Relaxed))
}
