//! `active: false`, labels and run causes in the state machine.

use super::tests::{key, launched, ok, run_of, started, verdict, S};
use super::*;

const FLOW: &str = r#"
uri: demo/skip
labels: {team: core, tier: flow}
stages:
  - type: start
    name: start
  - type: normal
    name: lint
    active: false
    actions:
      - name: a
        jobs:
          - type: component
            name: l
            endpoint: img
  - type: normal
    name: build
    labels: {tier: stage}
    actions:
      - name: b
        jobs:
          - type: component
            name: off
            endpoint: img
            active: false
            outputs: [OUT]
          - type: component
            name: on
            endpoint: img
            labels: {tier: job, example.com/owner: me}
  - type: end
    name: end
"#;

#[test]
fn inactive_stages_and_jobs_are_skipped_and_the_run_goes_on() {
    let mut run = run_of(FLOW, None);
    let cmds = ok(&mut run, Event::Start, S);
    assert_eq!(run.stages[1].status, Status::Skipped);
    assert_eq!(
        run.stages[1].reason.as_deref(),
        Some("inactive (active: false)")
    );
    assert_eq!(run.stages[1].actions[0].status, Status::Skipped);
    assert_eq!(run.stages[1].actions[0].jobs[0].status, Status::Skipped);
    assert_eq!(run.stages[2].actions[0].jobs[0].status, Status::Skipped);
    assert_eq!(run.stages[2].actions[0].jobs[0].started_at, None);
    // Only the active job of the active stage starts.
    let s = started(&cmds);
    assert_eq!(
        s.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![key(2, 0, 1)]
    );
    ok(&mut run, launched(key(2, 0, 1), "c1"), S);
    ok(&mut run, verdict(key(2, 0, 1), "c1", true, &[]), 2 * S);
    assert_eq!(run.status, Status::Success);
    assert_eq!(run.stages[2].status, Status::Success);
    assert_eq!(
        run.summary()
            .jobs
            .iter()
            .map(|j| j.status)
            .collect::<Vec<_>>(),
        vec![Status::Skipped, Status::Skipped, Status::Success]
    );
    assert_eq!(Status::parse("skipped"), Some(Status::Skipped));
}

#[test]
fn labels_merge_flow_stage_job_and_the_engine_wins() {
    let mut run = run_of(FLOW, None);
    let cmds = ok(&mut run, Event::Start, S);
    let (_, spec) = &started(&cmds)[0];
    assert_eq!(spec.labels["team"], "core");
    assert_eq!(spec.labels["tier"], "job");
    assert_eq!(spec.labels["example.com/owner"], "me");
    assert_eq!(spec.labels[protocol::LABEL_JOB], "on");
    assert_eq!(spec.labels.len(), 5 + 3);
}

#[test]
fn a_subscription_to_a_skipped_job_fails_with_its_reason() {
    let yaml = FLOW.replace(
        "labels: {tier: job, example.com/owner: me}",
        "subscriptions:\n              - \"build.b.off[OUT]\": IN",
    );
    let mut run = run_of(&yaml, None);
    ok(&mut run, Event::Start, S);
    let j = &run.stages[2].actions[0].jobs[1];
    assert_eq!(j.status, Status::Failure);
    assert_eq!(
        j.reason.as_deref(),
        Some("subscription build.b.off[OUT]: the upstream job was skipped")
    );
    assert_eq!(run.status, Status::Failure);
}

#[test]
fn pre_refusal_and_post_override_are_recorded() {
    let mut run = run_of(FLOW, None);
    ok(&mut run, Event::Start, S);
    let k = key(2, 0, 1);
    ok(
        &mut run,
        Event::Refused {
            job: k,
            reason: "pre script: no".into(),
        },
        S,
    );
    let j = run.job(k).cloned();
    let j = j.as_ref();
    assert_eq!(j.map(|j| j.status), Some(Status::Failure));
    assert_eq!(j.and_then(|j| j.reason.as_deref()), Some("pre script: no"));
    assert_eq!(j.map(|j| j.removed), Some(true));
    assert_eq!(run.status, Status::Failure);

    let mut run = run_of(FLOW, None);
    ok(&mut run, Event::Start, S);
    ok(&mut run, launched(k, "c1"), S);
    let Event::Verdict(mut v) = verdict(k, "c1", true, &[("OUT", "bad")]) else {
        unreachable!()
    };
    v.success = false;
    v.reason = "post script: OUT is bad".into();
    v.overridden = Some("success: exit code 0".into());
    ok(&mut run, Event::Verdict(v), 2 * S);
    let j = run.job(k).cloned();
    assert_eq!(j.as_ref().map(|j| j.status), Some(Status::Failure));
    assert_eq!(
        j.as_ref().and_then(|j| j.overridden.as_deref()),
        Some("success: exit code 0")
    );
}

#[test]
fn runs_stored_before_causes_read_as_manual() {
    let run = run_of(FLOW, None);
    let mut v = serde_json::to_value(&run).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("cause");
    }
    let back: Run = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.cause, Cause::Manual);
    let webhook = Cause::Webhook {
        delivery: "d-1".into(),
        event: Some("push".into()),
    };
    assert_eq!(
        serde_json::to_value(&webhook).unwrap_or_default(),
        serde_json::json!({"kind": "webhook", "delivery": "d-1", "event": "push"})
    );
}
