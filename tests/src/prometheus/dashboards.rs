//! Grafana dashboards: loading, shape checks, and panel queries made concrete.

use super::*;

/// Oldest dashboard schema accepted (Grafana 10.4 / 11 write 39 and later).
pub const MIN_SCHEMA_VERSION: u64 = 39;
/// The datasource reference every panel and target must use.
pub const DS_UID: &str = "${DS_PROMETHEUS}";

/// Every `*.json` in `dir`, parsed, with its file name.
pub fn load(dir: &Path) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, json));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every panel, rows' nested panels included.
pub fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(ps: &'a Value, out: &mut Vec<&'a Value>) {
        for p in ps.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// The template variables' names.
pub fn variables(dash: &Value) -> Vec<&Value> {
    dash["templating"]["list"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// Problems with one dashboard's shape (empty when it is fine): unique panel ids, a
/// Prometheus datasource given by the `DS_PROMETHEUS` variable on every panel, target
/// and query variable (never a hard-coded uid), current schema, the required variables,
/// and every variable a query uses defined.
pub fn check(dash: &Value) -> Vec<String> {
    if is_loki(dash) {
        return check_loki(dash);
    }
    let mut problems = Vec::new();
    let title = dash["title"].as_str().unwrap_or("?");
    if dash["uid"].as_str().unwrap_or("").is_empty() {
        problems.push("no uid".into());
    }
    match dash["schemaVersion"].as_u64() {
        Some(v) if v >= MIN_SCHEMA_VERSION => {}
        other => problems.push(format!(
            "schemaVersion {other:?} is older than {MIN_SCHEMA_VERSION}"
        )),
    }
    let vars = variables(dash);
    let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    match vars.iter().find(|v| v["name"] == "DS_PROMETHEUS") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => problems.push("no `DS_PROMETHEUS` datasource variable of type prometheus".into()),
    }
    for required in ["instance", "node"] {
        if !names.contains(&required) {
            problems.push(format!("no `{required}` variable"));
        }
    }
    let ds_ok = |ds: &Value| ds["uid"] == DS_UID && ds["type"] == "prometheus";
    for v in &vars {
        if v["type"] == "query" && !ds_ok(&v["datasource"]) {
            problems.push(format!(
                "variable {} has datasource {} (want uid {DS_UID})",
                v["name"], v["datasource"]
            ));
        }
    }
    let mut ids = BTreeMap::new();
    let mut queries = 0;
    for p in panels(dash) {
        let pt = p["title"].as_str().unwrap_or("?");
        match p["id"].as_u64() {
            Some(id) => {
                if let Some(prev) = ids.insert(id, pt.to_owned()) {
                    problems.push(format!("panel id {id} is used by {prev:?} and {pt:?}"));
                }
            }
            None => problems.push(format!("panel {pt:?} has no numeric id")),
        }
        if p["type"] == "row" {
            continue;
        }
        if !ds_ok(&p["datasource"]) {
            problems.push(format!(
                "panel {pt:?} datasource {} (want uid {DS_UID})",
                p["datasource"]
            ));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {pt:?} has no targets"));
        }
        for t in &targets {
            queries += 1;
            if !ds_ok(&t["datasource"]) {
                problems.push(format!(
                    "panel {pt:?} target {} has datasource {} (want uid {DS_UID})",
                    t["refId"], t["datasource"]
                ));
            }
            let expr = t["expr"].as_str().unwrap_or("");
            if expr.trim().is_empty() {
                problems.push(format!("panel {pt:?} target {} has no expr", t["refId"]));
            }
            for used in used_variables(expr) {
                if !used.starts_with("__") && !names.contains(&used.as_str()) {
                    problems.push(format!("panel {pt:?} uses undefined ${used}"));
                }
            }
        }
    }
    // No datasource uid anywhere but the variable (and Grafana's built-in annotations).
    walk_datasources(dash, &mut |ds| {
        let uid = ds["uid"].as_str().unwrap_or("");
        if !(uid == DS_UID || uid == "-- Grafana --" || ds.is_null()) {
            problems.push(format!("hard-coded datasource uid {uid:?}"));
        }
    });
    if queries == 0 {
        problems.push("no queries".into());
    }
    problems
        .into_iter()
        .map(|p| format!("{title}: {p}"))
        .collect()
}

/// The Loki datasource reference of the logs dashboards.
pub const LOKI_UID: &str = "${DS_LOKI}";

/// Whether a dashboard reads logs (Loki data source on logarithmd) rather than metrics.
pub fn is_loki(dash: &Value) -> bool {
    variables(dash).iter().any(|v| v["name"] == "DS_LOKI")
}

/// Problems with a logs dashboard: a `DS_LOKI` datasource variable of type loki used by
/// every panel, target and query variable; `flow`, `run` and `job` variables (the
/// selection the logs panels follow); logs panels with a LogQL stream selector; unique
/// panel ids; every variable used defined.
pub fn check_loki(dash: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let title = dash["title"].as_str().unwrap_or("?");
    if dash["uid"].as_str().unwrap_or("").is_empty() {
        problems.push("no uid".into());
    }
    if dash["schemaVersion"].as_u64().unwrap_or(0) < MIN_SCHEMA_VERSION {
        problems.push("schemaVersion is too old".into());
    }
    let vars = variables(dash);
    let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    match vars.iter().find(|v| v["name"] == "DS_LOKI") {
        Some(v) if v["type"] == "datasource" && v["query"] == "loki" => {}
        _ => problems.push("no `DS_LOKI` datasource variable of type loki".into()),
    }
    for required in ["flow", "run", "job"] {
        if !names.contains(&required) {
            problems.push(format!("no `{required}` variable"));
        }
    }
    let ds_ok = |ds: &Value| ds["uid"] == LOKI_UID && ds["type"] == "loki";
    for v in &vars {
        if v["type"] == "query" && !ds_ok(&v["datasource"]) {
            problems.push(format!(
                "variable {} has datasource {}",
                v["name"], v["datasource"]
            ));
        }
    }
    let mut ids = BTreeMap::new();
    let mut logs_panels = 0;
    for p in panels(dash) {
        let pt = p["title"].as_str().unwrap_or("?");
        if let Some(prev) = p["id"]
            .as_u64()
            .and_then(|id| ids.insert(id, pt.to_owned()))
        {
            problems.push(format!("panel id used by {prev:?} and {pt:?}"));
        }
        if p["type"] == "logs" {
            logs_panels += 1;
        }
        if !ds_ok(&p["datasource"]) {
            problems.push(format!("panel {pt:?} datasource {}", p["datasource"]));
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or("");
            if !ds_ok(&t["datasource"]) || !expr.trim_start().starts_with('{') {
                problems.push(format!(
                    "panel {pt:?} target {}: not a LogQL log query on DS_LOKI",
                    t["refId"]
                ));
            }
            for used in used_variables(expr) {
                if !used.starts_with("__") && !names.contains(&used.as_str()) {
                    problems.push(format!("panel {pt:?} uses undefined ${used}"));
                }
            }
        }
    }
    if logs_panels == 0 {
        problems.push("no logs panel".into());
    }
    walk_datasources(dash, &mut |ds| {
        let uid = ds["uid"].as_str().unwrap_or("");
        if !(uid == LOKI_UID || uid == "-- Grafana --" || ds.is_null()) {
            problems.push(format!("hard-coded datasource uid {uid:?}"));
        }
    });
    problems
        .into_iter()
        .map(|p| format!("{title}: {p}"))
        .collect()
}

fn walk_datasources(v: &Value, f: &mut dyn FnMut(&Value)) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "datasource" {
                    if child.is_string() {
                        // Legacy form: a datasource named by a string.
                        f(&serde_json::json!({"uid": child}));
                    } else {
                        f(child);
                    }
                } else {
                    walk_datasources(child, f);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| walk_datasources(c, f)),
        _ => {}
    }
}

/// Variable names referenced as `$name`, `${name}` or `${name:fmt}`.
pub fn used_variables(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (start, braced) = if b.get(i + 1) == Some(&b'{') {
                (i + 2, true)
            } else {
                (i + 1, false)
            };
            let end = start
                + b[start..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
            if end > start {
                out.push(expr[start..end].to_owned());
            }
            i = if braced {
                end + b[end..]
                    .iter()
                    .position(|c| *c == b'}')
                    .map_or(0, |p| p + 1)
            } else {
                end
            };
        } else {
            i += 1;
        }
    }
    out
}

/// Replaces every `$name` / `${name}` of `values` in `expr`. Longer names first, so
/// `$__rate_interval` is not taken for `$__rate`.
pub fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_owned();
    for n in names {
        let v = &values[n];
        out = out.replace(&format!("${{{n}}}"), v);
        out = out.replace(&format!("${n}"), v);
    }
    out
}

/// A multi-value variable's selection as Grafana renders it in a Prometheus regex
/// matcher: each value regex-escaped (escapes doubled for the PromQL string), joined
/// by `|`, in parentheses when there are several.
pub fn regex_value(values: &[String]) -> String {
    let esc: Vec<String> = values
        .iter()
        .map(|v| {
            let mut s = String::new();
            for c in v.chars() {
                if "\\.+*?()|[]{}^$".contains(c) {
                    s.push_str("\\\\");
                }
                s.push(c);
            }
            s
        })
        .collect();
    match esc.len() {
        1 => esc[0].clone(),
        _ => format!("({})", esc.join("|")),
    }
}

/// Parses Grafana's `label_values(selector, label)` variable query.
pub fn parse_label_values(q: &str) -> Option<(String, String)> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (sel, label) = inner.rsplit_once(',')?;
    Some((sel.trim().to_owned(), label.trim().to_owned()))
}

/// One panel query of a dashboard.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub dashboard: String,
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

/// Every target expression of every panel.
pub fn queries(file: &str, dash: &Value) -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push(PanelQuery {
                    dashboard: file.to_owned(),
                    panel: p["title"].as_str().unwrap_or("?").to_owned(),
                    ref_id: t["refId"].as_str().unwrap_or("?").to_owned(),
                    expr: expr.to_owned(),
                });
            }
        }
    }
    out
}

/// Resolves the dashboard's query variables in order, the way Grafana does with "All"
/// selected: each `label_values` query (with earlier variables substituted) is asked of
/// Prometheus, and the variable becomes the regex of every value found. `fixed` holds
/// Grafana's built-ins (`__rate_interval`, `__range`, …) and `DS_PROMETHEUS`. A
/// variable with no values is an error: its panels would show nothing.
pub async fn resolve_variables(
    prom: &Prometheus,
    dash: &Value,
    fixed: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let mut values = fixed.clone();
    for v in variables(dash) {
        let name = v["name"].as_str().unwrap_or("").to_owned();
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .or_else(|| v["definition"].as_str())
            .with_context(|| format!("variable {name} has no query"))?;
        let (sel, label) = parse_label_values(&substitute(q, &values))
            .with_context(|| format!("variable {name}: not a label_values() query: {q}"))?;
        let found = prom
            .label_values(&sel, &label)
            .await
            .with_context(|| format!("variable {name}: {q}"))?;
        ensure!(!found.is_empty(), "variable {name} ({q}) has no values");
        values.insert(name, regex_value(&found));
    }
    Ok(values)
}
