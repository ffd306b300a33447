//! The durable side of service calls, shared by every replica through storage: one
//! callback token per call, and the call's job row (one `jobs` row like a container's, so
//! the job has a log, outputs and a verdict, and `job.started`/`job.finished` webhooks).
//!
//! - The call's id is `svc-` and 128 random bits in hex (it is the job's "container id");
//!   its document (namespace `service_calls`) holds the job's spec and the SHA-256 of a
//!   secret of 256 random bits. The callback token, given to the service only, is the
//!   id's hex digits followed by the secret's.
//! - A call not yet accepted (no 202) when its logarithmd stopped is made again by the
//!   replica that drives the run next, with a new secret ([`Ledger::reissue`]).
//! - A call is `pending` until it is answered (by the service's immediate answer or by
//!   its callback) or revoked (the engine stopped the job: timeout, cancel). The change
//!   is a compare-and-set on the document, so exactly one of them wins, on any replica;
//!   the winner then writes the job's verdict, whose commit feeds the engine like a
//!   container's exit (in-process on this replica, by lookup on the one driving the run).
//!
//! Lines of the job's log: seq 1 is the request, seq 2 the service's first answer, and
//! from seq 3 the end (result, outputs as `[COUT]` lines, or why it failed); each range
//! has one writer, so no line is written twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::JobSpec;
use protocol::Stream;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage::{
    CoResultWrite, DocumentPut, ExitWrite, Expected, JobMeta, JobQuery, JobStatus, JobWrite,
    NewLine, OutputWrite, Storage, WriteBatch,
};

use super::answer::Answer;
use crate::flows::engine_error;

/// The document namespace of calls.
pub const NAMESPACE: &str = "service_calls";
/// Prefix of a call's id (the job's container id).
pub const ID_PREFIX: &str = "svc-";
/// The `node` service jobs are recorded on.
const NODE: &str = "service";

/// Told of every committed write (followers and in-process job events, webhooks).
pub type Notifier = Arc<dyn Fn(WriteBatch, &storage::ApplyOutcome) + Send + Sync>;

/// Whether a container id is a service call's.
pub fn is_call(container_id: &str) -> bool {
    container_id.starts_with(ID_PREFIX)
}

/// Hex digits of a token's id part and secret part.
const ID_HEX: usize = 32;
const SECRET_HEX: usize = 64;

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex<const N: usize>() -> String {
    let mut raw = [0u8; N];
    rand::rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

/// The call id and the secret of a token, if it is shaped like one.
fn split_token(token: &str) -> Option<(String, &str)> {
    if token.len() != ID_HEX + SECRET_HEX || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (id, secret) = token.split_at(ID_HEX);
    Some((format!("{ID_PREFIX}{id}"), secret))
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    Pending,
    Answered,
    Revoked,
}

/// The stored call.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CallDoc {
    /// SHA-256 of the secret part of the token.
    token_sha256: String,
    /// The service answered 202: it has the token and calls back.
    #[serde(default)]
    accepted: bool,
    /// What the request sends, to make it again after a restart.
    #[serde(default)]
    spec: Option<JobSpec>,
    run: String,
    job: String,
    state: CallState,
    /// ns since the Unix epoch: the job's timeout, after which the token is refused.
    expires_at: Option<i64>,
}

/// Why a callback token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No call has this token.
    Unknown,
    /// The call was answered already.
    Used,
    /// The job ended without an answer (timeout, cancel), or the token expired.
    Expired,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The service's result.
    Answered(Answer),
    /// It could not be called, answered badly, or the job was stopped first.
    Failed(String),
}

/// Calls in storage; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    storage: Arc<dyn Storage>,
    /// Applied to every write, as ingest applies it: outputs and messages of services are
    /// stored masked too.
    masker: Arc<crate::masking::Masker>,
    notify: Notifier,
}

fn now() -> i64 {
    protocol::now_ns()
}

fn line(seq: u64, text: String) -> NewLine {
    NewLine {
        seq,
        ts: now(),
        stream: Stream::Stdout,
        cont: false,
        line: text.into_bytes(),
    }
}

/// The URL without what may be secret in it (user info, query), for logs and listings.
pub fn shown_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}{path}")
        }
        None => no_query.to_owned(),
    }
}

impl Ledger {
    pub fn new(
        storage: Arc<dyn Storage>,
        masker: Arc<crate::masking::Masker>,
        notify: Notifier,
    ) -> Ledger {
        Ledger {
            storage,
            masker,
            notify,
        }
    }

    async fn apply(&self, write: JobWrite) -> engine::Result<()> {
        let mut batch = WriteBatch { jobs: vec![write] };
        self.masker.mask_batch(&mut batch);
        let outcome = self
            .storage
            .apply(&batch)
            .await
            .map_err(|e| engine_error("cannot record the service call", e))?;
        (self.notify)(batch, &outcome);
        Ok(())
    }

    async fn load(&self, id: &str) -> engine::Result<Option<(CallDoc, u64)>> {
        let doc = self
            .storage
            .get_document(NAMESPACE, id)
            .await
            .map_err(|e| engine_error("cannot read a service call", e))?;
        let Some(doc) = doc else { return Ok(None) };
        let body: CallDoc = serde_json::from_str(&doc.body).map_err(|e| {
            engine::Error::new(
                engine::ErrorKind::Internal,
                format!("service call {id} is unreadable: {e}"),
            )
        })?;
        Ok(Some((body, doc.version)))
    }

    /// Moves a pending call to `to`; `false` when it was not pending (any more).
    async fn settle(&self, id: &str, to: CallState) -> engine::Result<bool> {
        let Some((mut doc, version)) = self.load(id).await? else {
            return Ok(false);
        };
        if doc.state != CallState::Pending {
            return Ok(false);
        }
        doc.state = to;
        self.put(id, &doc, Expected::Version(version)).await
    }

    async fn put(&self, id: &str, doc: &CallDoc, expected: Expected) -> engine::Result<bool> {
        let body = serde_json::to_string(doc).map_err(|e| {
            engine::Error::new(engine::ErrorKind::Internal, format!("encoding a call: {e}"))
        })?;
        let put = DocumentPut {
            namespace: NAMESPACE.into(),
            id: id.to_owned(),
            active: doc.state == CallState::Pending,
            body,
            expected,
        };
        let written = self
            .storage
            .put_document(&put)
            .await
            .map_err(|e| engine_error("cannot record a service call", e))?;
        Ok(written.is_some())
    }

    /// The call already made for this job of this run (a start repeated after a restart).
    pub async fn existing(&self, spec: &JobSpec) -> engine::Result<Option<String>> {
        let found = self
            .storage
            .list_jobs(&JobQuery {
                run: Some(spec.run.clone()),
                stage: Some(spec.stage.clone()),
                action: Some(spec.action.clone()),
                job: Some(spec.job.clone()),
                limit: 10,
                ..JobQuery::default()
            })
            .await
            .map_err(|e| engine_error("cannot look for a service call", e))?;
        Ok(found
            .into_iter()
            .map(|j| j.container_id)
            .find(|c| is_call(c)))
    }

    /// Records a new call of `spec` (its token and its running job); returns the call id,
    /// the token and when it expires.
    pub async fn open(&self, spec: &JobSpec) -> engine::Result<(String, String, Option<i64>)> {
        let id_hex = random_hex::<16>();
        let secret = random_hex::<32>();
        let id = format!("{ID_PREFIX}{id_hex}");
        let token = format!("{id_hex}{secret}");
        let t = now();
        let doc = CallDoc {
            token_sha256: secret_hash(&secret),
            accepted: false,
            spec: Some(spec.clone()),
            run: spec.run.clone(),
            job: spec.name.clone(),
            state: CallState::Pending,
            expires_at: spec
                .timeout
                .map(|d| t.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))),
        };
        if !self.put(&id, &doc, Expected::Absent).await? {
            return Err(engine::Error::conflict(format!(
                "service call {id} exists already"
            )));
        }
        let endpoint = shown_url(&spec.image);
        let mut w = JobWrite::new(&id, NODE);
        w.meta = Some(JobMeta {
            name: spec.name.clone(),
            image: endpoint.clone(),
            labels: spec.labels.clone(),
            annotations: Default::default(),
            created_at: t,
            started_at: t,
            restart_count: 0,
            tty: false,
            log_driver: "service".into(),
        });
        w.lines = vec![line(1, format!("POST {endpoint}"))];
        self.apply(w).await?;
        Ok((id, token, doc.expires_at))
    }

    /// A pending call the service has not accepted (a restart cut its request short):
    /// a new token for it, with what to send and when it expires; `None` for any other.
    pub async fn reissue(
        &self,
        id: &str,
    ) -> engine::Result<Option<(JobSpec, String, Option<i64>)>> {
        let Some((mut doc, version)) = self.load(id).await? else {
            return Ok(None);
        };
        let open = doc.state == CallState::Pending
            && !doc.accepted
            && doc.expires_at.is_none_or(|e| e > now());
        let Some(spec) = doc.spec.clone().filter(|_| open) else {
            return Ok(None);
        };
        let secret = random_hex::<32>();
        doc.token_sha256 = secret_hash(&secret);
        if !self.put(id, &doc, Expected::Version(version)).await? {
            return Ok(None);
        }
        let token = format!("{}{secret}", id.trim_start_matches(ID_PREFIX));
        Ok(Some((spec, token, doc.expires_at)))
    }

    /// Records that the service accepted the call (202) and logs it.
    pub async fn accepted(&self, id: &str, text: String) -> engine::Result<()> {
        if let Some((mut doc, version)) = self.load(id).await? {
            if doc.state == CallState::Pending {
                doc.accepted = true;
                // A lost race means the call ended meanwhile: nothing to mark.
                self.put(id, &doc, Expected::Version(version)).await?;
            }
        }
        let mut w = JobWrite::new(id, NODE);
        w.lines = vec![line(2, text)];
        self.apply(w).await
    }

    /// Ends a pending call: answered (`Answered`) or failed (`Revoked`); `false` when it
    /// was not pending. `first` is the service's answer line (seq 2) when the end came
    /// with it.
    pub async fn end(
        &self,
        id: &str,
        ending: Ending,
        first: Option<String>,
    ) -> engine::Result<bool> {
        let to = match ending {
            Ending::Answered(_) => CallState::Answered,
            Ending::Failed(_) => CallState::Revoked,
        };
        if !self.settle(id, to).await? {
            return Ok(false);
        }
        self.write_end(id, &ending, first).await?;
        Ok(true)
    }

    async fn write_end(
        &self,
        id: &str,
        ending: &Ending,
        first: Option<String>,
    ) -> engine::Result<()> {
        let mut w = JobWrite::new(id, NODE);
        if let Some(text) = first {
            w.lines.push(line(2, text));
        }
        let mut seq = 2;
        let mut push = |w: &mut JobWrite, text: String| {
            seq += 1;
            w.lines.push(line(seq, text));
            seq
        };
        let failure = match ending {
            Ending::Answered(a) => {
                if let Some(m) = &a.message {
                    push(&mut w, format!("service: {m}"));
                }
                for (k, v) in &a.outputs {
                    let s = push(&mut w, format!("[COUT] {k} = {v}"));
                    w.outputs.push(OutputWrite {
                        name: k.clone(),
                        value: v.clone(),
                        seq: s,
                    });
                }
                let value = a.result.to_string();
                let s = push(&mut w, format!("[COUT] CO_RESULT = {value}"));
                w.co_result = Some(CoResultWrite { value, seq: s });
                None
            }
            Ending::Failed(why) => {
                push(&mut w, format!("failed: {why}"));
                Some(why.clone())
            }
        };
        w.exit = Some(ExitWrite {
            exit_code: Some(i64::from(failure.is_some())),
            finished_at: now(),
            last_seq: seq,
            restart_count: 0,
            failure,
        });
        self.apply(w).await
    }

    /// A callback: the answer of the call the token belongs to.
    pub async fn redeem(
        &self,
        token: &str,
        answer: Answer,
    ) -> engine::Result<Result<String, Refusal>> {
        let Some((id, secret)) = split_token(token) else {
            return Ok(Err(Refusal::Unknown));
        };
        let Some((mut doc, version)) = self.load(&id).await? else {
            return Ok(Err(Refusal::Unknown));
        };
        let hash = secret_hash(secret);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            hash.as_bytes(),
            doc.token_sha256.as_bytes(),
        )) {
            return Ok(Err(Refusal::Unknown));
        }
        match doc.state {
            CallState::Answered => return Ok(Err(Refusal::Used)),
            CallState::Revoked => return Ok(Err(Refusal::Expired)),
            CallState::Pending if doc.expires_at.is_some_and(|e| e <= now()) => {
                return Ok(Err(Refusal::Expired))
            }
            CallState::Pending => {}
        }
        doc.state = CallState::Answered;
        if !self.put(&id, &doc, Expected::Version(version)).await? {
            // Another callback (or the end of the job) came first.
            return Ok(Err(match self.load(&id).await? {
                Some((d, _)) if d.state == CallState::Revoked => Refusal::Expired,
                _ => Refusal::Used,
            }));
        }
        let ending = Ending::Answered(answer);
        if let Err(e) = self.write_end(&id, &ending, None).await {
            // Give the token back, so the service's retry can succeed.
            doc.state = CallState::Pending;
            let _ = self.put(&id, &doc, Expected::Version(version + 1)).await;
            return Err(e);
        }
        tracing::info!(call = %id, run = %doc.run, job = %doc.job, "service job answered by callback");
        Ok(Ok(id))
    }

    /// Whether the call's job still waits (`Running`), has its verdict (`Exited`), or is
    /// unknown (`Gone`).
    pub async fn state(&self, id: &str) -> engine::Result<engine::runner::ContainerState> {
        use engine::runner::ContainerState;
        let job = self
            .storage
            .get_job(storage::job_id_for_container(id))
            .await
            .map_err(|e| engine_error("cannot read a service job", e))?;
        Ok(match job.filter(|j| j.container_id == id) {
            None => ContainerState::Gone,
            Some(j) if j.status == JobStatus::Running => ContainerState::Running,
            Some(_) => ContainerState::Exited,
        })
    }

    /// The calls of a run, with their job labels and state.
    pub async fn find_run(&self, run: &str) -> engine::Result<Vec<engine::runner::Found>> {
        use engine::runner::{ContainerState, Found};
        let jobs = self
            .storage
            .list_jobs(&JobQuery {
                run: Some(run.to_owned()),
                limit: 1000,
                ..JobQuery::default()
            })
            .await
            .map_err(|e| engine_error("cannot list a run's service calls", e))?;
        Ok(jobs
            .into_iter()
            .filter(|j| is_call(&j.container_id))
            .map(|j| Found {
                state: match j.status {
                    JobStatus::Running => ContainerState::Running,
                    _ => ContainerState::Exited,
                },
                container_id: j.container_id,
                labels: j.labels.into_iter().collect::<BTreeMap<_, _>>(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_hide_credentials_and_queries() {
        assert_eq!(
            shown_url("https://user:pw@deploy.example:8443/hooks/run?token=s3cret"),
            "https://deploy.example:8443/hooks/run"
        );
        assert_eq!(shown_url("http://h"), "http://h");
    }

    #[test]
    fn tokens_split_into_the_call_id_and_the_secret() {
        let t = format!("{}{}", "ab".repeat(16), "01".repeat(32));
        let (id, secret) = split_token(&t).expect("a token");
        assert_eq!(id, format!("svc-{}", "ab".repeat(16)));
        assert_eq!(secret, "01".repeat(32));
        assert!(split_token(&t[1..]).is_none());
        assert!(split_token(&t.replace('a', "g")).is_none());
    }
}
