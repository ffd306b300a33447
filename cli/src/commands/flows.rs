//! `logarithm flows apply -f FILE`, `flows ls`.

use std::path::Path;

use reqwest::header::CONTENT_TYPE;
use reqwest::Method;

use crate::client::{Client, Error, Result};
use crate::output::{cell, time, Out, Table};

pub async fn apply(client: &Client, out: &Out, file: &Path) -> Result<()> {
    let yaml = std::fs::read(file).map_err(|source| Error::Io {
        context: format!("reading {}", file.display()),
        source,
    })?;
    let resp = client
        .send(
            client
                .request(Method::POST, "/api/v1/flows")
                .header(CONTENT_TYPE, "application/yaml")
                .body(yaml),
        )
        .await?;
    let created = resp.status() == reqwest::StatusCode::CREATED;
    let flow = client.json(resp).await?;
    if out.json {
        out.print_json(&flow);
    } else {
        let verb = if created { "registered" } else { "updated" };
        println!("flow {} {verb}", cell(&flow["name"]));
    }
    Ok(())
}

pub async fn list(client: &Client, out: &Out) -> Result<()> {
    let body = client.get_json("/api/v1/flows").await?;
    if out.json {
        out.print_json(&body);
        return Ok(());
    }
    let mut t = Table::new(&["NAME", "TITLE", "STAGES", "UPDATED"]);
    for f in body["flows"].as_array().into_iter().flatten() {
        let stages: Vec<String> = f["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| cell(&s["name"]))
            .collect();
        t.row(vec![
            cell(&f["name"]),
            cell(&f["title"]),
            stages.join(" → "),
            time(&f["updated_at"]),
        ]);
    }
    t.print(out);
    Ok(())
}
