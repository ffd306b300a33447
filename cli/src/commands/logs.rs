//! `logarithm logs JOB [-f]`: a job's log as raw bytes, optionally followed live over
//! logarithmd's SSE stream until the job ends (then the exit status is the job's).

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use reqwest::header::ACCEPT;
use reqwest::Method;
use serde_json::Value;

use crate::args::LogsArgs;
use crate::client::{enc, query, Client, Error, Result};
use crate::{sse, Outcome};

/// How long `-f` waits before reconnecting a dropped stream.
const RECONNECT: Duration = Duration::from_secs(1);

pub async fn logs(client: &Client, a: &LogsArgs) -> Result<Outcome> {
    if a.follow {
        return follow(client, a).await;
    }
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
        json_pages(client, &path, &filters).await?;
    } else {
        raw(client, &format!("{path}{}", query(&filters))).await?;
    }
    Ok(Outcome::Success)
}

/// Consecutive failed (re)connections `-f` tolerates before giving up.
const MAX_RECONNECTS: u32 = 10;

/// `-f`: the job's SSE stream (`/logs/stream`), each line printed as it is committed,
/// until the `end` event, whose job status is the outcome. A dropped stream is resumed
/// after the last line printed (`after`), so no line is printed twice or skipped.
async fn follow(client: &Client, a: &LogsArgs) -> Result<Outcome> {
    let filter = match (&a.grep, &a.regex) {
        (Some(g), _) => Some(regex::escape(g)),
        (None, Some(r)) => Some(r.clone()),
        (None, None) => None,
    }
    .map(|p| {
        regex::bytes::RegexBuilder::new(&p)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| Error::Invalid(format!("--regex: {e}")))
    })
    .transpose()?;
    let mut after = 0u64;
    let mut failures = 0u32;
    loop {
        let mut q: Vec<(&str, String)> = vec![("after", after.to_string())];
        if let Some(s) = a.stream {
            q.push(("stream", s.as_str().to_owned()));
        }
        let path = format!("/api/v1/jobs/{}/logs/stream{}", enc(&a.job), query(&q));
        let req = client
            .request(Method::GET, &path)
            .header(ACCEPT, "text/event-stream");
        let mut resp = match client.send(req).await {
            Ok(r) => r,
            // The server's answer (404, 401, …) is final; only a lost connection is retried.
            Err(e @ Error::Server { .. }) => return Err(e),
            Err(e) if failures >= MAX_RECONNECTS => return Err(e),
            Err(_) => {
                failures += 1;
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        let mut parser = sse::Parser::default();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) | Err(_) => break,
            };
            failures = 0;
            let mut out = Vec::new();
            for ev in parser.push(&chunk).map_err(Error::Invalid)? {
                match ev.event.as_str() {
                    "line" => {
                        let l: Value = serde_json::from_str(&ev.data).map_err(|e| {
                            Error::Invalid(format!("the server sent an invalid line event: {e}"))
                        })?;
                        after = l["last_seq"].as_u64().unwrap_or(after);
                        let bytes = line_bytes(&l)?;
                        if filter.as_ref().is_some_and(|re| !re.is_match(&bytes)) {
                            continue;
                        }
                        if a.timestamps {
                            out.extend_from_slice(stamp(&l["ts"]).as_bytes());
                            out.push(b' ');
                        }
                        out.extend_from_slice(&bytes);
                        out.push(b'\n');
                    }
                    "end" => {
                        let mut stdout = std::io::stdout().lock();
                        write(&mut stdout, &out)?;
                        flush(&mut stdout)?;
                        let job: Value = serde_json::from_str(&ev.data).unwrap_or_default();
                        return match job["status"].as_str() {
                            Some("success") => Ok(Outcome::Success),
                            Some("failure") => Ok(Outcome::Failure),
                            other => Err(Error::Invalid(format!(
                                "the job ended with status {}",
                                other.unwrap_or("unknown")
                            ))),
                        };
                    }
                    // `error` (a storage failure): reconnect after the last line.
                    _ => {}
                }
            }
            let mut stdout = std::io::stdout().lock();
            write(&mut stdout, &out)?;
            flush(&mut stdout)?;
        }
        // Closed without `end` (logarithmd restarting, a proxy): resume after `after`.
        failures += 1;
        if failures > MAX_RECONNECTS {
            return Err(Error::Invalid(
                "the log stream kept closing before the job ended".into(),
            ));
        }
        tokio::time::sleep(RECONNECT).await;
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

/// Pages of JSON lines, printed with their timestamps.
async fn json_pages(client: &Client, path: &str, filters: &[(&str, String)]) -> Result<()> {
    let mut after = 0u64;
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
        if page["more"] != true {
            return Ok(());
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
