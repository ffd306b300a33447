//! What the runner tests share: the job they start.

use std::collections::BTreeMap;

use engine::flow::{Cpu, Memory};
use engine::runner::JobSpec;

/// Job `build.compile.{job}` of run `run` of flow `flow`, with the labels the engine gives
/// its containers: `sh -c script` in `image`, with `GREETING` and `CO_DATA` in its
/// environment, half a CPU and 64 MiB.
pub fn job_spec(flow: &str, run: &str, job: &str, image: &str, script: &str) -> JobSpec {
    let labels = BTreeMap::from([
        (protocol::LABEL_FLOW.to_owned(), flow.to_owned()),
        (protocol::LABEL_RUN.to_owned(), run.to_owned()),
        (protocol::LABEL_STAGE.to_owned(), "build".to_owned()),
        (protocol::LABEL_ACTION.to_owned(), "compile".to_owned()),
        (protocol::LABEL_JOB.to_owned(), job.to_owned()),
    ]);
    JobSpec {
        flow: flow.into(),
        run: run.into(),
        stage: "build".into(),
        action: "compile".into(),
        job: job.into(),
        name: format!("co-{run}-build-compile-{job}"),
        image: image.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: BTreeMap::from([
            ("GREETING".to_owned(), "hello".to_owned()),
            ("CO_DATA".to_owned(), "some input".to_owned()),
        ]),
        labels,
        cpu: Some(Cpu(500)),
        memory: Some(Memory(64 << 20)),
        ..JobSpec::default()
    }
}
