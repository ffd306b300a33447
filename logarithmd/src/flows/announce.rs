//! [`RunEvents`]: a finished run becomes a durable `flow.finished` webhook delivery for
//! every matching subscription (filters match the labels `io.containerops.flow` and
//! `io.containerops.run`), with one line per job. Storage makes a repeated announcement
//! (after a restart) a no-op, so each subscription gets one delivery per run.

use std::sync::Arc;

use engine::{Result, RunEvents, RunSummary};
use storage::{EventKind, EventWrite, Storage};
use tokio::sync::Notify;

use super::engine_error;
use super::view::{FlowFinishedData, RunSummaryView};

pub struct WebhookRunEvents {
    storage: Arc<dyn Storage>,
    wake: Arc<Notify>,
    public_url: String,
}

impl WebhookRunEvents {
    /// `wake` is the webhook dispatcher's; `public_url` makes the payload's links absolute.
    pub fn new(storage: Arc<dyn Storage>, wake: Arc<Notify>, public_url: String) -> Self {
        WebhookRunEvents {
            storage,
            wake,
            public_url,
        }
    }
}

#[async_trait::async_trait]
impl RunEvents for WebhookRunEvents {
    async fn run_finished(&self, s: &RunSummary) -> Result<()> {
        let data = FlowFinishedData {
            run: RunSummaryView::new(s, &self.public_url),
        };
        let data_json = serde_json::to_string(&data).map_err(|e| {
            engine::Error::new(
                engine::ErrorKind::Internal,
                format!("cannot encode flow.finished: {e}"),
            )
        })?;
        let event = EventWrite {
            kind: EventKind::FlowFinished,
            key: s.run.clone(),
            labels: [
                (protocol::LABEL_FLOW.to_owned(), s.flow.clone()),
                (protocol::LABEL_RUN.to_owned(), s.run.clone()),
            ]
            .into(),
            data_json,
            at: s.finished_at.unwrap_or_else(protocol::now_ns),
        };
        let added = self
            .storage
            .enqueue_event(&event)
            .await
            .map_err(|e| engine_error("cannot enqueue flow.finished", e))?;
        tracing::info!(run = %s.run, flow = %s.flow, status = s.status.as_str(), deliveries = added, "flow run finished");
        if added > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }
}
