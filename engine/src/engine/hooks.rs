//! Where the driver runs a job's scripts: `pre` between the state machine's start command
//! and the runner's start, `post` between logarithmd's verdict and the state machine. The
//! Lua runs on tokio's blocking pool under its budgets; an outer timeout (the time budget
//! plus a second) answers even if a script sits inside one long library call that the
//! instruction hook cannot interrupt.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::results::JobResult;
use crate::run::{JobKey, Run, Status, Verdict, CO_DATA};
use crate::script::{self, JobInfo, Limits, PostInput, PreOutcome};

/// Slack past the time budget before the driver gives up waiting on a script.
const GRACE: Duration = Duration::from_secs(1);

fn info(run: &Run, key: JobKey) -> JobInfo {
    let stage = &run.stages[key.stage];
    let action = &stage.actions[key.action];
    JobInfo {
        flow: run.flow_name.clone(),
        run: run.id.clone(),
        stage: stage.name.clone(),
        action: action.name.clone(),
        name: action.jobs[key.job].name.clone(),
    }
}

/// A pre script ready to run.
pub(super) struct PreTask {
    source: String,
    limits: Limits,
    job: JobInfo,
    /// The subscribed variables (by name), filled from the environment at run time.
    inputs: Vec<String>,
}

/// The pre script of a job, if it has one.
pub(super) fn pre_task(run: &Run, key: JobKey, limits: Limits) -> Option<PreTask> {
    let flow_job = run.flow.job(key.stage, key.action, key.job)?;
    let source = flow_job.pre.as_ref()?.source.clone();
    Some(PreTask {
        source,
        limits,
        job: info(run, key),
        inputs: flow_job
            .parsed_subscriptions()
            .into_iter()
            .map(|s| s.env)
            .collect(),
    })
}

impl PreTask {
    /// The environment to start the job with, or why it must not start.
    pub(super) async fn run(
        self,
        env: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        let PreTask {
            source,
            limits,
            job,
            inputs,
        } = self;
        let inputs: BTreeMap<String, String> = inputs
            .into_iter()
            .filter_map(|k| env.get(&k).map(|v| (k, v.clone())))
            .collect();
        let co_data = env.get(CO_DATA).cloned();
        let task = tokio::task::spawn_blocking(move || {
            script::run_pre(&source, &limits, &job, env, &inputs, co_data.as_deref())
        });
        match tokio::time::timeout(limits.time + GRACE, task).await {
            Ok(Ok(PreOutcome::Start(env))) => Ok(env),
            Ok(Ok(PreOutcome::Fail(reason))) => Err(reason),
            Ok(Err(e)) => Err(format!("pre script crashed: {e}")),
            Err(_) => Err(format!(
                "pre script exceeded its time budget of {}",
                humantime_serde::re::humantime::format_duration(limits.time)
            )),
        }
    }
}

/// A post script ready to run on a verdict.
pub(super) struct PostTask {
    source: String,
    limits: Limits,
    job: JobInfo,
}

/// The post script to run on this verdict, if the job has one and still waits for it.
pub(super) fn post_task(run: &Run, key: JobKey, r: &JobResult, limits: Limits) -> Option<PostTask> {
    let state = run.job(key)?;
    let waiting = state.status == Status::Running
        && !state.exited
        && state
            .container_id
            .as_ref()
            .is_none_or(|c| *c == r.container_id);
    if !waiting {
        return None;
    }
    let flow_job = run.flow.job(key.stage, key.action, key.job)?;
    Some(PostTask {
        source: flow_job.post.as_ref()?.source.clone(),
        limits,
        job: info(run, key),
    })
}

impl PostTask {
    pub(super) fn log_lines(&self) -> usize {
        self.limits.log_lines
    }

    /// The verdict after the script: outputs as it left them, and its decision recorded
    /// with the verdict it replaced.
    pub(super) async fn run(self, job: JobKey, r: JobResult, log: Vec<String>) -> Verdict {
        let PostTask {
            source,
            limits,
            job: info,
        } = self;
        let input = PostInput {
            outputs: r.outputs.clone(),
            exit_code: r.exit_code,
            success: r.success,
            reason: r.reason.clone(),
            log,
        };
        let task =
            tokio::task::spawn_blocking(move || script::run_post(&source, &limits, &info, &input));
        let outcome = match tokio::time::timeout(limits.time + GRACE, task).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => script::PostOutcome {
                outputs: r.outputs.clone(),
                verdict: Some((false, format!("post script crashed: {e}"))),
            },
            Err(_) => script::PostOutcome {
                outputs: r.outputs.clone(),
                verdict: Some((
                    false,
                    format!(
                        "post script exceeded its time budget of {}",
                        humantime_serde::re::humantime::format_duration(limits.time)
                    ),
                )),
            },
        };
        let (success, reason, overridden) = match outcome.verdict {
            Some((ok, reason)) => {
                let was = if r.success { "success" } else { "failure" };
                (ok, reason, Some(format!("{was}: {}", r.reason)))
            }
            None => (r.success, r.reason, None),
        };
        Verdict {
            job,
            container_id: r.container_id,
            success,
            reason,
            exit_code: r.exit_code,
            outputs: outcome.outputs,
            finished_at: r.finished_at,
            overridden,
        }
    }
}
