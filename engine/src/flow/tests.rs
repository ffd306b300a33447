//! Flow file parsing and checks: errors name the line and the field.

use super::*;

fn errors(yaml: &str) -> Vec<FlowError> {
    match Flow::from_yaml(yaml) {
        Ok(_) => panic!("flow accepted:\n{yaml}"),
        Err(e) => e.0,
    }
}

const MINIMAL: &str = "\
uri: a/b
stages:
  - type: start
    name: start
  - type: normal
    name: s
    actions:
      - name: a
        jobs:
          - type: component
            name: j
            endpoint: img
            outputs: [OUT]
          - type: component
            name: k
            endpoint: img
            subscriptions:
              - \"s.a.j[OUT]\": IN
  - type: end
    name: end
";

#[test]
fn the_examples_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir)
        .map_err(|e| e.to_string())
        .into_iter()
        .flatten()
    {
        let path = entry.map_err(|e| e.to_string()).map(|e| e.path());
        let Ok(path) = path else { continue };
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Err(e) = Flow::from_yaml(&text) {
            panic!("{}: {e}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 2, "examples/ holds flows");
}

#[test]
fn a_minimal_flow_parses() {
    let flow = Flow::from_yaml(MINIMAL).map_err(|e| e.to_string());
    let flow = flow.as_ref().map_err(String::as_str);
    let Ok(flow) = flow else { panic!("{flow:?}") };
    assert_eq!(flow.name(), "a.b");
    assert_eq!(flow.stages.len(), 3);
    assert_eq!(flow.stages[1].sequencing(), Sequencing::Sequence);
    let subs = flow.stages[1].actions[0].jobs[1].parsed_subscriptions();
    assert_eq!(
        subs,
        vec![Subscription {
            stage: "s".into(),
            action: "a".into(),
            job: "j".into(),
            key: "OUT".into(),
            env: "IN".into()
        }]
    );
}

#[test]
fn an_unknown_field_is_named_with_its_line() {
    let yaml = MINIMAL.replace(
        "            endpoint: img\n            outputs",
        "            endpoint: img\n            imagee: x\n            outputs",
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1);
    let e = &errs[0];
    assert_eq!(e.line, Some(13), "{e}");
    let text = e.to_string();
    assert!(text.starts_with("line 13: "), "{text}");
    assert!(text.contains("unknown field `imagee`"), "{text}");
    assert!(text.contains("stages[1].actions[0].jobs[0]"), "{text}");
}

#[test]
fn a_wrong_type_and_a_bad_size_are_named() {
    let yaml = MINIMAL.replace(
        "            outputs: [OUT]\n",
        "            outputs: [OUT]\n            timeout: soon\n",
    );
    let text = errors(&yaml)[0].to_string();
    assert!(text.starts_with("line 14: "), "{text}");
    assert!(text.contains("timeout"), "{text}");
    assert!(text.contains("invalid duration \"soon\""), "{text}");

    let yaml = MINIMAL.replace(
        "            outputs: [OUT]\n",
        "            outputs: [OUT]\n            resources: {memory: 12Qi}\n",
    );
    let text = errors(&yaml)[0].to_string();
    assert!(text.starts_with("line 14: "), "{text}");
    assert!(
        text.contains("resources.memory") && text.contains("invalid memory \"12Qi\""),
        "{text}"
    );
}

#[test]
fn a_dangling_subscription_is_named() {
    let yaml = MINIMAL.replace("\"s.a.j[OUT]\": IN", "\"s.a.x[OUT]\": IN");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        "line 18: stages[1].actions[0].jobs[1].subscriptions[0]: \"s.a.x[OUT]\" names no job \"x\" in action \"a\""
    );

    let yaml = MINIMAL.replace("\"s.a.j[OUT]\": IN", "\"s.a.j[NOPE]\": IN");
    assert_eq!(
        errors(&yaml)[0].to_string(),
        "line 18: stages[1].actions[0].jobs[1].subscriptions[0]: \"s.a.j[NOPE]\": job \"j\" declares no output \"NOPE\" in its outputs"
    );

    let yaml = MINIMAL.replace("\"s.a.j[OUT]\": IN", "\"nostage.a.j[OUT]\": IN");
    assert!(errors(&yaml)[0]
        .message
        .contains("names no stage \"nostage\""));

    let yaml = MINIMAL.replace("\"s.a.j[OUT]\": IN", "\"s.a.j.OUT\": IN");
    assert!(errors(&yaml)[0].message.contains("is not of the form"));
}

#[test]
fn a_subscription_must_point_upstream() {
    // j subscribing to k: k runs after j.
    let yaml = MINIMAL
        .replace(
            "            outputs: [OUT]\n",
            "            subscriptions:\n              - \"s.a.k[K]\": IN\n",
        )
        .replace(
            "            subscriptions:\n              - \"s.a.j[OUT]\": IN\n",
            "            outputs: [K]\n",
        );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        errs[0].path,
        "stages[1].actions[0].jobs[0].subscriptions[0]"
    );
    assert!(errs[0].message.contains("is not upstream"), "{}", errs[0]);
}

#[test]
fn structure_problems_are_all_reported() {
    let yaml = "\
uri: bad uri
stages:
  - type: normal
    name: s.1
    actions: []
  - type: pause
    name: p
    sequencing: parallel
";
    let errs: Vec<String> = errors(yaml).iter().map(|e| e.to_string()).collect();
    let want = [
        "line 1: uri: \"bad uri\" is not a valid flow uri",
        "line 4: stages[0].type: the first stage must be of type start",
        "line 7: stages[1].type: the last stage must be of type end",
        "line 4: stages[0].name: \"s.1\" is not a valid name",
        "line 4: stages[0].actions: a normal stage needs actions",
        "line 7: stages[1].sequencing: only normal stages have a sequencing",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
}

#[test]
fn duplicate_names_are_refused() {
    let yaml = MINIMAL.replace("            name: k\n", "            name: j\n");
    let errs = errors(&yaml);
    assert!(
        errs.iter()
            .any(|e| e.path == "stages[1].actions[0].jobs[1].name"
                && e.message == "job name \"j\" is used twice in this action"),
        "{errs:?}"
    );
}

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_memory("64Mi"), Some(64 << 20));
    assert_eq!(parse_memory("1G"), Some(1_000_000_000));
    assert_eq!(parse_memory("1048576"), Some(1 << 20));
    assert_eq!(parse_memory("1.5G"), None);
    let r: Resources = yaml_serde::from_str("{cpu: \"250m\", memory: 128Mi}")
        .map_err(|e| e.to_string())
        .unwrap_or(Resources {
            cpu: None,
            memory: None,
        });
    assert_eq!(r.cpu, Some(Cpu(250)));
    assert_eq!(r.cpu.map(Cpu::nano_cpus), Some(250_000_000));
    assert_eq!(r.memory, Some(Memory(128 << 20)));
    let r: Result<Resources, _> = yaml_serde::from_str("{cpu: 2}");
    assert_eq!(r.ok().and_then(|r| r.cpu), Some(Cpu(2000)));
    let t: Result<Timeout, _> = yaml_serde::from_str("90");
    assert_eq!(t.ok(), Some(Timeout(Duration::from_secs(90))));
    let t: Result<Timeout, _> = yaml_serde::from_str("1m 30s");
    assert_eq!(t.ok(), Some(Timeout(Duration::from_secs(90))));
    assert!(yaml_serde::from_str::<Timeout>("0").is_err());
}

const SCRIPTED: &str = "\
uri: a/scripted
labels: {team: core}
stages:
  - type: start
    name: start
  - type: normal
    name: s
    actions:
      - name: a
        jobs:
          - type: component
            name: j
            endpoint: img
            pre: |
              env.A = \"1\"
              if env.B then
                env.C = 2
            post: {file: checks/post.lua}
  - type: end
    name: end
";

#[test]
fn a_lua_syntax_error_names_the_flow_line() {
    let files = BTreeMap::from([("checks/post.lua".to_owned(), "outputs.X = 1\n".to_owned())]);
    let errs = match Flow::from_yaml_with_files(SCRIPTED, &files) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.0,
    };
    assert_eq!(errs.len(), 1, "{errs:?}");
    // The script's line 4 (the end of the text: `end` expected) is the flow's line 18.
    assert_eq!(errs[0].line, Some(18));
    assert_eq!(errs[0].path, "stages[1].actions[0].jobs[0].pre");
    assert!(
        errs[0].message.starts_with("Lua syntax error: "),
        "{}",
        errs[0].message
    );
    assert!(
        errs[0].message.contains("'end' expected"),
        "{}",
        errs[0].message
    );
}

#[test]
fn script_files_are_attached_or_named_when_missing() {
    let fixed = SCRIPTED.replace("    env.C = 2\n", "    env.C = 2\n              end\n");
    let files = BTreeMap::from([("checks/post.lua".to_owned(), "outputs.X = 1\n".to_owned())]);
    let flow = Flow::from_yaml_with_files(&fixed, &files).map_err(|e| e.to_string());
    let post = flow
        .as_ref()
        .ok()
        .and_then(|f| f.job(1, 0, 0))
        .and_then(|j| j.post.clone());
    assert_eq!(
        post,
        Some(Script {
            file: Some("checks/post.lua".into()),
            source: "outputs.X = 1\n".into()
        })
    );
    let errs = errors(&fixed);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, Some(19));
    assert_eq!(
        errs[0].message,
        "script file \"checks/post.lua\" was not sent with the flow (register it with its files)"
    );
    let bad = BTreeMap::from([("checks/post.lua".to_owned(), "outputs.X = \n".to_owned())]);
    let errs = match Flow::from_yaml_with_files(&fixed, &bad) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.0,
    };
    assert_eq!(errs[0].line, Some(19));
    assert!(
        errs[0]
            .message
            .starts_with("Lua syntax error in checks/post.lua line 2:"),
        "{}",
        errs[0].message
    );
    let escape = fixed.replace("checks/post.lua", "../post.lua");
    assert!(errors(&escape)[0]
        .message
        .contains("must be a relative path"));
}

#[test]
fn bad_labels_name_their_line() {
    let yaml = MINIMAL.replace(
        "            outputs: [OUT]",
        "            outputs: [OUT]\n            labels: {io.containerops.run: x, ok: \"has space\"}",
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs.iter().all(|e| e.line == Some(14)), "{errs:?}");
    assert!(errs
        .iter()
        .all(|e| e.path == "stages[1].actions[0].jobs[0].labels"));
}

#[test]
fn triggers_are_checked_and_name_their_line() {
    let yaml = MINIMAL.replace(
        "stages:\n",
        "triggers:\n  - type: cron\n    schedule: \"0 3 * * *\"\n    timezone: Mars/Olympus\n  - type: webhook\n    schedule: \"* * * * *\"\nstages:\n",
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!(errs[0].line, Some(3));
    assert_eq!(errs[0].path, "triggers[0]");
    assert!(
        errs[0]
            .message
            .contains("unknown time zone \"Mars/Olympus\""),
        "{}",
        errs[0].message
    );
    assert!(
        errs.iter()
            .skip(1)
            .all(|e| e.line == Some(6) && e.path == "triggers[1]"),
        "{errs:?}"
    );
    let unknown = MINIMAL.replace("stages:\n", "triggers:\n  - type: pigeon\nstages:\n");
    let errs = errors(&unknown);
    assert_eq!(errs[0].line, Some(3), "{errs:?}");
    assert!(
        errs[0].message.contains("unknown variant `pigeon`"),
        "{}",
        errs[0].message
    );
    let ok = MINIMAL.replace(
        "stages:\n",
        "triggers:\n  - type: cron\n    schedule: \"0 3 * * *\"\n    timezone: Europe/Berlin\n    missed: run_once\n  - type: webhook\n    secret: gh\n    mapping: {CO_DATA: head_commit.id}\nstages:\n",
    );
    let flow = Flow::from_yaml(&ok).map_err(|e| e.to_string());
    assert_eq!(flow.map(|f| f.triggers.len()), Ok(2));
}
