//! The JSON body of a delivery. Built from the delivery's stored snapshot alone, so every
//! attempt of a delivery sends the same bytes.

use serde::Serialize;
use storage::Delivery;

use crate::job_view::JobView;
use crate::timefmt::rfc3339;

/// The body of every delivery.
#[derive(Debug, Serialize)]
pub struct Payload {
    /// The event type: `job.started`, `job.finished`, `flow.finished`.
    #[serde(rename = "type")]
    pub event: &'static str,
    /// The delivery id (also in `webhook-id`), a decimal string.
    pub delivery_id: String,
    /// When the event was committed, RFC 3339.
    pub timestamp: String,
    pub data: Data,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Data {
    /// `job.*`: `{"job": …}`, the job as committed with the event, shaped as
    /// `GET /api/v1/jobs/{id}` shows it, with an absolute `logs_url`.
    Job { job: Box<JobView> },
    /// Other events (`flow.finished`: `{"run": …}`): the data stored when the event was
    /// announced.
    Event(serde_json::Value),
}

/// The payload of a delivery; `public_url` is logarithmd's externally visible base URL.
pub fn build(delivery: &Delivery, public_url: &str) -> Payload {
    let data = match (&delivery.job, &delivery.data) {
        (Some(job), _) => {
            let mut job = JobView::from_job(job.clone());
            job.logs_url = format!("{}{}", public_url.trim_end_matches('/'), job.logs_url);
            Data::Job { job: Box::new(job) }
        }
        (None, Some(data)) => Data::Event(data.clone()),
        (None, None) => Data::Event(serde_json::Value::Null),
    };
    Payload {
        event: delivery.event.as_str(),
        delivery_id: delivery.id.to_string(),
        timestamp: rfc3339(delivery.created_at),
        data,
    }
}

/// The body's bytes.
pub fn body(delivery: &Delivery, public_url: &str) -> Vec<u8> {
    // Strings, numbers and maps of strings always serialise.
    serde_json::to_vec(&build(delivery, public_url)).unwrap_or_else(|_| b"{}".to_vec())
}
