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

/// Two normal stages, as the YAML lines to put after the `start` stage: `build`, parallel,
/// whose job `compile.version` prints `VERSION = 1.2.3` as an output while `lint.lint`
/// runs `sh -c lint`; then `package`, whose job `image.tag` gets the version as
/// `APP_VERSION` and checks it. Every job runs in `image`, with a 60 s timeout.
pub fn build_and_package(image: &str, lint: &str) -> String {
    format!(
        r#"  - type: normal
    name: build
    sequencing: parallel
    actions:
      - name: compile
        jobs:
          - type: component
            name: version
            endpoint: {image}
            timeout: 60
            command: ["sh", "-c", "echo building; sleep 1; echo '[COUT] VERSION = 1.2.3'; echo '[COUT] CO_RESULT = true'"]
            outputs: [VERSION]
      - name: lint
        jobs:
          - type: component
            name: lint
            endpoint: {image}
            timeout: 60
            command: ["sh", "-c", "{lint}"]
  - type: normal
    name: package
    actions:
      - name: image
        jobs:
          - type: component
            name: tag
            endpoint: {image}
            timeout: 60
            command: ["sh", "-c", "echo \"tagging $APP_VERSION with $CO_DATA\"; test \"$APP_VERSION\" = 1.2.3"]
            subscriptions:
              - "build.compile.version[VERSION]": APP_VERSION"#
    )
}
