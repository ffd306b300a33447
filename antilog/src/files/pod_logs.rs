//! The kubelet's pod log root (`/var/log/pods` by default): one directory per Pod,
//! `<namespace>_<pod>_<uid>`, one per container in it, and in that one log chain per run
//! of the container, `<restart>.log` (rotated as [`Layout::Kubelet`] describes). A
//! container restart starts `<restart + 1>.log` beside the old chain.
//!
//! Namespace and Pod names are DNS labels / subdomains and the UID a UUID: none holds
//! `_`, so the directory name splits unambiguously.
//!
//! [`scan`] lists the containers found, bounded by [`MAX_CONTAINERS`] ([`scan_pod`]
//! those of one Pod directory); metadata
//! (labels, exit codes) comes from the Kubernetes API, not from here.

use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::layout::Layout;

/// Where the kubelet writes container logs unless configured otherwise.
pub const DEFAULT_ROOT: &str = "/var/log/pods";
/// Most containers one scan returns (a node runs at most a few hundred Pods).
pub const MAX_CONTAINERS: usize = 16_384;

/// One container's log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLogs {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    pub dir: PathBuf,
    /// The restart numbers with a log chain (`<n>.log` or a rotation of it), ascending.
    pub restarts: Vec<u32>,
}

impl ContainerLogs {
    /// How the files of run `restart` are named.
    pub fn layout(restart: u32) -> Layout {
        Layout::Kubelet {
            name: format!("{restart}.log"),
        }
    }
}

/// Splits a Pod directory name into namespace, Pod name and UID.
pub fn parse_pod_dir(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ns.is_empty() || pod.is_empty() || uid.is_empty() {
        return None;
    }
    Some((ns, pod, uid))
}

/// The restart number of a chain's file name (`3.log`, `3.log.20261127-111025`,
/// `3.log.20261127-111025.gz`); `None` for anything else.
pub fn restart_of(file_name: &str) -> Option<u32> {
    let (n, _) = file_name.split_once(".log")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let restart: u32 = n.parse().ok()?;
    ContainerLogs::layout(restart)
        .rank(file_name)
        .map(|_| restart)
}

/// The containers under `root`, in directory order. A missing root is an error
/// (`NotFound`): on a node without it, the source does not apply.
pub fn scan(root: &Path) -> io::Result<Vec<ContainerLogs>> {
    let mut out = Vec::new();
    for pod in std::fs::read_dir(root)? {
        let name = pod?.file_name();
        if !scan_pod_into(root, &name, &mut out)? {
            warn!(root = %root.display(), "more than {MAX_CONTAINERS} container log directories; the rest is not followed");
            break;
        }
    }
    Ok(out)
}

/// The containers of the Pod directory `name` under `root` (none if it is not one, or
/// is gone).
pub fn scan_pod(root: &Path, name: &std::ffi::OsStr) -> io::Result<Vec<ContainerLogs>> {
    let mut out = Vec::new();
    scan_pod_into(root, name, &mut out)?;
    Ok(out)
}

/// Adds the containers of the Pod directory `name` to `out`; false once `out` holds
/// [`MAX_CONTAINERS`].
fn scan_pod_into(
    root: &Path,
    name: &std::ffi::OsStr,
    out: &mut Vec<ContainerLogs>,
) -> io::Result<bool> {
    let Some((ns, pod_name, uid)) = name.to_str().and_then(parse_pod_dir) else {
        return Ok(true);
    };
    let pod_dir = root.join(name);
    // Removed meanwhile (the Pod was deleted): nothing to follow there.
    let containers = match std::fs::read_dir(&pod_dir) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(true)
        }
        Err(e) => return Err(e),
    };
    for c in containers {
        let c = c?;
        if !c.file_type()?.is_dir() {
            continue;
        }
        let Some(container) = c.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if out.len() >= MAX_CONTAINERS {
            return Ok(false);
        }
        let restarts = restarts_in(&c.path())?;
        out.push(ContainerLogs {
            namespace: ns.to_string(),
            pod: pod_name.to_string(),
            uid: uid.to_string(),
            container,
            dir: c.path(),
            restarts,
        });
    }
    Ok(true)
}

/// The restart numbers with files in a container's directory, ascending.
pub fn restarts_in(dir: &Path) -> io::Result<Vec<u32>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        if let Some(n) = e?.file_name().to_str().and_then(restart_of) {
            out.push(n);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_directories_split_into_namespace_pod_and_uid() {
        assert_eq!(
            parse_pod_dir("ci_build-42-x7k_6f1c2a4e-1b2c-4d5e-8f90-0123456789ab"),
            Some(("ci", "build-42-x7k", "6f1c2a4e-1b2c-4d5e-8f90-0123456789ab"))
        );
        for bad in ["ci_pod", "ci__uid", "_pod_uid", "a_b_c_d", "plain"] {
            assert_eq!(parse_pod_dir(bad), None, "{bad}");
        }
    }

    #[test]
    fn restart_numbers_come_from_the_chain_names() {
        let got: Vec<Option<u32>> = [
            "0.log",
            "12.log",
            "1.log.20261127-111025",
            "1.log.20261127-111025.gz",
            "1.log.20261127-111025.tmp",
            "x.log",
            ".log",
            "1.logx",
        ]
        .iter()
        .map(|n| restart_of(n))
        .collect();
        assert_eq!(
            got,
            vec![Some(0), Some(12), Some(1), Some(1), None, None, None, None]
        );
    }

    #[test]
    fn scan_finds_every_container_and_its_runs() {
        let root = tempfile::tempdir().unwrap();
        let mk = |rel: &str, files: &[&str]| {
            let d = root.path().join(rel);
            std::fs::create_dir_all(&d).unwrap();
            for f in files {
                std::fs::write(d.join(f), b"").unwrap();
            }
        };
        mk(
            "ci_job-a_uid-1/main",
            &["0.log.20261127-111025.gz", "0.log", "1.log"],
        );
        mk("ci_job-a_uid-1/sidecar", &[]);
        mk("kube-system_dns_uid-2/coredns", &["3.log", "notes.txt"]);
        mk("not-a-pod-dir/x", &["0.log"]);
        std::fs::write(root.path().join("ci_job-a_uid-1/stray-file"), b"").unwrap();
        let mut got = scan(root.path()).unwrap();
        got.sort_by(|a, b| (&a.pod, &a.container).cmp(&(&b.pod, &b.container)));
        let summary: Vec<(&str, &str, &str, &str, Vec<u32>)> = got
            .iter()
            .map(|c| {
                (
                    c.namespace.as_str(),
                    c.pod.as_str(),
                    c.uid.as_str(),
                    c.container.as_str(),
                    c.restarts.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("kube-system", "dns", "uid-2", "coredns", vec![3]),
                ("ci", "job-a", "uid-1", "main", vec![0, 1]),
                ("ci", "job-a", "uid-1", "sidecar", vec![]),
            ]
        );
        assert_eq!(got[1].dir, root.path().join("ci_job-a_uid-1/main"));
        let missing = root.path().join("absent");
        assert_eq!(scan(&missing).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
