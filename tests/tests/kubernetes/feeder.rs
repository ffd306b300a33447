//! The test's node log collector: what antilog's node collection does for job Pods, through
//! the API server instead of the node's files (antilog has no CRI-file source yet).
//!
//! Every 100 ms it lists the job Pods with a `kube::Client` (as k8s-openapi `Pod`s), reads
//! each started Pod's log, and POSTs to logarithmd's ingest endpoint, in the agent's batch
//! protocol, the Pod's metadata (its name as the container id: the id the Kubernetes runner
//! gives the engine; its `io.containerops.*` labels), the lines not shipped yet with gapless
//! `seq`s and, once `containerStatuses[0].state.terminated` is set, the exit with its
//! `exitCode`. logarithmd then decides the verdict from that exit code and the `[COUT]`
//! lines, exactly as for a Docker container.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use protocol::{Batch, ContainerExit, ContainerMeta, ContainerSegment, Record, Stream};

/// What was shipped of one Pod.
#[derive(Default)]
struct Shipped {
    lines: u64,
    meta: bool,
    exit: bool,
}

pub struct Feeder {
    pods: Api<Pod>,
    http: reqwest::Client,
    ingest: String,
    shipped: HashMap<String, Shipped>,
}

fn ns_of(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    t.and_then(|t| i64::try_from(t.0.as_nanosecond()).ok())
        .unwrap_or(0)
}

impl Feeder {
    pub fn new(pods: Api<Pod>, logarithmd: &str) -> Feeder {
        Feeder {
            pods,
            http: reqwest::Client::new(),
            ingest: format!("{logarithmd}{}", protocol::INGEST_PATH),
            shipped: HashMap::new(),
        }
    }

    /// Ships until the task is aborted; a failed round is tried again.
    pub async fn run(mut self) {
        loop {
            if let Err(e) = self.round().await {
                eprintln!("feeder: {e:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn round(&mut self) -> Result<()> {
        let selector = ListParams::default().labels(protocol::LABEL_RUN);
        let pods = self.pods.list(&selector).await.context("listing pods")?;
        let mut segments = Vec::new();
        let mut done = Vec::new();
        for pod in pods.items {
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            let status = pod.status.clone().unwrap_or_default();
            let state = status
                .container_statuses
                .as_ref()
                .and_then(|c| c.first())
                .and_then(|c| c.state.clone())
                .unwrap_or_default();
            let started_at = state
                .running
                .as_ref()
                .and_then(|r| r.started_at.as_ref())
                .or(state
                    .terminated
                    .as_ref()
                    .and_then(|t| t.started_at.as_ref()));
            let Some(started_at) = started_at.map(|t| ns_of(Some(t))) else {
                continue; // Not started: nothing to read yet.
            };
            let shipped = self.shipped.entry(name.clone()).or_default();
            if shipped.exit {
                continue;
            }
            // The state (listed above) is older than the log read now: a terminated state
            // means the log is complete (the kubelet records the end after the last line).
            let text = self
                .pods
                .logs(&name, &LogParams::default())
                .await
                .with_context(|| format!("reading the log of {name}"))?;
            let now = protocol::now_ns();
            let lines: Vec<&str> = text.lines().collect();
            let records: Vec<Record> = lines
                .iter()
                .enumerate()
                .skip(usize::try_from(shipped.lines).unwrap_or(usize::MAX))
                .map(|(i, l)| {
                    let seq = u64::try_from(i).unwrap_or(u64::MAX) + 1;
                    Record::new(seq, now, Stream::Stdout, l.as_bytes().to_vec(), false)
                })
                .collect();
            let exit = state.terminated.as_ref().map(|t| ContainerExit {
                exit_code: Some(i64::from(t.exit_code)),
                finished_at: ns_of(t.finished_at.as_ref()),
                last_seq: u64::try_from(lines.len()).unwrap_or(u64::MAX),
                restart_count: 0,
                reason: None,
            });
            let meta = (!shipped.meta).then(|| ContainerMeta {
                name: name.clone(),
                image: pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default(),
                labels: pod.metadata.labels.clone().unwrap_or_default(),
                annotations: pod.metadata.annotations.clone().unwrap_or_default(),
                created_at: ns_of(pod.metadata.creation_timestamp.as_ref()),
                started_at,
                restart_count: 0,
                tty: false,
                log_driver: "cri".to_owned(),
            });
            if meta.is_none() && records.is_empty() && exit.is_none() {
                continue;
            }
            done.push((name.clone(), lines.len(), exit.is_some()));
            segments.push(ContainerSegment {
                container_id: name,
                meta,
                records,
                exit,
                logs_unavailable: None,
            });
        }
        if segments.is_empty() {
            return Ok(());
        }
        let batch = Batch {
            version: protocol::PROTOCOL_VERSION,
            agent: protocol::Agent {
                id: "kubernetes-feeder".to_owned(),
                node: "mock-node".to_owned(),
            },
            segments,
        };
        let r = self
            .http
            .post(&self.ingest)
            .bearer_auth(logarithm_tests::TOKEN)
            .json(&batch)
            .send()
            .await?;
        let status = r.status();
        ensure!(
            status.is_success(),
            "ingest answered {status}: {}",
            r.text().await?
        );
        for (name, lines, exit) in done {
            let s = self.shipped.entry(name).or_default();
            s.meta = true;
            s.lines = u64::try_from(lines).unwrap_or(u64::MAX);
            s.exit = exit;
        }
        Ok(())
    }
}
