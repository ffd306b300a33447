//! A real Prometheus for the observability tests, and the checks run against it.
//!
//! - [`Prometheus`]: Debian's `/usr/bin/prometheus` (package `prometheus`) started in a temp
//!   dir on a free port, scraping given targets every second; queried through its HTTP API.
//! - [`scrape`]/[`sample`]: reading a `/metrics` page directly.
//! - [`dashboards`]: loading the Grafana dashboards of `dashboards/`, checking their shape,
//!   and turning every panel query into concrete PromQL.
//!
//! Missing binaries are errors, never skips: scripts/test.sh installs the package.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::{free_port, tail, wait_http_ok, wait_until, Proc};

/// Where the repository's `dashboards/` directory is.
pub fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("dashboards")
}

/// Finds a Prometheus tool (`prometheus`, `promtool`) in /usr/bin or on `PATH`; an error
/// naming the package when it is missing.
pub fn tool(name: &str) -> Result<PathBuf> {
    let usr = Path::new("/usr/bin").join(name);
    if usr.exists() {
        return Ok(usr);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.exists() {
                return Ok(p);
            }
        }
    }
    bail!(
        "{name} is not installed: install Debian's `prometheus` package \
         (scripts/test.sh does)"
    )
}

/// One scrape target.
#[derive(Debug, Clone)]
pub struct Target {
    /// Scrape job name (`logarithmd`, `antilog`: what the alert rules expect).
    pub job: String,
    /// `host:port` serving `/metrics`.
    pub addr: String,
    /// Extra target labels (`node`).
    pub labels: Vec<(String, String)>,
}

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    pub proc: Proc,
    pub base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second, with `rule_files` loaded, and waits
    /// until it is ready.
    pub async fn start(targets: &[Target], rule_files: &[PathBuf]) -> Result<Prometheus> {
        let bin = tool("prometheus")?;
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut yaml = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        if !rule_files.is_empty() {
            yaml.push_str("rule_files:\n");
            for f in rule_files {
                let abs = f
                    .canonicalize()
                    .with_context(|| format!("rule file {}", f.display()))?;
                yaml.push_str(&format!("  - {}\n", yaml_str(&abs.to_string_lossy())));
            }
        }
        yaml.push_str("scrape_configs:\n");
        let mut jobs: BTreeMap<&str, Vec<&Target>> = BTreeMap::new();
        for t in targets {
            jobs.entry(t.job.as_str()).or_default().push(t);
        }
        for (job, ts) in jobs {
            yaml.push_str(&format!(
                "  - job_name: {}\n    static_configs:\n",
                yaml_str(job)
            ));
            for t in ts {
                yaml.push_str(&format!(
                    "      - targets: [{}]\n        labels: {{",
                    yaml_str(&t.addr)
                ));
                let labels: Vec<String> = t
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", yaml_str(v)))
                    .collect();
                yaml.push_str(&labels.join(", "));
                yaml.push_str("}\n");
            }
        }
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, &yaml)?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let proc = Proc::spawn(cmd, dir.path().join("prometheus.log"))?;
        let p = Prometheus {
            proc,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _dir: dir,
        };
        let url = format!("{}/-/ready", p.base);
        let ready = wait_http_ok(
            &p.http,
            &url,
            Duration::from_secs(60),
            "prometheus /-/ready",
        )
        .await;
        if let Err(e) = ready {
            bail!(
                "{e:#}\nconfig:\n{yaml}\nprometheus log:\n{}",
                tail(&p.proc.log(), 40)
            );
        }
        Ok(p)
    }

    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = r.status();
        let body: Value = r
            .json()
            .await
            .with_context(|| format!("GET {path}: answer is not JSON"))?;
        if body["status"] != "success" {
            bail!(
                "Prometheus refused {params:?} ({status}): {}: {}",
                body["errorType"],
                body["error"]
            );
        }
        Ok(body["data"].clone())
    }

    /// Evaluates `promql` now; the result's series (instant vector or scalar as one
    /// series). A query Prometheus cannot parse or evaluate is an error.
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/query", &[("query", promql)]).await?;
        Ok(match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                data["result"].as_array().cloned().unwrap_or_default()
            }
            Some("scalar") | Some("string") => vec![data["result"].clone()],
            other => bail!("unexpected result type {other:?} for {promql}"),
        })
    }

    /// The value of the single series `promql` returns, or `None` if it returns none.
    pub async fn value(&self, promql: &str) -> Result<Option<f64>> {
        let series = self.query(promql).await?;
        match series.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(series_value(one)?)),
            many => bail!("{promql} returned {} series, expected one", many.len()),
        }
    }

    /// Values of `label` on the series matching `selector` (Grafana's `label_values`).
    pub async fn label_values(&self, selector: &str, label: &str) -> Result<Vec<String>> {
        let data = self
            .api(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", selector)],
            )
            .await?;
        Ok(data
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until Prometheus has scraped every one of `n` targets successfully.
    pub async fn wait_targets_up(&self, n: usize) -> Result<()> {
        let r = wait_until(Duration::from_secs(60), "all scrape targets up", || async {
            let up = self.query("up == 1").await?;
            Ok((up.len() >= n).then_some(()))
        })
        .await;
        if let Err(e) = r {
            let targets = self.api("/api/v1/targets", &[]).await.unwrap_or_default();
            bail!(
                "{e:#}\ntargets: {targets}\nprometheus log:\n{}",
                tail(&self.proc.log(), 40)
            );
        }
        Ok(())
    }

    /// Waits until `promql` has the value `want` (the scrape after an event lands within a
    /// few seconds).
    pub async fn wait_value(&self, promql: &str, want: f64, timeout: Duration) -> Result<()> {
        let last = std::sync::Mutex::new(None);
        let r = wait_until(timeout, promql, || async {
            let v = self.value(promql).await?;
            if let Ok(mut l) = last.lock() {
                *l = v;
            }
            Ok((v == Some(want)).then_some(()))
        })
        .await;
        let last = last.lock().ok().and_then(|l| *l);
        r.with_context(|| format!("{promql}: want {want}, last seen {last:?}"))
    }

    /// The rule groups Prometheus loaded, as `/api/v1/rules` returns them.
    pub async fn rules(&self) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/rules", &[]).await?;
        Ok(data["groups"].as_array().cloned().unwrap_or_default())
    }
}

/// The numeric value of one series of a query result (`[ts, "value"]`).
pub fn series_value(series: &Value) -> Result<f64> {
    let v = if series.is_array() {
        &series[1]
    } else {
        &series["value"][1]
    };
    let s = v
        .as_str()
        .with_context(|| format!("no value in {series}"))?;
    s.parse::<f64>()
        .with_context(|| format!("value {s:?} is not a number"))
}

/// A quoted YAML scalar.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// One sample of a `/metrics` page.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Fetches and parses a Prometheus text page.
pub async fn scrape(http: &reqwest::Client, url: &str) -> Result<Vec<Sample>> {
    let r = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    ensure!(r.status().is_success(), "GET {url} answered {}", r.status());
    let text = r.text().await?;
    parse_text(&text)
}

/// Parses the Prometheus text format (the subset the `prometheus` crate writes).
pub fn parse_text(text: &str) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("bad sample line {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .with_context(|| format!("bad value in {line:?}"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .with_context(|| format!("bad labels in {line:?}"))?;
                (name.to_owned(), parse_labels(body)?)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    Ok(out)
}

fn parse_labels(body: &str) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (k, after) = rest
            .split_once("=\"")
            .with_context(|| format!("bad labels {body:?}"))?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => {}
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.with_context(|| format!("unterminated label in {body:?}"))?;
        labels.insert(k.trim_start_matches(',').to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Ok(labels)
}

/// The value of the sample named `name` whose labels include all of `labels`; 0 when
/// several match is never the case (they are summed).
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

pub mod dashboards;
