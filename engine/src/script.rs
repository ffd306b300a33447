//! A job's `pre` and `post` Lua scripts (Lua 5.4, vendored through `mlua`), run in a
//! sandbox: only the `string`, `table`, `math` and `utf8` libraries and the safe part of
//! the base library, so no `io`, `os`, `require`, `load`/`dofile` and no network. Each run
//! has an instruction budget, a wall-clock budget (checked between instructions) and a
//! memory limit; passing one stops the script and fails the job with a reason saying
//! which. `pcall` and `xpcall` pass such a stop on, so a script cannot catch it and go on.
//!
//! What a script sees (docs/flows.md says the same for users):
//! - both: `job` (`flow`, `run`, `stage`, `action`, `name`), `fail(reason)` and `print`
//!   (to logarithmd's log);
//! - `pre`: `env` (the job's environment; changes and additions go to the container),
//!   `inputs` (the subscribed outputs, by variable name) and `co_data`;
//! - `post`: `outputs` (changes replace the job's outputs), `exit_code`, `verdict`
//!   (`"success"` or `"failure"`), `reason` and `log` (the last lines of the job's log),
//!   and `succeed(reason)` to override a failure.
//!
//! Scripts are blocking CPU work: the engine runs them on tokio's blocking pool.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};

/// Instructions between two budget checks.
const CHECK_EVERY: u32 = 10_000;
/// Most values a script may leave in `env` or `outputs`.
const MAX_ENTRIES: usize = 1_000;
/// Longest value a script may leave in `env` or `outputs`.
const MAX_VALUE: usize = 64 * 1024;
/// Longest reason a script may give.
const MAX_REASON: usize = 1_024;
/// The error a script is stopped with once it decided (`fail`, `succeed`).
const HALT: &str = "logarithm: script decided";

/// Makes `pcall` and `xpcall` re-raise the error that stopped the script (budget, memory
/// after a budget stop, `fail`/`succeed`), so a script cannot catch it and loop on.
const PRELUDE: &str = r#"
local stopped, raw_pcall, raw_xpcall, error = __logarithm_stopped, pcall, xpcall, error
__logarithm_stopped = nil
local function pass(ok, ...)
  if not ok and stopped() then error((...), 0) end
  return ok, ...
end
pcall = function(f, ...) return pass(raw_pcall(f, ...)) end
xpcall = function(f, h, ...) return pass(raw_xpcall(f, h, ...)) end
"#;

/// What one script run may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lua VM instructions (checked every 10 000).
    pub instructions: u64,
    /// Wall-clock time (checked between instructions).
    pub time: Duration,
    /// Bytes the Lua state may allocate.
    pub memory: usize,
    /// Lines of the job's log a post script gets in `log`.
    pub log_lines: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            instructions: 50_000_000,
            time: Duration::from_secs(5),
            memory: 32 << 20,
            log_lines: 100,
        }
    }
}

/// Which script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pre,
    Post,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
        }
    }
}

/// The job a script runs for (the `job` table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobInfo {
    pub flow: String,
    pub run: String,
    pub stage: String,
    pub action: String,
    pub name: String,
}

/// A syntax error: the line inside the script (1-based) when Lua names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

/// Compiles a script without running it.
pub fn check_syntax(phase: Phase, source: &str) -> Result<(), SyntaxError> {
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::default()).map_err(|e| SyntaxError {
        line: None,
        message: e.to_string(),
    })?;
    let name = format!("={}", phase.as_str());
    match lua.load(source).set_name(&name).into_function() {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = match &e {
                mlua::Error::SyntaxError { message, .. } => message.clone(),
                other => other.to_string(),
            };
            // "pre:3: '=' expected near 'x'"
            let rest = text.strip_prefix(&format!("{}:", phase.as_str()));
            let line = rest
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse().ok());
            let message = match (rest, line) {
                (Some(r), Some(_)) => r.split_once(':').map_or(r, |(_, m)| m).trim().to_owned(),
                _ => text,
            };
            Err(SyntaxError { line, message })
        }
    }
}

/// What a `pre` script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreOutcome {
    /// Start the job with this environment.
    Start(BTreeMap<String, String>),
    /// Do not start it: the job fails with this reason.
    Fail(String),
}

/// What a `post` script saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostInput {
    pub outputs: BTreeMap<String, String>,
    pub exit_code: Option<i64>,
    pub success: bool,
    pub reason: String,
    pub log: Vec<String>,
}

/// What a `post` script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostOutcome {
    /// The outputs, as the script left them.
    pub outputs: BTreeMap<String, String>,
    /// `Some((success, reason))` when the script overrode the verdict (or failed itself).
    pub verdict: Option<(bool, String)>,
}

/// A decision taken with `fail` or `succeed`.
type Decision = Rc<RefCell<Option<(bool, String)>>>;

/// Why a script stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeded {
    Instructions,
    Time,
}

/// A sandboxed state with the budget hook and the decision functions.
struct Sandbox {
    lua: Lua,
    decision: Decision,
    exceeded: Rc<Cell<Option<Exceeded>>>,
}

fn sandbox(limits: &Limits, job: &JobInfo, phase: Phase) -> mlua::Result<Sandbox> {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    let g = lua.globals();
    // The base library's ways to read files or load bytecode.
    for name in [
        "dofile",
        "loadfile",
        "load",
        "loadstring",
        "require",
        "collectgarbage",
    ] {
        g.raw_set(name, Value::Nil)?;
    }
    let string: Table = g.get("string")?;
    string.raw_set("dump", Value::Nil)?;

    let decision: Decision = Rc::new(RefCell::new(None));
    for (name, success) in [("fail", false), ("succeed", true)] {
        if name == "succeed" && phase == Phase::Pre {
            continue;
        }
        let d = decision.clone();
        let f = lua.create_function(move |_, reason: Option<String>| -> mlua::Result<()> {
            let mut reason = reason.unwrap_or_default();
            truncate(&mut reason, MAX_REASON);
            *d.borrow_mut() = Some((success, reason));
            Err(mlua::Error::runtime(HALT))
        })?;
        g.raw_set(name, f)?;
    }
    let (flow, run, job_name) = (job.flow.clone(), job.run.clone(), job.name.clone());
    let print = lua.create_function(move |_, args: mlua::Variadic<Value>| {
        let mut line = String::new();
        for (i, v) in args.iter().enumerate() {
            if i > 0 {
                line.push('\t');
            }
            line.push_str(&v.to_string().unwrap_or_else(|_| format!("{v:?}")));
        }
        truncate(&mut line, MAX_VALUE);
        tracing::info!(flow = %flow, run = %run, job = %job_name, phase = phase.as_str(), "{line}");
        Ok(())
    })?;
    g.raw_set("print", print)?;
    let info = lua.create_table()?;
    info.raw_set("flow", job.flow.as_str())?;
    info.raw_set("run", job.run.as_str())?;
    info.raw_set("stage", job.stage.as_str())?;
    info.raw_set("action", job.action.as_str())?;
    info.raw_set("name", job.name.as_str())?;
    g.raw_set("job", info)?;

    let exceeded: Rc<Cell<Option<Exceeded>>> = Rc::new(Cell::new(None));
    let (flag, d) = (exceeded.clone(), decision.clone());
    let stopped =
        lua.create_function(move |_, ()| Ok(flag.get().is_some() || d.borrow().is_some()))?;
    g.raw_set("__logarithm_stopped", stopped)?;
    lua.load(PRELUDE).set_name("=sandbox").exec()?;

    lua.set_memory_limit(limits.memory)?;
    let (budget, time, started) = (limits.instructions, limits.time, Instant::now());
    let used = Cell::new(0u64);
    let flag = exceeded.clone();
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(CHECK_EVERY),
        move |_, _| {
            used.set(used.get() + u64::from(CHECK_EVERY));
            let over = if used.get() > budget {
                Some(Exceeded::Instructions)
            } else if started.elapsed() > time {
                Some(Exceeded::Time)
            } else {
                None
            };
            match over {
                Some(o) => {
                    flag.set(Some(o));
                    Err(mlua::Error::runtime("script budget exceeded"))
                }
                None => Ok(VmState::Continue),
            }
        },
    )?;
    Ok(Sandbox {
        lua,
        decision,
        exceeded,
    })
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn is_memory_error(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory_error(cause),
        mlua::Error::WithContext { cause, .. } => is_memory_error(cause),
        _ => false,
    }
}

/// Runs a script; `Ok(Some(decision))` when it called `fail`/`succeed`, `Err(reason)` when it
/// broke (error, budget, memory).
fn execute(
    sb: &Sandbox,
    phase: Phase,
    source: &str,
    limits: &Limits,
) -> Result<Option<(bool, String)>, String> {
    let name = format!("={}", phase.as_str());
    let result = sb.lua.load(source).set_name(&name).exec();
    if let Some(d) = sb.decision.borrow_mut().take() {
        return Ok(Some(d));
    }
    let p = phase.as_str();
    match result {
        Ok(()) => Ok(None),
        Err(e) => Err(match sb.exceeded.get() {
            Some(Exceeded::Instructions) => format!(
                "{p} script exceeded its budget of {} instructions",
                limits.instructions
            ),
            Some(Exceeded::Time) => format!(
                "{p} script exceeded its time budget of {}",
                humantime_serde::re::humantime::format_duration(limits.time)
            ),
            None if is_memory_error(&e) => format!(
                "{p} script exceeded its memory limit of {} bytes",
                limits.memory
            ),
            None => {
                // The first line: Lua's message without its stack traceback.
                let text = match &e {
                    mlua::Error::RuntimeError(m) => m.clone(),
                    other => other.to_string(),
                };
                let first = text.lines().next().unwrap_or_default();
                let mut m = format!("{p} script failed: {first}");
                truncate(&mut m, MAX_REASON);
                m
            }
        }),
    }
}

fn set_map(lua: &Lua, name: &str, map: &BTreeMap<String, String>) -> mlua::Result<()> {
    let t = lua.create_table()?;
    for (k, v) in map {
        t.raw_set(k.as_str(), v.as_str())?;
    }
    lua.globals().raw_set(name, t)
}

/// Reads a global table of strings back (numbers and booleans become text).
fn get_map(lua: &Lua, name: &str, phase: Phase) -> Result<BTreeMap<String, String>, String> {
    let p = phase.as_str();
    let t: Table = lua
        .globals()
        .get(name)
        .map_err(|_| format!("{p} script: `{name}` is no longer a table"))?;
    let mut out = BTreeMap::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| format!("{p} script: reading `{name}`: {e}"))?;
        let key = match k {
            Value::String(s) => s.to_str().map(|s| s.to_owned()).ok(),
            _ => None,
        }
        .ok_or_else(|| format!("{p} script: `{name}` has a key that is not a string"))?;
        let value = match v {
            Value::String(s) => s.to_str().map(|s| s.to_owned()).ok(),
            Value::Integer(i) => Some(i.to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        }
        .ok_or_else(|| format!("{p} script: `{name}.{key}` must be a string, number or boolean"))?;
        if value.len() > MAX_VALUE {
            return Err(format!(
                "{p} script: `{name}.{key}` is longer than {MAX_VALUE} bytes"
            ));
        }
        out.insert(key, value);
        if out.len() > MAX_ENTRIES {
            return Err(format!(
                "{p} script: `{name}` has more than {MAX_ENTRIES} entries"
            ));
        }
    }
    Ok(out)
}

fn setup_error(phase: Phase, e: mlua::Error) -> String {
    format!("{} script could not be set up: {e}", phase.as_str())
}

/// Runs a `pre` script on the job's environment.
pub fn run_pre(
    source: &str,
    limits: &Limits,
    job: &JobInfo,
    env: BTreeMap<String, String>,
    inputs: &BTreeMap<String, String>,
    co_data: Option<&str>,
) -> PreOutcome {
    let phase = Phase::Pre;
    let sb = match sandbox(limits, job, phase) {
        Ok(sb) => sb,
        Err(e) => return PreOutcome::Fail(setup_error(phase, e)),
    };
    let set = (|| {
        set_map(&sb.lua, "env", &env)?;
        set_map(&sb.lua, "inputs", inputs)?;
        sb.lua.globals().raw_set("co_data", co_data)
    })();
    if let Err(e) = set {
        return PreOutcome::Fail(setup_error(phase, e));
    }
    match execute(&sb, phase, source, limits) {
        Err(reason) => PreOutcome::Fail(reason),
        Ok(Some((_, reason))) => PreOutcome::Fail(format!("pre script: {reason}")),
        Ok(None) => match get_map(&sb.lua, "env", phase) {
            Ok(env) => match env.keys().find(|k| !crate::flow::valid_env(k)) {
                Some(k) => PreOutcome::Fail(format!(
                    "pre script: {k:?} is not a valid environment variable name"
                )),
                None => PreOutcome::Start(env),
            },
            Err(reason) => PreOutcome::Fail(reason),
        },
    }
}

/// Runs a `post` script on a job's verdict.
pub fn run_post(source: &str, limits: &Limits, job: &JobInfo, input: &PostInput) -> PostOutcome {
    let phase = Phase::Post;
    let broke = |reason: String| PostOutcome {
        outputs: input.outputs.clone(),
        verdict: Some((false, reason)),
    };
    let sb = match sandbox(limits, job, phase) {
        Ok(sb) => sb,
        Err(e) => return broke(setup_error(phase, e)),
    };
    let set = (|| {
        set_map(&sb.lua, "outputs", &input.outputs)?;
        let g = sb.lua.globals();
        g.raw_set("exit_code", input.exit_code)?;
        g.raw_set("verdict", if input.success { "success" } else { "failure" })?;
        g.raw_set("reason", input.reason.as_str())?;
        let log = sb.lua.create_table()?;
        for (i, line) in input.log.iter().enumerate() {
            log.raw_set(i + 1, line.as_str())?;
        }
        g.raw_set("log", log)
    })();
    if let Err(e) = set {
        return broke(setup_error(phase, e));
    }
    let decision = match execute(&sb, phase, source, limits) {
        Err(reason) => return broke(reason),
        Ok(d) => d,
    };
    match get_map(&sb.lua, "outputs", phase) {
        Ok(outputs) => PostOutcome {
            outputs,
            verdict: decision.map(|(ok, reason)| (ok, format!("post script: {reason}"))),
        },
        Err(reason) => broke(reason),
    }
}

#[cfg(test)]
mod tests;
