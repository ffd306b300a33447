//! Wire types of the Logarithm ingest protocol, shared by the node agent (antilog) and the
//! central daemon (logarithmd). Serde types and constants only: no I/O, no runtime.
//!
//! The format is described for humans in `docs/protocol.md`; this crate is its executable
//! form. A [`Batch`] is a JSON document (optionally gzip- or zstd-compressed) POSTed to
//! [`INGEST_PATH`]. It carries, per container, an ordered run of log records framed by
//! optional lifecycle events.
//!
//! # Layout
//! - [`Batch`], [`Agent`], [`ContainerSegment`]: the envelope and its per-container segments.
//! - [`Record`], [`Stream`]: one log line (bytes, not necessarily UTF-8) with its `seq`.
//! - [`ContainerMeta`], [`ContainerExit`]: lifecycle events.
//! - [`IngestAck`], [`ErrorBody`]: what logarithmd answers.
//! - constants: versions, paths, headers, limits.
//! - [`now_ns`]: the wall clock as the protocol counts time (ns since the Unix epoch), the
//!   one definition every crate uses.
//! - [`crate_error!`]: the shape of every crate's error type (a kind, a message, a cause).
//!
//! # Ordering and `seq`
//! `seq` numbers a container's log records gaplessly from 1, in the order Docker recorded
//! them, across both streams. Because it is positional in the container's log (and not a
//! counter of the agent's session), a record read again after any restart carries the same
//! `(container_id, seq)`, which is what lets logarithmd deduplicate resent data.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

mod error;

/// Now, as nanoseconds since the Unix epoch: how every timestamp in the protocol and in
/// storage counts time. 0 if the clock is before the epoch; saturates in the year 2262.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Every version logarithmd accepts; an unknown one is answered with 400 naming these.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];
/// Where batches are POSTed.
pub const INGEST_PATH: &str = "/api/v1/ingest";
/// Ordered ingest (several batches of one container in flight): the id an agent gives a
/// batch, unique to the agent's process (`<random>-<counter>`; at most
/// [`BATCH_ID_MAX`] bytes of `[0-9a-z-]`). logarithmd remembers the ids of the batches it
/// stored.
pub const BATCH_ID_HEADER: &str = "logarithm-batch-id";
/// Ordered ingest: the ids (comma-separated, at most [`BATCH_AFTER_MAX`]) of batches still
/// in flight that share a container with this one. logarithmd stores this batch only after
/// those, and answers 503 `out_of_order` if they do not come in time; the agent then sends
/// it again once they are acknowledged, without this header.
pub const BATCH_AFTER_HEADER: &str = "logarithm-batch-after";
/// Answer header of a logarithmd that honours [`BATCH_AFTER_HEADER`] (value `1`). An agent
/// sends a container's next batch before the last is acknowledged only to such a server.
pub const ORDERED_INGEST_HEADER: &str = "logarithm-ordered-ingest";
/// Longest batch id.
pub const BATCH_ID_MAX: usize = 64;
/// Most ids in one [`BATCH_AFTER_HEADER`].
pub const BATCH_AFTER_MAX: usize = 16;
/// Bearer token header used by agents (`Authorization: Bearer <token>`).
pub const AUTH_HEADER: &str = "authorization";
/// The most bytes a container's annotations may hold in all (keys and values) for
/// logarithmd to accept them; agents leave out those that would not fit. Kubernetes allows
/// 256 KiB, mostly for tool state (`kubectl.kubernetes.io/last-applied-configuration`).
pub const MAX_ANNOTATIONS_BYTES: usize = 64 << 10;
/// Labels that make a container a job of a ContainerOps flow run.
pub const LABEL_FLOW: &str = "io.containerops.flow";
pub const LABEL_RUN: &str = "io.containerops.run";
pub const LABEL_STAGE: &str = "io.containerops.stage";
pub const LABEL_ACTION: &str = "io.containerops.action";
pub const LABEL_JOB: &str = "io.containerops.job";

/// One request body: everything an agent ships in one HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Protocol version; must be one of [`SUPPORTED_VERSIONS`].
    pub version: u32,
    /// Who sent it.
    pub agent: Agent,
    /// Per-container segments, in the order the agent produced them. Two segments of the
    /// same container appear in timeline order (for example around a restart).
    #[serde(default)]
    pub segments: Vec<ContainerSegment>,
}

/// The sending agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Stable id of the agent instance (for logs and diagnostics).
    pub id: String,
    /// Name of the node whose containers these are.
    pub node: String,
}

/// A contiguous piece of one container's timeline: optional metadata (the container was
/// seen or (re)started), then records in `seq` order, then an optional exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSegment {
    /// Docker's container id (64 hex characters).
    pub container_id: String,
    /// Present when the container was first seen by this agent session or (re)started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ContainerMeta>,
    /// Log records, strictly increasing `seq`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<Record>,
    /// Present when the container stopped after the records above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ContainerExit>,
    /// Present when the container's logs cannot be read at all (for example Docker answers
    /// 501 for `--log-driver none`); the text says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_unavailable: Option<String>,
}

/// Container metadata, as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerMeta {
    /// Container name without Docker's leading `/`.
    pub name: String,
    /// Image reference the container was created from.
    pub image: String,
    /// All container labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The Pod's annotations, on Kubernetes nodes (Docker containers have none). Left out
    /// when empty, so a Docker agent's batches stay readable by logarithmd versions that
    /// predate the field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Creation time, ns since the Unix epoch.
    pub created_at: i64,
    /// Start time of the current run, ns since the Unix epoch (0 if never started).
    pub started_at: i64,
    /// How many times Docker's restart policy restarted it.
    #[serde(default)]
    pub restart_count: u32,
    /// Started with a TTY (`docker run -t`): stdout and stderr are one stream.
    #[serde(default)]
    pub tty: bool,
    /// Docker log driver (`json-file`, `local`, ...).
    #[serde(default)]
    pub log_driver: String,
}

/// The container stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerExit {
    /// Exit code as the runtime reports it; `None` (`null`) when the run's end was never
    /// reported (no `die` event, and the container was gone or restarted before the agent
    /// could inspect it): the job then fails with a reason saying the code is unknown,
    /// rather than with an invented one.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Finish time, ns since the Unix epoch.
    pub finished_at: i64,
    /// The `seq` of the last record of this run (0 if it printed nothing), so the receiver
    /// knows it has every line before it records the result.
    pub last_seq: u64,
    /// Restart count of the run that ended.
    #[serde(default)]
    pub restart_count: u32,
    /// Why the run's end is unknown, with `exit_code` null (for example "the container was
    /// removed while antilog was down"): the job's reason then. Left out when absent, so
    /// every other exit stays readable by logarithmd versions that predate the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Which output stream a line came from. TTY containers have only `stdout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// Compact numeric form used by storage (1 = stdout, 2 = stderr, as file descriptors).
    pub fn as_u8(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    pub fn from_u8(v: u8) -> Option<Stream> {
        match v {
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            _ => None,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Stream::Stdout),
            "stderr" => Ok(Stream::Stderr),
            other => Err(format!(
                "unknown stream {other:?}, expected stdout or stderr"
            )),
        }
    }
}

/// One log line. The line's bytes travel either as `text` (when they are valid UTF-8) or as
/// `b64` (standard base64 with padding) otherwise; exactly one of the two is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the container's log, gapless from 1 across both streams.
    pub seq: u64,
    /// Docker's timestamp of the line, ns since the Unix epoch.
    pub ts: i64,
    pub stream: Stream,
    /// The line, when it is valid UTF-8 (without the terminating newline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The line as base64, when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64: Option<String>,
    /// The line goes on in the next record (a line longer than the agent's per-record limit
    /// is split into continuation records; readers join them back).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cont: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why a [`Record`]'s payload cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// Neither `text` nor `b64`, or both.
    NotExactlyOne,
    /// `b64` is not valid base64.
    BadBase64(String),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::NotExactlyOne => {
                f.write_str("a record needs exactly one of `text` and `b64`")
            }
            PayloadError::BadBase64(e) => write!(f, "`b64` is not valid base64: {e}"),
        }
    }
}

impl std::error::Error for PayloadError {}

impl Record {
    /// Builds a record, choosing `text` or `b64` by whether `line` is UTF-8.
    pub fn new(seq: u64, ts: i64, stream: Stream, line: Vec<u8>, cont: bool) -> Record {
        let (text, b64) = match String::from_utf8(line) {
            Ok(s) => (Some(s), None),
            Err(e) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
            ),
        };
        Record {
            seq,
            ts,
            stream,
            text,
            b64,
            cont,
        }
    }

    /// The line's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, PayloadError> {
        match (&self.text, &self.b64) {
            (Some(t), None) => Ok(t.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| PayloadError::BadBase64(e.to_string())),
            _ => Err(PayloadError::NotExactlyOne),
        }
    }

    /// Consumes the record, returning the line's bytes without copying UTF-8 text.
    pub fn into_bytes(self) -> Result<Vec<u8>, PayloadError> {
        match (self.text, self.b64) {
            (Some(t), None) => Ok(t.into_bytes()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| PayloadError::BadBase64(e.to_string())),
            _ => Err(PayloadError::NotExactlyOne),
        }
    }

    /// Size of the line's payload as sent (for batching limits).
    pub fn payload_len(&self) -> usize {
        self.text.as_ref().map_or(0, String::len) + self.b64.as_ref().map_or(0, String::len)
    }
}

/// logarithmd's answer to an accepted batch: sent only after everything in it is committed
/// to storage, so an agent may move its checkpoint past it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestAck {
    /// Records in the batch.
    pub records: u64,
    /// Records newly stored.
    pub stored: u64,
    /// Records already stored before (resent after a restart or retry).
    pub duplicates: u64,
}

/// Every non-2xx answer of logarithmd carries this JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code, for example `invalid_body`, `payload_too_large`,
    /// `unsupported_version`, `unauthorized`, `overloaded`.
    pub code: String,
    /// What was wrong, for a human.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_travels_as_text_and_binary_as_b64() {
        let r = Record::new(1, 5, Stream::Stdout, b"hello".to_vec(), false);
        assert_eq!(r.text.as_deref(), Some("hello"));
        assert_eq!(r.b64, None);
        let r = Record::new(2, 5, Stream::Stderr, vec![0xff, b'a'], false);
        assert_eq!(r.text, None);
        assert_eq!(r.bytes().unwrap(), vec![0xff, b'a']);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"seq":2,"ts":5,"stream":"stderr","b64":"/2E="}"#);
    }

    #[test]
    fn an_unknown_exit_code_is_null() {
        let exit = |json: &str| {
            serde_json::from_str::<ContainerExit>(json)
                .unwrap()
                .exit_code
        };
        let known = r#"{"exit_code":3,"finished_at":1,"last_seq":2,"restart_count":0}"#;
        assert_eq!(exit(known), Some(3));
        let unknown = r#"{"exit_code":null,"finished_at":1,"last_seq":2,"restart_count":0}"#;
        assert_eq!(exit(unknown), None);
        let e = ContainerExit {
            exit_code: None,
            finished_at: 1,
            last_seq: 2,
            restart_count: 0,
            reason: None,
        };
        assert_eq!(serde_json::to_string(&e).unwrap(), unknown);
        let why =
            r#"{"exit_code":null,"finished_at":1,"last_seq":2,"restart_count":0,"reason":"gone"}"#;
        let e = ContainerExit {
            reason: Some("gone".into()),
            ..e
        };
        assert_eq!(serde_json::to_string(&e).unwrap(), why);
        assert_eq!(serde_json::from_str::<ContainerExit>(why).unwrap(), e);
    }

    #[test]
    fn empty_annotations_are_left_out() {
        let json = r#"{"name":"n","image":"i","labels":{"a":"b"},"created_at":1,"started_at":2,"restart_count":0,"tty":false,"log_driver":"json-file"}"#;
        let meta: ContainerMeta = serde_json::from_str(json).unwrap();
        assert!(meta.annotations.is_empty());
        // Exactly as before the field existed: older logarithmd (deny_unknown_fields) reads it.
        assert_eq!(serde_json::to_string(&meta).unwrap(), json);
        let annotated = ContainerMeta {
            annotations: BTreeMap::from([("k".to_string(), "v".to_string())]),
            ..meta
        };
        let json = serde_json::to_string(&annotated).unwrap();
        assert!(json.contains(r#""annotations":{"k":"v"}"#), "{json}");
        assert_eq!(
            serde_json::from_str::<ContainerMeta>(&json).unwrap(),
            annotated
        );
    }

    #[test]
    fn record_with_both_or_neither_payload_is_rejected() {
        let both: Record =
            serde_json::from_str(r#"{"seq":1,"ts":1,"stream":"stdout","text":"a","b64":"YQ=="}"#)
                .unwrap();
        assert_eq!(both.bytes(), Err(PayloadError::NotExactlyOne));
        let neither: Record =
            serde_json::from_str(r#"{"seq":1,"ts":1,"stream":"stdout"}"#).unwrap();
        assert_eq!(neither.bytes(), Err(PayloadError::NotExactlyOne));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<Batch>(
            r#"{"version":1,"agent":{"id":"a","node":"n"},"segments":[],"extra":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_round_trip_through_json(line in proptest::collection::vec(proptest::num::u8::ANY, 0..300), seq in 1u64.., ts: i64) {
            let r = Record::new(seq, ts, Stream::Stdout, line.clone(), false);
            let json = serde_json::to_vec(&r).unwrap();
            let back: Record = serde_json::from_slice(&json).unwrap();
            proptest::prop_assert_eq!(back.into_bytes().unwrap(), line);
        }
    }
}
