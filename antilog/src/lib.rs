//! antilog, Logarithm's node agent: follows the logs of every container on this host (a
//! Docker host: its json-file logs or the Docker API; a Kubernetes node: the kubelet's pod
//! log files, see [`cri`]) and ships them, in order and acknowledged, to logarithmd.
//!
//! Data flow: discovery -> one follower per container -> one bounded channel -> batcher ->
//! spool (segment files on disk; each frame carries its checkpoint effects) -> shipper (up
//! to `max_in_flight_batches` requests at once, one per container) -> logarithmd;
//! acknowledgements, in spool order, move the checkpoint and free the spool. Parts of a
//! batch logarithmd refuses for good are isolated and go to the dead-letter file.
//! Backpressure runs the other way: while logarithmd is unreachable the spool fills; once
//! it is full the batcher stops taking items and followers stop reading Docker.
//!
//! # Layout
//! - [`config`]: the configuration schema and defaults.
//! - [`error`]: the library's error type ([`Error`] with an [`ErrorKind`]).
//! - [`filter`]: include/exclude rules by label and name.
//! - [`docker`]: Docker access: `discovery` (listing, events), `follower` (one container's
//!   log, run after run), `frames` (timestamps, partial lines, TTY streams; pure),
//!   `inspect` (metadata and run state), `logs` (the log reader: hyper over the Docker
//!   socket, nanosecond `since`).
//! - [`http_client`]: the one HTTP client to logarithmd (timeouts, TLS: pinned CA, client
//!   certificate).
//! - [`pipeline`]: `batcher` (items into batches), `shipper` (HTTP delivery: batches in
//!   flight, retries, refused batches split; `answer`: what logarithmd's answers mean),
//!   `order` (a container's batches in flight together, in order) and `split` (halving a
//!   refused batch).
//! - [`spool`]: the bounded on-disk queue of batches between batcher and shipper
//!   (`segment`: checksummed frames and the ack file).
//! - [`files`]: reading log files (`tailer` across rotations, `reader`: the tailer on
//!   the blocking pool, `identity` of a file, `json_file` records, `cri` records with
//!   their partials joined) for the `docker-files` source and Kubernetes nodes.
//! - [`cri`]: the `cri` source (Kubernetes nodes): choosing the source, discovery of the
//!   pod log root (scan and inotify `watch`), one follower per container run after run.
//! - [`pods`]: Pod metadata of this node from the Kubernetes API (list, watch, re-list
//!   after 410 Gone), for the CRI source.
//! - [`checkpoint`]: acknowledged progress per container (and per log file), persisted
//!   atomically.
//! - [`gone`]: closing the jobs of containers removed while antilog was down (exit code
//!   unknown), found from the checkpoint at start.
//! - [`retry`]: the retry policy (exponential backoff with jitter, from `backon`).
//! - [`codec`]: the ingest body (a batch as compressed JSON), encoded for the spool and
//!   decoded by the shipper to split a refused batch.
//! - [`dead_letter`]: the file of records logarithmd refused for good.
//! - [`metrics`]: the Prometheus metrics and the `GET /metrics` server (`metrics_listen`).
//! - [`run`]: wires it together and shuts down with a deadline.

pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod cri;
pub mod dead_letter;
pub mod docker;
pub mod error;
pub mod files;
pub mod filter;
pub mod gone;
pub mod http_client;
pub mod metrics;
pub mod pipeline;
pub mod pods;
pub mod retry;
pub mod spool;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
pub use error::{Error, ErrorKind};

/// After the shutdown timeout, how long the spool writer gets to finish a write.
const SPOOL_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the agent until `shutdown` is cancelled. Then followers stop reading, what was read
/// gets `config.shutdown_timeout` to be delivered, and the checkpoint is written.
///
/// Fails early on an invalid configuration, an unusable `data_dir`, or an unreachable
/// Docker engine; once running, failures are retried (see the modules).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    config.validate()?;
    let filter = filter::Filter::from_config(&config)?;
    let store = Arc::new(checkpoint::CheckpointStore::open(&config.data_dir)?);
    let metrics = Arc::new(metrics::Metrics::new());
    let (spool_writer, spool_reader) = spool::open(
        &config.spool_path(),
        spool::Limits {
            max_bytes: config.spool_max_bytes,
            segment_bytes: config.spool_segment_bytes,
        },
        metrics.clone(),
    )?;
    let shipper = pipeline::shipper::Shipper::new(&config, metrics.clone())?;
    let chosen = cri::choose(&config).await?;
    let docker = match chosen {
        cri::Chosen::Cri(_) => None,
        cri::Chosen::Docker(_) => Some(docker::connect(config.docker_host.as_deref()).await?),
    };
    // Serves until the very end, so the drain can be watched too.
    let metrics_stop = CancellationToken::new();
    let metrics_server = match config.metrics_addr()? {
        Some(addr) => Some(metrics::serve(addr, metrics.clone(), metrics_stop.clone()).await?),
        None => None,
    };
    info!(
        node = %config.node_name,
        agent_id = %config.agent_id,
        server = %config.server_url,
        source = ?chosen,
        "antilog starting"
    );

    let (item_tx, item_rx) = mpsc::channel(config.channel_capacity);
    // One batch waits here while the previous one is written to the spool.
    let (batch_tx, batch_rx) = mpsc::channel(1);
    let agent = protocol::Agent {
        id: config.agent_id.clone(),
        node: config.node_name.clone(),
    };
    let limits = pipeline::batcher::Limits {
        max_records: config.batch_max_records,
        max_bytes: config.batch_max_bytes,
        max_age: config.batch_max_age,
    };
    let batcher = tokio::spawn(pipeline::batcher::run(item_rx, batch_tx, agent, limits));
    let spool_stop = CancellationToken::new();
    let mut spooler = tokio::spawn(spool::run_writer(
        batch_rx,
        spool_writer,
        config.compression,
        spool_stop.clone(),
    ));
    // Reading resumes after what the spool holds: it will all be delivered.
    let spooled = spool_reader.undelivered_effects()?;
    let resume = store.resume_snapshot(spooled.iter().map(|(id, e)| (&**id, e)));
    let mut shipper_task =
        tokio::spawn(shipper.run(spool::Reader::new(spool_reader), store.clone()));
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(checkpoint::run_writer(store.clone(), writer_stop.clone()));

    // Returns once shutdown is requested and every follower has stopped; with it go the
    // last senders of the item channel, which lets the batcher flush and finish.
    let discovery = match (chosen, docker) {
        (cri::Chosen::Cri(client), _) => {
            let shared = Arc::new(cri::Shared {
                tx: item_tx,
                max_line_bytes: config.max_line_bytes,
                filter,
                shutdown: shutdown.clone(),
                metrics,
                pods: Arc::new(pods::Pods::default()),
                resume: std::sync::Mutex::new(resume),
                files_changed: tokio::sync::Notify::new(),
                room: pipeline::send::Room::new(config.channel_capacity),
            });
            let root = config.pod_log_root.clone();
            let node = config.node_name.clone();
            cri::run(shared, store.clone(), root, client, node).await;
            Ok(())
        }
        (cri::Chosen::Docker(source), Some(docker)) => {
            let logs = docker::logs::LogClient::new(
                config.docker_host.as_deref(),
                &docker.client_version(),
            );
            let shared = Arc::new(docker::follower::Shared {
                docker,
                logs,
                tx: item_tx,
                room: pipeline::send::Room::new(config.channel_capacity),
                max_line_bytes: config.max_line_bytes,
                filter,
                shutdown: shutdown.clone(),
                catch_up: Arc::new(tokio::sync::Semaphore::new(
                    docker::follower::CATCH_UP_CONCURRENCY,
                )),
                metrics,
                files_root: (source == config::Source::DockerFiles)
                    .then(|| config.docker_root.clone()),
            });
            docker::discovery::run(shared, store.clone(), resume).await
        }
        (cri::Chosen::Docker(_), None) => Err(Error::new(ErrorKind::Internal, "no Docker client")),
    };
    if let Err(e) = &discovery {
        // Stop the pipeline too (nothing was read).
        warn!(error = %e, "discovery failed");
    }

    info!(timeout = ?config.shutdown_timeout, "stopping: delivering what was read");
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        let _ = batcher.await;
        let _ = (&mut spooler).await;
        let _ = (&mut shipper_task).await;
    })
    .await;
    if drained.is_err() {
        warn!("shutdown timeout reached: spooled lines are delivered after the next start");
        // Stops a writer waiting for room; what it holds is read from Docker again.
        spool_stop.cancel();
        if tokio::time::timeout(SPOOL_STOP_TIMEOUT, &mut spooler)
            .await
            .is_err()
        {
            spooler.abort();
        }
        shipper_task.abort();
    }
    writer_stop.cancel();
    let _ = writer.await;
    let persisted = tokio::task::spawn_blocking(move || store.persist_if_dirty())
        .await
        .map_err(|e| Error::with_source(ErrorKind::Internal, "checkpoint task failed", e))?;
    metrics_stop.cancel();
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    discovery?;
    persisted?;
    info!("antilog stopped");
    Ok(())
}
