//! antilog, Logarithm's node agent: follows the logs of every Docker container on this host
//! (through the Docker API) and ships them, in order and acknowledged, to logarithmd.
//!
//! Data flow: discovery -> one follower per container -> one bounded channel -> batcher ->
//! shipper (one request in flight) -> logarithmd; acknowledgements move the checkpoint.
//! Backpressure runs the other way: a slow or failing server stalls the shipper, the
//! batcher stops taking items, followers stop reading Docker.
//!
//! # Layout
//! - [`config`]: the configuration schema and defaults.
//! - [`error`]: the library's error type ([`Error`] with an [`ErrorKind`]).
//! - [`filter`]: include/exclude rules by label and name.
//! - [`docker`]: Docker access: `discovery` (listing, events), `follower` (one container's
//!   log, run after run), `frames` (timestamps, partial lines, TTY streams; pure),
//!   `inspect` (metadata and run state).
//! - [`pipeline`]: `batcher` (items into batches) and `shipper` (HTTP delivery with retries).
//! - [`checkpoint`]: acknowledged progress per container, persisted atomically.
//! - [`backoff`]: exponential backoff with jitter.
//! - [`run`]: wires it together and shuts down with a deadline.

pub mod backoff;
pub mod checkpoint;
pub mod config;
pub mod docker;
pub mod error;
pub mod filter;
pub mod pipeline;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
pub use error::{Error, ErrorKind};

/// Runs the agent until `shutdown` is cancelled. Then followers stop reading, what was read
/// gets `config.shutdown_timeout` to be delivered, and the checkpoint is written.
///
/// Fails early on an invalid configuration, an unusable `data_dir`, or an unreachable
/// Docker engine; once running, failures are retried (see the modules).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    config.validate()?;
    let filter = filter::Filter::from_config(&config)?;
    let store = Arc::new(checkpoint::CheckpointStore::open(&config.data_dir)?);
    let shipper = pipeline::shipper::Shipper::new(&config)?;
    let docker = docker::connect(config.docker_host.as_deref()).await?;
    info!(
        node = %config.node_name,
        agent_id = %config.agent_id,
        server = %config.server_url,
        "antilog starting"
    );

    let (item_tx, item_rx) = mpsc::channel(config.channel_capacity);
    // One batch waits here while the previous one is in flight.
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
    let mut shipper_task = tokio::spawn(shipper.run(batch_rx, store.clone()));
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(checkpoint::run_writer(store.clone(), writer_stop.clone()));

    let raw = docker::raw::RawClient::new(config.docker_host.as_deref(), &docker.client_version());
    let shared = Arc::new(docker::follower::Shared {
        docker,
        raw,
        tx: item_tx,
        max_line_bytes: config.max_line_bytes,
        filter,
        shutdown: shutdown.clone(),
        catch_up: Arc::new(tokio::sync::Semaphore::new(
            docker::follower::CATCH_UP_CONCURRENCY,
        )),
    });
    // Returns once shutdown is requested and every follower has stopped; with it go the
    // last senders of the item channel, which lets the batcher flush and finish.
    let discovery = docker::discovery::run(shared, store.clone()).await;
    if let Err(e) = &discovery {
        // Stop the pipeline too (nothing was read).
        warn!(error = %e, "discovery failed");
    }

    info!(timeout = ?config.shutdown_timeout, "stopping: delivering what was read");
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        let _ = batcher.await;
        let _ = (&mut shipper_task).await;
    })
    .await;
    if drained.is_err() {
        warn!("shutdown timeout reached: undelivered lines will be read again on the next start");
        shipper_task.abort();
    }
    writer_stop.cancel();
    let _ = writer.await;
    let persisted = tokio::task::spawn_blocking(move || store.persist_if_dirty())
        .await
        .map_err(|e| Error::with_source(ErrorKind::Internal, "checkpoint task failed", e))?;
    discovery?;
    persisted?;
    info!("antilog stopped");
    Ok(())
}
