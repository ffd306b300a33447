//! The translation of a [`JobSpec`] into the Pod that runs it.
//!
//! One Pod per job, `restartPolicy: Never` (a job runs once; its verdict is its exit), the
//! same `io.containerops.*` labels as on Docker (so logs and verdicts are attributed the
//! same way), the merged environment, and `resources` as both requests and limits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, LocalObjectReference, Pod, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::runner::JobSpec;

/// Longest Pod name we produce (a DNS label, so it may also name the Pod's hostname).
const POD_NAME_MAX: usize = 63;

/// A DNS-1123 label from the job's container name: lowercase, `[a-z0-9-]`, at most 63
/// characters; when shortened or changed, a hash of the original keeps it unique.
pub fn pod_name(spec: &JobSpec) -> String {
    let mut name: String = spec
        .name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if name != spec.name || name.len() > POD_NAME_MAX {
        // FNV-1a: stable across versions and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in spec.name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let suffix = format!("-{:08x}", h as u32);
        name.truncate(POD_NAME_MAX - suffix.len());
        name = name.trim_end_matches('-').to_owned();
        name.push_str(&suffix);
    }
    name
}

/// What every job Pod gets besides its job's own settings (logarithmd's
/// `[engine.kubernetes]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodOptions {
    /// The Pod's service account. None: the namespace's `default`, and no API token is
    /// mounted (jobs do not talk to the API server unless given an account for it).
    pub service_account: Option<String>,
    /// Secrets the kubelet pulls the job images with.
    pub image_pull_secrets: Vec<String>,
    /// Nodes the jobs may run on.
    pub node_selector: BTreeMap<String, String>,
}

impl PodOptions {
    /// Adds the options to a Pod made by [`pod_for`].
    pub fn apply(&self, pod: &mut Pod) {
        let Some(spec) = pod.spec.as_mut() else {
            return;
        };
        match &self.service_account {
            Some(sa) => spec.service_account_name = Some(sa.clone()),
            None => spec.automount_service_account_token = Some(false),
        }
        if !self.image_pull_secrets.is_empty() {
            spec.image_pull_secrets = Some(
                self.image_pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect(),
            );
        }
        if !self.node_selector.is_empty() {
            spec.node_selector = Some(self.node_selector.clone());
        }
    }
}

/// The Pod that runs the job.
pub fn pod_for(spec: &JobSpec, namespace: &str) -> Pod {
    let mut limits = BTreeMap::new();
    if let Some(cpu) = spec.cpu {
        limits.insert("cpu".to_owned(), Quantity(cpu.quantity()));
    }
    if let Some(mem) = spec.memory {
        limits.insert("memory".to_owned(), Quantity(mem.0.to_string()));
    }
    let resources = (!limits.is_empty()).then(|| ResourceRequirements {
        requests: Some(limits.clone()),
        limits: Some(limits),
        ..Default::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(spec)),
            namespace: Some(namespace.to_owned()),
            labels: Some(spec.labels.clone()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".to_owned()),
            containers: vec![Container {
                name: "job".to_owned(),
                image: Some(spec.image.clone()),
                // `args` replaces the image's CMD, as Docker's `Cmd` does.
                args: (!spec.command.is_empty()).then(|| spec.command.clone()),
                env: Some(
                    spec.env
                        .iter()
                        .map(|(k, v)| EnvVar {
                            name: k.clone(),
                            value: Some(v.clone()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                resources,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Pod a job becomes. No Kubernetes API server exists here, so these tests check the
/// translation (the Pod spec produced for a job), not a Pod actually running.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Cpu, Memory};

    fn spec(name: &str) -> JobSpec {
        JobSpec {
            flow: "demo.flow".into(),
            run: "0123456789abcdef".into(),
            stage: "build".into(),
            action: "compile".into(),
            job: "version".into(),
            name: name.into(),
            image: "logarithm/busybox:test".into(),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: BTreeMap::from([
                ("CO_DATA".to_owned(), "input".to_owned()),
                ("APP_VERSION".to_owned(), "1.2.3".to_owned()),
            ]),
            labels: BTreeMap::from([
                (protocol::LABEL_FLOW.to_owned(), "demo.flow".to_owned()),
                (
                    protocol::LABEL_RUN.to_owned(),
                    "0123456789abcdef".to_owned(),
                ),
                (protocol::LABEL_STAGE.to_owned(), "build".to_owned()),
                (protocol::LABEL_ACTION.to_owned(), "compile".to_owned()),
                (protocol::LABEL_JOB.to_owned(), "version".to_owned()),
            ]),
            cpu: Some(Cpu(500)),
            memory: Some(Memory(64 << 20)),
            ..JobSpec::default()
        }
    }

    #[test]
    fn a_job_becomes_a_pod_with_labels_env_resources_and_no_restarts() {
        let pod = pod_for(&spec("co-0123456789abcdef-build-compile-version"), "ci");
        let json = serde_json::to_value(&pod).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "co-0123456789abcdef-build-compile-version",
                    "namespace": "ci",
                    "labels": {
                        "io.containerops.flow": "demo.flow",
                        "io.containerops.run": "0123456789abcdef",
                        "io.containerops.stage": "build",
                        "io.containerops.action": "compile",
                        "io.containerops.job": "version",
                    },
                },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "job",
                        "image": "logarithm/busybox:test",
                        "args": ["sh", "-c", "echo hi"],
                        "env": [
                            {"name": "APP_VERSION", "value": "1.2.3"},
                            {"name": "CO_DATA", "value": "input"},
                        ],
                        "resources": {
                            "limits": {"cpu": "500m", "memory": "67108864"},
                            "requests": {"cpu": "500m", "memory": "67108864"},
                        },
                    }],
                },
            })
        );
    }

    #[test]
    fn options_set_account_pull_secrets_and_node_selector() {
        let mut pod = pod_for(&spec("co-x"), "ci");
        PodOptions::default().apply(&mut pod);
        let json = serde_json::to_value(&pod).unwrap_or_default();
        assert_eq!(json["spec"]["automountServiceAccountToken"], false);
        let mut pod = pod_for(&spec("co-x"), "ci");
        PodOptions {
            service_account: Some("jobs".into()),
            image_pull_secrets: vec!["regcred".into()],
            node_selector: BTreeMap::from([("pool".to_owned(), "ci".to_owned())]),
        }
        .apply(&mut pod);
        let json = serde_json::to_value(&pod).unwrap_or_default();
        assert_eq!(json["spec"]["serviceAccountName"], "jobs");
        assert_eq!(json["spec"].get("automountServiceAccountToken"), None);
        assert_eq!(
            json["spec"]["imagePullSecrets"],
            serde_json::json!([{"name": "regcred"}])
        );
        assert_eq!(
            json["spec"]["nodeSelector"],
            serde_json::json!({"pool": "ci"})
        );
    }

    #[test]
    fn pod_names_are_dns_labels() {
        let long = format!("co-r-{}-Build_Stage-job", "x".repeat(80));
        let name = pod_name(&spec(&long));
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        // Stable, and different for different jobs.
        assert_eq!(name, pod_name(&spec(&long)));
        assert_ne!(name, pod_name(&spec(&format!("{long}2"))));
        assert_eq!(pod_name(&spec("co-r-a-b-c")), "co-r-a-b-c");
        let mixed = pod_name(&spec("co-r-Build_x-a-b"));
        assert!(mixed.starts_with("co-r-build-x-a-b-"), "{mixed}");
    }
}
