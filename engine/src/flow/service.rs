//! Checks of service jobs (`type: service`): the endpoint is an `http(s)://` URL, not an
//! image, and the fields that only make sense for a container are absent; a `secret` is
//! only for service jobs. Errors name the job's flow line.

use super::checks::{error, find_line_from, job_line};
use super::{Flow, FlowError, JobKind};

/// Longest endpoint URL.
pub const ENDPOINT_MAX: usize = 2048;

/// Why `endpoint` is not a URL a service job can call, if it is not.
fn endpoint_problem(endpoint: &str) -> Option<String> {
    let e = endpoint.trim();
    if e.is_empty() {
        return Some("a service job needs an endpoint: the http(s) URL it calls".into());
    }
    if e.len() > ENDPOINT_MAX {
        return Some(format!(
            "the endpoint is longer than {ENDPOINT_MAX} characters"
        ));
    }
    let rest = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"));
    match rest {
        None => Some(format!(
            "a service job calls an http(s) URL, but its endpoint {e:?} is an image: \
             use type: component to run an image"
        )),
        Some(r) if r.is_empty() || r.starts_with('/') || r.chars().any(char::is_whitespace) => {
            Some(format!("{e:?} is not a valid http(s) URL"))
        }
        Some(_) => None,
    }
}

impl Flow {
    /// The service-job rules above, for every job.
    pub(super) fn check_services(&self, source: &str) -> Vec<FlowError> {
        let mut errs = Vec::new();
        for (si, stage) in self.stages.iter().enumerate() {
            for (ai, action) in stage.actions.iter().enumerate() {
                for (ji, job) in action.jobs.iter().enumerate() {
                    let at = job_line(source, &stage.name, &action.name, &job.name);
                    let path = format!("stages[{si}].actions[{ai}].jobs[{ji}]");
                    // The line of `key:` within the job, or the job's own line.
                    let line_of = |key: &str| {
                        at.and_then(|l| find_line_from(source, l, &format!("{key}:")))
                            .or(at)
                    };
                    if job.kind == JobKind::Component {
                        if job.secret.is_some() {
                            errs.push(error(
                                line_of("secret"),
                                format!("{path}.secret"),
                                "only service jobs have a signing secret".into(),
                            ));
                        }
                        continue;
                    }
                    if let Some(m) = endpoint_problem(&job.endpoint) {
                        errs.push(error(line_of("endpoint"), format!("{path}.endpoint"), m));
                    }
                    if !job.command.is_empty() {
                        errs.push(error(
                            line_of("command"),
                            format!("{path}.command"),
                            "a service job runs no container: it has no command".into(),
                        ));
                    }
                    if job.resources.is_some() {
                        errs.push(error(
                            line_of("resources"),
                            format!("{path}.resources"),
                            "a service job runs no container: it has no resources".into(),
                        ));
                    }
                    if job.secret.as_deref().is_some_and(|s| s.trim().is_empty()) {
                        errs.push(error(
                            line_of("secret"),
                            format!("{path}.secret"),
                            "secret must name a secret of [engine] service_secrets".into(),
                        ));
                    }
                }
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(job: &str) -> String {
        format!(
            "uri: t/service\nstages:\n  - type: start\n    name: start\n  - type: normal\n    \
             name: call\n    actions:\n      - name: a\n        jobs:\n{job}  - type: end\n    \
             name: end\n"
        )
    }

    #[test]
    fn a_service_job_with_a_url_is_accepted() {
        let src = flow(
            "          - type: service\n            name: deploy\n            \
             endpoint: https://deploy.example/hooks/run\n            timeout: 30s\n            \
             secret: deployer\n",
        );
        let f = Flow::from_yaml(&src).expect("valid");
        let job = &f.stages[1].actions[0].jobs[0];
        assert_eq!(job.kind, JobKind::Service);
        assert_eq!(job.secret.as_deref(), Some("deployer"));
    }

    #[test]
    fn a_service_job_with_an_image_names_its_line() {
        let src = flow(
            "          - type: service\n            name: deploy\n            \
             endpoint: logarithm/busybox:test\n            command: [\"true\"]\n",
        );
        let e = Flow::from_yaml(&src).expect_err("refused").to_string();
        assert!(
            e.contains("line 12: stages[1].actions[0].jobs[0].endpoint: a service job calls an http(s) URL, but its endpoint \"logarithm/busybox:test\" is an image"),
            "{e}"
        );
        assert!(
            e.contains(
                "line 13: stages[1].actions[0].jobs[0].command: a service job runs no container"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_urls_and_component_secrets_are_refused() {
        for (endpoint, msg) in [
            ("http:///x", "is not a valid http(s) URL"),
            ("\"\"", "a service job needs an endpoint"),
        ] {
            let src = flow(&format!(
                "          - type: service\n            name: s\n            endpoint: {endpoint}\n"
            ));
            let e = Flow::from_yaml(&src).expect_err("refused").to_string();
            assert!(e.contains(msg), "{endpoint}: {e}");
        }
        let src = flow(
            "          - type: component\n            name: c\n            endpoint: img\n            \
             secret: x\n",
        );
        let e = Flow::from_yaml(&src).expect_err("refused").to_string();
        assert!(
            e.contains("line 13: stages[1].actions[0].jobs[0].secret: only service jobs"),
            "{e}"
        );
    }
}
