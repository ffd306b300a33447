//! Issue 15: flows run as Kubernetes Pods by the real logarithmd (`[engine] runner =
//! "kubernetes"`), end to end.
//!
//! **The Kubernetes API server is a mock.** No API server can run here (no cluster, no kind,
//! no envtest binaries, no images to pull), so [`mock`] is a small in-process API server
//! with a kubelet: it serves the pod endpoints the runner calls, keeps the Pods in memory,
//! moves each through `Pending` → `Running` → `Succeeded`/`Failed` with a terminated
//! container state, runs the Pod's command as a host process (real output, real exit
//! code), and records every request, deletes included. Its objects are k8s-openapi's
//! `Pod`, `PodList` and `Status` serialized as the API server does, so that the runner's
//! `kube` client parses exactly what a real API server would send it: a shape the mock
//! made up would prove nothing about the real one.
//!
//! Everything else is real: the logarithmd binary with its engine and the Kubernetes runner,
//! connecting through a kubeconfig (`KUBECONFIG`) that points at the mock, and SQLite storage.
//! [`feeder`] stands in for antilog's node collection: it reads the Pods and their logs from
//! the API and POSTs them to logarithmd's ingest endpoint in the batch protocol, with the
//! exit code from `status.containerStatuses[0].state.terminated.exitCode`; logarithmd then
//! decides each verdict from that exit code and the `[COUT]` lines, and the engine advances
//! the run from it.
//!
//! What this cannot prove: that a real API server admits these Pods, that a real kubelet runs
//! them from their image, and that antilog collects their logs from the node's files.

#[path = "kubernetes/feeder.rs"]
mod feeder;
#[path = "kubernetes/mock.rs"]
mod mock;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::http::Method;
use logarithm_tests::docker::parse_ts;
use logarithm_tests::{tail, wait_until, Daemon, Db};
use serde_json::{json, Value};

/// The value of `[engine.secrets] registry`, which the `push` job gets.
const REGISTRY_SECRET: &str = "k8s-registry-Hy5u-secret";
const NS: &str = "logarithm-jobs";
const ADMIN: &str = "kubernetes-admin-token";
/// The image is never pulled (the mock's kubelet runs the command on the host).
const IMAGE: &str = "registry.example/ci/busybox:1.36";

/// The token in logarithmd's kubeconfig: it tells logarithmd's requests from the feeder's.
const LOGARITHMD_TOKEN: &str = "logarithmd-token";

/// A kubeconfig for the mock, as `kubectl config view` writes one.
fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {url}\n\
         contexts:\n- name: mock\n  context:\n    cluster: mock\n    user: mock\n    namespace: default\n\
         current-context: mock\nusers:\n- name: mock\n  user:\n    token: {LOGARITHMD_TOKEN}\n"
    )
}

struct Setup {
    daemon: Daemon,
    api: mock::MockApi,
    feeder: tokio::task::JoinHandle<()>,
    _db: Db,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.feeder.abort();
    }
}

impl Setup {
    async fn start() -> Result<Setup> {
        let api = mock::MockApi::start(NS).await?;
        let dir = tempfile::tempdir()?;
        let kubeconfig_path = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig_path, kubeconfig(&api.url))?;
        let db = Db::sqlite()?;
        let config = format!(
            "{}[engine]\nrunner = \"kubernetes\"\nstop_grace = \"1s\"\nreconcile_every = \"1s\"\n\
             [engine.kubernetes]\nnamespace = \"{NS}\"\nservice_account = \"ci-jobs\"\n\
             [engine.secrets]\nregistry = {{ value = \"{REGISTRY_SECRET}\" }}\n",
            logarithm_tests::token_toml("admin", ADMIN, &["admin"])
        );
        let path = kubeconfig_path.display().to_string();
        let daemon =
            Daemon::start_with_env(db.url(), &config, &[("KUBECONFIG", path.as_str())]).await?;
        let client = kube::Client::try_from(kube::Config::new(api.url.parse()?))?;
        let feeder = feeder::Feeder::new(kube::Api::namespaced(client, NS), &daemon.base);
        let feeder = tokio::spawn(feeder.run());
        Ok(Setup {
            daemon,
            api,
            feeder,
            _db: db,
            _dir: dir,
        })
    }

    async fn post(&self, path: &str, body: Option<&str>) -> Result<(u16, Value)> {
        let d = &self.daemon;
        let mut req = d.http.post(format!("{}{path}", d.base)).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/yaml")
                .body(b.to_owned());
        }
        let r = req.send().await?;
        logarithm_tests::status_and_json(r).await
    }

    /// Registers the flow and starts a run of it; returns the run id.
    async fn run(&self, yaml: &str) -> Result<String> {
        let (st, v) = self.post("/api/v1/flows", Some(yaml)).await?;
        ensure!(st == 201, "registering answered {st}: {v}");
        let flow = v["name"].as_str().context("flow name")?.to_owned();
        let (st, v) = self
            .post(&format!("/api/v1/flows/{flow}/runs"), None)
            .await?;
        ensure!(st == 201, "starting a run answered {st}: {v}");
        Ok(v["id"].as_str().context("run id")?.to_owned())
    }

    async fn wait_run(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let d = &self.daemon;
        let r = wait_until(Duration::from_secs(60), what, || async {
            let (status, v) = d.get_json(&format!("/api/v1/runs/{id}")).await?;
            Ok((status == 200 && pred(&v)).then_some(v))
        })
        .await;
        r.with_context(|| format!("logarithmd (tail):\n{}", tail(&d.proc.log(), 60)))
    }

    /// The stored lines of a job of a run.
    async fn log_of(&self, job: &Value) -> Result<Vec<String>> {
        let id = job["job_id"].as_str().context("job_id")?;
        let lines = self.daemon.all_lines(id).await?;
        Ok(lines
            .iter()
            .map(|l| l["text"].as_str().unwrap_or("<binary>").to_owned())
            .collect())
    }

    /// RBAC: every API call logarithmd made is granted by the Role that
    /// deploy/kubernetes/base/rbac.yaml binds to its service account in the job namespace
    /// (engine/tests/kubernetes_runner.rs checks the runner's declared list, `API_CALLS`;
    /// this checks what the running daemon really sent). Returns the verbs it used.
    fn assert_rbac_covers_logarithmd(&self) -> Result<Vec<&'static str>> {
        let collection = format!("/api/v1/namespaces/{NS}/pods");
        let mut used = Vec::new();
        for r in self.api.requests() {
            if r.token.as_deref() != Some(LOGARITHMD_TOKEN) {
                continue;
            }
            let watch = r.query.as_deref().is_some_and(|q| q.contains("watch=true"));
            let item = r.path.starts_with(&format!("{collection}/")) && !r.path.ends_with("/log");
            let verb = match (r.method.as_str(), r.path == collection, item) {
                ("POST", true, _) => "create",
                ("GET", true, _) if watch => "watch",
                ("GET", true, _) => "list",
                ("GET", _, true) => "get",
                ("DELETE", _, true) => "delete",
                _ => anyhow::bail!("logarithmd sent {} {}", r.method, r.path),
            };
            if !used.contains(&verb) {
                used.push(verb);
            }
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/kubernetes/base/rbac.yaml"
        );
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let role = yaml_serde::Deserializer::from_str(&text)
            .filter_map(|d| serde::Deserialize::deserialize(d).ok())
            .find(|d: &Value| d["kind"] == "Role" && d["metadata"]["name"] == "logarithm-engine")
            .context("no Role logarithm-engine in rbac.yaml")?;
        ensure!(
            role["metadata"]["namespace"] == NS,
            "the Role is not in {NS}: {role}"
        );
        let rules = role["rules"].as_array().cloned().unwrap_or_default();
        let has = |v: &Value, s: &str| v.as_array().is_some_and(|a| a.iter().any(|x| x == s));
        for verb in &used {
            let granted = rules.iter().any(|r| {
                has(&r["apiGroups"], "") && has(&r["resources"], "pods") && has(&r["verbs"], verb)
            });
            ensure!(
                granted,
                "the Role does not grant {verb} on pods, which logarithmd used"
            );
        }
        used.sort_unstable();
        Ok(used)
    }

    /// The DELETE requests for a Pod, as `DeleteOptions` bodies.
    fn deletes_of(&self, pod: &str) -> Vec<Value> {
        let path = format!("/api/v1/namespaces/{NS}/pods/{pod}");
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.method == Method::DELETE && r.path == path)
            .map(|r| r.body.unwrap_or(Value::Null))
            .collect()
    }
}

fn is_final(v: &Value) -> bool {
    !matches!(v["status"].as_str(), Some("pending" | "running") | None)
}

fn job<'a>(run: &'a Value, stage: &str, action: &str, name: &str) -> &'a Value {
    run["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == stage))
        .and_then(|s| s["actions"].as_array())
        .and_then(|a| a.iter().find(|a| a["name"] == action))
        .and_then(|a| a["jobs"].as_array())
        .and_then(|j| j.iter().find(|j| j["name"] == name))
        .unwrap_or(&Value::Null)
}

fn one_job(name: &str, script: &str, timeout: Option<u32>) -> String {
    let timeout = logarithm_tests::flows::timeout_key(timeout);
    let head = format!("uri: logarithm/k8s/{name}");
    logarithm_tests::flows::one_job_flow(&head, "", IMAGE, &timeout, script)
}

/// A parallel stage of two jobs whose output a later job receives, then a job that fails
/// by its exit code: every Pod is created once, with the job's labels and env, and deleted
/// once its verdict is in; the verdicts come from the exit codes and `[COUT]` lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_runs_as_pods_with_a_parallel_stage() -> Result<()> {
    let s = Setup::start().await?;
    let build_and_package =
        logarithm_tests::flows::build_and_package(IMAGE, "echo linting; sleep 1; echo lint ok");
    let flow = format!(
        r#"uri: logarithm/k8s/main
environments:
  - CO_DATA: "from the flow"
stages:
  - type: start
    name: start
{build_and_package}
  - type: normal
    name: publish
    actions:
      - name: push
        jobs:
          - type: component
            name: push
            endpoint: {IMAGE}
            secrets:
              - {{env: REGISTRY_TOKEN, from_secret: registry}}
            command: ["sh", "-c", "echo \"registry refused $REGISTRY_TOKEN\"; exit 3"]
  - type: end
    name: end
"#
    );
    let id = s.run(&flow).await?;
    let run = s.wait_run(&id, "the run to end", is_final).await?;
    assert_eq!(run["status"], "failure", "{run}");
    assert_eq!(
        run["reason"], "stage publish: action push: job push: exit code 3",
        "{run}"
    );
    let version = job(&run, "build", "compile", "version");
    let lint = job(&run, "build", "lint", "lint");
    let tag = job(&run, "package", "image", "tag");
    let push = job(&run, "publish", "push", "push");
    for (j, status, code) in [
        (version, "success", 0),
        (lint, "success", 0),
        (tag, "success", 0),
        (push, "failure", 3),
    ] {
        assert_eq!(
            (j["status"].as_str(), j["exit_code"].as_i64()),
            (Some(status), Some(code)),
            "{j}"
        );
    }
    assert_eq!(version["outputs"], json!({"VERSION": "1.2.3"}), "{run}");
    assert_eq!(s.log_of(tag).await?, ["tagging 1.2.3 with from the flow"]);
    // The secret reached the Pod's env, and its log shows the mask.
    assert_eq!(s.log_of(push).await?, ["registry refused ***"]);
    // The parallel stage: both jobs ran at once (each started before the other ended; a
    // Pod's `finishedAt` has whole seconds, as the API server's times do).
    let at = |j: &Value, f: &str| parse_ts(j[f].as_str().unwrap_or_default());
    let (v0, v1) = (at(version, "started_at")?, at(version, "finished_at")?);
    let (l0, l1) = (at(lint, "started_at")?, at(lint, "finished_at")?);
    assert!(v0 < l1 && l0 < v1, "{run}");

    // One Pod per job, named by the job's container id, created once, in the job namespace
    // with the runner's settings; each deleted once its verdict was in (no grace needed).
    let pods: Vec<String> = [version, lint, tag, push]
        .iter()
        .map(|j| j["container_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut created = s.api.created();
    created.sort();
    let mut want = pods.clone();
    want.sort();
    assert_eq!(created, want);
    let posted: Vec<Value> = s
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .filter_map(|r| r.body)
        .collect();
    let tag_pod = posted
        .iter()
        .find(|p| p["metadata"]["labels"]["io.containerops.job"] == "tag")
        .context("the tag Pod")?;
    assert_eq!(tag_pod["metadata"]["namespace"], NS);
    assert_eq!(
        tag_pod["metadata"]["labels"]["io.containerops.run"],
        id.as_str()
    );
    assert_eq!(tag_pod["spec"]["serviceAccountName"], "ci-jobs");
    assert_eq!(tag_pod["spec"]["restartPolicy"], "Never");
    let env = &tag_pod["spec"]["containers"][0]["env"];
    let app_version = env
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == "APP_VERSION"));
    assert_eq!(
        app_version.map(|v| &v["value"]),
        Some(&json!("1.2.3")),
        "{tag_pod}"
    );
    let push_pod = posted
        .iter()
        .find(|p| p["metadata"]["labels"]["io.containerops.job"] == "push")
        .context("the push Pod")?;
    let token = push_pod["spec"]["containers"][0]["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == "REGISTRY_TOKEN"));
    assert_eq!(
        token.map(|v| &v["value"]),
        Some(&json!(REGISTRY_SECRET)),
        "{push_pod}"
    );
    for pod in &pods {
        let deletes = wait_until(Duration::from_secs(30), "the Pod's removal", || async {
            Ok(Some(s.deletes_of(pod)).filter(|d| !d.is_empty()))
        })
        .await?;
        assert_eq!(deletes, [json!({})], "{pod}");
    }
    wait_until(Duration::from_secs(10), "every Pod gone", || async {
        Ok(s.api.pod_names().is_empty().then_some(()))
    })
    .await?;
    // At least create and delete (and get: the engine's reconcile reads its running Pods).
    let used = s.assert_rbac_covers_logarithmd()?;
    assert!(
        used.contains(&"create") && used.contains(&"delete"),
        "{used:?}"
    );
    Ok(())
}

/// A job over its timeout, and the job of a cancelled run: the engine deletes each Pod with
/// the stop grace period, the kubelet stops its container, and the lines printed before are
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_cancel_delete_the_pod() -> Result<()> {
    let s = Setup::start().await?;
    let r_timeout = s
        .run(&one_job(
            "slow",
            "echo sleeping; sleep 30; echo woke",
            Some(2),
        ))
        .await?;
    let r_cancel = s
        .run(&one_job("long", "echo started; sleep 30", None))
        .await?;

    // Cancel once the Pod runs and its first line is stored.
    let run = s
        .wait_run(&r_cancel, "the job to run", |r| {
            job(r, "work", "act", "job")["job_id"].is_string()
        })
        .await?;
    let j = job(&run, "work", "act", "job").clone();
    wait_until(Duration::from_secs(30), "the first line", || async {
        Ok(s.log_of(&j).await.ok().filter(|l| !l.is_empty()))
    })
    .await?;
    let cancelled_pod = j["container_id"].as_str().context("pod")?.to_owned();
    assert!(s.deletes_of(&cancelled_pod).is_empty());
    let (st, v) = s
        .post(&format!("/api/v1/runs/{r_cancel}/cancel"), None)
        .await?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "cancelled");
    assert_eq!(job(&v, "work", "act", "job")["status"], "cancelled");

    let run = s.wait_run(&r_timeout, "the timeout", is_final).await?;
    assert_eq!(run["status"], "timeout", "{run}");
    let t = job(&run, "work", "act", "job");
    assert_eq!(t["status"], "timeout", "{run}");
    assert_eq!(t["reason"], "job timed out after 2s");
    let timed_out_pod = t["container_id"].as_str().context("pod")?.to_owned();

    for (pod, run, want) in [
        (&timed_out_pod, &r_timeout, "sleeping"),
        (&cancelled_pod, &r_cancel, "started"),
    ] {
        // Deleted with the stop grace (1 s), long before the 30 s sleep ends, and gone.
        let deletes = wait_until(Duration::from_secs(30), "the Pod's removal", || async {
            Ok((!s.api.pod_names().contains(pod)).then(|| s.deletes_of(pod)))
        })
        .await?;
        assert_eq!(
            deletes.first(),
            Some(&json!({"gracePeriodSeconds": 1})),
            "{pod}: {deletes:?}"
        );
        let (_, v) = s.daemon.get_json(&format!("/api/v1/runs/{run}")).await?;
        assert_eq!(s.log_of(job(&v, "work", "act", "job")).await?, [want]);
    }
    let mut created = s.api.created();
    created.sort();
    let mut want = vec![timed_out_pod, cancelled_pod];
    want.sort();
    assert_eq!(created, want);
    s.assert_rbac_covers_logarithmd()?;
    Ok(())
}
