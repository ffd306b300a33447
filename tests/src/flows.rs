//! Flow YAML the end-to-end tests share.

/// A flow of one normal stage, `work`, with one action, `act`, of one component job,
/// `job`, that runs `sh -c script` in `image`. `head` is what stands before `stages:` (the
/// `uri:` line first, then triggers and the like); `before_work` is YAML of the stages
/// between `start` and `work` (each line with its newline first, or empty); `job_keys`
/// more keys of the job (likewise, indented 12).
pub fn one_job_flow(
    head: &str,
    before_work: &str,
    image: &str,
    job_keys: &str,
    script: &str,
) -> String {
    format!(
        r#"{head}
stages:
  - type: start
    name: start{before_work}
  - type: normal
    name: work
    actions:
      - name: act
        jobs:
          - type: component
            name: job
            endpoint: {image}{job_keys}
            command: ["sh", "-c", "{script}"]
  - type: end
    name: end
"#
    )
}

/// `job_keys` for [`one_job_flow`] with a `timeout` (in seconds), if any.
pub fn timeout_key(timeout: Option<u32>) -> String {
    timeout.map_or(String::new(), |t| format!("\n            timeout: {t}"))
}
