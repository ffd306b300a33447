//! `secrets:` on a flow or a job: environment variables whose values come from the
//! embedder's secret store (logarithmd's `[engine.secrets]`), never from the flow file.
//!
//! ```yaml
//! secrets:
//!   - DEPLOY_TOKEN                                   # $DEPLOY_TOKEN = secret "DEPLOY_TOKEN"
//!   - {env: NPM_TOKEN, from_secret: npm}             # $NPM_TOKEN = secret "npm"
//!   - {env: AUTH, from_secret: basic, base64: true}  # also mask its base64 encoding
//! ```
//!
//! The flow holds only names. The engine passes the references on in the job's
//! [`crate::JobSpec`]; the embedder's runner puts the values into the container's
//! environment, and its log ingest masks them (and, with `base64`, their base64 encodings)
//! in every stored line of the job.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{find_line, valid_env, Flow, FlowError, JobKind};

/// Longest name of a secret.
pub const SECRET_NAME_MAX: usize = 128;

/// One `secrets:` entry: the variable `env` gets the value of the secret `from_secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    /// The environment variable of the job's container.
    pub env: String,
    /// The secret's name in the embedder's store.
    pub from_secret: String,
    /// Mask the value's base64 encodings too (standard and URL-safe, padded or not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base64: bool,
}

/// The long form, `{env, from_secret, base64}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Full {
    env: String,
    #[serde(default)]
    from_secret: Option<String>,
    #[serde(default)]
    base64: bool,
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretRef, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a variable name, or {env, from_secret, base64}")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<SecretRef, E> {
                Ok(SecretRef {
                    env: s.to_owned(),
                    from_secret: s.to_owned(),
                    base64: false,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretRef, A::Error> {
                let full = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SecretRef {
                    from_secret: full.from_secret.unwrap_or_else(|| full.env.clone()),
                    env: full.env,
                    base64: full.base64,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The secrets of a job: the flow's, then the job's (a job's entry wins for its variable).
pub fn merge(flow: &[SecretRef], job: &[SecretRef]) -> Vec<SecretRef> {
    let mut out: Vec<SecretRef> = Vec::with_capacity(flow.len() + job.len());
    for s in flow.iter().chain(job) {
        out.retain(|o| o.env != s.env);
        out.push(s.clone());
    }
    out
}

/// A secret name: letters, digits, `_`, `-`, `.`; at most [`SECRET_NAME_MAX`].
fn valid_secret_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SECRET_NAME_MAX
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Flow {
    /// The secrets of the job at these indexes, merged (see [`merge`]).
    pub fn job_secrets(&self, stage: usize, action: usize, job: usize) -> Vec<SecretRef> {
        match self.job(stage, action, job) {
            Some(j) => merge(&self.secrets, &j.secrets),
            None => Vec::new(),
        }
    }

    /// Names and variables of every `secrets:` list; none on service jobs.
    pub(super) fn check_secrets(&self, source: &str) -> Vec<FlowError> {
        let mut errs = Vec::new();
        check_list(source, "", &self.secrets, &mut errs);
        for (si, stage) in self.stages.iter().enumerate() {
            for (ai, action) in stage.actions.iter().enumerate() {
                for (ji, job) in action.jobs.iter().enumerate() {
                    let path = format!("stages[{si}].actions[{ai}].jobs[{ji}].");
                    if job.kind == JobKind::Service && !job.secrets.is_empty() {
                        errs.push(FlowError {
                            line: find_line(source, &format!("name: {}", job.name)),
                            column: None,
                            path: format!("{path}secrets"),
                            message: "a service job runs no container to give secrets to \
                                      (its requests are signed with `secret:`)"
                                .into(),
                        });
                    }
                    check_list(source, &path, &job.secrets, &mut errs);
                }
            }
        }
        errs
    }
}

/// One `secrets:` list at `path`.
fn check_list(source: &str, path: &str, list: &[SecretRef], errs: &mut Vec<FlowError>) {
    let mut seen = BTreeSet::new();
    for (i, s) in list.iter().enumerate() {
        let mut problem = |message: String| {
            errs.push(FlowError {
                line: find_line(source, &s.env),
                column: None,
                path: format!("{path}secrets[{i}]"),
                message,
            })
        };
        if !valid_env(&s.env) {
            problem(format!(
                "{:?} is not a valid environment variable name",
                s.env
            ));
        }
        if !valid_secret_name(&s.from_secret) {
            problem(format!(
                "{:?} is not a valid secret name (letters, digits, '_', '-', '.', at most {SECRET_NAME_MAX})",
                s.from_secret
            ));
        }
        if !seen.insert(s.env.as_str()) {
            problem(format!("{:?} is listed twice", s.env));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: &str = "\
uri: t/secrets
secrets:
  - TOKEN
  - {env: OTHER, from_secret: other}
stages:
  - {type: start, name: start}
  - type: normal
    name: s
    actions:
      - name: a
        jobs:
          - type: component
            name: j
            endpoint: img
            secrets:
              - {env: OTHER, from_secret: mine, base64: true}
  - {type: end, name: end}
";

    #[test]
    fn short_and_long_forms_merge_with_the_job_winning() {
        let flow = Flow::from_yaml(FLOW).unwrap();
        let merged = flow.job_secrets(1, 0, 0);
        assert_eq!(
            merged,
            vec![
                SecretRef {
                    env: "TOKEN".into(),
                    from_secret: "TOKEN".into(),
                    base64: false
                },
                SecretRef {
                    env: "OTHER".into(),
                    from_secret: "mine".into(),
                    base64: true
                },
            ]
        );
        // What is stored (JSON) reads back the same.
        let json = serde_json::to_string(&flow).unwrap();
        let back: Flow = serde_json::from_str(&json).unwrap();
        assert_eq!(back, flow);
    }

    #[test]
    fn bad_names_and_values_in_the_file_are_refused() {
        let bad = FLOW
            .replace("- TOKEN", "- 1TOKEN")
            .replace("from_secret: other", "from_secret: \"a b\"");
        let errs = Flow::from_yaml(&bad).unwrap_err().to_string();
        assert!(errs.contains("\"1TOKEN\" is not a valid environment variable name"));
        assert!(errs.contains("\"a b\" is not a valid secret name"));
        let service = FLOW.replace(
            "type: component\n            name: j\n            endpoint: img",
            "type: service\n            name: j\n            endpoint: https://x.example/hook",
        );
        assert!(Flow::from_yaml(&service)
            .unwrap_err()
            .to_string()
            .contains("a service job runs no container to give secrets to"));
        let value = FLOW.replace("from_secret: other", "value: hunter2");
        assert!(Flow::from_yaml(&value)
            .unwrap_err()
            .to_string()
            .contains("unknown field `value`"));
    }
}
