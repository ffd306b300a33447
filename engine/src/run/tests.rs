//! State machine tests: every rule of the module doc, driven event by event.

use super::*;

const FULL: &str = r#"
uri: demo/full
timeout: 1h
environments:
  - SHARED: flow
  - FLOW_ONLY: f
  - CO_DATA: flow-data
stages:
  - type: start
    name: start
  - type: normal
    name: build
    sequencing: parallel
    actions:
      - name: produce
        jobs:
          - type: component
            name: p
            endpoint: img
            outputs: [OUT]
      - name: other
        jobs:
          - type: component
            name: q
            endpoint: img
  - type: normal
    name: use
    actions:
      - name: consume
        jobs:
          - type: component
            name: c
            endpoint: img
            timeout: 30
            resources: {cpu: 0.5, memory: 64Mi}
            environments:
              - SHARED: job
              - OUT_ENV: static
            subscriptions:
              - "build.produce.p[OUT]": OUT_ENV
  - type: pause
    name: gate
    timeout: 10m
  - type: end
    name: end
"#;

pub(super) const S: Nanos = 1_000_000_000;

pub(super) fn run_of(yaml: &str, co_data: Option<&str>) -> Run {
    let flow = match Flow::from_yaml(yaml) {
        Ok(f) => f,
        Err(e) => panic!("test flow is invalid: {e}"),
    };
    Run::new("r1".into(), flow, co_data.map(str::to_owned), 0)
}

pub(super) fn key(stage: usize, action: usize, job: usize) -> JobKey {
    JobKey { stage, action, job }
}

pub(super) fn started(cmds: &[Command]) -> Vec<(JobKey, JobSpec)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::StartJob { job, spec } => Some((*job, (**spec).clone())),
            _ => None,
        })
        .collect()
}

fn stops(cmds: &[Command]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Stop { container_id, .. } => Some(container_id.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn verdict(
    job: JobKey,
    container: &str,
    success: bool,
    outputs: &[(&str, &str)],
) -> Event {
    Event::Verdict(Verdict {
        job,
        container_id: container.into(),
        success,
        reason: if success {
            "exit code 0".into()
        } else {
            "exit code 1".into()
        },
        exit_code: Some(if success { 0 } else { 1 }),
        outputs: outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        finished_at: None,
        overridden: None,
    })
}

pub(super) fn launched(job: JobKey, container: &str) -> Event {
    Event::Launched {
        job,
        container_id: container.into(),
    }
}

pub(super) fn ok(run: &mut Run, event: Event, now: Nanos) -> Vec<Command> {
    match run.apply(event, now) {
        Ok(c) => c,
        Err(e) => panic!("event refused: {e}"),
    }
}

#[test]
fn full_flow_parallel_subscription_pause_and_end() {
    let mut run = run_of(FULL, None);
    assert_eq!(run.status, Status::Pending);
    let cmds = ok(&mut run, Event::Start, S);
    assert_eq!(run.status, Status::Running);
    assert_eq!(run.deadline, Some(S + 3600 * S));
    assert_eq!(run.stages[0].status, Status::Success);
    // Both parallel actions start at once.
    let s = started(&cmds);
    assert_eq!(
        s.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![key(1, 0, 0), key(1, 1, 0)]
    );
    let (_, p) = &s[0];
    assert_eq!(p.name, "co-r1-build-produce-p");
    assert_eq!(p.labels[protocol::LABEL_FLOW], "demo.full");
    assert_eq!(p.labels[protocol::LABEL_RUN], "r1");
    assert_eq!(p.labels[protocol::LABEL_STAGE], "build");
    assert_eq!(p.labels[protocol::LABEL_ACTION], "produce");
    assert_eq!(p.labels[protocol::LABEL_JOB], "p");
    assert_eq!(p.env["CO_DATA"], "flow-data");
    assert_eq!(run.stages[1].status, Status::Running);
    assert_eq!(run.stages[1].started_at, Some(S));
    // A starting job has no container yet.
    assert_eq!(
        run.job(key(1, 0, 0)).map(|j| j.status),
        Some(Status::Running)
    );
    assert!(ok(&mut run, launched(key(1, 0, 0), "cp"), 2 * S).is_empty());
    assert!(ok(&mut run, launched(key(1, 1, 0), "cq"), 2 * S).is_empty());

    let cmds = ok(
        &mut run,
        verdict(key(1, 0, 0), "cp", true, &[("OUT", "42")]),
        3 * S,
    );
    assert_eq!(
        cmds,
        vec![Command::Remove {
            job: key(1, 0, 0),
            container_id: "cp".into()
        }]
    );
    assert_eq!(run.stages[1].actions[0].status, Status::Success);
    assert_eq!(run.stages[1].status, Status::Running);

    let cmds = ok(&mut run, verdict(key(1, 1, 0), "cq", true, &[]), 4 * S);
    assert_eq!(run.stages[1].status, Status::Success);
    assert_eq!(run.stages[1].finished_at, Some(4 * S));
    let s = started(&cmds);
    assert_eq!(s.len(), 1);
    let (k, c) = &s[0];
    assert_eq!(*k, key(2, 0, 0));
    // Subscription beats the job's static value; job env beats flow env.
    assert_eq!(c.env["OUT_ENV"], "42");
    assert_eq!(c.env["SHARED"], "job");
    assert_eq!(c.env["FLOW_ONLY"], "f");
    assert_eq!(c.cpu.map(|c| c.0), Some(500));
    assert_eq!(c.memory.map(|m| m.0), Some(64 << 20));
    assert_eq!(run.job(*k).and_then(|j| j.deadline), Some(4 * S + 30 * S));
    assert_eq!(run.next_deadline(), Some(34 * S));

    ok(&mut run, launched(key(2, 0, 0), "cc"), 5 * S);
    ok(&mut run, verdict(key(2, 0, 0), "cc", true, &[]), 6 * S);
    assert_eq!(run.stages[2].status, Status::Success);
    // The pause stage waits, with its own deadline.
    assert_eq!(run.stages[3].status, Status::Running);
    assert_eq!(run.stages[3].deadline, Some(6 * S + 600 * S));
    assert_eq!(run.status, Status::Running);

    let cmds = ok(
        &mut run,
        Event::Approve {
            by: Some("alice".into()),
        },
        7 * S,
    );
    assert_eq!(cmds, vec![Command::Finished]);
    assert_eq!(run.stages[3].status, Status::Success);
    assert_eq!(run.stages[3].reason.as_deref(), Some("approved by alice"));
    assert_eq!(run.stages[4].status, Status::Success);
    assert_eq!(run.status, Status::Success);
    assert_eq!(run.finished_at, Some(7 * S));
    assert_eq!(run.next_deadline(), None);
    // Containers all removed? Not yet: the driver reports removals.
    assert!(run.is_active());
    for (k, c) in [
        (key(1, 0, 0), "cp"),
        (key(1, 1, 0), "cq"),
        (key(2, 0, 0), "cc"),
    ] {
        assert_eq!(run.job(k).and_then(|j| j.container_id.as_deref()), Some(c));
        ok(&mut run, Event::Removed { job: k }, 8 * S);
    }
    run.announced = true;
    assert!(!run.is_active());

    let summary = run.summary();
    assert_eq!(summary.status, Status::Success);
    assert_eq!(summary.jobs.len(), 3);
    assert_eq!(
        summary
            .jobs
            .iter()
            .map(|j| format!("{}.{}.{}={}", j.stage, j.action, j.job, j.status.as_str()))
            .collect::<Vec<_>>(),
        vec![
            "build.produce.p=success",
            "build.other.q=success",
            "use.consume.c=success"
        ]
    );
}

#[test]
fn co_data_of_the_run_wins_over_everything() {
    let mut run = run_of(FULL, Some("run-data"));
    let cmds = ok(&mut run, Event::Start, S);
    for (_, spec) in started(&cmds) {
        assert_eq!(spec.env["CO_DATA"], "run-data");
    }
}

const SEQ: &str = r#"
uri: demo/seq
stages:
  - type: start
    name: start
  - type: normal
    name: s
    sequencing: sequence
    actions:
      - name: a1
        jobs:
          - {type: component, name: j, endpoint: img}
      - name: a2
        jobs:
          - {type: component, name: j1, endpoint: img}
          - {type: component, name: j2, endpoint: img}
          - {type: component, name: j3, endpoint: img}
      - name: a3
        jobs:
          - {type: component, name: j, endpoint: img}
  - type: end
    name: end
"#;

#[test]
fn sequence_stops_at_the_first_failure() {
    let mut run = run_of(SEQ, None);
    let cmds = ok(&mut run, Event::Start, S);
    // Only the first action starts.
    assert_eq!(
        started(&cmds).iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![key(1, 0, 0)]
    );
    ok(&mut run, launched(key(1, 0, 0), "c1"), S);
    let cmds = ok(&mut run, verdict(key(1, 0, 0), "c1", true, &[]), 2 * S);
    assert_eq!(
        started(&cmds).iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![key(1, 1, 0)]
    );
    ok(&mut run, launched(key(1, 1, 0), "c2"), 2 * S);
    let cmds = ok(&mut run, verdict(key(1, 1, 0), "c2", true, &[]), 3 * S);
    // Jobs of an action run one after another.
    assert_eq!(
        started(&cmds).iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![key(1, 1, 1)]
    );
    ok(&mut run, launched(key(1, 1, 1), "c3"), 3 * S);
    let cmds = ok(&mut run, verdict(key(1, 1, 1), "c3", false, &[]), 4 * S);
    assert!(started(&cmds).is_empty());
    assert!(cmds.contains(&Command::Finished));
    let a2 = &run.stages[1].actions[1];
    assert_eq!(a2.status, Status::Failure);
    assert_eq!(a2.reason.as_deref(), Some("job j2: exit code 1"));
    assert_eq!(a2.jobs[2].status, Status::Pending);
    assert_eq!(
        a2.jobs[2].reason.as_deref(),
        Some("not started: job j2 did not succeed")
    );
    assert_eq!(run.stages[1].actions[2].status, Status::Pending);
    assert_eq!(
        run.stages[1].actions[2].reason.as_deref(),
        Some("not started: action a2 did not succeed")
    );
    assert_eq!(run.stages[1].status, Status::Failure);
    assert_eq!(run.stages[2].status, Status::Pending, "end never reached");
    assert_eq!(run.status, Status::Failure);
    assert_eq!(
        run.reason.as_deref(),
        Some("stage s: action a2: job j2: exit code 1")
    );
    assert_eq!(run.finished_at, Some(4 * S));
}

const PAR: &str = r#"
uri: demo/par
stages:
  - {type: start, name: start}
  - type: normal
    name: p
    sequencing: parallel
    actions:
      - name: fast
        jobs:
          - {type: component, name: j, endpoint: img}
      - name: slow
        jobs:
          - {type: component, name: j, endpoint: img}
          - {type: component, name: k, endpoint: img}
  - {type: end, name: end}
"#;

#[test]
fn parallel_failure_stops_the_other_actions() {
    let mut run = run_of(PAR, None);
    ok(&mut run, Event::Start, S);
    ok(&mut run, launched(key(1, 0, 0), "fast"), S);
    ok(&mut run, launched(key(1, 1, 0), "slow"), S);
    let cmds = ok(&mut run, verdict(key(1, 0, 0), "fast", false, &[]), 2 * S);
    assert_eq!(stops(&cmds), vec!["slow".to_string()]);
    assert!(cmds.contains(&Command::Finished));
    let slow = &run.stages[1].actions[1];
    assert_eq!(slow.status, Status::Cancelled);
    assert_eq!(
        slow.jobs[0].reason.as_deref(),
        Some("stopped: action fast ended with failure")
    );
    assert_eq!(slow.jobs[1].status, Status::Pending);
    assert_eq!(run.stages[1].status, Status::Failure);
    assert_eq!(run.status, Status::Failure);
    // The stopped container's verdict arrives later: the status stays, the container goes.
    let cmds = ok(&mut run, verdict(key(1, 1, 0), "slow", false, &[]), 3 * S);
    assert_eq!(
        cmds,
        vec![Command::Remove {
            job: key(1, 1, 0),
            container_id: "slow".into()
        }]
    );
    assert_eq!(
        run.job(key(1, 1, 0)).map(|j| j.status),
        Some(Status::Cancelled)
    );
    assert_eq!(run.job(key(1, 1, 0)).and_then(|j| j.exit_code), Some(1));
}

const TIMEOUTS: &str = r#"
uri: demo/timeouts
timeout: 100
stages:
  - {type: start, name: start}
  - type: normal
    name: work
    timeout: 50
    actions:
      - name: a
        jobs:
          - {type: component, name: j, endpoint: img, timeout: 10}
          - {type: component, name: k, endpoint: img}
  - {type: end, name: end}
"#;

#[test]
fn job_timeout_stops_the_container() {
    let mut run = run_of(TIMEOUTS, None);
    ok(&mut run, Event::Start, 0);
    ok(&mut run, launched(key(1, 0, 0), "cj"), S);
    assert_eq!(run.next_deadline(), Some(10 * S));
    assert!(ok(&mut run, Event::Tick, 9 * S).is_empty());
    assert_eq!(run.status, Status::Running);
    let cmds = ok(&mut run, Event::Tick, 10 * S);
    assert_eq!(stops(&cmds), vec!["cj".to_string()]);
    assert!(cmds.contains(&Command::Finished));
    let j = run.job(key(1, 0, 0)).map(|j| (j.status, j.reason.clone()));
    assert_eq!(
        j,
        Some((Status::Timeout, Some("job timed out after 10s".into())))
    );
    assert_eq!(run.stages[1].actions[0].jobs[1].status, Status::Pending);
    assert_eq!(run.stages[1].status, Status::Timeout);
    assert_eq!(run.status, Status::Timeout);
    assert_eq!(
        run.reason.as_deref(),
        Some("stage work: action a: job j: job timed out after 10s")
    );
    // Its verdict after the stop removes it.
    let cmds = ok(&mut run, verdict(key(1, 0, 0), "cj", false, &[]), 11 * S);
    assert_eq!(cmds.len(), 1);
}

#[test]
fn stage_and_flow_timeouts() {
    let mut run = run_of(TIMEOUTS, None);
    ok(&mut run, Event::Start, 0);
    ok(&mut run, launched(key(1, 0, 0), "cj"), S);
    ok(&mut run, verdict(key(1, 0, 0), "cj", true, &[]), 5 * S);
    ok(&mut run, launched(key(1, 0, 1), "ck"), 5 * S);
    // k has no job timeout; the stage's (50 s from 0) comes first.
    assert_eq!(run.next_deadline(), Some(50 * S));
    let cmds = ok(&mut run, Event::Tick, 50 * S);
    assert_eq!(stops(&cmds), vec!["ck".to_string()]);
    assert_eq!(run.stages[1].status, Status::Timeout);
    assert_eq!(
        run.stages[1].reason.as_deref(),
        Some("stage timed out after 50s")
    );
    assert_eq!(run.status, Status::Timeout);

    // Flow timeout: a stage without a deadline of its own.
    let yaml = TIMEOUTS.replace("    timeout: 50\n", "");
    let mut run = run_of(&yaml, None);
    ok(&mut run, Event::Start, 0);
    ok(&mut run, launched(key(1, 0, 0), "cj"), S);
    ok(&mut run, verdict(key(1, 0, 0), "cj", true, &[]), 5 * S);
    ok(&mut run, launched(key(1, 0, 1), "ck"), 5 * S);
    assert_eq!(run.next_deadline(), Some(100 * S));
    let cmds = ok(&mut run, Event::Tick, 100 * S);
    assert_eq!(stops(&cmds), vec!["ck".to_string()]);
    assert_eq!(run.status, Status::Timeout);
    assert_eq!(run.reason.as_deref(), Some("flow timed out after 1m 40s"));
    assert_eq!(
        run.job(key(1, 0, 1)).map(|j| j.status),
        Some(Status::Timeout)
    );
}

const PAUSE: &str = r#"
uri: demo/pause
stages:
  - {type: start, name: start}
  - {type: pause, name: gate, timeout: 60}
  - type: normal
    name: after
    actions:
      - name: a
        jobs:
          - {type: component, name: j, endpoint: img}
  - {type: end, name: end}
"#;

#[test]
fn pause_reject_and_timeout() {
    let mut run = run_of(PAUSE, None);
    // Approving before the run started is refused and changes nothing.
    let before = run.clone();
    assert!(run.apply(Event::Approve { by: None }, 0).is_err());
    assert_eq!(run, before);
    assert!(ok(&mut run, Event::Start, 0).is_empty());
    assert_eq!(run.stages[1].status, Status::Running);
    let cmds = ok(
        &mut run,
        Event::Reject {
            reason: Some("not today".into()),
        },
        S,
    );
    assert_eq!(cmds, vec![Command::Finished]);
    assert_eq!(run.stages[1].status, Status::Failure);
    assert_eq!(run.stages[1].reason.as_deref(), Some("rejected: not today"));
    assert_eq!(run.stages[2].status, Status::Pending);
    assert_eq!(run.status, Status::Failure);
    assert_eq!(
        run.reason.as_deref(),
        Some("stage gate: rejected: not today")
    );
    let err = run.apply(Event::Approve { by: None }, 2 * S);
    assert_eq!(err.map_err(|e| e.kind()), Err(crate::ErrorKind::Conflict));

    let mut run = run_of(PAUSE, None);
    ok(&mut run, Event::Start, 0);
    assert_eq!(run.next_deadline(), Some(60 * S));
    let cmds = ok(&mut run, Event::Tick, 60 * S);
    assert_eq!(cmds, vec![Command::Finished]);
    assert_eq!(run.stages[1].status, Status::Timeout);
    assert_eq!(run.status, Status::Timeout);

    // Approve goes on to the next stage.
    let mut run = run_of(PAUSE, None);
    ok(&mut run, Event::Start, 0);
    let cmds = ok(&mut run, Event::Approve { by: None }, S);
    assert_eq!(started(&cmds).len(), 1);
    assert_eq!(run.stages[1].reason.as_deref(), Some("approved"));
}

#[test]
fn cancel_stops_running_and_starting_jobs() {
    let mut run = run_of(PAR, None);
    ok(&mut run, Event::Start, 0);
    ok(&mut run, launched(key(1, 0, 0), "c0"), S);
    // key(1,1,0) is still starting.
    let cmds = ok(
        &mut run,
        Event::Cancel {
            reason: Some("by test".into()),
        },
        2 * S,
    );
    assert_eq!(stops(&cmds), vec!["c0".to_string()]);
    assert_eq!(cmds.iter().filter(|c| **c == Command::Finished).count(), 1);
    assert_eq!(run.status, Status::Cancelled);
    assert_eq!(run.reason.as_deref(), Some("cancelled: by test"));
    assert_eq!(run.stages[1].status, Status::Cancelled);
    for k in [key(1, 0, 0), key(1, 1, 0)] {
        assert_eq!(run.job(k).map(|j| j.status), Some(Status::Cancelled));
    }
    // The starting one is stopped as soon as it has a container.
    let cmds = ok(&mut run, launched(key(1, 1, 0), "c1"), 3 * S);
    assert_eq!(stops(&cmds), vec!["c1".to_string()]);
    let again = run.apply(Event::Cancel { reason: None }, 4 * S);
    assert_eq!(again.map_err(|e| e.kind()), Err(crate::ErrorKind::Conflict));
    // The driver keeps the run until both containers are gone after their verdicts.
    run.announced = true;
    for (k, c) in [(key(1, 0, 0), "c0"), (key(1, 1, 0), "c1")] {
        assert!(run.is_active());
        let cmds = ok(&mut run, verdict(k, c, false, &[]), 5 * S);
        assert_eq!(
            cmds,
            vec![Command::Remove {
                job: k,
                container_id: c.into()
            }]
        );
        ok(&mut run, Event::Removed { job: k }, 5 * S);
    }
    assert!(!run.is_active());
    assert_eq!(run.status, Status::Cancelled);
}

#[test]
fn launch_failure_fails_the_job() {
    let mut run = run_of(SEQ, None);
    ok(&mut run, Event::Start, 0);
    let cmds = ok(
        &mut run,
        Event::LaunchFailed {
            job: key(1, 0, 0),
            error: "no such image".into(),
        },
        S,
    );
    assert_eq!(cmds, vec![Command::Finished]);
    assert_eq!(
        run.job(key(1, 0, 0))
            .and_then(|j| j.reason.clone())
            .as_deref(),
        Some("could not start: no such image")
    );
    assert_eq!(run.status, Status::Failure);
}

#[test]
fn missing_subscribed_output_fails_the_subscriber() {
    let mut run = run_of(FULL, None);
    ok(&mut run, Event::Start, 0);
    ok(&mut run, launched(key(1, 0, 0), "cp"), S);
    ok(&mut run, launched(key(1, 1, 0), "cq"), S);
    ok(&mut run, verdict(key(1, 0, 0), "cp", true, &[]), S);
    let cmds = ok(&mut run, verdict(key(1, 1, 0), "cq", true, &[]), S);
    assert!(started(&cmds).is_empty());
    assert_eq!(
        run.job(key(2, 0, 0))
            .and_then(|j| j.reason.clone())
            .as_deref(),
        Some("subscription build.produce.p[OUT]: the upstream job printed no OUT")
    );
    assert_eq!(run.status, Status::Failure);
}

#[test]
fn stale_and_repeated_verdicts_are_ignored() {
    let mut run = run_of(SEQ, None);
    ok(&mut run, Event::Start, 0);
    ok(&mut run, launched(key(1, 0, 0), "c1"), S);
    // Another container of the same job (say, one replaced after a crash).
    assert!(ok(&mut run, verdict(key(1, 0, 0), "old", false, &[]), S).is_empty());
    assert_eq!(
        run.job(key(1, 0, 0)).map(|j| j.status),
        Some(Status::Running)
    );
    ok(&mut run, verdict(key(1, 0, 0), "c1", true, &[]), 2 * S);
    let snapshot = run.clone();
    assert!(ok(&mut run, verdict(key(1, 0, 0), "c1", false, &[]), 3 * S).is_empty());
    assert_eq!(run, snapshot);
}

#[test]
fn a_run_survives_a_json_round_trip() {
    let mut run = run_of(FULL, Some("x"));
    ok(&mut run, Event::Start, S);
    ok(&mut run, launched(key(1, 0, 0), "cp"), S);
    let json = serde_json::to_string(&run).map_err(|e| e.to_string());
    let back: Result<Run, String> =
        json.and_then(|j| serde_json::from_str(&j).map_err(|e| e.to_string()));
    assert_eq!(back, Ok(run));
}

#[test]
fn statuses_parse_back() {
    for s in [
        "pending",
        "running",
        "success",
        "failure",
        "timeout",
        "cancelled",
    ] {
        assert_eq!(Status::parse(s).map(Status::as_str), Some(s));
    }
    assert_eq!(Status::parse("done"), None);
}

#[test]
fn a_stored_run_must_match_its_flow() {
    let run = run_of(FULL, None);
    assert!(run.matches_flow());
    let mut fewer_stages = run.clone();
    fewer_stages.stages.pop();
    assert!(!fewer_stages.matches_flow());
    let mut fewer_jobs = run.clone();
    fewer_jobs.stages[1].actions[0].jobs.clear();
    assert!(!fewer_jobs.matches_flow());
    let mut extra_action = run;
    let copy = extra_action.stages[2].actions[0].clone();
    extra_action.stages[2].actions.push(copy);
    assert!(!extra_action.matches_flow());
}
