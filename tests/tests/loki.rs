//! The Loki read API against the real logarithmd binary on SQLite and MariaDB: the requests
//! Grafana's Loki data source sends, answers checked against Loki's documented response
//! schema, exact `query_range` results in both directions with limits and time bounds,
//! unsupported LogQL and broad queries refused, and a WebSocket tail.
//!
//! Lines are ingested straight through the ingest API (with chosen timestamps), so every
//! expected answer is computed here from the same fixture.
//!
//! Grafana's requests, as its Loki data source builds them (pkg/tsdb/loki/api.go,
//! healthcheck.go; public/app/plugins/datasource/loki/LanguageProvider.ts):
//! - health check: `GET /loki/api/v1/query?direction=backward&query=vector(1)%2Bvector(1)&time=4000000000`,
//!   expecting one vector sample whose value is 2;
//! - label browser: `GET /loki/api/v1/labels?start=…&end=…`, then
//!   `GET /loki/api/v1/label/{name}/values?start=…&end=…` (with `query={…}` once a label is
//!   picked) and `GET /loki/api/v1/series?match[]={…}&start=…&end=…`;
//! - Explore: `GET /loki/api/v1/query_range?direction=backward&limit=1000&query=…&start=…&end=…&step=…ms`;
//! - a dashboard logs panel: the same, with multi-value variables interpolated as
//!   `label=~"(a|b)"` and "All" as `.+`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use logarithm_cli::client::enc;
use logarithm_tests::{rand_u64, Daemon, Db};
use protocol::now_ns;
use serde_json::{json, Value};

const S: i64 = 1_000_000_000;

/// One fixture line: (labels it must carry, ts, stream, text).
#[derive(Debug, Clone, PartialEq)]
struct Line {
    job: &'static str,
    ts: i64,
    stream: &'static str,
    text: String,
}

struct Fixture {
    flow: String,
    other_flow: String,
    t0: i64,
    lines: Vec<Line>,
    job_ids: BTreeMap<&'static str, String>,
}

fn cid(tag: &str, r: u64) -> String {
    format!("{:0>64}", format!("{tag}{r:x}"))
}

/// Job A (flow F, run 1, finished, labelled com.example.team=core): 20 lines on both
/// streams one second apart; job B (flow F, run 2, running): 10 stdout lines; job C
/// (another flow): 5 lines.
async fn ingest_fixture(d: &Daemon) -> Result<Fixture> {
    let r = rand_u64();
    let flow = format!("lk{:x}", r & 0xffff_ffff);
    let other_flow = format!("{flow}-other");
    let t0 = (now_ns() / S - 1800) * S;
    let mut lines = Vec::new();
    let mut segments = Vec::new();
    let mut job_ids = BTreeMap::new();
    for (tag, run, n, offset, labels, flow_name, exit) in [
        (
            "a",
            "1",
            20,
            0,
            json!({"com.example.team": "core"}),
            &flow,
            true,
        ),
        ("b", "2", 10, S / 2, json!({}), &flow, false),
        ("c", "1", 5, S / 4, json!({}), &other_flow, true),
    ] {
        let container = cid(tag, r);
        let mut l = labels.as_object().cloned().unwrap_or_default();
        l.insert("io.containerops.flow".into(), json!(flow_name));
        l.insert("io.containerops.run".into(), json!(run));
        l.insert("io.containerops.stage".into(), json!("build"));
        l.insert("io.containerops.action".into(), json!("compile"));
        l.insert("io.containerops.job".into(), json!(format!("job-{tag}")));
        let mut records = Vec::new();
        let job: &'static str = match tag {
            "a" => "a",
            "b" => "b",
            _ => "c",
        };
        for i in 0..n {
            let stream = if tag == "a" && i % 2 == 1 {
                "stderr"
            } else {
                "stdout"
            };
            let text = if i % 3 == 0 {
                format!("{tag}-{i} error here")
            } else {
                format!("{tag}-{i} fine")
            };
            let ts = t0 + i64::from(i) * S + offset;
            records.push(json!({"seq": i + 1, "ts": ts, "stream": stream, "text": text}));
            lines.push(Line {
                job,
                ts,
                stream,
                text,
            });
        }
        let mut seg = json!({
            "container_id": container,
            "meta": {"name": format!("c-{tag}-{flow}"), "image": "i", "labels": l,
                     "created_at": t0 - S, "started_at": t0 - S},
            "records": records,
        });
        if exit {
            seg["exit"] = json!({"exit_code": 0, "finished_at": t0 + 30 * S, "last_seq": n});
        }
        segments.push(seg);
        // The container id for now; resolve_ids puts logarithmd's job id in its place.
        job_ids.insert(job, container.clone());
    }
    let batch =
        json!({"version": 1, "agent": {"id": "loki-test", "node": "n1"}, "segments": segments});
    d.ingest_json(&batch).await?;
    Ok(Fixture {
        flow,
        other_flow,
        t0,
        lines,
        job_ids,
    })
}

/// Replaces the container ids in `job_ids` with the job ids logarithmd gave them.
async fn resolve_ids(d: &Daemon, f: &mut Fixture) -> Result<()> {
    for v in f.job_ids.values_mut() {
        let job = d.job_of(v).await?.context("job not listed")?;
        *v = job["id"].as_str().context("id")?.to_owned();
    }
    Ok(())
}

async fn get(d: &Daemon, path_and_query: &str) -> Result<(u16, Value)> {
    let r = d
        .http
        .get(format!("{}{path_and_query}", d.base))
        .send()
        .await?;
    logarithm_tests::status_and_json(r).await
}

/// Replaces `$name` by its value, longer names first (as Grafana interpolates).
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_owned();
    for n in names {
        out = out.replace(&format!("${n}"), &vars[n]);
    }
    out
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Loki's documented `query_range` answer for log queries: `status` "success",
/// `data.resultType` "streams", `data.result` a list of `{stream: {name: value}, values:
/// [[ns string, line string]]}`, and `data.stats`.
fn check_streams_schema(v: &Value) -> Result<()> {
    ensure!(v["status"] == "success", "status: {v}");
    ensure!(v["data"]["resultType"] == "streams", "resultType: {v}");
    ensure!(v["data"]["stats"].is_object(), "stats: {v}");
    for s in v["data"]["result"].as_array().context("result is a list")? {
        let labels = s["stream"].as_object().context("stream is an object")?;
        ensure!(!labels.is_empty(), "empty label set: {s}");
        for (k, val) in labels {
            ensure!(is_label_name(k), "label name {k:?}");
            ensure!(
                val.as_str().is_some_and(|x| !x.is_empty()),
                "label {k}: {val}"
            );
        }
        for e in s["values"].as_array().context("values is a list")? {
            let pair = e.as_array().context("entry is a pair")?;
            ensure!(pair.len() == 2, "entry {e}");
            let ts = pair[0].as_str().context("ts is a string")?;
            ensure!(
                !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()),
                "ts {ts:?}"
            );
            ensure!(pair[1].is_string(), "line {e}");
        }
    }
    Ok(())
}

/// The answer's entries as (job tag, ts, stream, text), in the answer's order within each
/// stream, streams concatenated; plus a check that every entry's labels are its job's.
fn entries(f: &Fixture, v: &Value) -> Result<Vec<Line>> {
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().context("result")? {
        let id = s["stream"]["job_id"].as_str().context("job_id label")?;
        let job = *f
            .job_ids
            .iter()
            .find(|(_, v)| v.as_str() == id)
            .map(|(k, _)| k)
            .context("unknown job id")?;
        let stream: &'static str = match s["stream"]["stream"].as_str() {
            Some("stdout") => "stdout",
            Some("stderr") => "stderr",
            other => anyhow::bail!("stream label {other:?}"),
        };
        let flow = if job == "c" { &f.other_flow } else { &f.flow };
        ensure!(s["stream"]["flow"] == flow.as_str(), "flow label: {s}");
        ensure!(s["stream"]["job"] == format!("job-{job}"), "job label: {s}");
        ensure!(s["stream"]["node"] == "n1", "node label: {s}");
        for e in s["values"].as_array().context("values")? {
            out.push(Line {
                job,
                ts: e[0].as_str().context("ts")?.parse()?,
                stream,
                text: e[1].as_str().context("line")?.to_owned(),
            });
        }
    }
    Ok(out)
}

/// Sorts entries by (ts, job) in the direction given.
fn ordered(mut v: Vec<Line>, forward: bool) -> Vec<Line> {
    v.sort_by(|a, b| (a.ts, a.job).cmp(&(b.ts, b.job)));
    if !forward {
        v.reverse();
    }
    v
}

/// Checks that within each stream the values are in the direction's order.
fn check_stream_order(v: &Value, forward: bool) -> Result<()> {
    for s in v["data"]["result"].as_array().context("result")? {
        let ts: Vec<i64> = s["values"]
            .as_array()
            .context("values")?
            .iter()
            .map(|e| e[0].as_str().unwrap_or("0").parse().unwrap_or(0))
            .collect();
        let mut sorted = ts.clone();
        sorted.sort();
        if !forward {
            sorted.reverse();
        }
        ensure!(ts == sorted, "stream values out of order: {ts:?}");
    }
    Ok(())
}

async fn range_query(
    d: &Daemon,
    query: &str,
    start: i64,
    end: i64,
    limit: usize,
    direction: &str,
) -> Result<Value> {
    let (s, v) = get(
        d,
        &format!(
            "/loki/api/v1/query_range?direction={direction}&limit={limit}&query={}&start={start}&end={end}&step=2000ms",
            enc(query)
        ),
    )
    .await?;
    ensure!(s == 200, "{query}: {s} {v}");
    check_streams_schema(&v)?;
    check_stream_order(&v, direction == "forward")?;
    Ok(v)
}

async fn scenario(db: Db) -> Result<()> {
    let d = Daemon::start(db.url()).await?;
    let mut f = ingest_fixture(&d).await?;
    resolve_ids(&d, &mut f).await?;
    let (start, end) = (f.t0 - 60 * S, now_ns());
    let flow_q = format!("{{flow=\"{}\"}}", f.flow);
    let of_flow: Vec<Line> = f.lines.iter().filter(|l| l.job != "c").cloned().collect();

    // Health check, exactly as Grafana sends it.
    let (s, v) = get(
        &d,
        "/loki/api/v1/query?direction=backward&query=vector%281%29%2Bvector%281%29&time=4000000000",
    )
    .await?;
    ensure!(s == 200, "{s} {v}");
    ensure!(
        v["status"] == "success" && v["data"]["resultType"] == "vector",
        "{v}"
    );
    let result = v["data"]["result"].as_array().context("result")?;
    ensure!(result.len() == 1, "{v}");
    ensure!(result[0]["metric"] == json!({}), "{v}");
    // Grafana reads the sample's value (it must be 2); `time` is 10 digits, which Loki
    // (and logarithmd) read as seconds.
    ensure!(
        result[0]["value"][1] == "2" && result[0]["value"][0].is_number(),
        "{v}"
    );

    // Label browser.
    let (s, v) = get(&d, &format!("/loki/api/v1/labels?start={start}&end={end}")).await?;
    ensure!(s == 200 && v["status"] == "success", "{s} {v}");
    let names: Vec<&str> = v["data"]
        .as_array()
        .context("data")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "action",
        "com_example_team",
        "container",
        "flow",
        "job",
        "job_id",
        "node",
        "run",
        "stage",
        "status",
        "stream",
    ] {
        ensure!(names.contains(&want), "labels {names:?} lack {want}");
    }
    ensure!(names.iter().all(|n| is_label_name(n)), "{names:?}");
    let (s, v) = get(
        &d,
        &format!(
            "/loki/api/v1/label/run/values?start={start}&end={end}&query={}",
            enc(&flow_q)
        ),
    )
    .await?;
    ensure!(s == 200 && v["data"] == json!(["1", "2"]), "{s} {v}");
    let (s, v) = get(
        &d,
        &format!("/loki/api/v1/label/flow/values?start={start}&end={end}"),
    )
    .await?;
    ensure!(s == 200, "{s} {v}");
    let flows = v["data"].as_array().context("data")?;
    ensure!(
        flows.contains(&json!(f.flow)) && flows.contains(&json!(f.other_flow)),
        "{v}"
    );
    let (s, v) = get(
        &d,
        &format!(
            "/loki/api/v1/label/stream/values?start={start}&end={end}&query={}",
            enc(&flow_q)
        ),
    )
    .await?;
    ensure!(
        s == 200 && v["data"] == json!(["stderr", "stdout"]),
        "{s} {v}"
    );
    let (s, v) = get(
        &d,
        &format!(
            "/loki/api/v1/series?match%5B%5D={}&start={start}&end={end}",
            enc(&flow_q)
        ),
    )
    .await?;
    ensure!(s == 200 && v["status"] == "success", "{s} {v}");
    let series = v["data"].as_array().context("data")?;
    // Both streams of every job in range (B printed nothing on stderr: see docs/grafana.md).
    ensure!(series.len() == 4, "A and B, stdout and stderr: {v}");
    ensure!(
        series.iter().all(|s| s
            .as_object()
            .is_some_and(|o| !o.keys().any(|k| k.starts_with("io_containerops")))),
        "{v}"
    );
    ensure!(
        series.iter().all(|s| s["flow"] == f.flow.as_str()
            && s["com_example_team"].is_null() == (s["job"] == "job-b")),
        "{v}"
    );

    // Explore: everything of the flow, newest first, limit 1000.
    let v = range_query(&d, &flow_q, start, end, 1000, "backward").await?;
    ensure!(
        ordered(entries(&f, &v)?, false) == ordered(of_flow.clone(), false),
        "all lines: {v}"
    );
    ensure!(
        v["data"]["result"].as_array().map(Vec::len) == Some(3),
        "three streams: {v}"
    );
    // Forward, all.
    let v = range_query(&d, &flow_q, start, end, 1000, "forward").await?;
    ensure!(ordered(entries(&f, &v)?, true) == ordered(of_flow.clone(), true));
    // Limits keep the newest (backward) or oldest (forward) lines across jobs.
    let v = range_query(&d, &flow_q, start, end, 7, "backward").await?;
    let want: Vec<Line> = ordered(of_flow.clone(), false)
        .into_iter()
        .take(7)
        .collect();
    ensure!(ordered(entries(&f, &v)?, false) == want, "newest 7: {v}");
    let v = range_query(&d, &flow_q, start, end, 7, "forward").await?;
    let want: Vec<Line> = ordered(of_flow.clone(), true).into_iter().take(7).collect();
    ensure!(ordered(entries(&f, &v)?, true) == want, "oldest 7: {v}");
    // Time bounds: start inclusive, end exclusive.
    let (ts, te) = (f.t0 + 5 * S, f.t0 + 10 * S);
    let v = range_query(&d, &flow_q, ts, te, 1000, "forward").await?;
    let want: Vec<Line> = of_flow
        .iter()
        .filter(|l| l.ts >= ts && l.ts < te)
        .cloned()
        .collect();
    ensure!(want.len() == 10, "fixture: {}", want.len());
    ensure!(
        ordered(entries(&f, &v)?, true) == ordered(want, true),
        "bounded: {v}"
    );
    let v = range_query(&d, &flow_q, ts, te, 3, "backward").await?;
    let want: Vec<Line> = ordered(
        of_flow
            .iter()
            .filter(|l| l.ts >= ts && l.ts < te)
            .cloned()
            .collect(),
        false,
    )
    .into_iter()
    .take(3)
    .collect();
    ensure!(
        ordered(entries(&f, &v)?, false) == want,
        "bounded newest 3: {v}"
    );

    // Stream and label matchers, line filters.
    let q = format!("{{flow=\"{}\", stream=\"stderr\"}} |= \"error\"", f.flow);
    let v = range_query(&d, &q, start, end, 1000, "forward").await?;
    let want: Vec<Line> = of_flow
        .iter()
        .filter(|l| l.stream == "stderr" && l.text.contains("error"))
        .cloned()
        .collect();
    ensure!(
        !want.is_empty() && ordered(entries(&f, &v)?, true) == ordered(want, true),
        "stderr errors: {v}"
    );
    let q = format!("{{com_example_team=\"core\", flow=~\"{}|nothing\"}} != \"error\" |~ \"a-1[0-9]\" !~ \"a-1[5-9]\"", f.flow);
    let v = range_query(&d, &q, start, end, 1000, "forward").await?;
    let want: Vec<Line> = of_flow
        .iter()
        .filter(|l| l.job == "a" && !l.text.contains("error"))
        .filter(|l| {
            let n: u32 = l.text[2..]
                .split(' ')
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            (10..15).contains(&n)
        })
        .cloned()
        .collect();
    ensure!(
        !want.is_empty() && ordered(entries(&f, &v)?, true) == ordered(want, true),
        "filters: {v}"
    );

    // A logs panel with variables: run=~"(1|2)" (multi-value), job=~".+" (All).
    let q = format!("{{flow=\"{}\", run=~\"(1|2)\", job=~\".+\"}}", f.flow);
    let v = range_query(&d, &q, start, end, 1000, "backward").await?;
    ensure!(
        ordered(entries(&f, &v)?, false) == ordered(of_flow.clone(), false),
        "panel: {v}"
    );
    let q = format!("{{flow=\"{}\", run=~\"(2)\", status=\"running\"}}", f.flow);
    let v = range_query(&d, &q, start, end, 1000, "backward").await?;
    let want: Vec<Line> = of_flow.iter().filter(|l| l.job == "b").cloned().collect();
    ensure!(
        ordered(entries(&f, &v)?, false) == ordered(want, false),
        "run 2: {v}"
    );
    // By job id, over a long range (a named job needs no range bound).
    let q = format!("{{job_id=\"{}\"}}", f.job_ids["c"]);
    let v = range_query(&d, &q, f.t0 - 30 * 24 * 3600 * S, end, 1000, "forward").await?;
    let want: Vec<Line> = f.lines.iter().filter(|l| l.job == "c").cloned().collect();
    ensure!(
        ordered(entries(&f, &v)?, true) == ordered(want, true),
        "job c: {v}"
    );

    // The "Logarithm job logs" dashboard as Grafana runs it: flow F picked, run and job on
    // "All" (`.+`), its variable queries asked of the label values API.
    let dash_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/logarithm-job-logs.json"
    );
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(dash_path)?)?;
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.insert("flow".into(), f.flow.clone());
    for v in dash["templating"]["list"].as_array().context("variables")? {
        let name = v["name"].as_str().context("name")?;
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().context("variable query")?;
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .with_context(|| q.to_owned())?;
        let (selector, label) = match inner.rsplit_once(',') {
            Some((sel, l)) => (Some(sel.trim().to_owned()), l.trim()),
            None => (None, inner.trim()),
        };
        let mut path = format!("/loki/api/v1/label/{label}/values?start={start}&end={end}");
        if let Some(sel) = selector {
            path.push_str(&format!("&query={}", enc(&substitute(&sel, &vars))));
        }
        let (s, found) = get(&d, &path).await?;
        ensure!(s == 200, "variable {name}: {s} {found}");
        match name {
            "flow" => ensure!(
                found["data"]
                    .as_array()
                    .is_some_and(|a| a.contains(&json!(f.flow))),
                "{found}"
            ),
            "run" => ensure!(found["data"] == json!(["1", "2"]), "{found}"),
            "job" => ensure!(found["data"] == json!(["job-a", "job-b"]), "{found}"),
            other => anyhow::bail!("unexpected variable {other}"),
        }
        if name != "flow" {
            vars.insert(
                name.to_owned(),
                v["allValue"].as_str().context("allValue")?.to_owned(),
            );
        }
    }
    vars.insert("search".into(), String::new());
    let panels = dash["panels"].as_array().context("panels")?;
    let logs = panels
        .iter()
        .find(|p| p["title"] == "Job logs")
        .context("Job logs panel")?;
    let expr = substitute(logs["targets"][0]["expr"].as_str().context("expr")?, &vars);
    let v = range_query(&d, &expr, start, end, 1000, "backward").await?;
    ensure!(
        ordered(entries(&f, &v)?, false) == ordered(of_flow.clone(), false),
        "{expr}: {v}"
    );
    let errors = panels
        .iter()
        .find(|p| p["title"] == "Errors")
        .context("Errors panel")?;
    let expr = substitute(
        errors["targets"][0]["expr"].as_str().context("expr")?,
        &vars,
    );
    let v = range_query(&d, &expr, start, end, 1000, "backward").await?;
    let want: Vec<Line> = of_flow
        .iter()
        .filter(|l| l.text.contains("error"))
        .cloned()
        .collect();
    ensure!(
        ordered(entries(&f, &v)?, false) == ordered(want, false),
        "{expr}: {v}"
    );

    // Unsupported LogQL and broad queries: 400 naming what is supported.
    for q in [
        format!("sum by (level) (count_over_time({flow_q}[1m]))"),
        format!("{flow_q} | json"),
        format!("{flow_q} | logfmt | level=\"error\""),
        format!("rate({flow_q}[5m])"),
    ] {
        let (s, v) = get(
            &d,
            &format!(
                "/loki/api/v1/query_range?query={}&start={start}&end={end}",
                enc(&q)
            ),
        )
        .await?;
        ensure!(s == 400 && v["status"] == "error", "{q}: {s} {v}");
        let m = v["message"].as_str().context("message")?;
        ensure!(
            m.contains("not supported") && m.contains("stream selector") && m.contains("|="),
            "{q}: {m}"
        );
    }
    let (s, v) = get(
        &d,
        &format!(
            "/loki/api/v1/query_range?query={}&start={}&end={end}",
            enc("{node=\"n1\"}"),
            end - 48 * 3600 * S
        ),
    )
    .await?;
    ensure!(s == 400, "{s} {v}");
    ensure!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("loki_max_range")),
        "{v}"
    );
    let (s, v) = get(&d, &format!("/loki/api/v1/query?query={}", enc(&flow_q))).await?;
    ensure!(
        s == 400
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("query_range")),
        "{s} {v}"
    );
    Ok(())
}

logarithm_tests::on_both_backends!(#[tokio::test] grafana_requests_sqlite, grafana_requests_mariadb => scenario);

/// The WebSocket tail of run 2 of the fixture's flow, with a backlog of 3 lines.
fn tail_url(d: &Daemon, f: &Fixture) -> String {
    let q = format!("{{flow=\"{}\", run=\"2\"}}", f.flow);
    format!(
        "ws://{}/loki/api/v1/tail?query={}&delay_for=0&limit=3&start={}",
        d.base.trim_start_matches("http://"),
        enc(&q),
        f.t0 - 60 * S
    )
}

/// A WebSocket tail gets the backlog, then a line ingested later within 1 s.
#[tokio::test]
async fn tail_delivers_new_lines_within_a_second() -> Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    let db = Db::sqlite()?;
    let d = Daemon::start(db.url()).await?;
    let f = ingest_fixture(&d).await?;
    let url = tail_url(&d, &f);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let next_text =
        |m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>| -> Result<Value> {
            match m {
                Some(Ok(Message::Text(t))) => Ok(serde_json::from_str(t.as_str())?),
                other => anyhow::bail!("expected a text message, got {other:?}"),
            }
        };
    // The backlog: the last 3 lines of job B, oldest first.
    let first = next_text(tokio::time::timeout(Duration::from_secs(10), ws.next()).await?)?;
    ensure!(first["dropped_entries"].is_array(), "{first}");
    let values: Vec<&str> = first["streams"][0]["values"]
        .as_array()
        .context("values")?
        .iter()
        .filter_map(|e| e[1].as_str())
        .collect();
    ensure!(
        values == ["b-7 fine", "b-8 fine", "b-9 error here"],
        "{first}"
    );
    // A new line of job B.
    let b_container = {
        let (_, page) = d
            .get_json(&format!("/api/v1/jobs?flow={}&run=2", f.flow))
            .await?;
        page["jobs"][0]["container_id"]
            .as_str()
            .context("job B")?
            .to_owned()
    };
    let ts = now_ns();
    let batch = json!({"version": 1, "agent": {"id": "loki-test", "node": "n1"}, "segments": [{
        "container_id": b_container,
        "records": [{"seq": 11, "ts": ts, "stream": "stdout", "text": "b-10 live"}]
    }]});
    let sent = std::time::Instant::now();
    d.ingest_json(&batch).await?;
    let live = next_text(
        tokio::time::timeout(Duration::from_secs(1), ws.next())
            .await
            .context("no line within 1 s")?,
    )?;
    let elapsed = sent.elapsed();
    ensure!(
        live["streams"][0]["values"] == json!([[ts.to_string(), "b-10 live"]]),
        "{live}"
    );
    ensure!(live["streams"][0]["stream"]["run"] == "2", "{live}");
    eprintln!("tail delivered a new line {elapsed:?} after ingest was sent");
    // A job of the run that starts after the tail began is followed from its first line.
    let ts2 = now_ns();
    let new_container = cid("d", rand_u64());
    let batch = json!({"version": 1, "agent": {"id": "loki-test", "node": "n1"}, "segments": [{
        "container_id": new_container,
        "meta": {"name": "c-d", "image": "i", "created_at": ts2 - S, "started_at": ts2 - S,
                 "labels": {"io.containerops.flow": f.flow, "io.containerops.run": "2",
                            "io.containerops.job": "job-d"}},
        "records": [{"seq": 1, "ts": ts2, "stream": "stderr", "text": "d-0 new job"}]
    }]});
    let sent = std::time::Instant::now();
    d.ingest_json(&batch).await?;
    let live = next_text(
        tokio::time::timeout(Duration::from_secs(1), ws.next())
            .await
            .context("no line of the new job within 1 s")?,
    )?;
    eprintln!(
        "tail delivered a new job's line {:?} after ingest was sent",
        sent.elapsed()
    );
    ensure!(
        live["streams"][0]["values"] == json!([[ts2.to_string(), "d-0 new job"]]),
        "{live}"
    );
    ensure!(live["streams"][0]["stream"]["job"] == "job-d", "{live}");
    ensure!(live["streams"][0]["stream"]["stream"] == "stderr", "{live}");
    // Nothing is sent twice.
    let again = tokio::time::timeout(Duration::from_millis(800), ws.next()).await;
    ensure!(again.is_err(), "unexpected message {again:?}");
    Ok(())
}

/// A tail is a follow of its token: with `max_follows_per_token = 1`, a second tail is
/// refused 429 while the first is open, and accepted once it closed.
#[tokio::test]
async fn a_tail_counts_against_max_follows_per_token() -> Result<()> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let db = Db::sqlite()?;
    let d = Daemon::start_with(db.url(), "max_follows_per_token = 1\n").await?;
    let f = ingest_fixture(&d).await?;
    let url = tail_url(&d, &f);
    let (mut first, _) = tokio_tungstenite::connect_async(url.clone()).await?;
    match tokio_tungstenite::connect_async(url.clone()).await {
        Err(WsError::Http(resp)) => ensure!(resp.status() == 429, "{resp:?}"),
        other => anyhow::bail!("a second tail got {other:?}"),
    }
    first.close(None).await?;
    drop(first);
    logarithm_tests::wait_until(
        Duration::from_secs(10),
        "a tail after the first closed",
        || {
            let url = url.clone();
            async move { Ok(tokio_tungstenite::connect_async(url).await.ok().map(|_| ())) }
        },
    )
    .await
}
