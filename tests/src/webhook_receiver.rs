//! A webhook receiver for the end-to-end tests: an HTTP server on 127.0.0.1 that checks
//! every request's signature with its own implementation of the Standard Webhooks scheme
//! (not logarithmd's code), keeps a log of what it got, and answers as its [`Script`] says.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Result;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::{tail, wait_until, Daemon};

/// How the receiver answers.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// 200 to verified requests (401 to the others).
    Ok,
    /// 500 for the first `n` verified requests of each delivery id, then 200.
    FailFirst(usize),
    /// 410 Gone to verified requests.
    Gone,
    /// 200 to every request, verified or not.
    AcceptAll,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub delivery_id: String,
    pub attempt: u32,
    pub event: String,
    pub timestamp: String,
    pub signature: String,
    /// The signature matched, the timestamp is within five minutes of now, and the body
    /// names the delivery id and event type its headers name.
    pub verified: bool,
    pub answered: u16,
    pub body: Bytes,
}

struct RxState {
    secret: String,
    script: Script,
    delay: Duration,
    log: Mutex<Vec<Received>>,
}

/// The receiver; it stops when dropped. Deliveries go to [`Receiver::url`].
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<RxState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Standard Webhooks verification: the header has space-separated `v1,<base64>` entries;
/// one must equal base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")), and the
/// timestamp must be within five minutes of now.
pub fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if (now - ts).abs() > 300 {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .filter_map(|e| e.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

/// A request header as text (empty when absent or not text).
pub fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn receive(State(st): State<Arc<RxState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = header(&headers, "webhook-id");
    let timestamp = header(&headers, "webhook-timestamp");
    let signature = header(&headers, "webhook-signature");
    let event = header(&headers, "logarithm-event");
    let mut verified = verify(&st.secret, &id, &timestamp, &body, &signature);
    // The body must say what the headers say.
    if verified {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        verified = v["delivery_id"] == id.as_str() && v["type"] == event.as_str();
    }
    if !st.delay.is_zero() {
        tokio::time::sleep(st.delay).await;
    }
    let mut log = st.log.lock().unwrap_or_else(PoisonError::into_inner);
    let answered = match st.script {
        Script::AcceptAll => StatusCode::OK,
        _ if !verified => StatusCode::UNAUTHORIZED,
        Script::Ok => StatusCode::OK,
        Script::Gone => StatusCode::GONE,
        Script::FailFirst(n) => {
            let before = log
                .iter()
                .filter(|r| r.verified && r.delivery_id == id)
                .count();
            if before < n {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
    };
    log.push(Received {
        attempt: header(&headers, "logarithm-attempt").parse().unwrap_or(0),
        delivery_id: id,
        event,
        timestamp,
        signature,
        verified,
        answered: answered.as_u16(),
        body,
    });
    answered
}

impl Receiver {
    /// A receiver on a free port that verifies with `secret`.
    pub async fn start(secret: &str, script: Script) -> Result<Receiver> {
        Self::start_on(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            secret,
            script,
            Duration::ZERO,
        )
        .await
    }

    /// A receiver on `addr` that waits `delay` before it answers each request.
    pub async fn start_on(
        addr: SocketAddr,
        secret: &str,
        script: Script,
        delay: Duration,
    ) -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(RxState {
            secret: secret.to_owned(),
            script,
            delay,
            log: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<Received> {
        self.state
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The bodies of every request so far.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.log().into_iter().map(|r| r.body.to_vec()).collect()
    }

    /// Waits (up to 30 s) until the requests received so far satisfy `done`, and returns
    /// them; on failure the error carries `daemon`'s log.
    pub async fn wait_log(
        &self,
        daemon: &Daemon,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Result<Vec<Received>> {
        let got = wait_until(Duration::from_secs(30), what, || async {
            let log = self.log();
            Ok(done(&log).then_some(log))
        })
        .await;
        got.map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\nlogarithmd log (tail):\n{}",
                tail(&daemon.proc.log(), 40)
            )
        })
    }
}
