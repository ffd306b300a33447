//! Issue #9, the Docker API source (`source = "docker-api"`) under the faults the file
//! sources are tested with (tests/tests/files.rs): real Docker rotating json-file logs
//! (`max-size`, `max-file`), antilog SIGKILLed while it reads, tight retention while it is
//! down, and `--rm` containers. The real binaries and SQLite. Every test checks exact lines
//! and order against what the container printed and what Docker still keeps, and that
//! every missing line is reported on its job (`logs_unavailable`), never silently.
//!
//! Each test prints one `api_source:` summary line with its figures; run with
//! `--nocapture`.

use anyhow::{ensure, Result};
use logarithm_tests::rotation::{
    rm_containers, rotated_away_while_down, sigkills_during_rotation, KILLED_LINES,
};

/// 200,000 lines rotating about 18 times under `max-size=1m` with room for every file
/// (`max-file=40`), antilog SIGKILLed 5 times meanwhile, at the pace `files.rs` uses:
/// every line stored exactly once, in order, and nothing reported lost. Docker's follow
/// stream skips whole files when it lags more than a file behind, so the follower catches
/// up without following after each restart and whenever it falls behind.
#[tokio::test(flavor = "multi_thread")]
async fn sigkills_during_rotation_lose_and_double_nothing() -> Result<()> {
    let k = sigkills_during_rotation("docker-api", "0.1").await?;
    eprintln!(
        "api_source: docker-api SIGKILLed x5 during {KILLED_LINES} lines, {} rotations: \
         stored={} lost=0 duplicates=0 stored_at_kills={:?} total={:.1}s",
        k.rotations, k.stored, k.at_kill, k.seconds
    );
    Ok(())
}

/// Tight retention (`max-size=1m,max-file=2`) while antilog is down: the files rotated
/// away meanwhile are gone. Every line read before the kill and every line Docker still
/// keeps is stored once, in order; the job says lines were lost (Docker's log no longer
/// holds the last delivered line); and the lines read after the gap are numbered past
/// every seq that can have been handed out before it.
#[tokio::test(flavor = "multi_thread")]
async fn lines_rotated_away_while_down_are_reported_on_the_job() -> Result<()> {
    let l = rotated_away_while_down("docker-api").await?;
    eprintln!(
        "api_source: tight retention, agent down 5 s: stored={} docker_kept={} missing={} \
         seq_at_gap={:?} reported={:?}",
        l.stored, l.kept, l.missing, l.seq_at_gap, l.reason
    );
    Ok(())
}

/// `--rm` containers on the API source: Docker removes each as soon as it exits, often
/// before its log could be read after its end (or at all). Whatever survives is stored
/// exactly (only printed lines, in order, none twice: never Docker's own error text), and
/// every job that is short says so in `logs_unavailable`.
#[tokio::test(flavor = "multi_thread")]
async fn rm_containers_are_complete_or_reported() -> Result<()> {
    let r = rm_containers("docker-api").await?;
    let complete = r.iter().filter(|c| c.complete()).count();
    let reported = r
        .iter()
        .filter(|c| !c.complete() && c.reported.is_some())
        .count();
    let no_job = r.iter().filter(|c| !c.has_job).count();
    let complete_reported = r
        .iter()
        .filter(|c| c.complete() && c.reported.is_some())
        .count();
    eprintln!(
        "api_source: --rm on docker-api: {complete} of {} jobs complete \
         ({complete_reported} of them with a precautionary report), {reported} short and \
         reported, {no_job} without a job",
        r.len()
    );
    let silent: Vec<_> = r
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.complete() && c.reported.is_none())
        .collect();
    ensure!(silent.is_empty(), "short without a report: {silent:?}");
    Ok(())
}
