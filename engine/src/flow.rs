//! Flow definitions: the ContainerOps flow file (YAML) as serde types, and the checks that
//! turn a parsed file into a [`Flow`] the engine can run.
//!
//! Parsing is strict: an unknown field, a wrong type or a missing field is an error that
//! names the field's path and the line (yaml_serde carries both). The checks after parsing
//! (names, stage order, subscriptions) name the path (`stages[2].actions[0].jobs[1].subscriptions`)
//! and, where the offending text can be found in the file, its line. Every problem is
//! reported at once, not only the first. `docs/flows.md` is the user-facing description.
//!
//! Layout: this file holds the serde types; `structure` the structural checks (names,
//! stages, subscriptions); `checks` those of the job-model fields (labels, scripts);
//! `labels`, `script`, `secrets`, `service`, `trigger`, `values` their field types.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

mod checks;
pub mod labels;
pub mod script;
pub mod secrets;
mod service;
mod structure;
pub mod trigger;
mod values;

pub use labels::Labels;
pub use script::Script;
pub use secrets::SecretRef;
pub use trigger::{Trigger, TriggerKind};
pub use values::{parse_memory, Cpu, Memory, Scalar, Timeout};

/// Longest name of a flow, stage, action or job (a Kubernetes label value holds 63).
pub const NAME_MAX: usize = 63;

/// A flow as written in its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// The flow's identity, ContainerOps style (`owner/repo/flow`). Its [`Flow::name`] is
    /// this with `/` replaced by `.`.
    pub uri: String,
    /// Human title.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// Free-form version (ContainerOps writes a number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Scalar>,
    /// Free-form tag (`latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Upper bound on the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// Environment every job gets (`- KEY: value`), below the job's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<BTreeMap<String, Scalar>>,
    /// Labels of every job's container, below the stage's and the job's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Variables every job gets from the embedder's secrets (names only; see
    /// [`secrets`]), below the job's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    /// What starts runs besides the API: `cron` schedules and `webhook`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// Stages, run in order: a `start` first, an `end` last.
    pub stages: Vec<Stage>,
}

/// One stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    #[serde(rename = "type")]
    pub kind: StageKind,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// How the actions of a `normal` stage run; `sequence` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequencing: Option<Sequencing>,
    /// Upper bound on the stage (for a `pause` stage: on the wait for a decision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// `false`: the stage is skipped (`skipped`), and so are its jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Labels of the stage's job containers, above the flow's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Actions of a `normal` stage (the other kinds have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
}

impl Stage {
    pub fn sequencing(&self) -> Sequencing {
        self.sequencing.unwrap_or(Sequencing::Sequence)
    }

    pub fn is_active(&self) -> bool {
        self.active.unwrap_or(true)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// Marks the beginning; does nothing.
    Start,
    /// Runs actions.
    Normal,
    /// Waits for approve or reject through the API.
    Pause,
    /// Marks the end; does nothing.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sequencing {
    /// One action after another, stopping at the first that fails.
    Sequence,
    /// All actions at once.
    Parallel,
}

/// One action: jobs run one after another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    pub jobs: Vec<Job>,
}

/// One job: a container (`type: component`) or a call of an HTTP service (`type: service`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    #[serde(rename = "type")]
    pub kind: JobKind,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// The image of a component; the `http(s)://` URL a service job POSTs its inputs to.
    pub endpoint: String,
    /// Arguments replacing the image's `CMD` (a Logarithm extension: ContainerOps
    /// components do their work in their entrypoint; plain images such as busybox need one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Upper bound on the job's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The job's environment (`- KEY: value`), above the flow's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<BTreeMap<String, Scalar>>,
    /// Output keys the job prints as `[COUT] KEY = VALUE`; only these can be subscribed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// `- "<stage>.<action>.<job>[<KEY>]": ENV_NAME`: an upstream job's output, injected as
    /// `ENV_NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<BTreeMap<String, String>>,
    /// Variables the job gets from the embedder's secrets, above the flow's (see
    /// [`secrets`]); masked in its logs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    /// `false`: the job is skipped (`skipped`); the action goes on with the next job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Labels of the job's container, above the flow's and the stage's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Lua run before the container starts: may change the environment or fail the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<Script>,
    /// Lua run on the verdict: may rewrite outputs or override the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<Script>,
    /// Service jobs: the name of the secret (in logarithmd's `[engine] service_secrets`)
    /// that signs the request; `default` when not given. The flow never holds the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A ContainerOps component: an image that follows the `[COUT]` contract.
    #[default]
    Component,
    /// "The other service": the engine POSTs the job's inputs to `endpoint`, and the
    /// service answers with a result at once or later through a callback.
    Service,
}

/// Resource limits of a job's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit: cores (`0.5`, `2`) or millicores (`500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Memory limit: bytes (`67108864`) or with a unit (`64Mi`, `1G`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

/// A subscription, parsed: which output of which job goes into which variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub stage: String,
    pub action: String,
    pub job: String,
    pub key: String,
    pub env: String,
}

impl Subscription {
    /// Parses `<stage>.<action>.<job>[<KEY>]`.
    pub fn parse(source: &str, env: &str) -> Option<Subscription> {
        let (path, rest) = source.split_once('[')?;
        let key = rest.strip_suffix(']')?;
        let mut parts = path.split('.');
        let (stage, action, job) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || key.is_empty() {
            return None;
        }
        Some(Subscription {
            stage: stage.to_owned(),
            action: action.to_owned(),
            job: job.to_owned(),
            key: key.to_owned(),
            env: env.to_owned(),
        })
    }

    /// The source as written.
    pub fn source(&self) -> String {
        format!("{}.{}.{}[{}]", self.stage, self.action, self.job, self.key)
    }
}

impl Job {
    pub fn is_active(&self) -> bool {
        self.active.unwrap_or(true)
    }

    /// The job's subscriptions, parsed (a validated flow has only valid ones).
    pub fn parsed_subscriptions(&self) -> Vec<Subscription> {
        self.subscriptions
            .iter()
            .flat_map(|m| m.iter())
            .filter_map(|(src, env)| Subscription::parse(src, env))
            .collect()
    }
}

/// Flattens `- KEY: value` lists; a later entry wins.
pub fn env_map(list: &[BTreeMap<String, Scalar>]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for m in list {
        for (k, v) in m {
            out.insert(k.clone(), v.0.clone());
        }
    }
    out
}

impl Flow {
    /// The flow's name: its `uri` with `/` replaced by `.` (usable in a URL path segment
    /// and as a container label value).
    pub fn name(&self) -> String {
        self.uri.trim_matches('/').replace('/', ".")
    }

    /// Parses and checks a flow file. Every problem found is reported.
    pub fn from_yaml(source: &str) -> Result<Flow, FlowErrors> {
        Flow::from_yaml_with_files(source, &BTreeMap::new())
    }

    /// Parses and checks a flow file sent with the files its scripts name (`file:`), by
    /// path relative to the flow file.
    pub fn from_yaml_with_files(
        source: &str,
        files: &BTreeMap<String, String>,
    ) -> Result<Flow, FlowErrors> {
        let mut flow: Flow = yaml_serde::from_str(source).map_err(|e| {
            let (line, column) = match e.location() {
                Some(l) => (Some(l.line()), Some(l.column())),
                None => (None, None),
            };
            FlowErrors(vec![FlowError {
                line,
                column,
                path: String::new(),
                message: e.to_string(),
            }])
        })?;
        let mut errors = flow.attach_files(source, files);
        errors.extend(flow.check(source));
        errors.extend(flow.check_job_model(source));
        errors.extend(flow.check_services(source));
        errors.extend(flow.check_secrets(source));
        if errors.is_empty() {
            Ok(flow)
        } else {
            Err(FlowErrors(errors))
        }
    }

    /// The stage, action and job at a path, if they exist.
    pub fn job(&self, stage: usize, action: usize, job: usize) -> Option<&Job> {
        self.stages.get(stage)?.actions.get(action)?.jobs.get(job)
    }
}

pub(crate) fn valid_env(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// 1-based number of the first line containing `needle`.
pub(crate) fn find_line(source: &str, needle: &str) -> Option<usize> {
    source
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
}

/// One problem in a flow file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Path of the field (`stages[2].actions[0].jobs[1].subscriptions[0]`); empty when the
    /// message names it (parse errors).
    pub path: String,
    pub message: String,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a flow file (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowErrors(pub Vec<FlowError>);

impl fmt::Display for FlowErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FlowErrors {}

impl From<FlowErrors> for Error {
    fn from(e: FlowErrors) -> Error {
        Error::invalid(format!("invalid flow: {e}"))
    }
}

#[cfg(test)]
mod tests;
