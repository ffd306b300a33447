//! `triggers:` of a flow: what starts runs besides the API.
//!
//! - `cron`: a schedule (`"0 3 * * *"`, five fields, or six with seconds first) in a time
//!   zone (`timezone: Europe/Berlin`, UTC by default). `missed: run_once` starts one run at
//!   start for the latest tick missed while no logarithmd ran; `skip` (the default) does not.
//! - `webhook`: `POST /api/v1/flows/{name}/trigger`, signed with the secret logarithmd's
//!   configuration holds under the name `secret` (`[engine] trigger_secrets`; the flow,
//!   readable by anyone who can read flows, never holds the secret itself); `events` and
//!   `branches` filter, and `mapping` puts payload fields (dotted paths) into `CO_DATA` or
//!   environment values.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One trigger, as written. The fields that do not belong to its `type` are refused by
/// the checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    #[serde(rename = "type")]
    pub kind: TriggerKind,
    /// `cron`: the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// `cron`: the time zone the schedule is read in (IANA name); UTC by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `cron`: what to do with a tick missed while no logarithmd ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<Missed>,
    /// `cron`: the `CO_DATA` of the runs it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub co_data: Option<String>,
    /// `webhook`: the name of the HMAC secret in logarithmd's `[engine] trigger_secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `webhook`: only these events start a run (`X-GitHub-Event`, or the body's `event`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// `webhook`: only pushes to these branches start a run (the body's `ref`,
    /// `refs/heads/<branch>`, or its `branch`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    /// `webhook`: `NAME: dotted.path` puts a payload field into `CO_DATA` or an
    /// environment value of every job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mapping: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    Cron,
    Webhook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// One run for the latest missed tick, at start.
    RunOnce,
    /// None.
    Skip,
}

impl Trigger {
    pub fn missed(&self) -> Missed {
        self.missed.unwrap_or(Missed::Skip)
    }

    /// The parsed schedule and time zone of a `cron` trigger.
    pub fn cron(&self) -> Result<(croner::Cron, chrono_tz::Tz), String> {
        let schedule = self
            .schedule
            .as_deref()
            .ok_or("a cron trigger needs a schedule")?;
        let cron = croner::Cron::new(schedule)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("invalid cron schedule {schedule:?}: {e}"))?;
        let tz = match &self.timezone {
            None => chrono_tz::UTC,
            Some(name) => chrono_tz::Tz::from_str(name).map_err(|_| {
                format!("unknown time zone {name:?} (use an IANA name such as Europe/Berlin)")
            })?,
        };
        Ok((cron, tz))
    }

    /// The problems of this trigger.
    pub fn check(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let cron_fields = self.schedule.is_some()
            || self.timezone.is_some()
            || self.missed.is_some()
            || self.co_data.is_some();
        let webhook_fields = self.secret.is_some()
            || !self.events.is_empty()
            || !self.branches.is_empty()
            || !self.mapping.is_empty();
        match self.kind {
            TriggerKind::Cron => {
                if webhook_fields {
                    errs.push(
                        "secret, events, branches and mapping belong to webhook triggers".into(),
                    );
                }
                if let Err(e) = self.cron() {
                    errs.push(e);
                }
            }
            TriggerKind::Webhook => {
                if cron_fields {
                    errs.push(
                        "schedule, timezone, missed and co_data belong to cron triggers".into(),
                    );
                }
                match &self.secret {
                    None => errs.push("a webhook trigger needs a secret (the name of one in logarithmd's [engine] trigger_secrets)".into()),
                    Some(v) if v.trim().is_empty() => errs.push("secret must name a secret".into()),
                    Some(_) => {}
                }
                for (name, path) in &self.mapping {
                    if !super::valid_env(name) {
                        errs.push(format!(
                            "mapping: {name:?} is not a valid environment variable name"
                        ));
                    }
                    if path.is_empty() || path.split('.').any(str::is_empty) {
                        errs.push(format!(
                            "mapping: {path:?} is not a dotted path such as head_commit.id"
                        ));
                    }
                }
            }
        }
        errs
    }
}
