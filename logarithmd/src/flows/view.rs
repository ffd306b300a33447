//! The JSON shapes of flows and runs: what the flow routes answer and what `flow.finished`
//! carries. Times are RFC 3339, like the rest of the API; every job that ran names its
//! storage job id and the URL of its logs.

use std::collections::BTreeMap;

use engine::flow::Labels;
use engine::flow::StageKind;
use engine::run::{Cause, JobRun, JobSummary, RunSummary};
use engine::{Run, Status, StoredFlow};
use serde::Serialize;

use crate::timefmt::rfc3339;

fn time(ns: Option<i64>) -> Option<String> {
    ns.map(rfc3339)
}

fn labels(l: &Labels) -> BTreeMap<String, String> {
    engine::flow::labels::merge([l])
}

/// A registered flow.
#[derive(Debug, Serialize)]
pub struct FlowView {
    pub name: String,
    pub uri: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub title: String,
    pub stages: Vec<FlowStageView>,
    pub created_at: String,
    pub updated_at: String,
    /// The file as registered (`GET /api/v1/flows/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FlowStageView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: StageKind,
    pub actions: Vec<String>,
}

impl FlowView {
    pub fn new(f: &StoredFlow, with_source: bool) -> FlowView {
        FlowView {
            name: f.name.clone(),
            uri: f.flow.uri.clone(),
            title: f.flow.title.clone(),
            stages: f
                .flow
                .stages
                .iter()
                .map(|s| FlowStageView {
                    name: s.name.clone(),
                    kind: s.kind,
                    actions: s.actions.iter().map(|a| a.name.clone()).collect(),
                })
                .collect(),
            created_at: rfc3339(f.created_at),
            updated_at: rfc3339(f.updated_at),
            source: with_source.then(|| f.source.clone()),
        }
    }
}

/// A run with its stage, action and job tree.
#[derive(Debug, Serialize)]
pub struct RunView {
    pub id: String,
    pub flow: String,
    pub status: Status,
    pub reason: Option<String>,
    pub co_data: Option<String>,
    /// What started the run: `{"kind": "manual"}`, `{"kind": "cron", …}` or
    /// `{"kind": "webhook", "delivery": …}`.
    pub cause: Cause,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub url: String,
    pub stages: Vec<StageView>,
}

#[derive(Debug, Serialize)]
pub struct StageView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: StageKind,
    pub status: Status,
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub actions: Vec<ActionView>,
}

#[derive(Debug, Serialize)]
pub struct ActionView {
    pub name: String,
    pub status: Status,
    pub reason: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub jobs: Vec<JobView>,
}

#[derive(Debug, Serialize)]
pub struct JobView {
    pub name: String,
    pub status: Status,
    pub reason: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i64>,
    pub container_id: Option<String>,
    /// The job in `GET /api/v1/jobs/{id}` (logarithmd's id of the container).
    pub job_id: Option<String>,
    pub logs_url: Option<String>,
    pub outputs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// logarithmd's verdict, when the job's post script overrode it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overridden: Option<String>,
}

/// Storage's job id and logs path of a container.
fn job_links(container_id: Option<&str>, base: &str) -> (Option<String>, Option<String>) {
    match container_id {
        Some(c) => {
            let id = storage::job_id_for_container(c);
            (
                Some(id.to_string()),
                Some(format!("{base}/api/v1/jobs/{id}/logs")),
            )
        }
        None => (None, None),
    }
}

impl JobView {
    fn new(j: &JobRun, flow_job: Option<&engine::flow::Job>) -> JobView {
        let (job_id, logs_url) = job_links(j.container_id.as_deref(), "");
        JobView {
            name: j.name.clone(),
            status: j.status,
            reason: j.reason.clone(),
            started_at: time(j.started_at),
            finished_at: time(j.finished_at),
            exit_code: j.exit_code,
            container_id: j.container_id.clone(),
            job_id,
            logs_url,
            outputs: j.outputs.clone(),
            labels: flow_job.map(|f| labels(&f.labels)).unwrap_or_default(),
            overridden: j.overridden.clone(),
        }
    }
}

impl RunView {
    /// The run as `caller` may see it: `co_data` only for admins.
    pub fn shown_to(r: &Run, caller: &crate::auth::Caller) -> RunView {
        let mut view = RunView::new(r);
        if !caller.is_admin() {
            view.co_data = None;
        }
        view
    }

    pub fn new(r: &Run) -> RunView {
        RunView {
            id: r.id.clone(),
            flow: r.flow_name.clone(),
            status: r.status,
            reason: r.reason.clone(),
            co_data: r.co_data.clone(),
            cause: r.cause.clone(),
            env: r.env.clone(),
            labels: labels(&r.flow.labels),
            created_at: rfc3339(r.created_at),
            started_at: time(r.started_at),
            finished_at: time(r.finished_at),
            url: format!("/api/v1/runs/{}", r.id),
            stages: r
                .stages
                .iter()
                .enumerate()
                .map(|(si, s)| StageView {
                    name: s.name.clone(),
                    kind: s.kind,
                    status: s.status,
                    reason: s.reason.clone(),
                    labels: r
                        .flow
                        .stages
                        .get(si)
                        .map(|f| labels(&f.labels))
                        .unwrap_or_default(),
                    started_at: time(s.started_at),
                    finished_at: time(s.finished_at),
                    actions: s
                        .actions
                        .iter()
                        .enumerate()
                        .map(|(ai, a)| ActionView {
                            name: a.name.clone(),
                            status: a.status,
                            reason: a.reason.clone(),
                            started_at: time(a.started_at),
                            finished_at: time(a.finished_at),
                            jobs: a
                                .jobs
                                .iter()
                                .enumerate()
                                .map(|(ji, j)| JobView::new(j, r.flow.job(si, ai, ji)))
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// `flow.finished`'s `data`: `{"run": …}`.
#[derive(Debug, Serialize)]
pub struct FlowFinishedData {
    pub run: RunSummaryView,
}

/// A finished run with one line per job; URLs are absolute.
#[derive(Debug, Serialize)]
pub struct RunSummaryView {
    pub id: String,
    pub flow: String,
    pub status: Status,
    pub reason: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub url: String,
    pub jobs: Vec<JobSummaryView>,
}

#[derive(Debug, Serialize)]
pub struct JobSummaryView {
    pub stage: String,
    pub action: String,
    pub job: String,
    pub status: Status,
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    pub container_id: Option<String>,
    pub job_id: Option<String>,
    pub logs_url: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl RunSummaryView {
    pub fn new(s: &RunSummary, public_url: &str) -> RunSummaryView {
        let base = public_url.trim_end_matches('/');
        RunSummaryView {
            id: s.run.clone(),
            flow: s.flow.clone(),
            status: s.status,
            reason: s.reason.clone(),
            started_at: time(s.started_at),
            finished_at: time(s.finished_at),
            url: format!("{base}/api/v1/runs/{}", s.run),
            jobs: s
                .jobs
                .iter()
                .map(|j: &JobSummary| {
                    let (job_id, logs_url) = job_links(j.container_id.as_deref(), base);
                    JobSummaryView {
                        stage: j.stage.clone(),
                        action: j.action.clone(),
                        job: j.job.clone(),
                        status: j.status,
                        reason: j.reason.clone(),
                        exit_code: j.exit_code,
                        container_id: j.container_id.clone(),
                        job_id,
                        logs_url,
                        started_at: time(j.started_at),
                        finished_at: time(j.finished_at),
                    }
                })
                .collect(),
        }
    }
}
