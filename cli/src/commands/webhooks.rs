//! `logarithm webhooks ls`, `deliveries ID`, `redeliver ID DELIVERY`.

use serde_json::json;

use crate::client::{enc, Client, Result};
use crate::output::{cell, time, Out, Table};

pub async fn list(client: &Client, out: &Out) -> Result<()> {
    let body = client.get_json("/api/v1/webhooks").await?;
    if out.json {
        out.print_json(&body);
        return Ok(());
    }
    let mut t = Table::new(&["ID", "NAME", "URL", "EVENTS", "ENABLED", "SOURCE"]);
    for w in body["webhooks"].as_array().into_iter().flatten() {
        let events: Vec<String> = w["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(cell)
            .collect();
        let enabled = match (w["enabled"].as_bool(), w["disabled_reason"].as_str()) {
            (Some(true), _) => "yes".to_owned(),
            (_, Some(r)) => format!("no ({r})"),
            _ => "no".to_owned(),
        };
        t.row(vec![
            cell(&w["id"]),
            cell(&w["name"]),
            cell(&w["url"]),
            events.join(","),
            enabled,
            cell(&w["source"]),
        ]);
    }
    t.print(out);
    Ok(())
}

pub async fn deliveries(client: &Client, out: &Out, id: &str, limit: u32) -> Result<()> {
    let body = client
        .get_json(&format!(
            "/api/v1/webhooks/{}/deliveries?limit={limit}",
            enc(id)
        ))
        .await?;
    if out.json {
        out.print_json(&body);
        return Ok(());
    }
    let mut t = Table::new(&[
        "ID", "EVENT", "JOB", "STATUS", "ATTEMPTS", "LAST", "CREATED",
    ]);
    for d in body["deliveries"].as_array().into_iter().flatten() {
        let last = match (d["last_status_code"].as_u64(), d["last_error"].as_str()) {
            (Some(c), _) => c.to_string(),
            (None, Some(e)) => e.to_owned(),
            _ => "-".into(),
        };
        t.row(vec![
            cell(&d["id"]),
            cell(&d["event"]),
            cell(&d["job_id"]),
            out.status(d["status"].as_str().unwrap_or("-")),
            cell(&d["attempt_count"]),
            last,
            time(&d["created_at"]),
        ]);
    }
    t.print(out);
    Ok(())
}

pub async fn redeliver(client: &Client, out: &Out, id: &str, delivery: &str) -> Result<()> {
    let body = client
        .post_json(
            &format!(
                "/api/v1/webhooks/{}/deliveries/{}/redeliver",
                enc(id),
                enc(delivery)
            ),
            &json!({}),
        )
        .await?;
    if out.json {
        out.print_json(&body);
    } else {
        println!(
            "delivery {} is due again ({})",
            cell(&body["id"]),
            out.status(body["status"].as_str().unwrap_or("-"))
        );
    }
    Ok(())
}
