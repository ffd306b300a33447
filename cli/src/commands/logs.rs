//! `logarithm logs JOB [-f]`: a job's log as raw bytes, optionally followed until the job
//! ends (then the exit status is the job's).

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use reqwest::header::ACCEPT;
use reqwest::Method;
use serde_json::Value;

use crate::args::LogsArgs;
use crate::client::{enc, query, Client, Error, Result};
use crate::Outcome;

/// How often `-f --timestamps` looks for new lines.
const POLL: Duration = Duration::from_millis(250);

pub async fn logs(client: &Client, a: &LogsArgs) -> Result<Outcome> {
    let path = format!("/api/v1/jobs/{}/logs", enc(&a.job));
    let mut filters: Vec<(&str, String)> = Vec::new();
    if let Some(s) = a.stream {
        filters.push(("stream", s.as_str().to_owned()));
    }
    if let Some(g) = &a.grep {
        filters.push(("contains", g.clone()));
    }
    if let Some(r) = &a.regex {
        filters.push(("regex", r.clone()));
    }
    if a.timestamps {
        json_pages(client, &path, &filters, a.follow).await?;
    } else {
        let mut q = filters.clone();
        if a.follow {
            q.push(("follow", "true".into()));
        }
        raw(client, &format!("{path}{}", query(&q))).await?;
    }
    if !a.follow {
        return Ok(Outcome::Success);
    }
    let job = client
        .get_json(&format!("/api/v1/jobs/{}", enc(&a.job)))
        .await?;
    match job["status"].as_str() {
        Some("success") => Ok(Outcome::Success),
        Some("failure") => Ok(Outcome::Failure),
        other => Err(Error::Invalid(format!(
            "the log stream ended while the job is {}",
            other.unwrap_or("unknown")
        ))),
    }
}

/// Copies the raw download (or live tail) to stdout as it arrives.
async fn raw(client: &Client, path_and_query: &str) -> Result<()> {
    let mut resp = client
        .send(
            client
                .request(Method::GET, path_and_query)
                .header(ACCEPT, "text/plain"),
        )
        .await?;
    let mut stdout = std::io::stdout().lock();
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(|e| Error::Invalid(format!("the log stream broke off: {e}")))?;
        let Some(chunk) = chunk else {
            return flush(&mut stdout);
        };
        write(&mut stdout, &chunk)?;
        flush(&mut stdout)?;
    }
}

/// Pages of JSON lines, printed with their timestamps; with `follow`, polls until the job
/// has ended and every line is printed.
async fn json_pages(
    client: &Client,
    path: &str,
    filters: &[(&str, String)],
    follow: bool,
) -> Result<()> {
    let mut after = 0u64;
    let mut final_seen = false;
    let job_path = path.trim_end_matches("/logs").to_owned();
    loop {
        let mut q = filters.to_vec();
        q.push(("after", after.to_string()));
        q.push(("limit", "10000".into()));
        let page = client.get_json(&format!("{path}{}", query(&q))).await?;
        let mut buf = Vec::new();
        for l in page["lines"].as_array().into_iter().flatten() {
            buf.extend_from_slice(stamp(&l["ts"]).as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(&line_bytes(l)?);
            buf.push(b'\n');
        }
        let mut stdout = std::io::stdout().lock();
        write(&mut stdout, &buf)?;
        flush(&mut stdout)?;
        drop(stdout);
        after = page["next_after"].as_u64().unwrap_or(after);
        if page["more"] == true {
            continue;
        }
        if !follow || final_seen {
            return Ok(());
        }
        // A job's last lines commit with its exit: once it is final, one more pass reads
        // them all.
        let job = client.get_json(&job_path).await?;
        if job["status"].as_str().is_some_and(|s| s != "running") {
            final_seen = true;
        } else {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The line's exact bytes (`text`, or `b64` for a line that is not UTF-8).
fn line_bytes(l: &Value) -> Result<Vec<u8>> {
    if let Some(t) = l["text"].as_str() {
        return Ok(t.as_bytes().to_vec());
    }
    let b = l["b64"].as_str().unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(b)
        .map_err(|e| Error::Invalid(format!("the server sent invalid base64: {e}")))
}

/// ns since the epoch as RFC 3339 with nanoseconds.
fn stamp(ts: &Value) -> String {
    let ns = ts.as_i64().unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ns.to_string())
}

/// Writes to stdout; a closed pipe (`| head`) ends the command quietly.
fn write(w: &mut impl Write, b: &[u8]) -> Result<()> {
    match w.write_all(b) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => r.map_err(|source| Error::Io {
            context: "writing to stdout".into(),
            source,
        }),
    }
}

fn flush(w: &mut impl Write) -> Result<()> {
    match w.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => r.map_err(|source| Error::Io {
            context: "writing to stdout".into(),
            source,
        }),
    }
}
