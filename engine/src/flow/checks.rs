//! Checks of the job-model fields (labels, scripts): labels follow Kubernetes' rules,
//! script files are attached, and every script compiles. Errors name the flow line; a
//! Lua syntax error in an embedded script names the flow line of the offending Lua line.

use std::collections::BTreeMap;

use super::labels::{check_label, Labels};
use super::script::{attach, Script};
use super::{Flow, FlowError};
use crate::script::{check_syntax, Phase};

/// 1-based number of the first line at or after `from` (1-based) containing `needle`.
pub(super) fn find_line_from(source: &str, from: usize, needle: &str) -> Option<usize> {
    source
        .lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
}

/// The line of a job's `name:`, found stage by stage.
pub(super) fn job_line(source: &str, stage: &str, action: &str, job: &str) -> Option<usize> {
    let s = find_line_from(source, 1, &format!("name: {stage}"))?;
    let a = find_line_from(source, s, &format!("name: {action}"))?;
    find_line_from(source, a, &format!("name: {job}"))
}

/// Whether the value of `key:` on this line is a block scalar (`|`, `>-`, …): the script
/// then starts on the next line.
fn is_block(line: &str, key: &str) -> bool {
    line.split_once(key)
        .map(|(_, rest)| rest.trim_start().starts_with(['|', '>']))
        .unwrap_or(false)
}

pub(super) fn error(line: Option<usize>, path: String, message: String) -> FlowError {
    FlowError {
        line,
        column: None,
        path,
        message,
    }
}

impl Flow {
    /// Every job's `pre`/`post` with its path and flow line.
    fn scripts_mut(&mut self, source: &str) -> Vec<(String, Option<usize>, &mut Script)> {
        let mut out = Vec::new();
        for (si, stage) in self.stages.iter_mut().enumerate() {
            for (ai, action) in stage.actions.iter_mut().enumerate() {
                for (ji, job) in action.jobs.iter_mut().enumerate() {
                    let at = job_line(source, &stage.name, &action.name, &job.name);
                    let path = format!("stages[{si}].actions[{ai}].jobs[{ji}]");
                    for (key, script) in [("pre", &mut job.pre), ("post", &mut job.post)] {
                        if let Some(script) = script {
                            let line =
                                at.and_then(|l| find_line_from(source, l, &format!("{key}:")));
                            out.push((format!("{path}.{key}"), line, script));
                        }
                    }
                }
            }
        }
        out
    }

    /// Puts the text of script files into their scripts.
    pub(super) fn attach_files(
        &mut self,
        source: &str,
        files: &BTreeMap<String, String>,
    ) -> Vec<FlowError> {
        self.scripts_mut(source)
            .into_iter()
            .filter_map(|(path, line, script)| {
                attach(script, files).err().map(|m| error(line, path, m))
            })
            .collect()
    }

    /// Labels and scripts.
    pub(super) fn check_job_model(&self, source: &str) -> Vec<FlowError> {
        let mut errs = Vec::new();
        let mut labels = |path: String, at: Option<usize>, l: &Labels| {
            for (k, v) in l {
                if let Err(m) = check_label(k, &v.0) {
                    let line = at
                        .and_then(|at| find_line_from(source, at, &format!("{k}:")))
                        .or(at);
                    errs.push(error(line, format!("{path}.labels"), m));
                }
            }
        };
        labels(String::new(), Some(1), &self.labels);
        for (si, stage) in self.stages.iter().enumerate() {
            let sl = find_line_from(source, 1, &format!("name: {}", stage.name));
            labels(format!("stages[{si}]"), sl, &stage.labels);
            for (ai, action) in stage.actions.iter().enumerate() {
                for (ji, job) in action.jobs.iter().enumerate() {
                    let jl = job_line(source, &stage.name, &action.name, &job.name);
                    let path = format!("stages[{si}].actions[{ai}].jobs[{ji}]");
                    labels(path, jl, &job.labels);
                }
            }
        }
        let triggers_at = find_line_from(source, 1, "triggers:");
        let mut from = triggers_at.unwrap_or(1);
        for (i, t) in self.triggers.iter().enumerate() {
            // Each trigger begins at its `- type:` line (or the `type:` of its mapping).
            let at = find_line_from(source, from, "type:").or(triggers_at);
            if let Some(l) = at {
                from = l + 1;
            }
            for m in t.check() {
                errs.push(error(at, format!("triggers[{i}]"), m));
            }
        }
        let mut copy = self.clone();
        for (path, line, script) in copy.scripts_mut(source) {
            let phase = if path.ends_with(".pre") {
                Phase::Pre
            } else {
                Phase::Post
            };
            if script.source.len() > super::script::SCRIPT_MAX {
                errs.push(error(
                    line,
                    path,
                    format!(
                        "the script is longer than {} bytes",
                        super::script::SCRIPT_MAX
                    ),
                ));
                continue;
            }
            let Err(e) = check_syntax(phase, &script.source) else {
                continue;
            };
            let key = format!("{}:", phase.as_str());
            let (line, message) = match (&script.file, line, e.line) {
                (Some(file), _, Some(n)) => (
                    line,
                    format!("Lua syntax error in {file} line {n}: {}", e.message),
                ),
                (None, Some(l), Some(n)) => {
                    let block = source
                        .lines()
                        .nth(l - 1)
                        .is_some_and(|text| is_block(text, &key));
                    let at = if block { l + n } else { l };
                    (Some(at), format!("Lua syntax error: {}", e.message))
                }
                _ => (line, format!("Lua syntax error: {}", e.message)),
            };
            errs.push(error(line, path, message));
        }
        errs
    }
}
