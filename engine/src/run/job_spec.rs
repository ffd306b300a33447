//! A job's container spec, built from the run's state: image, labels, limits, and the
//! environment (flow, job, subscribed outputs, CO_DATA).

use std::collections::BTreeMap;

use super::{JobKey, Run, Status, CO_DATA};
use crate::flow::env_map;
use crate::runner::JobSpec;

impl Run {
    /// The job's container: image, labels, limits, and its environment, merged from low
    /// to high precedence: flow `environments`, job `environments`, subscriptions, and the
    /// run's CO_DATA. A subscribed output the upstream job did not print is an error (the
    /// job fails without starting).
    pub fn job_spec(&self, key: JobKey) -> Result<JobSpec, String> {
        let flow_job = self
            .flow
            .job(key.stage, key.action, key.job)
            .ok_or_else(|| format!("no job {key:?} in the flow"))?;
        let stage = &self.stages[key.stage];
        let action = &stage.actions[key.action];
        let mut env = env_map(&self.flow.environments);
        env.extend(env_map(&flow_job.environments));
        env.extend(self.env.clone());
        let mut subscribed = BTreeMap::new();
        for sub in flow_job.parsed_subscriptions() {
            let upstream = self
                .key_of(&sub.stage, &sub.action, &sub.job)
                .and_then(|k| self.job(k));
            match upstream.and_then(|j| j.outputs.get(&sub.key)) {
                Some(v) => {
                    env.insert(sub.env.clone(), v.clone());
                    subscribed.insert(sub.source(), v.clone());
                }
                None if upstream.is_some_and(|j| j.status == Status::Skipped) => {
                    return Err(format!(
                        "subscription {}: the upstream job was skipped",
                        sub.source()
                    ))
                }
                None => {
                    return Err(format!(
                        "subscription {}: the upstream job printed no {}",
                        sub.source(),
                        sub.key
                    ))
                }
            }
        }
        if let Some(d) = &self.co_data {
            env.insert(CO_DATA.to_owned(), d.clone());
        }
        let job = &action.jobs[key.job];
        let flow_stage = &self.flow.stages[key.stage];
        let mut labels =
            crate::flow::labels::merge([&self.flow.labels, &flow_stage.labels, &flow_job.labels]);
        labels.extend([
            (protocol::LABEL_FLOW.to_owned(), self.flow_name.clone()),
            (protocol::LABEL_RUN.to_owned(), self.id.clone()),
            (protocol::LABEL_STAGE.to_owned(), stage.name.clone()),
            (protocol::LABEL_ACTION.to_owned(), action.name.clone()),
            (protocol::LABEL_JOB.to_owned(), job.name.clone()),
        ]);
        Ok(JobSpec {
            flow: self.flow_name.clone(),
            run: self.id.clone(),
            stage: stage.name.clone(),
            action: action.name.clone(),
            job: job.name.clone(),
            name: format!("co-{}-{}-{}-{}", self.id, stage.name, action.name, job.name),
            kind: flow_job.kind,
            image: flow_job.endpoint.clone(),
            command: flow_job.command.clone(),
            env,
            labels,
            cpu: flow_job.resources.and_then(|r| r.cpu),
            memory: flow_job.resources.and_then(|r| r.memory),
            timeout: flow_job.timeout.map(|t| t.0),
            subscribed,
            secret: flow_job.secret.clone(),
            secrets: self.flow.job_secrets(key.stage, key.action, key.job),
        })
    }
}
