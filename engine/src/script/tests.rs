//! The sandbox, budgets and what pre and post scripts see and decide.

use super::*;

fn info() -> JobInfo {
    JobInfo {
        flow: "f".into(),
        run: "r".into(),
        stage: "s".into(),
        action: "a".into(),
        name: "j".into(),
    }
}

fn small() -> Limits {
    Limits {
        instructions: 2_000_000,
        time: Duration::from_secs(5),
        memory: 4 << 20,
        log_lines: 10,
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn pre(source: &str) -> PreOutcome {
    run_pre(
        source,
        &small(),
        &info(),
        map(&[("A", "1")]),
        &map(&[("VERSION", "1.2.3")]),
        Some("data"),
    )
}

fn fail_reason(o: PreOutcome) -> String {
    match o {
        PreOutcome::Fail(r) => r,
        PreOutcome::Start(env) => panic!("started with {env:?}"),
    }
}

#[test]
fn pre_derives_env_from_inputs() {
    let o =
        pre(r#"env.TAG = "v" .. inputs.VERSION .. "-" .. co_data .. "-" .. job.name; env.A = nil"#);
    assert_eq!(o, PreOutcome::Start(map(&[("TAG", "v1.2.3-data-j")])));
}

#[test]
fn pre_fail_stops_the_script() {
    let o = pre(r#"fail("no version"); env.X = "1""#);
    assert_eq!(fail_reason(o), "pre script: no version");
}

#[test]
fn pre_refuses_bad_env_names_and_values() {
    assert_eq!(
        fail_reason(pre(r#"env["1X"] = "v""#)),
        "pre script: \"1X\" is not a valid environment variable name"
    );
    assert_eq!(
        fail_reason(pre(r#"env.X = {}"#)),
        "pre script: `env.X` must be a string, number or boolean"
    );
}

#[test]
fn sandbox_has_no_io_os_require_or_load() {
    for lib in [
        "io", "os", "require", "load", "loadfile", "dofile", "debug", "package",
    ] {
        let o = pre(&format!("if {lib} ~= nil then fail('{lib} is there') end"));
        assert!(matches!(o, PreOutcome::Start(_)), "{lib}: {o:?}");
    }
    assert!(fail_reason(pre("io.open('/etc/passwd')")).starts_with("pre script failed:"));
}

#[test]
fn an_endless_loop_exceeds_the_instruction_budget() {
    assert_eq!(
        fail_reason(pre("while true do end")),
        "pre script exceeded its budget of 2000000 instructions"
    );
}

#[test]
fn pcall_cannot_swallow_a_budget_stop() {
    let o = pre("while true do pcall(function() while true do end end) end");
    assert_eq!(
        fail_reason(o),
        "pre script exceeded its budget of 2000000 instructions"
    );
}

#[test]
fn unbounded_allocation_exceeds_the_memory_limit() {
    let o = pre(
        "local t = {} local i = 0 while true do i = i + 1 t[i] = string.rep('x', 1000) .. i end",
    );
    assert_eq!(
        fail_reason(o),
        format!("pre script exceeded its memory limit of {} bytes", 4 << 20)
    );
}

#[test]
fn time_budget_stops_a_slow_script() {
    let limits = Limits {
        instructions: u64::MAX,
        time: Duration::from_millis(200),
        ..small()
    };
    let o = run_pre(
        "while true do end",
        &limits,
        &info(),
        map(&[]),
        &map(&[]),
        None,
    );
    assert_eq!(
        fail_reason(o),
        "pre script exceeded its time budget of 200ms"
    );
}

#[test]
fn post_overrides_the_verdict_and_rewrites_outputs() {
    let input = PostInput {
        outputs: map(&[("STATUS", "broken")]),
        exit_code: Some(0),
        success: true,
        reason: "exit code 0".into(),
        log: vec!["line 1".into(), "done".into()],
    };
    let src = r#"
      outputs.CHECKED = #log .. ":" .. log[2] .. ":" .. exit_code .. ":" .. verdict
      if outputs.STATUS ~= "ok" then fail("STATUS is " .. outputs.STATUS) end
    "#;
    let o = run_post(src, &small(), &info(), &input);
    assert_eq!(
        o.verdict,
        Some((false, "post script: STATUS is broken".to_owned()))
    );
    assert_eq!(
        o.outputs,
        map(&[("CHECKED", "2:done:0:success"), ("STATUS", "broken")])
    );
    let o = run_post("outputs.STATUS = nil", &small(), &info(), &input);
    assert_eq!(
        o,
        PostOutcome {
            outputs: map(&[]),
            verdict: None
        }
    );
    let failed = PostInput {
        success: false,
        ..input
    };
    let o = run_post(
        "if verdict == 'failure' then succeed('flaky, accepted') end",
        &small(),
        &info(),
        &failed,
    );
    assert_eq!(
        o.verdict,
        Some((true, "post script: flaky, accepted".to_owned()))
    );
}

#[test]
fn a_broken_post_script_fails_the_job() {
    let input = PostInput {
        outputs: map(&[]),
        exit_code: Some(0),
        success: true,
        reason: String::new(),
        log: Vec::new(),
    };
    let o = run_post("local x = nil; x.y = 1", &small(), &info(), &input);
    let (ok, reason) = o.verdict.unwrap_or_default();
    assert!(!ok);
    assert!(
        reason.starts_with("post script failed: post:1:"),
        "{reason}"
    );
}

#[test]
fn syntax_errors_name_the_script_line() {
    assert_eq!(check_syntax(Phase::Pre, "env.A = 1\n"), Ok(()));
    let e = check_syntax(Phase::Post, "local a = 1\nif a then\n").err();
    let e = e.unwrap_or(SyntaxError {
        line: None,
        message: String::new(),
    });
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("'end' expected"), "{}", e.message);
}
