//! The structural checks of a parsed flow: names, stage order and kinds, subscriptions
//! (each names an output of a job that finishes first). Errors name the path and, where
//! the offending text is found in the file, its line.

use std::collections::BTreeSet;

use super::{
    find_line, valid_env, Flow, FlowError, JobKind, Sequencing, StageKind, Subscription, NAME_MAX,
};

impl Flow {
    /// The structural checks; `source` is used to find lines.
    pub(super) fn check(&self, source: &str) -> Vec<FlowError> {
        let mut errs = Vec::new();
        let mut err = |path: String, needle: Option<&str>, message: String| {
            let line = needle.and_then(|n| find_line(source, n));
            errs.push(FlowError {
                line,
                column: None,
                path,
                message,
            });
        };
        let name = self.name();
        if !valid_name(&name, true) {
            err(
                "uri".into(),
                Some("uri:"),
                format!(
                    "{:?} is not a valid flow uri: use letters, digits, '.', '_', '-' and '/', \
                     at most {NAME_MAX} characters",
                    self.uri
                ),
            );
        }
        for (i, env) in self.environments.iter().enumerate() {
            for k in env.keys() {
                if !valid_env(k) {
                    err(
                        format!("environments[{i}]"),
                        Some(k),
                        format!("{k:?} is not a valid environment variable name"),
                    );
                }
            }
        }
        if self.stages.is_empty() {
            err(
                "stages".into(),
                Some("stages:"),
                "a flow needs stages".into(),
            );
        }
        match self.stages.first() {
            Some(s) if s.kind != StageKind::Start => err(
                "stages[0].type".into(),
                Some(&format!("name: {}", s.name)),
                "the first stage must be of type start".into(),
            ),
            _ => {}
        }
        match self.stages.last() {
            Some(s) if s.kind != StageKind::End => err(
                format!("stages[{}].type", self.stages.len() - 1),
                Some(&format!("name: {}", s.name)),
                "the last stage must be of type end".into(),
            ),
            _ => {}
        }
        let mut stage_names = BTreeSet::new();
        for (si, stage) in self.stages.iter().enumerate() {
            let sp = format!("stages[{si}]");
            let at = format!("name: {}", stage.name);
            if !valid_name(&stage.name, false) {
                err(format!("{sp}.name"), Some(&at), name_message(&stage.name));
            }
            if !stage_names.insert(stage.name.as_str()) {
                err(
                    format!("{sp}.name"),
                    Some(&at),
                    format!("stage name {:?} is used twice", stage.name),
                );
            }
            let ends = matches!(stage.kind, StageKind::Start | StageKind::End);
            if ends && si != 0 && si + 1 != self.stages.len() {
                err(
                    format!("{sp}.type"),
                    Some(&at),
                    "start and end stages may only be first and last".into(),
                );
            }
            if stage.kind != StageKind::Normal {
                if !stage.actions.is_empty() {
                    err(
                        format!("{sp}.actions"),
                        Some(&at),
                        "only normal stages have actions".into(),
                    );
                }
                if stage.sequencing.is_some() {
                    err(
                        format!("{sp}.sequencing"),
                        Some(&at),
                        "only normal stages have a sequencing".into(),
                    );
                }
                continue;
            }
            if stage.actions.is_empty() {
                err(
                    format!("{sp}.actions"),
                    Some(&at),
                    "a normal stage needs actions".into(),
                );
            }
            let mut action_names = BTreeSet::new();
            for (ai, action) in stage.actions.iter().enumerate() {
                let ap = format!("{sp}.actions[{ai}]");
                let at = format!("name: {}", action.name);
                if !valid_name(&action.name, false) {
                    err(format!("{ap}.name"), Some(&at), name_message(&action.name));
                }
                if !action_names.insert(action.name.as_str()) {
                    err(
                        format!("{ap}.name"),
                        Some(&at),
                        format!("action name {:?} is used twice in this stage", action.name),
                    );
                }
                if action.jobs.is_empty() {
                    err(
                        format!("{ap}.jobs"),
                        Some(&at),
                        "an action needs jobs".into(),
                    );
                }
                let mut job_names = BTreeSet::new();
                for (ji, job) in action.jobs.iter().enumerate() {
                    let jp = format!("{ap}.jobs[{ji}]");
                    let at = format!("name: {}", job.name);
                    if !valid_name(&job.name, false) {
                        err(format!("{jp}.name"), Some(&at), name_message(&job.name));
                    }
                    if !job_names.insert(job.name.as_str()) {
                        err(
                            format!("{jp}.name"),
                            Some(&at),
                            format!("job name {:?} is used twice in this action", job.name),
                        );
                    }
                    if job.endpoint.trim().is_empty() && job.kind == JobKind::Component {
                        err(
                            format!("{jp}.endpoint"),
                            Some(&at),
                            "a job needs an image".into(),
                        );
                    }
                    for (i, env) in job.environments.iter().enumerate() {
                        for k in env.keys() {
                            if !valid_env(k) {
                                err(
                                    format!("{jp}.environments[{i}]"),
                                    Some(k),
                                    format!("{k:?} is not a valid environment variable name"),
                                );
                            }
                        }
                    }
                    for (i, k) in job.outputs.iter().enumerate() {
                        if !valid_env(k) || k == "CO_RESULT" {
                            err(
                                format!("{jp}.outputs[{i}]"),
                                Some(k),
                                format!("{k:?} is not a valid output key"),
                            );
                        }
                    }
                    for (i, subs) in job.subscriptions.iter().enumerate() {
                        for (src, env) in subs {
                            let path = format!("{jp}.subscriptions[{i}]");
                            if let Err(m) = self.check_subscription(si, ai, ji, src, env) {
                                err(path, Some(src), m);
                            }
                        }
                    }
                }
            }
        }
        errs
    }

    /// Whether `src` names an output of a job that finishes before job `(si, ai, ji)` starts.
    fn check_subscription(
        &self,
        si: usize,
        ai: usize,
        ji: usize,
        src: &str,
        env: &str,
    ) -> Result<(), String> {
        let sub = Subscription::parse(src, env).ok_or_else(|| {
            format!("{src:?} is not of the form \"<stage>.<action>.<job>[<KEY>]\"")
        })?;
        if !valid_env(env) {
            return Err(format!(
                "{env:?} (for {src:?}) is not a valid environment variable name"
            ));
        }
        let Some(usi) = self.stages.iter().position(|s| s.name == sub.stage) else {
            return Err(format!("{src:?} names no stage {:?}", sub.stage));
        };
        let stage = &self.stages[usi];
        let Some(uai) = stage.actions.iter().position(|a| a.name == sub.action) else {
            return Err(format!(
                "{src:?} names no action {:?} in stage {:?}",
                sub.action, sub.stage
            ));
        };
        let action = &stage.actions[uai];
        let Some(uji) = action.jobs.iter().position(|j| j.name == sub.job) else {
            return Err(format!(
                "{src:?} names no job {:?} in action {:?}",
                sub.job, sub.action
            ));
        };
        if !action.jobs[uji].outputs.contains(&sub.key) {
            return Err(format!(
                "{src:?}: job {:?} declares no output {:?} in its outputs",
                sub.job, sub.key
            ));
        }
        let upstream = usi < si
            || (usi == si
                && ((uai == ai && uji < ji)
                    || (uai < ai && stage.sequencing() == Sequencing::Sequence)));
        if !upstream {
            return Err(format!(
                "{src:?} is not upstream: the job it names does not finish before this one starts"
            ));
        }
        Ok(())
    }
}

fn name_message(name: &str) -> String {
    format!(
        "{name:?} is not a valid name: use letters, digits, '_' and '-' (starting with a \
         letter or digit), at most {NAME_MAX} characters"
    )
}

/// Names become label values, container names and parts of subscription paths: no dots in
/// stage, action and job names (they separate the parts of a subscription).
fn valid_name(s: &str, allow_dot: bool) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && s.len() <= NAME_MAX
        && chars
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (allow_dot && c == '.'))
        && !s.ends_with(['.', '-', '_'])
}
