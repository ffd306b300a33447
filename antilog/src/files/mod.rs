//! Reading container logs from the files the container runtime writes, instead of through
//! the Docker API: the bytes come from the file, Docker's API is only asked for
//! discovery, metadata, exit codes and events.
//!
//! - [`identity`]: a file's identity (device, inode, fingerprint of its first bytes).
//! - [`layout`]: how a chain's files are named (Docker's `.1`, `.2`; the kubelet's
//!   `.<time>` and `.<time>.gz`).
//! - [`compressed`]: reading a gzip-compressed rotation by offset.
//! - [`pod_logs`]: the kubelet's pod log root (`/var/log/pods/<ns>_<pod>_<uid>/<container>/
//!   <restart>.log`): which containers and runs have logs.
//! - [`tailer`]: one log's chain of files read as one stream of lines across rotations,
//!   with exact positions (identity + offset) for checkpoints.
//! - [`reader`]: a tailer driven from async code, its blocking reads on tokio's blocking
//!   pool one chunk of lines at a time.
//! - [`json_file`]: Docker's `json-file` record format.
//! - [`cri`]: the CRI record format of Kubernetes nodes (`P`/`F` partials joined).
//!
//! The Docker follower ([`crate::docker::follower`]) reads a `json-file` container through
//! these when the source is `docker-files` (see [`crate::config::Source`]); containers
//! with another log driver stay on the API, container by container.

pub mod compressed;
pub mod cri;
pub mod identity;
pub mod json_file;
pub mod layout;
pub mod pod_logs;
pub mod reader;
pub mod tailer;
