use super::*;

fn log(q: &str) -> LogQuery {
    match parse(q) {
        Ok(Expr::Log(l)) => l,
        other => panic!("{q}: {other:?}"),
    }
}

fn err(q: &str) -> String {
    match parse(q) {
        Err(e) => e.0,
        Ok(x) => panic!("{q} parsed as {x:?}"),
    }
}

#[test]
fn selectors_and_filters() {
    let q = log(
        r#"{flow="release", run!="7", stage=~"b.*", node!~"n[0-9]"} |= "err" != `debug` |~ "fail(ed)?" !~ "^x""#,
    );
    let ops: Vec<_> = q
        .matchers
        .iter()
        .map(|m| (m.label.as_str(), m.op, m.value.as_str()))
        .collect();
    assert_eq!(
        ops,
        vec![
            ("flow", MatchOp::Eq, "release"),
            ("run", MatchOp::Ne, "7"),
            ("stage", MatchOp::Re, "b.*"),
            ("node", MatchOp::NotRe, "n[0-9]"),
        ]
    );
    let f: Vec<_> = q
        .filters
        .iter()
        .map(|f| (f.op, f.pattern.as_str()))
        .collect();
    assert_eq!(
        f,
        vec![
            (FilterOp::Contains, "err"),
            (FilterOp::NotContains, "debug"),
            (FilterOp::Matches, "fail(ed)?"),
            (FilterOp::NotMatches, "^x"),
        ]
    );
    assert_eq!(q.equality("flow"), Some("release"));
    assert_eq!(q.equality("run"), None);
}

#[test]
fn label_regexes_are_anchored_line_regexes_are_not() {
    let q = log(r#"{stage=~"bui"} |~ "bui""#);
    assert!(!q.selects(|_| Some("build")));
    assert!(q.selects(|_| Some("bui")));
    assert!(q.keeps(b"a build line"));
    let q = log(r#"{flow="f", x=""}"#);
    assert!(
        q.selects(|l| (l == "flow").then_some("f")),
        "a missing label is empty"
    );
    assert!(!q.selects(|l| Some(if l == "flow" { "f" } else { "y" })));
}

#[test]
fn line_filters_on_bytes() {
    let q = log(r#"{job="j"} |= "é" != "no" |~ "[0-9]+""#);
    assert!(q.keeps("é 42".as_bytes()));
    assert!(!q.keeps("é no 42".as_bytes()));
    assert!(!q.keeps("e 42".as_bytes()));
    assert!(!q.keeps("é x".as_bytes()));
    let q = log(r#"{job="j"} |= """#);
    assert!(q.keeps(b""), "an empty filter keeps every line");
}

#[test]
fn escapes() {
    let q = log(r#"{job="a\"b\\c\n\u00e9\x41"}"#);
    assert_eq!(q.matchers[0].value, "a\"b\\c\né\u{41}");
    let q = log(r#"{job=`a\d+`}"#);
    assert_eq!(q.matchers[0].value, "a\\d+");
}

#[test]
fn the_health_check_constant() {
    match parse("vector(1)+vector(1)") {
        Ok(Expr::Constant(v)) => assert_eq!(v, 2.0),
        other => panic!("{other:?}"),
    }
    match parse(" vector( 2.5 ) ") {
        Ok(Expr::Constant(v)) => assert_eq!(v, 2.5),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsupported_queries_name_the_subset() {
    for q in [
        r#"count_over_time({job="x"}[5m])"#,
        r#"sum by (level) (count_over_time({job="x"}[1m]))"#,
        r#"rate({job="x"}[1m])"#,
        r#"{job="x"} | json"#,
        r#"{job="x"} | logfmt | level="error""#,
        r#"{job="x"} | line_format "{{.msg}}""#,
        r#"{job="x"} |= "a" or "b""#,
        r#"{job="x"} |= ip("1.2.3.4")"#,
        r#"{job="x"}[5m]"#,
        r#"vector(1) * vector(2)"#,
    ] {
        let e = err(q);
        assert!(e.contains("not supported"), "{q}: {e}");
        assert!(e.contains("stream selector"), "{q}: {e}");
    }
}

#[test]
fn malformed_queries() {
    for (q, want) in [
        ("", "stream selector"),
        ("{}", "at least one matcher"),
        (r#"{x=~".*"}"#, "at least one matcher"),
        (r#"{job="x""#, "expected `,` or `}`"),
        (r#"{job=x}"#, "quoted string"),
        (r#"{job="x} "#, "unterminated"),
        (r#"{job>"x"}"#, "expected =, !=, =~ or !~"),
        (r#"{job=~"("}"#, "invalid regex"),
        (r#"{job="x"} |~ "(""#, "invalid line filter regex"),
        (r#"{job="x"} foo"#, "unexpected input"),
        (r#"{1job="x"}"#, "label name"),
    ] {
        let e = err(q);
        assert!(e.contains(want), "{q}: {e}");
    }
}

proptest::proptest! {
    #[test]
    fn never_panics(s in ".{0,80}") {
        let _ = parse(&s);
    }

    #[test]
    fn quoted_values_round_trip(v in "[ !#-\\[\\]-~]{0,30}", line in "[ !#-\\[\\]-~]{0,40}") {
        let q = format!("{{flow=\"x\", job={:?}}} |= {:?}", v, line);
        let l = match parse(&q) {
            Ok(Expr::Log(l)) => l,
            other => { proptest::prop_assert!(false, "{q}: {other:?}"); unreachable!() }
        };
        proptest::prop_assert_eq!(&l.matchers[1].value, &v);
        proptest::prop_assert_eq!(&l.filters[0].pattern, &line);
        proptest::prop_assert!(l.keeps(line.as_bytes()));
    }
}
