//! The web UI in a real headless Chromium (Debian's `chromium` + `chromium-driver`, over
//! WebDriver), against the real `logarithmd` binary; real containers through the real
//! `antilog` where a scenario is about a container. Every scenario saves screenshots (see
//! `logarithm_tests::browser::artifacts_dir`).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use logarithm_tests::browser::Browser;
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::{rand_u64, tail, token_toml, wait_until, Agent, Daemon, Db, TOKEN};
use serde_json::{json, Value};

const ADMIN: &str = "ui-admin-token-0123456789";
const READER: &str = "ui-read-token-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// logarithmd's configuration for these tests: the admin token, short live timings, and
/// `sections` (TOML tables such as `[engine]`).
fn config(sections: &str) -> String {
    format!(
        "{}[live]\nheartbeat = \"2s\"\n{sections}",
        token_toml("admin", ADMIN, &["admin"])
    )
}

/// A daemon on a fresh SQLite file (reads open, as in the README's local run).
async fn daemon(sections: &str) -> Result<(Daemon, Db)> {
    let db = Db::sqlite()?;
    let d = Daemon::start_with(db.url(), &config(sections)).await?;
    Ok((d, db))
}

fn container_id() -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        rand_u64(),
        rand_u64(),
        rand_u64(),
        rand_u64()
    )
}

/// Ingests records `lines` (seq, text) for `container`, with an exit when `exit` is set.
async fn ingest(
    d: &Daemon,
    container: &str,
    lines: &[(u64, String)],
    exit: Option<i64>,
) -> Result<()> {
    let records: Vec<Value> = lines
        .iter()
        .map(|(seq, text)| json!({"seq": seq, "ts": 1_764_000_000_000_000_000i64 + *seq as i64 * 1_000_000, "stream": if seq % 7 == 0 { "stderr" } else { "stdout" }, "text": text}))
        .collect();
    let mut seg = json!({
        "container_id": container,
        "meta": {"name": "ui-job", "image": "logarithm/busybox:test", "labels": {"team": "ui"},
                 "created_at": 1_764_000_000_000_000_000i64, "started_at": 1_764_000_000_000_000_000i64},
        "records": records,
    });
    if let Some(code) = exit {
        let last = lines.last().map_or(0, |l| l.0);
        seg["exit"] = json!({"exit_code": code, "finished_at": 1_764_000_100_000_000_000i64, "last_seq": last});
    }
    let batch = json!({"version": 1, "agent": {"id": "ui-test", "node": "n"}, "segments": [seg]});
    let body = zstd::encode_all(&serde_json::to_vec(&batch)?[..], 1)?;
    let r = d
        .http
        .post(format!("{}/api/v1/ingest", d.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(body)
        .send()
        .await?;
    ensure!(
        r.status() == 200,
        "ingest answered {}: {}",
        r.status(),
        r.text().await?
    );
    Ok(())
}

/// The id of the job of `container`, once logarithmd has it.
async fn job_id_of(d: &Daemon, container: &str) -> Result<String> {
    let job = wait_until(WAIT, "the job to exist", || async {
        d.job_of(container).await
    })
    .await?;
    Ok(job["id"].as_str().context("id")?.to_owned())
}

/// JS: the text of the rendered row with `seq`, or null.
fn row_text(seq: u64) -> String {
    format!("const r = document.querySelector('.row[data-seq=\"{seq}\"] .tx'); return r ? r.textContent : null;")
}

#[tokio::test]
async fn coloured_lines_of_a_real_container() -> Result<()> {
    let label = format!("ui-colours-{:x}", rand_u64());
    let (d, _db) = daemon("").await?;
    let _agent = Agent::start(&d.base, &label)?;
    let docker = docker::connect().await?;
    let script = r#"printf '\033[31mred\033[0m plain \033[1;4mboldunder\033[0m\n'; printf '\033[38;5;208morange256\033[0m \033[92mbright\033[0m\n'; printf '\033[38;2;10;200;30mtruecolor\033[0m \033[2Kcleared\033]0;title\007end\n'; echo '[COUT] CO_RESULT = true'"#;
    let cid = docker::run(&docker, &Spec::new(&label, script)).await?;
    let job = d.wait_finished(&cid, WAIT).await?;
    docker::remove(&docker, &cid).await;
    let id = job["id"].as_str().context("id")?;

    let b = Browser::start().await?;
    b.goto(&format!("{}/?job={id}", d.base)).await?;
    b.wait_js("row 4", WAIT, &row_text(4)).await?;
    let styles = b
        .exec(
            r#"
            const span = (seq, text) => [...document.querySelectorAll(`.row[data-seq="${seq}"] .tx span`)]
                .find((s) => s.textContent === text);
            const st = (seq, text) => { const s = span(seq, text); if (!s) return null;
                const c = getComputedStyle(s);
                return [c.color, c.fontWeight, c.textDecorationLine]; };
            return {
              rows: [1, 2, 3, 4].map((s) => document.querySelector(`.row[data-seq="${s}"] .tx`).textContent),
              red: st(1, "red"), bold: st(1, "boldunder"), orange: st(2, "orange256"),
              bright: st(2, "bright"), truecolor: st(3, "truecolor"),
              raw: document.querySelector(".rows").innerHTML.includes("\u001b"),
            };"#,
            vec![],
        )
        .await?;
    assert_eq!(
        styles["rows"],
        json!([
            "red plain boldunder",
            "orange256 bright",
            "truecolor clearedend",
            "[COUT] CO_RESULT = true"
        ]),
        "escapes are applied or stripped, never shown raw"
    );
    assert_eq!(styles["red"][0], "rgb(205, 49, 49)");
    assert_eq!(styles["bold"][1], "700");
    assert_eq!(styles["bold"][2], "underline");
    assert_eq!(styles["orange"][0], "rgb(255, 135, 0)", "256-colour 208");
    assert_eq!(
        styles["bright"][0], "rgb(35, 209, 139)",
        "bright green (92)"
    );
    assert_eq!(styles["truecolor"][0], "rgb(10, 200, 30)", "24-bit");
    assert_eq!(styles["raw"], false);
    assert_eq!(b.text("#verdict").await?, "success: CO_RESULT = true");
    b.screenshot("01-coloured-lines").await?;
    Ok(())
}

/// A finished job of `n` lines ingested through the API: line i is `line i: ok`, or
/// `ERROR code=i` when i is a multiple of 50.
async fn api_job(d: &Daemon, n: u64) -> Result<(String, String)> {
    let cid = container_id();
    let lines: Vec<(u64, String)> = (1..=n)
        .map(|i| {
            (
                i,
                if i % 50 == 0 {
                    format!("ERROR code={i}")
                } else {
                    format!("line {i}: ok")
                },
            )
        })
        .collect();
    ingest(d, &cid, &lines, Some(0)).await?;
    let id = job_id_of(d, &cid).await?;
    Ok((cid, id))
}

#[tokio::test]
async fn line_permalinks_survive_a_reload_and_back_works() -> Result<()> {
    let (d, _db) = daemon("").await?;
    let (_, id) = api_job(&d, 300).await?;
    let b = Browser::start().await?;
    // From the jobs list to the job, and Back.
    b.goto(&format!("{}/", d.base)).await?;
    b.wait_js(
        "jobs table",
        WAIT,
        "return document.querySelector('#jobs-table a[href*=\"job=\"]')",
    )
    .await?;
    b.click("#jobs-table a[href*=\"job=\"]").await?;
    b.wait_js("row 1", WAIT, &row_text(1)).await?;
    assert!(b.url().await?.ends_with(&format!("/?job={id}")));
    b.back().await?;
    b.wait_js(
        "jobs table again",
        WAIT,
        "return document.querySelector('#jobs-table')",
    )
    .await?;
    b.goto(&format!("{}/?job={id}", d.base)).await?;
    b.wait_js("row 1", WAIT, &row_text(1)).await?;

    b.exec("window.logView.scrollToRow(110, false)", vec![])
        .await?;
    b.wait_js("row 120", WAIT, &row_text(120)).await?;
    b.click(".row[data-seq=\"120\"] a.ln").await?;
    assert!(
        b.url().await?.ends_with(&format!("/?job={id}#L120")),
        "{}",
        b.url().await?
    );
    b.refresh().await?;
    let shown = b
        .wait_js(
            "row 120 highlighted and in view after the reload",
            WAIT,
            r#"const r = document.querySelector('.row.sel[data-seq="120"]');
               if (!r) return null;
               const v = document.querySelector('.logview').getBoundingClientRect();
               const b = r.getBoundingClientRect();
               return b.top >= v.top && b.bottom <= v.bottom ? document.querySelectorAll('.row.sel').length : null;"#,
        )
        .await?;
    assert_eq!(shown, json!(1));
    b.screenshot("02-permalink-line").await?;

    // A range: shift-click extends the selection; the reload keeps it.
    b.wait_js("row 125", WAIT, &row_text(125)).await?;
    b.exec(
        "document.querySelector('.row[data-seq=\"125\"] a.ln').dispatchEvent(new MouseEvent('click', {bubbles: true, shiftKey: true}))",
        vec![],
    )
    .await?;
    assert!(b.url().await?.ends_with("#L120-L125"), "{}", b.url().await?);
    b.refresh().await?;
    let sel = b
        .wait_js(
            "the range highlighted",
            WAIT,
            "const s = [...document.querySelectorAll('.row.sel')].map((r) => Number(r.dataset.seq)); return s.length ? s : null;",
        )
        .await?;
    assert_eq!(sel, json!([120, 121, 122, 123, 124, 125]));
    b.screenshot("02-permalink-range").await?;
    Ok(())
}

/// The current search match: its row's seq, the marked text, and the match counter.
async fn current_match(b: &Browser) -> Result<Value> {
    b.wait_js(
        "the current match in view",
        WAIT,
        "const r = document.querySelector('.row.current mark'); return r ? [Number(r.closest('.row').dataset.seq), r.textContent, document.querySelector('#match-count').textContent] : null;",
    )
    .await
}

#[tokio::test]
async fn regex_search_steps_through_matches() -> Result<()> {
    let (d, _db) = daemon("").await?;
    let (_, id) = api_job(&d, 300).await?;
    let b = Browser::start().await?;
    b.goto(&format!("{}/?job={id}", d.base)).await?;
    b.wait_js("row 1", WAIT, &row_text(1)).await?;
    b.click("#regex").await?;
    b.type_into("#search", "ERROR code=[12]\\d0\u{E007}")
        .await?;
    assert_eq!(
        current_match(&b).await?,
        json!([100, "ERROR code=100", "1 / 4"])
    );
    b.click("#next").await?;
    b.wait_js(
        "match 2",
        WAIT,
        "return document.querySelector('#match-count').textContent === '2 / 4' && document.querySelector('.row.current')?.dataset.seq === '150'",
    )
    .await?;
    assert_eq!(
        current_match(&b).await?,
        json!([150, "ERROR code=150", "2 / 4"])
    );
    b.screenshot("03-regex-search").await?;
    b.click("#prev").await?;
    b.click("#prev").await?;
    b.wait_js(
        "wrapped to the last",
        WAIT,
        "return document.querySelector('#match-count').textContent === '4 / 4' && document.querySelector('.row.current')?.dataset.seq === '250'",
    )
    .await?;
    assert_eq!(
        current_match(&b).await?,
        json!([250, "ERROR code=250", "4 / 4"])
    );
    // Rows that do not match have no marks.
    let marks = b
        .exec("return document.querySelectorAll('.row:not(.current) mark').length + '/' + document.querySelectorAll('.row[data-seq=\"249\"] mark').length", vec![])
        .await?;
    assert_eq!(marks, json!("0/0"));
    Ok(())
}

#[tokio::test]
async fn follow_a_running_container_until_its_verdict() -> Result<()> {
    let label = format!("ui-follow-{:x}", rand_u64());
    let (d, _db) = daemon("").await?;
    let _agent = Agent::start(&d.base, &label)?;
    let docker = docker::connect().await?;
    // The browser first, so the page opens while the container still runs.
    let b = Browser::start().await?;
    let script = "for i in $(seq 1 40); do echo \"tick $i\"; sleep 0.4; done; echo '[COUT] CO_RESULT = true'";
    let cid = docker::run(&docker, &Spec::new(&label, script)).await?;
    let id = job_id_of(&d, &cid).await?;
    b.goto(&format!("{}/?job={id}", d.base)).await?;
    b.wait_js(
        "the live state",
        WAIT,
        "return document.querySelector('#log-state').textContent === 'live'",
    )
    .await?;
    // From the moment a line is stored (seen through the API) to the moment the page
    // shows it.
    let mut delays = Vec::new();
    let mut seen_at_start = None;
    for _ in 0..5 {
        let j: Value = d.get_json(&format!("/api/v1/jobs/{id}")).await?.1;
        let have = j["last_seq"].as_u64().unwrap_or(0);
        seen_at_start.get_or_insert(have);
        let next = have + 1;
        wait_until(WAIT, "the next line to be stored", || async {
            let j = d.get_json(&format!("/api/v1/jobs/{id}")).await?.1;
            Ok((j["last_seq"].as_u64().unwrap_or(0) >= next).then_some(()))
        })
        .await?;
        let stored = Instant::now();
        b.wait_js("the new line on the page", WAIT, &row_text(next))
            .await?;
        delays.push(stored.elapsed());
    }
    assert!(
        delays.iter().all(|d| *d <= Duration::from_secs(1)),
        "new lines appear within 1 s of their commit: {delays:?}"
    );
    b.screenshot("04-follow-running").await?;
    let verdict = b
        .wait_js(
            "the verdict",
            Duration::from_secs(60),
            "const v = document.querySelector('#verdict').textContent; return v.startsWith('success') ? v : null;",
        )
        .await?;
    assert_eq!(verdict, json!("success: CO_RESULT = true"));
    assert_eq!(b.text("#log-state").await?, "finished");
    let texts = b
        .exec(
            "const s = window.logView.source; const out = []; for (let i = 0; i < s.count(); i++) { const l = s.at(i); out.push(l ? l.text : null); } return out;",
            vec![],
        )
        .await?;
    let mut want: Vec<Value> = (1..=40).map(|i| json!(format!("tick {i}"))).collect();
    want.push(json!("[COUT] CO_RESULT = true"));
    assert_eq!(texts, Value::Array(want), "every line once, in order");
    b.screenshot("04-follow-verdict").await?;
    docker::remove(&docker, &cid).await;
    Ok(())
}

#[tokio::test]
async fn a_follow_resumes_across_a_logarithmd_restart() -> Result<()> {
    let (mut d, _db) = daemon("").await?;
    let cid = container_id();
    let lines = |r: std::ops::RangeInclusive<u64>| -> Vec<(u64, String)> {
        r.map(|i| (i, format!("line {i}"))).collect()
    };
    ingest(&d, &cid, &lines(1..=10), None).await?;
    let id = job_id_of(&d, &cid).await?;
    let b = Browser::start().await?;
    b.goto(&format!("{}/?job={id}", d.base)).await?;
    b.wait_js(
        "live",
        WAIT,
        "return document.querySelector('#log-state').textContent === 'live'",
    )
    .await?;
    for chunk in [11..=15, 16..=30] {
        ingest(&d, &cid, &lines(chunk), None).await?;
    }
    b.wait_js("line 30", WAIT, &row_text(30)).await?;
    d.start_again().await?;
    // Lines committed while the page reconnects, then the rest and the exit.
    ingest(&d, &cid, &lines(31..=45), None).await?;
    b.wait_js(
        "reconnected",
        WAIT,
        "return document.querySelector('#log-state').textContent === 'live'",
    )
    .await?;
    ingest(&d, &cid, &lines(40..=60), Some(0)).await?;
    b.wait_js(
        "the verdict",
        WAIT,
        "return document.querySelector('#verdict').textContent.startsWith('success')",
    )
    .await
    .with_context(|| tail(&d.proc.log(), 30))?;
    let got = b
        .exec(
            r#"const s = window.logView.source; const rows = [];
               for (let i = 0; i < s.count(); i++) { const l = s.at(i); rows.push(l ? l.text : null); }
               return {live: window.logView.liveSeqs, rows};"#,
            vec![],
        )
        .await?;
    let live: Vec<u64> = (11..=60).collect();
    assert_eq!(got["live"], json!(live), "no missing and no doubled line");
    let rows: Vec<String> = (1..=60).map(|i| format!("line {i}")).collect();
    assert_eq!(got["rows"], json!(rows));
    b.screenshot("05-follow-across-restart").await?;
    Ok(())
}

#[tokio::test]
async fn a_million_line_job_opens_fast_and_jumps_to_the_end() -> Result<()> {
    const N: u64 = 1_000_000;
    const BATCH: u64 = 100_000;
    let (d, _db) = daemon("").await?;
    let cid = container_id();
    let started = Instant::now();
    // Batches of 100,000 lines, zstd-compressed, two in flight (decoding one overlaps
    // writing the other); the exit goes last, on its own.
    let batches = futures::stream::iter((1..=N).step_by(BATCH as usize).map(|from| {
        let (d, cid) = (&d, &cid);
        async move {
            let lines: Vec<(u64, String)> = (from..from + BATCH)
                .map(|i| {
                    (
                        i,
                        format!("\u{1b}[36m{i:>7}\u{1b}[0m a line of a long build log, number {i}"),
                    )
                })
                .collect();
            ingest(d, cid, &lines, None).await
        }
    }))
    .buffer_unordered(2)
    .collect::<Vec<_>>()
    .await;
    for b in batches {
        b?;
    }
    ingest(
        &d,
        &cid,
        &[(N + 1, "[COUT] CO_RESULT = true".into())],
        Some(0),
    )
    .await?;
    eprintln!("ingested {} lines in {:?}", N + 1, started.elapsed());
    let id = job_id_of(&d, &cid).await?;
    let b = Browser::start().await?;
    b.goto(&format!("{}/?job={id}", d.base)).await?;
    let first = b
        .wait_js("the first lines", WAIT, "return window.firstRowsAt !== undefined && document.querySelector('.row[data-seq=\"1\"]') ? window.firstRowsAt : null")
        .await?;
    let ms = first.as_f64().context("ms")?;
    eprintln!("first lines shown {ms:.0} ms after navigation");
    assert!(ms <= 2000.0, "first lines in ≤ 2 s: {ms} ms");
    b.screenshot("06-million-first-lines").await?;
    b.click("#to-end").await?;
    b.wait_js("the last line", WAIT, &row_text(N + 1)).await?;
    assert_eq!(
        b.wait_js("the line before the last", WAIT, &row_text(N))
            .await?,
        json!(format!("{N:>7} a line of a long build log, number {N}"))
    );
    let rows = b
        .exec("return document.querySelectorAll('.row').length", vec![])
        .await?;
    assert!(
        rows.as_u64().context("rows")? < 200,
        "the DOM holds a screenful, not the log: {rows}"
    );
    b.screenshot("06-million-end").await?;
    // Anywhere in between.
    b.exec("window.logView.scrollToRow(499999)", vec![]).await?;
    b.wait_js("line 500000", WAIT, &row_text(500_000)).await?;
    Ok(())
}

/// One job behind a pause, run by the real engine on Docker, collected by a real agent.
fn paused_flow(name: &str) -> String {
    format!(
        r#"uri: logarithm/ui/{name}
stages:
  - type: start
    name: start
  - type: pause
    name: approval
  - type: normal
    name: build
    actions:
      - name: compile
        jobs:
          - type: component
            name: job
            endpoint: {}
            command: ["sh", "-c", "echo building; sleep 1; echo '[COUT] CO_RESULT = true'"]
  - type: end
    name: end
"#,
        logarithm_tests::TEST_IMAGE
    )
}

#[tokio::test]
async fn approve_a_paused_run_and_watch_it_finish() -> Result<()> {
    let tag = format!("{:x}", rand_u64() & 0xffff_ffff);
    let label = format!("ui-run-{tag}");
    let (d, _db) = daemon(&format!(
        "[engine]\nstop_grace = \"1s\"\nreconcile_every = \"1s\"\nextra_labels = {{ \"logarithm.test\" = \"{label}\" }}\n"
    ))
    .await?;
    let _agent = Agent::start(&d.base, &label)?;
    let r = d
        .http
        .post(format!("{}/api/v1/flows", d.base))
        .bearer_auth(ADMIN)
        .body(paused_flow(&format!("approve-{tag}")))
        .send()
        .await?;
    ensure!(r.status().is_success(), "register: {}", r.text().await?);
    let flow = r.json::<Value>().await?["name"]
        .as_str()
        .context("name")?
        .to_owned();
    let r = d
        .http
        .post(format!("{}/api/v1/flows/{flow}/runs", d.base))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    ensure!(r.status() == 201, "start: {}", r.text().await?);
    let run = r.json::<Value>().await?["id"]
        .as_str()
        .context("id")?
        .to_owned();

    let b = Browser::start().await?;
    b.goto(&format!("{}/?run={run}", d.base)).await?;
    b.wait_js(
        "the approve button",
        WAIT,
        "return document.querySelector('#approve')",
    )
    .await?;
    b.screenshot("07-run-paused").await?;
    b.click("#approve").await?;
    let prompt = wait_until(WAIT, "the admin token prompt", || async {
        b.alert_text().await
    })
    .await?;
    assert!(prompt.contains("admin token"), "{prompt}");
    b.answer_prompt(ADMIN).await?;
    let status = b
        .wait_js(
            "the run to finish on the page",
            Duration::from_secs(90),
            "const s = document.querySelector('h1 .badge').textContent; return ['success', 'failure', 'timeout', 'cancelled'].includes(s) ? s : null;",
        )
        .await
        .with_context(|| tail(&d.proc.log(), 40))?;
    assert_eq!(status, json!("success"));
    let tree = b
        .exec(
            "return [...document.querySelectorAll('.stage')].map((s) => s.dataset.stage + ':' + s.querySelector('.badge').textContent)",
            vec![],
        )
        .await?;
    assert_eq!(
        tree,
        json!([
            "start:success",
            "approval:success",
            "build:success",
            "end:success"
        ])
    );
    // The job links to its log page.
    let link = b
        .exec(
            "return document.querySelector('ul.jobs a').getAttribute('href')",
            vec![],
        )
        .await?;
    assert!(link.as_str().unwrap_or("").starts_with("/?job="), "{link}");
    b.screenshot("07-run-finished").await?;
    // The token was asked for once: cancelling now needs no prompt (the run is over, so
    // no buttons remain at all).
    assert_eq!(
        b.exec(
            "return document.querySelectorAll('#approve, #reject, #cancel').length",
            vec![]
        )
        .await?,
        json!(0)
    );
    Ok(())
}

/// Reads need a token: the page asks for it once, keeps it for the session (other pages
/// and the live follow use it without asking again), and a wrong one is asked for again.
#[tokio::test]
async fn the_page_asks_for_a_read_token_once() -> Result<()> {
    let db = Db::sqlite()?;
    let toml = format!(
        "{}{}",
        token_toml("admin", ADMIN, &["admin"]),
        token_toml("reader", READER, &["read"])
    );
    let d = Daemon::start_private(db.url(), &toml).await?;
    let cid = container_id();
    let lines = |r: std::ops::RangeInclusive<u64>| -> Vec<(u64, String)> {
        r.map(|i| (i, format!("secret line {i}"))).collect()
    };
    ingest(&d, &cid, &lines(1..=5), None).await?;
    let (status, _) = d.get_json("/api/v1/jobs").await?;
    assert_eq!(status, 401, "reads need a token here");
    let id = storage_job_id(&cid);
    let b = Browser::start().await?;
    b.goto(&format!("{}/?job={id}", d.base)).await?;
    let prompt = wait_until(WAIT, "the read token prompt", || async {
        b.alert_text().await
    })
    .await?;
    assert!(prompt.contains("Reading needs a token"), "{prompt}");
    b.answer_prompt("not-the-token").await?;
    // A wrong token answers 401 again: asked once more.
    wait_until(WAIT, "the prompt again", || async { b.alert_text().await }).await?;
    b.answer_prompt(READER).await?;
    b.wait_js("row 5", WAIT, &row_text(5)).await?;
    b.wait_js(
        "live",
        WAIT,
        "return document.querySelector('#log-state').textContent === 'live'",
    )
    .await?;
    ingest(&d, &cid, &lines(6..=8), Some(0)).await?;
    b.wait_js("the live lines and the verdict", WAIT, "return document.querySelector('#verdict').textContent.startsWith('success') && document.querySelector('.row[data-seq=\"8\"]')").await?;
    b.screenshot("08-read-token").await?;
    b.click("nav a[data-view=jobs]").await?;
    b.wait_js(
        "the jobs list",
        WAIT,
        "return document.querySelector('#jobs-table')",
    )
    .await?;
    assert_eq!(b.alert_text().await?, None, "asked once per session");
    let stored = b
        .exec(
            "return sessionStorage.getItem('logarithm.read_token') + '|' + localStorage.length",
            vec![],
        )
        .await?;
    assert_eq!(
        stored,
        json!(format!("{READER}|0")),
        "kept in sessionStorage only"
    );
    Ok(())
}

/// logarithmd's job id of a container: SHA-256 of the id, first 8 bytes, made positive.
fn storage_job_id(container: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(container.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    let id = (u64::from_be_bytes(b) & (i64::MAX as u64)).max(1);
    id.to_string()
}
