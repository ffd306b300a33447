//! `logarithm runs`, `run FLOW [--follow]`, `approve`, `reject`, `cancel`.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};

use crate::args::{RunArgs, RunsArgs, SteerArgs};
use crate::client::{enc, query, Client, Result};
use crate::output::{cell, time, Out, Table};
use crate::Outcome;

/// How often `run --follow` reads the run.
const POLL: Duration = Duration::from_millis(500);

pub async fn list(client: &Client, out: &Out, a: &RunsArgs) -> Result<()> {
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(f) = &a.flow {
        q.push(("flow", f.clone()));
    }
    if let Some(s) = &a.status {
        q.push(("status", s.clone()));
    }
    q.push(("limit", a.limit.to_string()));
    let body = client
        .get_json(&format!("/api/v1/runs{}", query(&q)))
        .await?;
    if out.json {
        out.print_json(&body);
        return Ok(());
    }
    let mut t = Table::new(&["ID", "FLOW", "STATUS", "CREATED", "FINISHED", "REASON"]);
    for r in body["runs"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&r["id"]),
            cell(&r["flow"]),
            out.status(r["status"].as_str().unwrap_or("-")),
            time(&r["created_at"]),
            time(&r["finished_at"]),
            cell(&r["reason"]),
        ]);
    }
    t.print(out);
    Ok(())
}

/// Whether a run status is final.
fn is_final(status: &str) -> bool {
    matches!(status, "success" | "failure" | "timeout" | "cancelled")
}

pub async fn run(client: &Client, out: &Out, a: &RunArgs) -> Result<Outcome> {
    let body = match &a.co_data {
        Some(d) => json!({ "co_data": d }),
        None => json!({}),
    };
    let run = client
        .post_json(&format!("/api/v1/flows/{}/runs", enc(&a.flow)), &body)
        .await?;
    let id = run["id"].as_str().unwrap_or_default().to_owned();
    if !a.follow {
        if out.json {
            out.print_json(&run);
        } else {
            println!("run {id} of {} started", a.flow);
        }
        return Ok(Outcome::Success);
    }
    if !out.json {
        println!("run {id} of {} started", a.flow);
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut current = run;
    loop {
        if !out.json {
            for line in changes(&current, &mut seen, out) {
                println!("{line}");
            }
            let _ = std::io::stdout().flush();
        }
        let status = current["status"].as_str().unwrap_or("").to_owned();
        if is_final(&status) {
            if out.json {
                out.print_json(&current);
            } else {
                let reason = current["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                println!("run {id} {}{reason}", out.status(&status));
            }
            return Ok(if status == "success" {
                Outcome::Success
            } else {
                Outcome::Failure
            });
        }
        tokio::time::sleep(POLL).await;
        current = client
            .get_json(&format!("/api/v1/runs/{}", enc(&id)))
            .await?;
    }
}

/// Lines for every stage, action and job whose status changed since the last call.
fn changes(run: &Value, seen: &mut HashMap<String, String>, out: &Out) -> Vec<String> {
    let mut lines = Vec::new();
    let mut note = |key: String, label: String, v: &Value| {
        let status = v["status"].as_str().unwrap_or("pending").to_owned();
        if seen.get(&key) == Some(&status) {
            return;
        }
        let reason = v["reason"]
            .as_str()
            .filter(|_| status != "running" && status != "pending")
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        lines.push(format!("{label}: {}{reason}", out.status(&status)));
        seen.insert(key, status);
    };
    for s in run["stages"].as_array().into_iter().flatten() {
        let sn = s["name"].as_str().unwrap_or("?");
        note(format!("s/{sn}"), format!("stage {sn}"), s);
        for a in s["actions"].as_array().into_iter().flatten() {
            let an = a["name"].as_str().unwrap_or("?");
            for j in a["jobs"].as_array().into_iter().flatten() {
                let jn = j["name"].as_str().unwrap_or("?");
                let id = j["job_id"]
                    .as_str()
                    .map(|i| format!(" [job {i}]"))
                    .unwrap_or_default();
                note(
                    format!("j/{sn}/{an}/{jn}"),
                    format!("  job {sn}/{an}/{jn}{id}"),
                    j,
                );
            }
        }
    }
    lines
}

/// approve / reject / cancel.
pub async fn steer(client: &Client, out: &Out, verb: &str, a: &SteerArgs) -> Result<()> {
    let body = match (verb, &a.reason) {
        ("approve", Some(by)) => json!({ "by": by }),
        (_, Some(r)) => json!({ "reason": r }),
        (_, None) => json!({}),
    };
    let run = client
        .post_json(&format!("/api/v1/runs/{}/{verb}", enc(&a.run)), &body)
        .await?;
    if out.json {
        out.print_json(&run);
    } else {
        println!(
            "run {}: {}",
            cell(&run["id"]),
            out.status(run["status"].as_str().unwrap_or("-"))
        );
    }
    Ok(())
}
