//! `logarithm jobs`: the job listing as a table.

use crate::args::JobsArgs;
use crate::client::{query, Client, Result};
use crate::output::{cell, time, Out, Table};

pub async fn list(client: &Client, out: &Out, a: &JobsArgs) -> Result<()> {
    let mut q: Vec<(&str, String)> = Vec::new();
    for (k, v) in [
        ("flow", &a.flow),
        ("run", &a.run),
        ("stage", &a.stage),
        ("action", &a.action),
        ("job", &a.job),
        ("status", &a.status),
    ] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    for l in &a.labels {
        q.push(("label", l.clone()));
    }
    q.push(("limit", a.limit.to_string()));
    let body = client
        .get_json(&format!("/api/v1/jobs{}", query(&q)))
        .await?;
    if out.json {
        out.print_json(&body);
        return Ok(());
    }
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "FLOW",
        "RUN",
        "STAGE/ACTION/JOB",
        "STATUS",
        "EXIT",
        "LINES",
        "CREATED",
    ]);
    for j in body["jobs"].as_array().into_iter().flatten() {
        let path = match (j["stage"].as_str(), j["action"].as_str(), j["job"].as_str()) {
            (None, None, None) => "-".to_owned(),
            (s, a, jb) => format!(
                "{}/{}/{}",
                s.unwrap_or("-"),
                a.unwrap_or("-"),
                jb.unwrap_or("-")
            ),
        };
        t.row(vec![
            cell(&j["id"]),
            cell(&j["name"]),
            cell(&j["flow"]),
            cell(&j["run"]),
            path,
            out.status(j["status"].as_str().unwrap_or("-")),
            cell(&j["exit_code"]),
            cell(&j["line_count"]),
            time(&j["created_at"]),
        ]);
    }
    t.print(out);
    Ok(())
}
