//! Issue #14 end to end (real containers, a real logarithmd): pre and post Lua scripts,
//! script budgets, `active: false`, labels, and script syntax errors at registration.

use super::*;

fn scripted_flow(tag: &str) -> String {
    format!(
        r#"uri: logarithm/e2e/scripted-{tag}
labels: {{team: core}}
stages:
  - type: start
    name: start
  - type: normal
    name: build
    actions:
      - name: produce
        jobs:
          - type: component
            name: version
            endpoint: {IMAGE}
            timeout: 60
            command: ["sh", "-c", "echo '[COUT] VERSION = 1.2.3'"]
            outputs: [VERSION]
  - type: normal
    name: lint
    active: false
    actions:
      - name: never
        jobs:
          - type: component
            name: never
            endpoint: {IMAGE}
            command: ["sh", "-c", "echo must not run; exit 1"]
  - type: normal
    name: check
    labels: {{tier: check}}
    actions:
      - name: tag
        jobs:
          - type: component
            name: tagged
            endpoint: {IMAGE}
            timeout: 60
            labels: {{owner: jobmodel}}
            subscriptions:
              - "build.produce.version[VERSION]": V
            pre: |
              env.TAG = "v" .. inputs.V .. "-" .. job.stage
            command: ["sh", "-c", "echo tag=$TAG; [ \"$TAG\" = v1.2.3-check ] && echo '[COUT] CO_RESULT = true'"]
          - type: component
            name: skipped
            endpoint: {IMAGE}
            active: false
            command: ["sh", "-c", "exit 1"]
      - name: verify
        jobs:
          - type: component
            name: status
            endpoint: {IMAGE}
            timeout: 60
            command: ["sh", "-c", "echo checking; echo '[COUT] STATUS = broken'; echo last words"]
            outputs: [STATUS]
            post: |
              if outputs.STATUS ~= "ok" then
                fail("STATUS is " .. outputs.STATUS .. " (log ends with: " .. log[#log] .. ")")
              end
  - type: end
    name: end
"#
    )
}

fn runaway_flow(tag: &str) -> String {
    format!(
        r#"uri: logarithm/e2e/runaway-{tag}
stages:
  - type: start
    name: start
  - type: normal
    name: scripts
    sequencing: parallel
    actions:
      - name: loop
        jobs:
          - type: component
            name: loop
            endpoint: {IMAGE}
            command: ["sh", "-c", "echo must not start"]
            pre: "while true do end"
      - name: alloc
        jobs:
          - type: component
            name: alloc
            endpoint: {IMAGE}
            timeout: 60
            command: ["sh", "-c", "echo ran"]
            post: |
              local t = {{}}
              while true do t[#t + 1] = string.rep("x", 4096) .. #t end
  - type: end
    name: end
"#
    )
}

/// A pre script derives an environment value from a subscribed output (the job checks
/// it); a post script turns an exit-0 job with a bad output into a failure with its
/// reason (the overridden verdict is recorded); an inactive stage and job are `skipped`;
/// labels reach the container (as logarithmd stored them) and the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_and_post_scripts_labels_and_skipped_stages() -> Result<()> {
    let s = Setup::start().await?;
    let d = &s.daemon;
    let flow = register(d, &scripted_flow(&s.tag)).await?;
    let id = start_run(d, &flow, None).await?;
    let run = wait_final(&s, &id, "scripted run ends", Duration::from_secs(90)).await?;

    assert_eq!(run["status"], "failure", "{run}");
    assert_eq!(run["cause"], json!({"kind": "manual"}));
    assert_eq!(run["labels"], json!({"team": "core"}));
    assert_eq!(stage(&run, "build")["status"], "success");
    let lint = stage(&run, "lint");
    assert_eq!(lint["status"], "skipped", "{lint}");
    assert_eq!(lint["reason"], "inactive (active: false)");
    let never = job(&run, "lint", "never", "never");
    assert_eq!(never["status"], "skipped");
    assert_eq!(never["container_id"], Value::Null);

    let tagged = job(&run, "check", "tag", "tagged");
    assert_eq!(tagged["status"], "success", "{tagged}");
    assert_eq!(tagged["labels"], json!({"owner": "jobmodel"}));
    assert_eq!(stage(&run, "check")["labels"], json!({"tier": "check"}));
    let lines = log_of(d, tagged).await?;
    assert_eq!(
        lines,
        strings(&["tag=v1.2.3-check", "[COUT] CO_RESULT = true"])
    );
    // The container carried the merged labels (logarithmd stores a job's labels).
    let job_id = tagged["job_id"].as_str().context("job_id")?;
    let (st, stored) = d.get_json(&format!("/api/v1/jobs/{job_id}")).await?;
    assert_eq!(st, 200, "{stored}");
    assert_eq!(stored["labels"]["team"], "core", "{stored}");
    assert_eq!(stored["labels"]["tier"], "check");
    assert_eq!(stored["labels"]["owner"], "jobmodel");
    assert_eq!(job(&run, "check", "tag", "skipped")["status"], "skipped");

    let status = job(&run, "check", "verify", "status");
    assert_eq!(status["status"], "failure", "{status}");
    assert_eq!(status["exit_code"], 0);
    assert_eq!(
        status["reason"],
        "post script: STATUS is broken (log ends with: last words)"
    );
    assert_eq!(status["overridden"], "success: exit code 0");
    assert_eq!(status["outputs"], json!({"STATUS": "broken"}));
    assert_eq!(
        run["reason"],
        "stage check: action verify: job status: post script: STATUS is broken (log ends with: last words)"
    );
    Ok(())
}

/// A pre script that loops forever and a post script that allocates without bound each
/// fail their job within the budget, with a reason naming it (budgets set in `[engine]`); logarithmd stays healthy
/// and runs the next flow. A Lua syntax error is refused at registration, naming the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_scripts_fail_their_jobs_and_syntax_errors_are_refused() -> Result<()> {
    // Budgets below the defaults, so the instruction budget (not the time budget) stops
    // the loop even in a slow debug build, and the memory limit stops the allocation.
    let s = Setup::start_with(
        "script_instructions = 2000000\nscript_time = \"30s\"\nscript_memory = \"8Mi\"\n",
    )
    .await?;
    let d = &s.daemon;
    let flow = register(d, &runaway_flow(&s.tag)).await?;
    let id = start_run(d, &flow, None).await?;
    let run = wait_final(&s, &id, "runaway run ends", Duration::from_secs(90)).await?;
    assert_eq!(run["status"], "failure", "{run}");
    let looped = job(&run, "scripts", "loop", "loop");
    assert_eq!(looped["status"], "failure", "{looped}");
    assert_eq!(
        looped["reason"],
        "pre script exceeded its budget of 2000000 instructions"
    );
    assert_eq!(looped["container_id"], Value::Null, "no container started");
    let alloc = job(&run, "scripts", "alloc", "alloc");
    // The parallel loop job may end the stage first; then alloc is cancelled.
    match alloc["status"].as_str() {
        Some("failure") => {
            assert_eq!(
                alloc["reason"],
                format!("post script exceeded its memory limit of {} bytes", 8 << 20)
            );
            assert_eq!(alloc["overridden"], "success: exit code 0");
        }
        Some("cancelled") => {}
        other => bail!("alloc ended {other:?}: {alloc}"),
    }
    let (st, _) = d.get_json("/healthz").await?;
    assert_eq!(st, 200);

    // The post script alone, so it certainly runs.
    let alone = runaway_flow(&s.tag)
        .replace("runaway-", "alloc-")
        .replace("            pre: \"while true do end\"\n", "");
    let flow = register(d, &alone).await?;
    let id = start_run(d, &flow, None).await?;
    let run = wait_final(&s, &id, "alloc run ends", Duration::from_secs(90)).await?;
    let alloc = job(&run, "scripts", "alloc", "alloc");
    assert_eq!(alloc["status"], "failure", "{alloc}");
    assert_eq!(
        alloc["reason"],
        format!("post script exceeded its memory limit of {} bytes", 8 << 20)
    );
    // The parallel job (no script now) either finished before alloc's post script failed
    // the stage, or was cancelled by that failure: both are the run rules' outcome.
    let other = job(&run, "scripts", "loop", "loop");
    assert!(
        matches!(other["status"].as_str(), Some("success" | "cancelled")),
        "{other}"
    );

    let bad = one_job_flow(&format!("lua-{}", s.tag), "true", None, false).replace(
        "            command:",
        "            pre: |\n              env.A = 1\n              if env.A then\n            command:",
    );
    let msg = refused(d, &bad).await?;
    // `pre: |` is line 13; the script's third line (end of text) is line 16.
    assert!(
        msg.starts_with(
            "invalid flow: line 16: stages[1].actions[0].jobs[0].pre: Lua syntax error:"
        ),
        "{msg}"
    );
    assert!(msg.contains("'end' expected"), "{msg}");

    let unknown = one_job_flow(&format!("trig-{}", s.tag), "true", None, false).replace(
        "stages:\n",
        "triggers:\n  - type: cron\n    schedule: \"* * * * *\"\n  - type: carrier-pigeon\nstages:\n",
    );
    let msg = refused(d, &unknown).await?;
    assert!(msg.starts_with("invalid flow: line 5: triggers[1].type: unknown variant `carrier-pigeon`, expected `cron` or `webhook`"), "{msg}");
    Ok(())
}
