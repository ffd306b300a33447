//! Job identity and the choice of source.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::pods::{ContainerMeta, PodMeta};

fn pod(labels: &[(&str, &str)]) -> PodMeta {
    let container = |name: &str| ContainerMeta {
        name: name.into(),
        image: format!("{name}:1"),
        restart_count: 0,
        terminated: None,
        last_terminated: None,
        started_at: 7,
    };
    PodMeta {
        namespace: "ci".into(),
        name: "build-42".into(),
        uid: "u".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        annotations: BTreeMap::new(),
        created_at: 5,
        main_container: Some("job".into()),
        containers: vec![container("init"), container("job"), container("sidecar")],
    }
}

#[test]
fn a_job_pod_is_its_first_container_by_the_pod_name_others_by_their_path() {
    let job = pod(&[(protocol::LABEL_RUN, "r1")]);
    assert_eq!(container_id(&job, "job"), "build-42");
    assert_eq!(container_id(&job, "sidecar"), "ci_build-42_sidecar");
    assert_eq!(container_id(&job, "init"), "ci_build-42_init");
    let other = pod(&[("app", "web")]);
    assert_eq!(container_id(&other, "job"), "ci_build-42_job");

    let long = path_id("ns", &"p".repeat(253), "c");
    assert_eq!(long.len(), 128);
    assert_ne!(long, path_id("ns", &"p".repeat(252), "c"));
    assert!(long
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)));

    let meta = meta_of(&job, "job", "build-42", 0, 99);
    assert_eq!(meta.name, "build-42");
    assert_eq!(meta.image, "job:1");
    assert_eq!((meta.created_at, meta.started_at), (5, 7));
    assert_eq!(meta.log_driver, "cri");
    assert_eq!(meta.labels[protocol::LABEL_RUN], "r1");
    assert_eq!(meta.labels["io.kubernetes.container.name"], "job");
    // A run the API no longer describes starts at its first line.
    assert_eq!(meta_of(&job, "job", "build-42", 1, 99).started_at, 99);
}

#[tokio::test]
async fn auto_picks_cri_only_when_the_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = PathBuf::from("/nonexistent/antilog-test");
    let base = Config {
        docker_root: nowhere.clone(),
        ..Config::default()
    };
    // No pod log root: a Docker source.
    let c = Config {
        pod_log_root: nowhere,
        ..base.clone()
    };
    assert!(matches!(
        choose(&c).await.unwrap(),
        Chosen::Docker(Source::DockerApi)
    ));
    // A pod log root, but the API refuses connections: still Docker.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: \
             http://127.0.0.1:{port}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  \
             context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    let c = Config {
        pod_log_root: dir.path().to_path_buf(),
        kubeconfig: Some(kubeconfig),
        ..base.clone()
    };
    assert!(matches!(choose(&c).await.unwrap(), Chosen::Docker(_)));
    // Asked for explicitly, `cri` only needs a client (the watcher retries the API).
    let c = Config {
        source: Source::Cri,
        ..c
    };
    assert!(matches!(choose(&c).await.unwrap(), Chosen::Cri(_)));
    // An https API server (in-cluster): the TLS client builds (kube's rustls with ring).
    let https = dir.path().join("kubeconfig-https");
    let text = std::fs::read_to_string(c.kubeconfig.as_ref().unwrap()).unwrap();
    std::fs::write(&https, text.replace("http://", "https://")).unwrap();
    let c = Config {
        kubeconfig: Some(https),
        ..c
    };
    assert!(matches!(choose(&c).await.unwrap(), Chosen::Cri(_)));
    let parsed =
        Config::from_toml("source = \"cri\"\npod_log_root = \"/host/pods\"\nkubeconfig = \"/k\"")
            .unwrap();
    assert_eq!(parsed.source, Source::Cri);
    assert_eq!(parsed.pod_log_root, PathBuf::from("/host/pods"));
    assert_eq!(
        Config::default().pod_log_root,
        PathBuf::from("/var/log/pods")
    );
}
