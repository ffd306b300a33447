//! Checking a job's stored log against the lines its container printed: what the
//! reliability and spool tests assert after every fault.

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Daemon;

/// SHA-256 of lines, each followed by `\n` (the raw download's format), as hex.
pub fn checksum<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l);
        h.update(b"\n");
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

/// What the stored log of one job looked like.
pub struct Verified {
    pub lines: u64,
    pub checksum: String,
}

/// Checks the stored log of `job_id` against `expected` (the lines the container printed,
/// in order): exactly that many lines, seqs exactly 1..=N, each text equal, timestamps
/// never decreasing, and the SHA-256 of the JSON pages and of the raw download equal to
/// the expected one.
pub async fn verify_log(daemon: &Daemon, job_id: &str, expected: &[String]) -> Result<Verified> {
    let stored = daemon.all_lines(job_id).await?;
    let want = checksum(expected.iter().map(|s| s.as_bytes()));
    ensure!(
        stored.len() == expected.len(),
        "job {job_id}: {} lines stored, {} printed; {}",
        stored.len(),
        expected.len(),
        describe_doubles(&stored)
    );
    let mut texts = Vec::with_capacity(stored.len());
    let mut last_ts = i64::MIN;
    for (i, l) in stored.iter().enumerate() {
        let seq = l["seq"].as_u64().context("seq")?;
        ensure!(
            seq == i as u64 + 1,
            "job {job_id}: line {i} has seq {seq} (gap or duplicate)"
        );
        let text = l["text"].as_str().context("text")?;
        ensure!(
            text == expected[i],
            "job {job_id}: seq {seq} is {text:?}, expected {:?}",
            expected[i]
        );
        let ts = l["ts"].as_i64().context("ts")?;
        ensure!(ts >= last_ts, "job {job_id}: ts goes back at seq {seq}");
        last_ts = ts;
        texts.push(text);
    }
    let got = checksum(texts.iter().map(|s| s.as_bytes()));
    ensure!(got == want, "job {job_id}: checksum {got} != {want}");
    let raw = daemon.raw_logs(job_id).await?;
    let mut h = Sha256::new();
    h.update(&raw);
    let raw_sum: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    ensure!(
        raw_sum == want,
        "job {job_id}: raw download checksum {raw_sum} != {want} ({} bytes)",
        raw.len()
    );
    Ok(Verified {
        lines: stored.len() as u64,
        checksum: want,
    })
}

/// For a failure message: which texts were stored under more than one seq, and where.
fn describe_doubles(stored: &[Value]) -> String {
    let mut seqs: std::collections::HashMap<&str, Vec<u64>> = std::collections::HashMap::new();
    for l in stored {
        if let (Some(t), Some(s)) = (l["text"].as_str(), l["seq"].as_u64()) {
            seqs.entry(t).or_default().push(s);
        }
    }
    let mut doubled: Vec<(&str, Vec<u64>)> =
        seqs.into_iter().filter(|(_, s)| s.len() > 1).collect();
    doubled.sort_by_key(|(_, s)| s[0]);
    let runs: Vec<String> = doubled
        .iter()
        .take(12)
        .map(|(t, s)| format!("{t:?} at seqs {s:?}"))
        .collect();
    format!(
        "{} texts stored more than once, first: {runs:?}",
        doubled.len()
    )
}
