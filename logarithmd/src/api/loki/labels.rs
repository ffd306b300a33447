//! A job's stream labels, as Loki shows them.
//!
//! Built in: `flow`, `run`, `stage`, `action`, `job` (the `io.containerops.*` labels of a
//! flow job), `job_id` (logarithmd's job id), `container` (the container name), `node`,
//! `status` (`running`, `success`, `failure`) and `stream` (`stdout`, `stderr`). Then the
//! container's own labels with their names made Prometheus-safe: every character outside
//! `[a-zA-Z0-9_]` becomes `_`, a leading digit or `__` gets a `label_` prefix; a built-in
//! name wins over a container label that maps to the same name, and of two container
//! labels mapping to one name the first in name order wins. A label whose value is empty
//! is left out (Loki has no empty labels), and so are the `io.containerops.*` labels, which
//! are the built-in `flow` … `job`.

use std::collections::BTreeMap;

use protocol::Stream;
use storage::Job;

/// The built-in label names, in the order the label browser lists them.
pub const BUILT_IN: [&str; 10] = [
    "flow",
    "run",
    "stage",
    "action",
    "job",
    "job_id",
    "container",
    "node",
    "status",
    "stream",
];

/// A container label's name made Prometheus-safe.
pub fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) || s.starts_with("__") {
        s.insert_str(0, "label_");
    }
    s
}

/// A job's labels, without `stream` (see [`with_stream`]).
pub fn job_labels(job: &Job) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in &job.labels {
        if v.is_empty() || k.starts_with("io.containerops.") {
            continue;
        }
        out.entry(sanitize(k)).or_insert_with(|| v.clone());
    }
    let mut put = |k: &str, v: Option<&str>| match v.filter(|v| !v.is_empty()) {
        Some(v) => {
            out.insert(k.to_owned(), v.to_owned());
        }
        None => {
            out.remove(k);
        }
    };
    put("flow", job.flow.as_deref());
    put("run", job.run.as_deref());
    put("stage", job.stage.as_deref());
    put("action", job.action.as_deref());
    put("job", job.job.as_deref());
    put("job_id", Some(&job.id.to_string()));
    put("container", Some(&job.name));
    put("node", Some(&job.node));
    put("status", Some(job.status.as_str()));
    put("stream", None);
    out
}

/// The labels of one of a job's streams.
pub fn with_stream(
    mut labels: BTreeMap<String, String>,
    stream: Stream,
) -> BTreeMap<String, String> {
    labels.insert("stream".into(), stream.as_str().into());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_prometheus_safe() {
        assert_eq!(sanitize("com.example.team"), "com_example_team");
        assert_eq!(sanitize("app-name"), "app_name");
        assert_eq!(sanitize("9lives"), "label_9lives");
        assert_eq!(sanitize("__meta"), "label___meta");
        assert_eq!(sanitize("ok_Name1"), "ok_Name1");
        assert_eq!(sanitize("é"), "_");
        assert_eq!(sanitize(""), "label_");
    }
}
