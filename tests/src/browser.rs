//! A real headless Chromium driven over W3C WebDriver (Debian's `chromium` and
//! `chromium-driver`). The protocol is plain HTTP and JSON, so this speaks it with the
//! harness's own `reqwest` client: a session, navigation, CSS queries, clicks, keys,
//! scripts, alerts and screenshots are all the browser tests need.
//!
//! Screenshots go to `$LOGARITHM_UI_ARTIFACTS` (default `target/ui-screenshots/` under
//! the workspace), one PNG per scenario step.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::{free_port, wait_http_ok, wait_until, Proc};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver plus one browser session; both end on drop.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: String,
    _chromedriver: Proc,
    _profile: tempfile::TempDir,
}

fn find_binary(names: &[&str]) -> Result<PathBuf> {
    for n in names {
        for dir in ["/usr/bin", "/usr/lib/chromium", "/usr/local/bin"] {
            let p = PathBuf::from(dir).join(n);
            if p.exists() {
                return Ok(p);
            }
        }
    }
    bail!(
        "{} not found: install Debian's chromium and chromium-driver (scripts/test.sh does)",
        names.join(" or ")
    )
}

/// Where screenshots go.
pub fn artifacts_dir() -> PathBuf {
    match std::env::var_os("LOGARITHM_UI_ARTIFACTS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots"),
    }
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session (1400×900).
    pub async fn start() -> Result<Browser> {
        let driver_bin = find_binary(&["chromedriver"])?;
        let chrome = find_binary(&["chromium", "chromium-browser"])?;
        let port = free_port()?;
        let profile = tempfile::tempdir()?;
        let mut cmd = std::process::Command::new(driver_bin);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1");
        let proc = Proc::spawn(cmd, profile.path().join("chromedriver.log"))?;
        let driver = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let status = format!("{driver}/status");
        wait_http_ok(&http, &status, Duration::from_secs(20), "chromedriver").await?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": chrome,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,900", "--hide-scrollbars", "--no-first-run",
                    format!("--user-data-dir={}", profile.path().join("chrome").display()),
                ]
            }
        }}});
        let r: Value = http
            .post(format!("{driver}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let session = r["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no WebDriver session: {r}"))?
            .to_owned();
        Ok(Browser {
            http,
            session,
            driver,
            _chromedriver: proc,
            _profile: profile,
        })
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}/session/{}{path}", self.driver, self.session);
        let mut req = self.http.request(method, url);
        // chromedriver wants a JSON body on every POST.
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req.send().await?.json().await?;
        if let Some(err) = r["value"].get("error") {
            bail!(
                "WebDriver {path}: {err}: {}",
                r["value"]["message"].as_str().unwrap_or("")
            );
        }
        Ok(r["value"].clone())
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.cmd(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.cmd(reqwest::Method::GET, path, None).await
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.post("/url", json!({ "url": url })).await.map(|_| ())
    }

    pub async fn refresh(&self) -> Result<()> {
        self.post("/refresh", json!({})).await.map(|_| ())
    }

    pub async fn back(&self) -> Result<()> {
        self.post("/back", json!({})).await.map(|_| ())
    }

    pub async fn url(&self) -> Result<String> {
        Ok(self.get("/url").await?.as_str().unwrap_or("").to_owned())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn exec(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// The first element matching `css`.
    pub async fn find(&self, css: &str) -> Result<String> {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await
            .with_context(|| format!("finding {css}"))?;
        Ok(v[ELEMENT]
            .as_str()
            .with_context(|| format!("no element id for {css}: {v}"))?
            .to_owned())
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        let id = self.find(css).await?;
        self.post(&format!("/element/{id}/click"), json!({}))
            .await
            .map(|_| ())
    }

    /// Types `text` into the element (`\u{E007}` is Enter, `\u{E008}` Shift).
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let id = self.find(css).await?;
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await
            .map(|_| ())
    }

    pub async fn text(&self, css: &str) -> Result<String> {
        let id = self.find(css).await?;
        Ok(self
            .get(&format!("/element/{id}/text"))
            .await?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    /// Waits until `script` (a function body) returns something other than null, false
    /// or undefined, and returns it.
    pub async fn wait_js(&self, what: &str, timeout: Duration, script: &str) -> Result<Value> {
        wait_until(timeout, what, || async {
            let v = self.exec(script, vec![]).await?;
            Ok((!v.is_null() && v != Value::Bool(false)).then_some(v))
        })
        .await
    }

    /// The text of the open prompt or alert, if one is open.
    pub async fn alert_text(&self) -> Result<Option<String>> {
        match self.get("/alert/text").await {
            Ok(v) => Ok(v.as_str().map(str::to_owned)),
            Err(_) => Ok(None),
        }
    }

    /// Types into the open prompt and accepts it.
    pub async fn answer_prompt(&self, text: &str) -> Result<()> {
        self.post("/alert/text", json!({ "text": text })).await?;
        self.post("/alert/accept", json!({})).await.map(|_| ())
    }

    /// Saves a PNG of the viewport as `<artifacts>/<name>.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let b64 = self.get("/screenshot").await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().context("screenshot")?)
            .context("screenshot is not base64")?;
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: end the session so Chromium exits before chromedriver is killed.
        let url = format!("{}/session/{}", self.driver, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        reqwest::Client::new().delete(url).send(),
                    )
                    .await;
                });
            }
        })
        .join();
    }
}
